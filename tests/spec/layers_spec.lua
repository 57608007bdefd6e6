-- layers_spec: arrows point down (issue 20). Only the lowest layer of lua/gpurent -
-- util/, transport/, remote/, state/, config/ - and the few modules that wrap a primitive reach
-- the C primitives (gpurent.core) themselves; the policy above them (lifecycle/,
-- billing/, gotchas/, commands/, repl/, cli/) goes through those wrappers
-- (gpurent.util.sys for the clock and Ctrl-C, gpurent.util.term for the line editor,
-- gpurent.util.fs, ...). A new direct use fails here: add the wrapper to the module
-- that owns the primitive instead, or, for a new primitive's own wrapper, list it.
local lfs = require "lfs"

local LOW_LAYERS = {"util/", "transport/", "remote/", "state/", "config/"}

-- The modules outside those layers that wrap a primitive, and which one.
local WRAPPERS = {
  ["init.lua"] = "the global `gpurent`: version, search path, now/sleep/isatty, and gpurent.core for recipes",
  ["platform/autodl/api.lua"] = "the provider primitive (runtime/provider.c): the one door to the provider API and its token",
  ["lifecycle/gate.lua"] = "the approval primitive (runtime/approval.c): a person's approval of an irreversible step",
}

-- Modules the engine helper rewrites in this session (issue 20): the lead converts
-- them at merge (gpurent.util.sys) and then empties this list.
local PENDING = {}

local function lua_files(dir, rel, out)
  for name in lfs.dir(dir) do
    if name ~= "." and name ~= ".." then
      local path, r = dir .. "/" .. name, rel .. name
      if lfs.attributes(path, "mode") == "directory" then lua_files(path, r .. "/", out)
      elseif name:match("%.lua$") then out[#out + 1] = {path = path, rel = r} end
    end
  end
  return out
end

-- The lines of a file that use gpurent.core (required, or through the global
-- gpurent.core), comments aside.
local function core_uses(path)
  local uses, n = {}, 0
  for line in io.lines(path) do
    n = n + 1
    if not line:match("^%s*%-%-") and line:find("gpurent%.core") then uses[#uses + 1] = n end
  end
  return uses
end

local function allowed(rel)
  for _, prefix in ipairs(LOW_LAYERS) do
    if rel:sub(1, #prefix) == prefix then return true end
  end
  return WRAPPERS[rel] ~= nil or PENDING[rel] ~= nil
end

local function offenders(files)
  local out = {}
  for _, f in ipairs(files) do
    if not allowed(f.rel) then
      for _, n in ipairs(core_uses(f.path)) do
        out[#out + 1] = string.format("%s:%d uses gpurent.core: go through the wrapper of its primitive " ..
          "(gpurent.util.sys, gpurent.util.term, gpurent.util.fs, ...)", f.rel, n)
      end
    end
  end
  return out
end

describe("the Lua layers", function()
  it("only the lowest layer and the primitives' wrappers use gpurent.core", function()
    local files = lua_files(T.root .. "/lua/gpurent", "", {})
    assert.is_true(#files > 50)
    local found = offenders(files)
    assert.are.equal(0, #found, table.concat(found, "\n"))
  end)

  it("each listed wrapper still uses gpurent.core (a stale entry would hide a new one)", function()
    for rel in pairs(WRAPPERS) do
      assert.is_true(#core_uses(T.root .. "/lua/gpurent/" .. rel) > 0, rel .. " no longer wraps a primitive")
    end
  end)

  it("the check catches a policy module that reaches a primitive, required or through the global", function()
    local dir = T.tmpdir()
    T.write(dir .. "/a.lua", 'local now = require("gpurent.core").sys.now\n-- gpurent.core in a comment\n')
    T.write(dir .. "/b.lua", 'if gpurent.core.sys.interrupted() then end\n')
    local found = offenders({{path = dir .. "/a.lua", rel = "commands/a.lua"},
                             {path = dir .. "/b.lua", rel = "repl/b.lua"},
                             {path = dir .. "/a.lua", rel = "util/a.lua"}})
    T.rmtree(dir)
    assert.are.equal(2, #found, table.concat(found, "\n"))
    assert.matches("^commands/a.lua:1 ", found[1])
    assert.matches("^repl/b.lua:1 ", found[2])
  end)
end)

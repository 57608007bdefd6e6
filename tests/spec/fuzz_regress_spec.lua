-- fuzz_regress_spec: every input kept in fuzz/regressions/<target>/ and every seed
-- of fuzz/corpus/<target>/ goes through the same parser entry points as `make fuzz`
-- (fuzz/targets.lua): each may fail with a clear error, none may break the parser.
package.path = T.root .. "/fuzz/?.lua;" .. package.path
local targets = require "targets"
local lfs = require "lfs"

local function inputs(dir)
  local out = {}
  if lfs.attributes(dir, "mode") ~= "directory" then return out end
  for name in lfs.dir(dir) do
    if name:sub(1, 1) ~= "." then out[#out + 1] = dir .. "/" .. name end
  end
  table.sort(out)
  return out
end

describe("fuzzed parsers", function()
  teardown(function() targets.cleanup() end)

  for _, target in ipairs({"yaml", "sshconfig", "knownhosts", "manifest", "params"}) do
    it(target .. " handles its corpus and regressions without internal errors", function()
      local files = inputs(T.root .. "/fuzz/corpus/" .. target)
      for _, f in ipairs(inputs(T.root .. "/fuzz/regressions/" .. target)) do files[#files + 1] = f end
      assert.is_true(#files > 0, "no inputs for " .. target)
      for _, f in ipairs(files) do
        local ok, err = pcall(targets[target], T.read(f))
        assert(ok or not targets.is_bug(err), f .. ": " .. tostring(err))
      end
    end)
  end

  it("recognises a runtime error inside a parser as a bug, and a quoted input as not", function()
    assert.is_true(targets.is_bug("lua/gpurent/transport/sshconfig.lua:88: attempt to index a nil value (local 'v')"))
    assert.is_false(targets.is_bug("roster: bad name \"attempt to index\""))
    assert.is_false(targets.is_bug("fuzz.yaml:1:3: mapping values are not allowed in this context"))
  end)
end)

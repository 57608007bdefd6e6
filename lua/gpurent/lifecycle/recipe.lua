-- gpurent.recipe: how `gpurent run FILE key=value ... -- args` runs a recipe, and
-- how a recipe declares itself. A recipe's first statement is its declaration:
--
--   local p = gpurent.recipe {
--     description = "Train one job on a rented box, end to end",
--     params = {
--       {name = "host", type = "string", required = true, help = "ssh alias"},
--       {name = "epochs", type = "integer", default = 3},
--       {name = "mode", type = "string", default = "fast", allowed = {"fast", "full"}},
--     },
--   }
--
-- Types: string, integer, number, boolean (true/false/yes/no/1/0), list (comma-
-- separated), dir and file (a local directory / regular file that exists: a code=
-- that names nothing is refused before anything connects). `gpurent run` validates the key=value words against it before the
-- recipe goes further (unknown key, missing required, wrong type: exit 2), and
-- `gpurent help FILE` prints it without running the recipe.
local errors = require "gpurent.util.errors"

local recipe = {}
local TYPES = {string = true, integer = true, number = true, boolean = true, list = true, dir = true, file = true}

local function check_spec(spec, file)
  if type(spec) ~= "table" then error(file .. ": gpurent.recipe takes a table", 3) end
  local seen = {}
  for i, p in ipairs(spec.params or {}) do
    if type(p) ~= "table" or type(p.name) ~= "string" then
      error(string.format("%s: parameter %d needs a name", file, i), 3)
    end
    if seen[p.name] then error(file .. ": parameter " .. p.name .. " declared twice", 3) end
    seen[p.name] = true
    p.type = p.type or "string"
    if not TYPES[p.type] then
      error(string.format("%s: parameter %s has unknown type %q", file, p.name, tostring(p.type)), 3)
    end
  end
  return spec
end

local converters = {
  string = function(v) return v end,
  integer = function(v) return math.tointeger(tonumber(v)) end,
  number = function(v) return tonumber(v) end,
  boolean = function(v)
    local b = ({["true"] = true, yes = true, ["1"] = true, on = true,
                ["false"] = false, no = false, ["0"] = false, off = false})[v:lower()]
    return b
  end,
  list = function(v)
    local out = {}
    for item in v:gmatch("[^,]+") do out[#out + 1] = item:match("^%s*(.-)%s*$") end
    return out
  end,
  dir = function(v) return v end,
  file = function(v) return v end,
}

-- A dir or file parameter names an existing local one: nil, or why not.
local LOCAL_KIND = {dir = {"directory", "local directory"}, file = {"file", "local file"}}
local function local_path_problem(kind, v)
  local want = LOCAL_KIND[kind]
  if not want then return nil end
  local mode, err = require("lfs").attributes(v, "mode")
  if mode == want[1] then return nil end
  if mode then return string.format("is a %s, not a %s", mode, want[2]) end
  return string.format("names no %s (%s)", want[2], tostring(err):match(": ([^:]+)$") or tostring(err))
end

-- tonumber refuses "inf" and "nan" but reads "1e400" (or "0x1p2000") as inf: a
-- parameter that overflows is as meaningless as one spelled inf (issue 15).
local function is_finite(x) return x == x and x ~= math.huge and x ~= -math.huge end

local function names_of(spec)
  local n = {}
  for _, p in ipairs(spec.params or {}) do n[#n + 1] = p.name end
  return table.concat(n, ", ")
end

-- Validate raw key=value strings against the declaration; returns typed params.
function recipe.validate(spec, raw, file)
  local by_name, out = {}, {}
  for _, p in ipairs(spec.params or {}) do by_name[p.name] = p end
  for k in pairs(raw) do
    if not by_name[k] then
      errors.usage(string.format("%s: unknown parameter %q (this recipe takes: %s)", file, k,
        names_of(spec) ~= "" and names_of(spec) or "none"), 0)
    end
  end
  for _, p in ipairs(spec.params or {}) do
    local v = raw[p.name]
    if v == nil then
      if p.required then
        errors.usage(string.format("%s: missing required parameter %s=<%s>%s", file, p.name, p.type,
          p.help and (" (" .. p.help .. ")") or ""), 0)
      end
      out[p.name] = p.default
    else
      local typed = converters[p.type](v)
      if typed == nil then
        errors.usage(string.format("%s: parameter %s=%q is not a valid %s", file, p.name, v, p.type), 0)
      end
      if p.type == "number" and not is_finite(typed) then
        errors.usage(string.format("%s: parameter %s=%q is not a finite number (it reads as %s); " ..
          "give a value within +-1.7e308", file, p.name, v, tostring(typed)), 0)
      end
      local problem = local_path_problem(p.type, typed)
      if problem then
        errors.usage(string.format("%s: parameter %s=%q %s: give the path of a %s", file, p.name, v, problem,
          LOCAL_KIND[p.type][2]), 0)
      end
      if p.allowed then
        local ok = false
        for _, a in ipairs(p.allowed) do if a == typed then ok = true end end
        if not ok then
          errors.usage(string.format("%s: parameter %s=%q is not one of: %s", file, p.name, v,
            table.concat(p.allowed, ", ")), 0)
        end
      end
      out[p.name] = typed
    end
  end
  return out
end

-- Split `key=value ... -- args` into a params table and positional args.
function recipe.split_args(argv)
  local raw, positional, i = {}, {}, 1
  while i <= #argv do
    local a = argv[i]
    if a == "--" then
      for j = i + 1, #argv do positional[#positional + 1] = argv[j] end
      break
    end
    local k, v = a:match("^([%a_][%w_%-%.]*)=(.*)$")
    if not k then
      errors.usage(string.format("expected key=value before --, got %q (put positional arguments after --)", a), 0)
    end
    if raw[k] ~= nil then errors.usage(string.format("parameter %s given twice", k), 0) end
    raw[k] = v
    i = i + 1
  end
  return raw, positional
end

-- ---- finding a recipe by name ------------------------------------------------------
-- `gpurent run RECIPE`: a path that exists is that file. Otherwise RECIPE is a name
-- ("autodl_train", "autodl_train.lua" or "recipes/autodl_train.lua"), looked up in
--   1. the project's recipes/ (the project dir: nearest gpurent.lock, else the working
--      directory), only once the person trusted it (gpurent trust): a directory they
--      merely cloned must not swap in its own autodl_train;
--   2. gpurent's installed recipes/ (share dir);
--   3. "LIB/path" in team library LIB (gpurent lib; lua/gpurent/config/lib.lua).

local function exists(path) return require("lfs").attributes(path, "mode") == "file" end

-- "recipes/autodl_train.lua" -> "autodl_train"; nil for a name that cannot be a
-- recipe name (absolute, dot-dot, empty).
local function base_name(name)
  if name:sub(1, 1) == "/" or name:find("..", 1, true) then return nil end
  local base = name:gsub("^%./", ""):gsub("^recipes/", ""):gsub("%.lua$", "")
  return base ~= "" and base or nil
end

local function same_dir(a, b)
  local trust = require "gpurent.config.trust"
  local ra, rb = trust.realdir(a), trust.realdir(b)
  return ra ~= nil and ra == rb
end

-- The project's recipes/ NAME.lua: its path when usable; an untrusted one is a
-- refusal that says how to trust it or to run the file by path (never skipped
-- silently, never run).
local function project_recipe(base)
  local dir = gpurent.project_dir()
  local file = dir .. "/recipes/" .. base .. ".lua"
  if not exists(file) or same_dir(dir, gpurent.share_dir()) then return nil end
  local ok, why = require("gpurent.config.trust").project_file_trusted(file, dir)
  if ok then return file end
  errors.refuse(string.format("recipe %s: the project's %s %s, so gpurent does not run it by name. " ..
    "Read it, then `gpurent trust %s`; or run the file by its path: gpurent run %s", base, file, why, dir, file), 0)
end

local function library_recipe(name)
  local lname, rest = name:match("^([^/]+)/(.+)$")
  if not lname then return nil end
  if not rest:match("%.lua$") then rest = rest .. ".lua" end
  return require("gpurent.config.lib").resolve_recipe(lname .. "/" .. rest)
end

-- recipe.find(name) -> path, source ("file" | "project" | "installed" | "library"),
-- or nil when nothing is found (a refusal for an untrusted project recipe).
function recipe.find(name)
  if exists(name) then return name, "file" end
  local base = base_name(name)
  if not base then return nil end
  local p = project_recipe(base)
  if p then return p, "project" end
  local installed = gpurent.share_dir() .. "/recipes/" .. base .. ".lua"
  if exists(installed) then return installed, "installed" end
  local l = library_recipe(name)
  if l then return l, "library" end
  return nil
end

local function not_found(name)
  if not base_name(name) or name:match("^%./") then -- a path, not a name: say what the file system said
    local _, err = io.open(name, "rb")
    errors.usage("cannot open recipe " .. tostring(err), 0)
  end
  errors.usage(string.format("no recipe %q: not a file here, nor a name in the project's recipes/, " ..
    "gpurent's recipes (%s/recipes) or a team library (LIB/NAME). `gpurent recipes` lists them",
    name, gpurent.share_dir()), 0)
end

local function resolve(file)
  local path = recipe.find(file)
  if not path then not_found(file) end
  return path
end

local function load_recipe(file, env)
  local f = io.open(file, "rb")
  if not f then
    local _, err = io.open(file, "rb")
    errors.usage("cannot open recipe " .. tostring(err), 0)
  end
  f:close()
  local chunk, err
  if env then chunk, err = loadfile(file, "t", env) else chunk, err = loadfile(file, "t") end
  if not chunk then error(err, 0) end
  return chunk
end

-- recipe.main(file, argv): the body of `gpurent run`.
function recipe.main(file, argv)
  -- like every command: due reminders of the release clocks and held pushes go out first
  if require("gpurent.state.dir").has_pending() then  -- one stat: nothing due, nothing loaded
    pcall(function() require("gpurent.billing.clock").on_command() end)
  end
  local raw, positional = recipe.split_args(argv)
  -- library modules resolve through the lazy searcher init.lua installs
  local resolved = resolve(file)
  if resolved ~= file then
    -- found by name: the host put no recipe directory on the path; the found one's is meant
    local dir = resolved:match("^(.*)/[^/]*$")
    package.path = dir .. "/?.lua;" .. dir .. "/?/init.lua;" .. package.path
    file = resolved
  end
  local chunk = load_recipe(file)
  local declared = false
  gpurent.recipe = function(spec)
    if declared then error("gpurent.recipe called twice", 2) end
    declared = true
    check_spec(spec, file)
    local typed = recipe.validate(spec, raw, file)
    _G.params = typed
    return typed
  end
  _G.params = raw
  _G.arg = {[0] = file, table.unpack(positional)}
  return chunk(raw, table.unpack(positional))
end

-- The declaration, read without running the recipe: the chunk runs in an
-- environment without io/os until gpurent.recipe{} is reached, which stops it.
function recipe.describe(file)
  file = resolve(file)
  local STOP = {}
  local spec
  local env = setmetatable({
    gpurent = {recipe = function(s) spec = check_spec(s, file); error(STOP, 0) end},
  }, {__index = function(_, k)
    if k == "io" or k == "os" then
      error(file .. ": the recipe uses " .. k .. " before declaring its parameters", 2)
    end
    return _G[k]
  end})
  local ok, err = pcall(load_recipe(file, env))
  if not ok and err ~= STOP then error(err, 0) end
  return spec
end

function recipe.help_text(file)
  local spec = recipe.describe(file)
  if not spec then return file .. ": declares no parameters (no gpurent.recipe{} at its top)\n" end
  local lines = {file .. (spec.description and (": " .. spec.description) or ""), "", "parameters:"}
  for _, p in ipairs(spec.params or {}) do
    local extra = {}
    if p.required then extra[#extra + 1] = "required" end
    if p.default ~= nil then
      extra[#extra + 1] = "default " .. (type(p.default) == "table" and table.concat(p.default, ",") or tostring(p.default))
    end
    if p.allowed then extra[#extra + 1] = "one of " .. table.concat(p.allowed, "|") end
    lines[#lines + 1] = string.format("  %-18s %-8s %s%s", p.name, p.type, p.help or "",
      #extra > 0 and (" [" .. table.concat(extra, "; ") .. "]") or "")
  end
  if #(spec.params or {}) == 0 then lines[#lines + 1] = "  (none)" end
  return table.concat(lines, "\n") .. "\n"
end

return recipe

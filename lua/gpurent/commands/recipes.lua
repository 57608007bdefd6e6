-- gpurent recipes: the recipes `gpurent run NAME` finds, where each comes from and
-- its description (read from its gpurent.recipe{} declaration without running the
-- recipe: gpurent.recipe.describe). The lookup order is gpurent.recipe.find's:
-- the trusted project's recipes/, gpurent's installed recipes/, team libraries.
local cli = require "gpurent.cli"
local errors = require "gpurent.util.errors"
local json = require "gpurent.util.json"
local lfs = require "lfs"
local recipe = require "gpurent.lifecycle.recipe"

local M = {}
M.usage = [[usage: gpurent recipes [--json | --names]
Lists the recipes `gpurent run NAME` finds, in lookup order: the project's recipes/
(the nearest directory holding gpurent.lock, else the working directory; only once you
`gpurent trust` it), gpurent's installed recipes/, then each team library's recipes
(run as LIB/PATH). Each line: NAME, SOURCE (project, installed, library LIB) and the
description its gpurent.recipe{} declares. --json prints the same as
{"recipes": [{"name", "source", "path", "description", "trusted"}]}; --names prints only
the names, one a line (for shell completion; untrusted project recipes left out).]]

local MAX_DEPTH = 4 -- library trees: recipes sit near the top; a deep tree is not walked

-- *.lua files directly in dir (sorted).
local function lua_files(dir)
  local out = {}
  if lfs.attributes(dir, "mode") ~= "directory" then return out end
  for name in lfs.dir(dir) do
    if name:match("%.lua$") and lfs.attributes(dir .. "/" .. name, "mode") == "file" then out[#out + 1] = name end
  end
  table.sort(out)
  return out
end

-- A library's recipes: *.lua below its root (not .git, not through links) whose text
-- declares gpurent.recipe; the rest are modules.
local function library_files(root, rel, depth, out)
  if depth > MAX_DEPTH then return out end
  local dir = rel == "" and root or (root .. "/" .. rel)
  local names = {}
  for name in lfs.dir(dir) do
    if name:sub(1, 1) ~= "." then names[#names + 1] = name end
  end
  table.sort(names)
  for _, name in ipairs(names) do
    local r = rel == "" and name or (rel .. "/" .. name)
    local mode = lfs.symlinkattributes(root .. "/" .. r, "mode")
    if mode == "directory" then library_files(root, r, depth + 1, out)
    elseif mode == "file" and name:match("%.lua$") then
      local f = io.open(root .. "/" .. r, "rb")
      local text = f and f:read(65536) or ""
      if f then f:close() end
      if text:find("gpurent.recipe", 1, true) then out[#out + 1] = r end
    end
  end
  return out
end

local function describe(path)
  local ok, spec = pcall(recipe.describe, path)
  if not ok then return "(cannot read its declaration: " .. errors.message(spec) .. ")" end
  return spec and spec.description or "(declares no description)"
end

local function project_rows(rows)
  local dir = gpurent.project_dir()
  local trust = require "gpurent.config.trust"
  local own = trust.realdir(gpurent.share_dir())
  if own and trust.realdir(dir) == own then return end -- the source tree: its recipes are the installed ones
  for _, name in ipairs(lua_files(dir .. "/recipes")) do
    local path = dir .. "/recipes/" .. name
    local ok, why = trust.project_file_trusted(path, dir)
    -- an untrusted file is not run, not even up to its declaration
    rows[#rows + 1] = {name = name:gsub("%.lua$", ""), source = "project", path = path, trusted = ok,
      description = ok and describe(path) or ("(untrusted: it " .. why .. "; gpurent trust " .. dir .. ")")}
  end
end

local function library_rows(rows)
  local lib = require "gpurent.config.lib"
  local ok, lock = pcall(lib.read_lock)
  if not ok then
    rows[#rows + 1] = {name = "-", source = "library", path = "-", trusted = false,
      description = "(cannot read the lock: " .. errors.message(lock) .. ")"}
    return
  end
  local installed = lib.installed(lock)
  local names = {}
  for n in pairs(installed) do names[#names + 1] = n end
  table.sort(names)
  for _, n in ipairs(names) do
    local dir = installed[n].dir
    if lfs.attributes(dir, "mode") == "directory" then
      for _, rel in ipairs(library_files(dir, "", 1, {})) do
        rows[#rows + 1] = {name = n .. "/" .. rel:gsub("%.lua$", ""), source = "library " .. n,
          path = dir .. "/" .. rel, trusted = true, description = describe(dir .. "/" .. rel)}
      end
    else
      rows[#rows + 1] = {name = n .. "/...", source = "library " .. n, path = dir, trusted = true,
        description = "(not on this machine: gpurent lib sync)"}
    end
  end
end

-- M.list() -> rows {name, source, path, description, trusted}, in lookup order.
function M.list()
  local rows = {}
  project_rows(rows)
  local share = gpurent.share_dir() .. "/recipes"
  for _, name in ipairs(lua_files(share)) do
    rows[#rows + 1] = {name = name:gsub("%.lua$", ""), source = "installed", path = share .. "/" .. name,
      trusted = true, description = describe(share .. "/" .. name)}
  end
  library_rows(rows)
  return rows
end

function M.main(args)
  local opts, pos = cli.options(args, {json = "flag", names = "flag"}, M.usage)
  if #pos > 0 then errors.usage("recipes takes no arguments, got " .. pos[1] .. "\n" .. M.usage, 0) end
  if opts.json and opts.names then errors.usage("recipes: --json or --names, not both", 0) end
  local rows = M.list()
  if opts.names then
    for _, r in ipairs(rows) do if r.trusted and not r.name:match("/%.%.%.$") then io.write(r.name, "\n") end end
    return 0
  end
  if opts.json then io.write(json.encode_stable({recipes = json.array(rows)})); return 0 end
  if #rows == 0 then io.write("no recipes found (", gpurent.share_dir(), "/recipes is empty)\n"); return 0 end
  local t = {{"NAME", "SOURCE", "DESCRIPTION"}}
  for _, r in ipairs(rows) do t[#t + 1] = {r.name, r.source, r.description} end
  io.write(require("gpurent.state.ledger").table_text(t))
  io.write("run one: gpurent run NAME key=value ...; its parameters: gpurent help NAME\n")
  return 0
end

return M

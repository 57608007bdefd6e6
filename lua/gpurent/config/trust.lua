-- gpurent.trust: which project directories the person has trusted (issue 14, the
-- model of `direnv allow` and git's safe.directory). A directory the person merely
-- cloned may hold profiles/, lua/, recipes/ and gpurent.lock that would steer
-- gpurent; those files are used only once the person ran `gpurent trust DIR`, which
-- records DIR's real path and the SHA-256 of each such file in
-- $XDG_CONFIG_HOME/gpurent/trusted.json (else ~/.config/gpurent; mode 600). A file
-- that is new or changed since then is refused again, naming the file and the command.
--
--   trust.record(dir) -> entry, real_dir     trust.revoke(dir) -> true | nil
--   trust.list() -> {{dir=, files=, at=}, ...} trust.file_path() -> path
--   trust.vouch(file, dir, what)             raises a refusal unless file is trusted
--   trust.vouch_module(file)                  the project lua/ check (runtime/host.c)
--   trust.project_file_trusted(file) -> ok, why
--   trust.record_file(dir, rel)               re-record one file gpurent itself wrote
--   trust.realdir(dir) -> real path | nil
--
-- Nothing here runs unless a project lua/, profiles/ or gpurent.lock is consulted,
-- so an empty recipe's start-up reads no trust file and hashes nothing.
local lfs = require "lfs"
local errors = require "gpurent.util.errors"

local trust = {}

local cache -- the parsed trust file, read once per process

local function env(k)
  local v = os.getenv(k)
  return v ~= "" and v or nil
end

function trust.config_dir()
  local xdg = env("XDG_CONFIG_HOME")
  if not xdg then
    local home = env("HOME") or error("gpurent trust: neither XDG_CONFIG_HOME nor HOME is set", 0)
    xdg = home .. "/.config"
  end
  return xdg .. "/gpurent"
end

function trust.file_path() return trust.config_dir() .. "/trusted.json" end

-- The kernel's answer for a directory's real path (symlinks resolved): chdir and
-- getcwd, then back. Lua has no realpath and a subprocess would cost a fork.
function trust.realdir(dir)
  local here = lfs.currentdir()
  if not lfs.chdir(dir) then return nil end
  local real = lfs.currentdir()
  if here then lfs.chdir(here) end
  return real
end

-- ---- the trust file ---------------------------------------------------------------

local function read()
  if cache then return cache end
  local path = trust.file_path()
  local f = io.open(path, "rb")
  if not f then cache = {dirs = {}}; return cache end
  local text = f:read("a")
  f:close()
  local ok, t = pcall(require("gpurent.util.json").decode, text, path)
  if not ok or type(t) ~= "table" or type(t.dirs or {}) ~= "table" then
    error(path .. ": not a gpurent trust file (expected {\"dirs\": {...}}); fix it or delete it and " ..
          "run `gpurent trust DIR` again" .. (ok and "" or (": " .. tostring(t))), 0)
  end
  t.dirs = t.dirs or {}
  cache = t
  return t
end

local function write(t)
  local fs = require "gpurent.util.fs"
  local json = require "gpurent.util.json"
  fs.mkdirs(trust.config_dir())
  fs.atomic_write(trust.file_path(), json.encode_stable({gpurent_trust = 1, dirs = t.dirs}), tonumber("600", 8))
  cache = t
end

local function now_utc() return os.date("!%Y-%m-%dT%H:%M:%SZ") end

-- ---- what gpurent would pick up from a directory ------------------------------------

-- Every *.lua below dir (relative names prefixed with rel), not following directory
-- links so a loop cannot hang us.
local function lua_files_below(root, rel, out)
  local dir = root .. "/" .. rel
  if lfs.symlinkattributes(dir, "mode") ~= "directory" then return end
  local names = {}
  for name in lfs.dir(dir) do if name ~= "." and name ~= ".." then names[#names + 1] = name end end
  table.sort(names)
  for _, name in ipairs(names) do
    local r = rel .. "/" .. name
    local mode = lfs.attributes(root .. "/" .. r, "mode")
    if lfs.symlinkattributes(root .. "/" .. r, "mode") == "directory" then
      lua_files_below(root, r, out)
    elseif mode == "file" and name:match("%.lua$") then
      out[#out + 1] = r
    end
  end
end

-- trust.collect(dir) -> {relative path, ...}: gpurent.lock, profiles/*.yaml,
-- lua/**/*.lua, recipes/**/*.lua.
function trust.collect(dir)
  local out = {}
  if lfs.attributes(dir .. "/gpurent.lock", "mode") == "file" then out[1] = "gpurent.lock" end
  if lfs.attributes(dir .. "/profiles", "mode") == "directory" then
    local names = {}
    for name in lfs.dir(dir .. "/profiles") do
      if name:match("%.yaml$") and lfs.attributes(dir .. "/profiles/" .. name, "mode") == "file" then
        names[#names + 1] = "profiles/" .. name
      end
    end
    table.sort(names)
    for _, n in ipairs(names) do out[#out + 1] = n end
  end
  lua_files_below(dir, "lua", out)
  lua_files_below(dir, "recipes", out)
  return out
end

local function real_or_usage(dir)
  local real = trust.realdir(dir)
  if not real then errors.usage("gpurent trust: " .. dir .. " is not a directory", 0) end
  return real
end

-- trust.record(dir) -> entry, real: hash what gpurent would use and store it.
function trust.record(dir)
  local hash = require "gpurent.util.hash"
  local real = real_or_usage(dir)
  local files = {}
  for _, rel in ipairs(trust.collect(real)) do files[rel] = (hash.sha256_file(real .. "/" .. rel)) end
  local t = read()
  t.dirs[real] = {at = now_utc(), files = files}
  write(t)
  return t.dirs[real], real
end

function trust.revoke(dir)
  local real = trust.realdir(dir) or dir
  local t = read()
  if not t.dirs[real] then return nil, real end
  t.dirs[real] = nil
  write(t)
  return true, real
end

function trust.list()
  local rows = {}
  for dir, e in pairs(read().dirs) do
    local n = 0
    for _ in pairs(e.files or {}) do n = n + 1 end
    rows[#rows + 1] = {dir = dir, files = n, at = e.at, via = e.via}
  end
  table.sort(rows, function(a, b) return a.dir < b.dir end)
  return rows
end

-- trust.record_file(dir, rel): gpurent itself rewrote dir/rel (lib add writes the
-- project's gpurent.lock); keep it trusted without blessing anything else in dir.
function trust.record_file(dir, rel)
  local real = trust.realdir(dir)
  if not real then return end
  local t = read()
  local e = t.dirs[real] or {at = now_utc(), files = {}, via = "written by gpurent " .. rel:match("[^/]+$")}
  e.files = e.files or {}
  e.files[rel] = (require("gpurent.util.hash").sha256_file(real .. "/" .. rel))
  t.dirs[real] = e
  write(t)
end

-- ---- the checks ---------------------------------------------------------------------

-- trust.project_file_trusted(file, dir) -> true | false, why. file lies in dir.
function trust.project_file_trusted(file, dir)
  local real = trust.realdir(dir)
  if not real then return false, "its directory " .. dir .. " cannot be entered" end
  local rel = file:sub(#dir + 2)
  local e = read().dirs[real]
  if not e then return false, "is in " .. real .. ", a directory you have not trusted" end
  local recorded = (e.files or {})[rel]
  if not recorded then
    return false, "is new since you trusted " .. real .. (e.at and (" (" .. e.at .. ")") or "")
  end
  local ok, sha = pcall(require("gpurent.util.hash").sha256_file, file)
  if not ok or sha ~= recorded then
    return false, "has changed since you trusted " .. real .. (e.at and (" (" .. e.at .. ")") or "")
  end
  return true
end

-- trust.vouch(file, dir, what): refuse (exit 3) unless file, found in project dir
-- `dir`, is one the person trusted. `what` says what gpurent was about to do with it.
function trust.vouch(file, dir, what)
  local ok, why = trust.project_file_trusted(file, dir)
  if ok then return true end
  errors.refuse(string.format(
    "refused to %s %s: it %s. A directory you cloned or downloaded can steer gpurent only " ..
    "after you trust it: read the file, then run `gpurent trust %s`", what, file, why,
    trust.realdir(dir) or dir), 0)
end

-- The project's lua/ (host.c's module searcher calls this for a file under it).
-- gpurent's own library can itself be the project's lua/ (running from a source tree).
function trust.vouch_module(file)
  local host = require("gpurent.core").host
  local project_lua = host.project_lua
  local lib_real = trust.realdir(host.share_dir .. "/lua")
  if lib_real and trust.realdir(project_lua) == lib_real then return true end
  return trust.vouch(file, host.project_dir, "load module")
end

return trust

-- gpurent.lib: team-shared recipe libraries. A library is a git repository cloned
-- into $GPURENT_DATA_DIR/libs/<name> (else $XDG_DATA_HOME/gpurent, else
-- ~/.local/share/gpurent) and pinned to a commit in a lock file: the project's
-- gpurent.lock when there is one (nearest ancestor of the working directory; create
-- an empty one to start a project lock), else $XDG_CONFIG_HOME/gpurent/gpurent.lock.
-- `gpurent lib sync` makes a machine match the lock, so teammates run the same code.
--
-- Layout of a library (its repository root):
--   *.lua, dir/*.lua        modules:  require "NAME.mod"  -> <root>/mod.lua (or mod/init.lua)
--   any/recipe.lua          recipes:  gpurent run NAME/any/recipe.lua
--   profiles/*.yaml         profile overlays; two libraries shipping the same overlay
--                           name is an error naming both (lib.overlays)
--
-- Trust: libraries are code. `lib add` prints the source and the commit it is about
-- to trust; the lock pins that commit and `lib update` shows old and new. Library code
-- is loaded like any other module (a package.searchers entry, no special environment),
-- so it has the powers of a recipe and nothing more. In particular it never gains the
-- approval capability of the teardown gate: approval is granted only by the host, from
-- the command line (`--approve <instance>`) or a typed TTY confirmation, and there is
-- no Lua API that sets it. Note the limit of that promise: a library can spawn
-- processes like any recipe (os.execute), so the host must not accept approval from a
-- gpurent started by another gpurent; that check belongs with the gate.
-- A project's gpurent.lock may have come with a clone, so the libraries it pins are
-- loaded (require, gpurent run NAME/...) only once the person trusted the project
-- (`gpurent trust`, lua/gpurent/trust.lua); the person's own lib add/update/remove
-- re-records the lock it writes, unless the lock held entries nobody trusted.
local fs = require "gpurent.fs"
local json = require "gpurent.json"

local lib = {}

local function env(k)
  local v = os.getenv(k)
  return v ~= "" and v or nil
end

local function home()
  return env("HOME") or error("gpurent lib: HOME is not set", 0)
end

function lib.data_dir()
  return env("GPURENT_DATA_DIR") or ((env("XDG_DATA_HOME") or (home() .. "/.local/share")) .. "/gpurent")
end

function lib.config_dir()
  return (env("XDG_CONFIG_HOME") or (home() .. "/.config")) .. "/gpurent"
end

function lib.libs_dir() return lib.data_dir() .. "/libs" end

function lib.valid_name(name)
  return type(name) == "string" and name:match("^[%a_][%w_]*$") ~= nil
end

-- The lock in effect: the project's gpurent.lock if there is one, else the user's.
function lib.lock_path()
  local project = gpurent.project_dir() .. "/gpurent.lock"
  if fs.exists(project) then return project, "project" end
  return lib.config_dir() .. "/gpurent.lock", "user"
end

-- {libraries = {name = {source =, ref =, commit =}}}; a missing or empty file is empty.
function lib.read_lock(path)
  path = path or lib.lock_path()
  if not fs.exists(path) then return {libraries = {}} end
  local text = fs.read_file(path)
  if text:match("^%s*$") then return {libraries = {}} end
  local t = json.decode(text, path)
  if type(t) ~= "table" or type(t.libraries or {}) ~= "table" then
    error(path .. ": not a gpurent lock file (expected {\"libraries\": {...}})", 0)
  end
  t.libraries = t.libraries or {}
  for name, e in pairs(t.libraries) do
    if not lib.valid_name(name) or type(e) ~= "table" or type(e.source) ~= "string"
        or type(e.commit) ~= "string" then
      error(path .. ": library entry " .. tostring(name) .. " needs a valid name, source and commit", 0)
    end
  end
  return t
end

-- A project's gpurent.lock names the code `require "NAME.mod"` and `gpurent run
-- NAME/...` load, so a project lock is used only once the person trusted it (issue
-- 14: a cloned project's lock could point at anyone's repository). The user lock lives
-- in the person's config dir and needs no vouching.
function lib.vouch_lock(path, scope)
  if scope ~= "project" then return end
  require("gpurent.trust").vouch(path, gpurent.project_dir(), "use the libraries pinned in")
end

-- Whether the project lock at path holds nothing a stranger could have put there:
-- absent, blank, or unchanged since the person trusted it.
local function lock_is_ours(path)
  local text = fs.read_if_exists(path)
  if text == nil or text:match("^%s*$") then return true end
  return (require("gpurent.trust").project_file_trusted(path, gpurent.project_dir()))
end

function lib.write_lock(path, lock)
  local dir = path:match("^(.*)/[^/]*$")
  if dir and dir ~= "" then fs.mkdirs(dir) end
  local project = path == gpurent.project_dir() .. "/gpurent.lock"
  local ours = project and lock_is_ours(path)
  fs.atomic_write(path, json.encode_stable({gpurent_lock = 1, libraries = lock.libraries}))
  -- the person's own lib add/update/remove keeps their lock trusted; it never
  -- blesses entries a stranger wrote (then `gpurent trust` is still needed)
  if ours then require("gpurent.trust").record_file(gpurent.project_dir(), "gpurent.lock") end
end

-- ---- git (a subprocess; libraries are fetched rarely) ------------------------------

local q = require("gpurent.shell").quote

-- git(dir, args...) -> output; raises with git's own words. dir may be nil.
local function git(dir, ...)
  local words = {}
  for i, a in ipairs({...}) do words[i] = q(a) end
  local cmd = "GIT_TERMINAL_PROMPT=0 git " .. (dir and ("-C " .. q(dir) .. " ") or "") .. table.concat(words, " ") .. " 2>&1"
  local p = assert(io.popen(cmd, "r"))
  local out = p:read("a")
  local ok, _, code = p:close()
  if not ok then
    error(string.format("git %s%s failed (exit %s): %s", dir and ("-C " .. dir .. " ") or "",
      table.concat({...}, " "), tostring(code), (out:gsub("%s+$", ""))), 0)
  end
  return out
end

local function git_ok(dir, ...)
  local ok, out = pcall(git, dir, ...)
  return ok and out or nil
end

local function trim(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end

-- A ref names a commit: a remote branch first (it moves on fetch), then a tag or a commit.
local function resolve(dir, ref)
  for _, cand in ipairs({"refs/remotes/origin/" .. ref, ref}) do
    local out = git_ok(dir, "rev-parse", "--verify", "--quiet", cand .. "^{commit}")
    if out then return trim(out) end
  end
  error("library ref " .. ref .. " names no commit in " .. dir, 0)
end

local function head(dir) return trim(git(dir, "rev-parse", "HEAD")) end

function lib.is_dirty(dir)
  return trim(git(dir, "status", "--porcelain")) ~= ""
end

local function origin_url(dir) return trim(git_ok(dir, "remote", "get-url", "origin") or "") end

-- A source is a URL (scheme:// or user@host:path) or a local path, made absolute so
-- the lock works from any directory.
local function normalize_source(source)
  if source:match("^%a[%w+.-]*://") or source:match("^[%w._-]+@[^:/]+:") then return source end
  local abs = source:sub(1, 1) == "/" and source or (fs.currentdir() .. "/" .. source)
  abs = abs:gsub("/%./", "/"):gsub("/%.$", ""):gsub("/+$", "")
  if not fs.is_dir(abs) then error("library source " .. source .. " is neither a URL nor a directory", 0) end
  return abs
end

local function rmtree(path)
  if not path:find(lib.libs_dir(), 1, true) then error("refusing to remove " .. path .. " (outside " .. lib.libs_dir() .. ")", 0) end
  local ok = os.execute("rm -rf -- " .. q(path))
  if not ok then error("cannot remove " .. path, 0) end
end

-- Clone source into a temporary directory beside the final one; returns it.
local function clone_tmp(name, source)
  fs.mkdirs(lib.libs_dir())
  local tmp = string.format("%s/.%s.tmp-%d", lib.libs_dir(), name, require("gpurent.core").sys.getpid())
  if fs.exists(tmp) then rmtree(tmp) end
  local ok, err = pcall(git, nil, "clone", "--quiet", "--no-checkout", "--", source, tmp)
  if not ok then
    if fs.exists(tmp) then rmtree(tmp) end
    error(err, 0)
  end
  return tmp
end

local function checkout(dir, commit) git(dir, "checkout", "--quiet", "--detach", commit) end

local function install(tmp, dest)
  local ok, err = os.rename(tmp, dest)
  if not ok then rmtree(tmp); error("cannot move " .. tmp .. " to " .. dest .. ": " .. tostring(err), 0) end
end

-- ---- what the libraries provide --------------------------------------------------

-- name -> {dir, source, ref, commit} for the libraries in the lock in effect.
function lib.installed(lock)
  lock = lock or lib.read_lock()
  local out = {}
  for name, e in pairs(lock.libraries) do
    out[name] = {name = name, dir = lib.libs_dir() .. "/" .. name, source = e.source, ref = e.ref, commit = e.commit}
  end
  return out
end

-- Profile overlays by file name; two libraries shipping one is an error naming both.
-- dirs: name -> library directory; labels (optional): name -> how to name a library
-- not yet installed (its source) instead of its temporary directory.
function lib.overlays(dirs, labels)
  labels = labels or {}
  local seen, names = {}, {}
  for name in pairs(dirs) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    local pdir = dirs[name] .. "/profiles"
    if fs.is_dir(pdir) then
      for f in fs.dir(pdir) do
        if f:match("%.ya?ml$") then
          local key = f:gsub("%.ya?ml$", "")
          local here = labels[name] and (labels[name] .. ": profiles/" .. f) or (pdir .. "/" .. f)
          if seen[key] then
            error(string.format("library clash: profile overlay %s is shipped by both library %s (%s) and library %s (%s)",
              key, seen[key].lib, seen[key].where, name, here), 0)
          end
          seen[key] = {lib = name, path = pdir .. "/" .. f, where = here}
        end
      end
    end
  end
  return seen
end

local function dirs_with(installed, name, dir)
  local d = {}
  for n, e in pairs(installed) do d[n] = e.dir end
  if name then d[name] = dir end
  return d
end

-- gpurent run NAME/path.lua: the file inside library NAME, when no such local file exists.
function lib.resolve_recipe(file)
  if fs.exists(file) then return nil end
  local name, rest = file:match("^([%a_][%w_]*)/(.+)$")
  if not name then return nil end
  local lockpath, scope = lib.lock_path()
  local e = lib.installed(lib.read_lock(lockpath))[name]
  if not e then return nil end
  lib.vouch_lock(lockpath, scope)
  local path = e.dir .. "/" .. rest
  if not fs.exists(path) then
    if not fs.is_dir(e.dir) then error("library " .. name .. " is in the lock but not on this machine; run gpurent lib sync", 0) end
    error("library " .. name .. " has no recipe " .. rest .. " (looked in " .. e.dir .. ")", 0)
  end
  return path
end

-- require "NAME.mod" for a library NAME in the lock: appended to package.searchers,
-- so gpurent's own modules and the project's are found first. The lock is read only
-- when a module is not found elsewhere.
local searcher_installed = false
-- lib.search_module(modname): a package.searchers entry for "NAME.module" in an
-- installed library. init.lua installs a lazy one that loads this file on a miss.
function lib.search_module(modname)
  local name, rest = modname:match("^([^.]+)%.?(.*)$")
  if not lib.valid_name(name) then return nil end
  local lockpath, scope = lib.lock_path()
  local e = lib.installed(lib.read_lock(lockpath))[name]
  if not e then return "\n\tno gpurent library '" .. name .. "' in " .. lockpath end
  lib.vouch_lock(lockpath, scope)
  local path, err = package.searchpath(rest == "" and "init" or rest, e.dir .. "/?.lua;" .. e.dir .. "/?/init.lua")
  if not path then return "\n\tin gpurent library " .. name .. ":" .. err end
  local chunk, lerr = loadfile(path)
  if not chunk then error(lerr, 0) end
  return chunk, path
end

function lib.install_searcher()
  if searcher_installed or (rawget(_G, "gpurent") and gpurent.lib_searcher_installed) then return end
  searcher_installed = true
  table.insert(package.searchers, lib.search_module)
end

-- ---- the verbs --------------------------------------------------------------------

local function say(out, ...) out:write(...) end

local function check_name_free(name, src, lock, lockpath)
  if not lib.valid_name(name) then
    gpurent.usage_error("library name " .. string.format("%q", name) .. " must be a Lua identifier (letters, digits, _)", 0)
  end
  local e = lock.libraries[name]
  if e then
    error(string.format("library clash: %s is already added from %s (commit %s) in %s; the new source would be %s" ..
      " (gpurent lib remove %s first)", name, e.source, e.commit, lockpath, src, name), 0)
  end
  if name == "gpurent" then error("library clash: the name gpurent is gpurent's own module namespace", 0) end
  if package.preload[name] or package.loaded[name] then
    error("library clash: the name " .. name .. " is already a module gpurent loads", 0)
  end
  local path = package.searchpath(name, package.path) or package.searchpath(name, package.cpath)
  if path then error("library clash: the name " .. name .. " is already a module on the search path (" .. path .. ")", 0) end
end

function lib.add(name, source, ref, out)
  out = out or io.stdout
  local lockpath, scope = lib.lock_path()
  local lock = lib.read_lock(lockpath)
  local src = normalize_source(source)
  check_name_free(name, src, lock, lockpath)
  local dest = lib.libs_dir() .. "/" .. name
  local tmp
  if fs.exists(dest) then
    -- another project's lock may already have it checked out: reuse only the same source
    if origin_url(dest) ~= src then
      error(string.format("library clash: %s is already checked out from %s (in %s), not %s", name,
        origin_url(dest), dest, src), 0)
    end
    if lib.is_dirty(dest) then error("library " .. name .. " has local changes in " .. dest .. "; commit or discard them first", 0) end
    git(dest, "fetch", "--quiet", "--tags", "--force", "origin")
  else
    tmp = clone_tmp(name, src)
  end
  local work = tmp or dest
  local ok2, e2 = pcall(function()
    ref = ref or trim(git(work, "symbolic-ref", "--short", "HEAD"))
    local commit = resolve(work, ref)
    checkout(work, commit)
    lib.overlays(dirs_with(lib.installed(lock), name, work), {[name] = "new, from " .. src})
    return commit
  end)
  if not ok2 then if tmp then rmtree(tmp) end; error(e2, 0) end
  local commit = e2
  say(out, "trusting library ", name, ": code from ", src, "\n  ref    ", ref, "\n  commit ", commit, "\n",
    "  it runs with your privileges like any recipe (it cannot approve teardown)\n")
  if tmp then install(tmp, dest) end
  lock.libraries[name] = {source = src, ref = ref, commit = commit}
  lib.write_lock(lockpath, lock)
  say(out, "added ", name, " (", dest, "), pinned in ", lockpath, " (", scope, " lock)\n")
  return commit
end

local function entry(lock, name, lockpath)
  local e = lock.libraries[name]
  if not e then gpurent.usage_error("no library " .. tostring(name) .. " in " .. lockpath, 0) end
  return e
end

function lib.update(name, out)
  out = out or io.stdout
  local lockpath = lib.lock_path()
  local lock = lib.read_lock(lockpath)
  local e = entry(lock, name, lockpath)
  local dir = lib.libs_dir() .. "/" .. name
  if not fs.is_dir(dir) then error("library " .. name .. " is not on this machine; run gpurent lib sync first", 0) end
  if lib.is_dirty(dir) then error("library " .. name .. " has local changes in " .. dir .. "; commit or discard them first", 0) end
  git(dir, "fetch", "--quiet", "--tags", "--force", "origin")
  local old = e.commit
  local new = resolve(dir, e.ref or "HEAD")
  checkout(dir, new)
  local ok, err = pcall(lib.overlays, dirs_with(lib.installed(lock), name, dir))
  if not ok then checkout(dir, old); error(err, 0) end
  if new == old then
    say(out, name, ": already at ", old, " (", e.ref or "HEAD", ")\n")
    return old, new
  end
  e.commit = new
  lib.write_lock(lockpath, lock)
  say(out, "updated ", name, " (", e.ref or "HEAD", ")\n  old ", old, "\n  new ", new, "\n")
  local log = git_ok(dir, "log", "--format=  %h %s", "--max-count=20", old .. ".." .. new)
  if log and log ~= "" then say(out, "commits:\n", log) end
  say(out, "pinned in ", lockpath, "\n")
  return old, new
end

function lib.remove(name, out)
  out = out or io.stdout
  local lockpath = lib.lock_path()
  local lock = lib.read_lock(lockpath)
  local e = entry(lock, name, lockpath)
  lock.libraries[name] = nil
  lib.write_lock(lockpath, lock)
  local dir = lib.libs_dir() .. "/" .. name
  if fs.exists(dir) then rmtree(dir) end
  say(out, "removed ", name, " (", e.source, " at ", e.commit, ") from ", lockpath, "\n")
end

-- Make this machine match the lock: clone what is missing, move checkouts to the pins.
function lib.sync(out)
  out = out or io.stdout
  local lockpath = lib.lock_path()
  local lock = lib.read_lock(lockpath)
  local names = {}
  for n in pairs(lock.libraries) do names[#names + 1] = n end
  table.sort(names)
  if #names == 0 then say(out, "no libraries in ", lockpath, "\n") end
  for _, name in ipairs(names) do
    local e = lock.libraries[name]
    local dir = lib.libs_dir() .. "/" .. name
    if not fs.exists(dir) then
      local tmp = clone_tmp(name, e.source)
      local ok, err = pcall(function()
        if not git_ok(tmp, "cat-file", "-e", e.commit .. "^{commit}") then
          error("library " .. name .. ": commit " .. e.commit .. " is not in " .. e.source, 0)
        end
        checkout(tmp, e.commit)
      end)
      if not ok then rmtree(tmp); error(err, 0) end
      install(tmp, dir)
      say(out, name, ": cloned ", e.source, " at ", e.commit, "\n")
    else
      if origin_url(dir) ~= e.source then
        error(string.format("library clash: %s in %s comes from %s, but %s pins %s", name, dir, origin_url(dir),
          lockpath, e.source), 0)
      end
      local at = head(dir)
      if at == e.commit then
        say(out, name, ": at ", e.commit, "\n")
      else
        if lib.is_dirty(dir) then error("library " .. name .. " has local changes in " .. dir .. "; commit or discard them first", 0) end
        if not git_ok(dir, "cat-file", "-e", e.commit .. "^{commit}") then
          git(dir, "fetch", "--quiet", "--tags", "--force", "origin")
        end
        if not git_ok(dir, "cat-file", "-e", e.commit .. "^{commit}") then
          error("library " .. name .. ": commit " .. e.commit .. " is not in " .. e.source, 0)
        end
        checkout(dir, e.commit)
        say(out, name, ": moved ", at, " -> ", e.commit, "\n")
      end
    end
  end
  lib.overlays(dirs_with(lib.installed(lock)))
end

-- Rows for `lib list`: name, source, ref, commit, dirty (yes/no/missing), note.
function lib.list()
  local lockpath, scope = lib.lock_path()
  local rows = {}
  for name, e in pairs(lib.installed(lib.read_lock(lockpath))) do
    local r = {name = name, source = e.source, ref = e.ref, commit = e.commit, dir = e.dir}
    if not fs.is_dir(e.dir) then
      r.dirty, r.note = "missing", "not on this machine (gpurent lib sync)"
    else
      r.dirty = lib.is_dirty(e.dir) and "yes" or "no"
      local at = git_ok(e.dir, "rev-parse", "HEAD")
      at = at and trim(at)
      if at ~= e.commit then r.note = "checkout is at " .. tostring(at) .. " (gpurent lib sync)" end
    end
    rows[#rows + 1] = r
  end
  table.sort(rows, function(a, b) return a.name < b.name end)
  return rows, lockpath, scope
end

return lib

-- gpurent.lib: team-shared recipe libraries. A library is a git repository pinned to
-- a commit in a lock file: the project's gpurent.lock when there is one (nearest
-- ancestor of the working directory; create an empty one to start a project lock),
-- else $XDG_CONFIG_HOME/gpurent/gpurent.lock. A checkout is per pinned commit:
-- $GPURENT_DATA_DIR/libs/<name>@<commit> (else $XDG_DATA_HOME/gpurent, else
-- ~/.local/share/gpurent), never moved once made, so two projects may use one name
-- for different sources or commits, and `lib update` in one never changes the code
-- another runs. <name>@<commit>.locks lists the locks that pinned it (checked against
-- the locks themselves), so `lib remove` deletes a checkout no other lock still pins.
-- `gpurent lib sync` makes a machine match the lock, so teammates run the same code.
-- A name is letters, digits, '_' and '-', starting with a letter or '_'
-- (`require "team-lib.mod"` maps to <checkout>/mod.lua).
--
-- Layout of a library (its repository root):
--   *.lua, dir/*.lua        modules:  require "NAME.mod"  -> <root>/mod.lua (or mod/init.lua)
--   any/recipe.lua          recipes:  gpurent run NAME/any/recipe.lua
--   profiles/*.yaml         profiles and overlays, found by name (`--profile NAME`): after
--                           the person's config dir, before gpurent's own (lib.profile_dirs,
--                           gpurent.profile); two libraries shipping the same name is an
--                           error naming both (lib.overlays)
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
-- (`gpurent trust`, lua/gpurent/config/trust.lua); the person's own lib add/update/remove
-- re-records the lock it writes, unless the lock held entries nobody trusted.
local fs = require "gpurent.util.fs"
local json = require "gpurent.util.json"

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

-- A library name: a directory name and the first part of `require "NAME.mod"`, so no
-- '.' or '/'; no leading '-' (it would read as an option).
function lib.valid_name(name)
  return type(name) == "string" and name:match("^[%a_][%w_%-]*$") ~= nil
end
lib.NAME_RULE = "letters, digits, '_' and '-', starting with a letter or '_'"

-- The lock in effect: the project's gpurent.lock if there is one, else the user's.
function lib.lock_path()
  local project = gpurent.project_dir() .. "/gpurent.lock"
  if fs.exists(project) then return project, "project" end
  return lib.config_dir() .. "/gpurent.lock", "user"
end

-- The checkout of library NAME at a pinned commit (one per commit, shared by every
-- lock that pins it; its content is that commit's).
function lib.checkout_dir(name, commit) return lib.libs_dir() .. "/" .. name .. "@" .. commit end

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
  require("gpurent.config.trust").vouch(path, gpurent.project_dir(), "use the libraries pinned in")
end

-- Whether the project lock at path holds nothing a stranger could have put there:
-- absent, blank, or unchanged since the person trusted it.
local function lock_is_ours(path)
  local text = fs.read_if_exists(path)
  if text == nil or text:match("^%s*$") then return true end
  return (require("gpurent.config.trust").project_file_trusted(path, gpurent.project_dir()))
end

function lib.write_lock(path, lock)
  local dir = path:match("^(.*)/[^/]*$")
  if dir and dir ~= "" then fs.mkdirs(dir) end
  local project = path == gpurent.project_dir() .. "/gpurent.lock"
  local ours = project and lock_is_ours(path)
  fs.atomic_write(path, json.encode_stable({gpurent_lock = 1, libraries = lock.libraries}))
  -- the person's own lib add/update/remove keeps their lock trusted; it never
  -- blesses entries a stranger wrote (then `gpurent trust` is still needed)
  if ours then require("gpurent.config.trust").record_file(gpurent.project_dir(), "gpurent.lock") end
end

-- ---- git (a subprocess; libraries are fetched rarely) ------------------------------

local q = require("gpurent.util.shell").quote

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

-- What `git status --porcelain` lists in a checkout: {"M util.lua", "?? new.lua", ...}.
function lib.changed_files(dir)
  local out = {}
  for line in git(dir, "status", "--porcelain", "--untracked-files=all"):gmatch("[^\n]+") do
    out[#out + 1] = trim(line)
  end
  return out
end

function lib.is_dirty(dir) return #lib.changed_files(dir) > 0 end

-- "library NAME has local changes in DIR (M util.lua, ?? new.lua); ..." naming up to 10 files.
local function dirty_message(name, dir, what)
  local files = lib.changed_files(dir)
  local shown = table.concat(files, ", ", 1, math.min(#files, 10))
  if #files > 10 then shown = shown .. string.format(", and %d more", #files - 10) end
  return string.format("library %s has local changes in %s (%s); %s", name, dir, shown, what)
end

local function refuse_dirty(name, dir)
  if lib.is_dirty(dir) then error(dirty_message(name, dir, "commit or discard them first"), 0) end
end

-- The branch a clone follows when no --ref is given: its HEAD's branch, or (in a
-- detached checkout) the remote's default branch.
local function default_ref(dir)
  local b = git_ok(dir, "symbolic-ref", "--quiet", "--short", "HEAD")
  if b and trim(b) ~= "" then return trim(b) end
  b = git_ok(dir, "symbolic-ref", "--quiet", "--short", "refs/remotes/origin/HEAD")
  if b and trim(b) ~= "" then return (trim(b):gsub("^origin/", "")) end
  error("cannot tell which branch of " .. dir .. " to follow: name one with --ref", 0)
end


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
  local libs = lib.libs_dir() .. "/"
  if path:sub(1, #libs) ~= libs or path:find("/../", 1, true) then error("refusing to remove " .. path .. " (outside " .. lib.libs_dir() .. ")", 0) end
  local ok = os.execute("rm -rf -- " .. q(path))
  if not ok then error("cannot remove " .. path, 0) end
end

-- Clone source into a temporary directory beside the final one (dest); returns it.
local function clone_tmp(dest, source)
  local parent, name = dest:match("^(.*)/([^/]+)$")
  fs.mkdirs(parent)
  local tmp = string.format("%s/.%s.tmp-%d", parent, name, require("gpurent.core").sys.getpid())
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
    out[name] = {name = name, dir = lib.checkout_dir(name, e.commit), source = e.source, ref = e.ref, commit = e.commit}
  end
  return out
end

-- ---- which locks use a checkout ------------------------------------------------------

local function users_file(name, commit) return lib.checkout_dir(name, commit) .. ".locks" end

local function read_users(name, commit)
  local out = {}
  for line in (fs.read_if_exists(users_file(name, commit)) or ""):gmatch("[^\n]+") do out[#out + 1] = line end
  return out
end

local function write_users(name, commit, list)
  fs.mkdirs(lib.libs_dir())
  fs.atomic_write(users_file(name, commit), #list > 0 and (table.concat(list, "\n") .. "\n") or "")
end

local function add_user(name, commit, lockpath)
  local list = read_users(name, commit)
  for _, p in ipairs(list) do if p == lockpath then return end end
  list[#list + 1] = lockpath
  write_users(name, commit, list)
end

-- Drop lockpath from the checkout's users; returns the other locks that still pin
-- name at commit (each re-read: a lock since moved on or deleted is no user).
local function drop_user(name, commit, lockpath)
  local still = {}
  for _, p in ipairs(read_users(name, commit)) do
    if p ~= lockpath then
      local ok, l = pcall(lib.read_lock, p)
      local e = ok and fs.exists(p) and l.libraries[name]
      if e and e.commit == commit then still[#still + 1] = p end
    end
  end
  write_users(name, commit, still)
  return still
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

-- The profiles/ directories of the libraries in the lock in effect, for
-- gpurent.profile's search: {{dir =, name =, lockpath =, scope =, missing =}, ...} by
-- name. missing: pinned, but not checked out on this machine (gpurent lib sync).
function lib.profile_dirs()
  -- no home directory: no config dir and no data dir, so no lock or checkout to read
  if not env("HOME") and not (env("XDG_CONFIG_HOME") and (env("GPURENT_DATA_DIR") or env("XDG_DATA_HOME"))) then
    return {}
  end
  local lockpath, scope = lib.lock_path()
  local out = {}
  for name, e in pairs(lib.installed(lib.read_lock(lockpath))) do
    local missing = not fs.is_dir(e.dir)
    if missing or fs.is_dir(e.dir .. "/profiles") then
      out[#out + 1] = {dir = e.dir .. "/profiles", name = name, lockpath = lockpath, scope = scope, missing = missing}
    end
  end
  table.sort(out, function(a, b) return a.name < b.name end)
  return out
end

-- Lines naming the profiles a checkout provides, and which of gpurent's own it shadows.
local function profiles_text(dir)
  local lines, pdir = {}, dir .. "/profiles"
  if not fs.is_dir(pdir) then return "" end
  local share = rawget(_G, "gpurent") and gpurent.share_dir and gpurent.share_dir()
  for f in fs.dir(pdir) do
    local key = f:match("^(.+)%.ya?ml$")
    if key then
      local own = share and fs.exists(share .. "/profiles/" .. key .. ".yaml")
      lines[#lines + 1] = "  profile " .. key .. (own and (" (shadows gpurent's own " .. key ..
        ": --profile " .. key .. " loads this one, under this lock)") or " (--profile " .. key .. ")")
    end
  end
  table.sort(lines)
  return #lines > 0 and (table.concat(lines, "\n") .. "\n") or ""
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
  local name, rest = file:match("^([%a_][%w_%-]*)/(.+)$")
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
    gpurent.usage_error("library name " .. string.format("%q", name) .. ": use " .. lib.NAME_RULE, 0)
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

-- A checkout of commit made from tmp (a clone), unless one exists: then tmp goes.
-- Returns the checkout's directory.
local function settle(name, commit, tmp)
  local dest = lib.checkout_dir(name, commit)
  if fs.exists(dest) then
    rmtree(tmp)
    refuse_dirty(name, dest)
    return dest
  end
  install(tmp, dest)
  return dest
end

function lib.add(name, source, ref, out)
  out = out or io.stdout
  local lockpath, scope = lib.lock_path()
  local lock = lib.read_lock(lockpath)
  local src = normalize_source(source)
  check_name_free(name, src, lock, lockpath)
  local tmp = clone_tmp(lib.libs_dir() .. "/" .. name, src)
  local ok, commit = pcall(function()
    ref = ref or default_ref(tmp)
    local c = resolve(tmp, ref)
    checkout(tmp, c)
    lib.overlays(dirs_with(lib.installed(lock), name, tmp), {[name] = "new, from " .. src})
    return c
  end)
  if not ok then rmtree(tmp); error(commit, 0) end
  say(out, "trusting library ", name, ": code from ", src, "\n  ref    ", ref, "\n  commit ", commit, "\n",
    "  it runs with your privileges like any recipe (it cannot approve teardown)\n", profiles_text(tmp))
  local dest = settle(name, commit, tmp)
  lock.libraries[name] = {source = src, ref = ref, commit = commit}
  lib.write_lock(lockpath, lock)
  add_user(name, commit, lockpath)
  say(out, "added ", name, " (", dest, "), pinned in ", lockpath, " (", scope, " lock)\n")
  return commit
end

local function entry(lock, name, lockpath)
  local e = lock.libraries[name]
  if not e then gpurent.usage_error("no library " .. tostring(name) .. " in " .. lockpath, 0) end
  return e
end

-- Stop using the checkout of name at commit from lockpath; delete it when no other
-- lock pins it. Returns the locks that still do.
local function release_checkout(name, commit, lockpath)
  local still = drop_user(name, commit, lockpath)
  local dir = lib.checkout_dir(name, commit)
  if #still == 0 then
    if fs.exists(dir) then rmtree(dir) end
    os.remove(users_file(name, commit))
  end
  return still
end

-- The new commit's checkout, made from the old one (a local clone shares its objects,
-- including what the fetch brought), its origin still the library's source.
local function checkout_from(name, old_dir, source, commit)
  if fs.exists(lib.checkout_dir(name, commit)) then return lib.checkout_dir(name, commit), nil end
  local tmp = clone_tmp(lib.libs_dir() .. "/" .. name, old_dir)
  local ok, err = pcall(function()
    git(tmp, "remote", "set-url", "origin", source)
    checkout(tmp, commit)
  end)
  if not ok then rmtree(tmp); error(err, 0) end
  return tmp, tmp
end

function lib.update(name, out)
  out = out or io.stdout
  local lockpath = lib.lock_path()
  local lock = lib.read_lock(lockpath)
  local e = entry(lock, name, lockpath)
  local old = e.commit
  local dir = lib.checkout_dir(name, old)
  if not fs.is_dir(dir) then error("library " .. name .. " is not on this machine; run gpurent lib sync first", 0) end
  refuse_dirty(name, dir)
  git(dir, "fetch", "--quiet", "--tags", "--force", "origin")
  local new = resolve(dir, e.ref or "HEAD")
  if new == old then
    say(out, name, ": already at ", old, " (", e.ref or "HEAD", ")\n")
    return old, new
  end
  local work, tmp = checkout_from(name, dir, e.source, new)
  local ok, err = pcall(lib.overlays, dirs_with(lib.installed(lock), name, work))
  if not ok then if tmp then rmtree(tmp) end; error(err, 0) end
  if tmp then settle(name, new, tmp) end
  e.commit = new
  lib.write_lock(lockpath, lock)
  add_user(name, new, lockpath)
  say(out, "updated ", name, " (", e.ref or "HEAD", ")\n  old ", old, "\n  new ", new, "\n")
  local log = git_ok(dir, "log", "--format=  %h %s", "--max-count=20", old .. ".." .. new)
  if log and log ~= "" then say(out, "commits:\n", log) end
  release_checkout(name, old, lockpath)
  say(out, "pinned in ", lockpath, "\n")
  return old, new
end

-- Drop the pin, and the checkout unless another lock pins the same commit. A checkout
-- with local changes is work the person may still want: refused (naming the files)
-- unless opts.force.
function lib.remove(name, out, opts)
  out, opts = out or io.stdout, opts or {}
  local lockpath = lib.lock_path()
  local lock = lib.read_lock(lockpath)
  local e = entry(lock, name, lockpath)
  local dir = lib.checkout_dir(name, e.commit)
  local dirty = fs.is_dir(dir) and lib.is_dirty(dir)
  if dirty and not opts.force then
    error(dirty_message(name, dir, "commit or copy them elsewhere, or discard them with gpurent lib remove " ..
      name .. " --force"), 0)
  end
  lock.libraries[name] = nil
  lib.write_lock(lockpath, lock)
  local still = release_checkout(name, e.commit, lockpath)
  say(out, "removed ", name, " (", e.source, " at ", e.commit, ") from ", lockpath,
    (dirty and #still == 0) and ", discarding its local changes (--force)" or "", "\n")
  if #still > 0 then say(out, "  checkout ", dir, " kept: also pinned by ", table.concat(still, ", "), "\n") end
end

-- A checkout of the pinned commit, cloned from the source.
local function sync_clone(name, e)
  local tmp = clone_tmp(lib.libs_dir() .. "/" .. name, e.source)
  local ok, err = pcall(function()
    if not git_ok(tmp, "cat-file", "-e", e.commit .. "^{commit}") then
      error("library " .. name .. ": commit " .. e.commit .. " is not in " .. e.source, 0)
    end
    checkout(tmp, e.commit)
  end)
  if not ok then rmtree(tmp); error(err, 0) end
  settle(name, e.commit, tmp)
end

-- Make this machine match the lock: clone what is missing; a checkout whose HEAD
-- was moved by hand goes back to its commit.
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
    local dir = lib.checkout_dir(name, e.commit)
    if not fs.exists(dir) then
      sync_clone(name, e)
      say(out, name, ": cloned ", e.source, " at ", e.commit, "\n")
    else
      local at = head(dir)
      if at == e.commit then
        say(out, name, ": at ", e.commit, "\n")
      else
        refuse_dirty(name, dir)
        checkout(dir, e.commit)
        say(out, name, ": moved ", at, " -> ", e.commit, "\n")
      end
    end
    add_user(name, e.commit, lockpath)
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

-- Phase 2, prepare (LIFECYCLE.md): the run's identity and the cheap gate before
-- any paid time: a unique run id (checked against the box), code/config/data
-- identities bound into run.json (git commit or a tree hash, SHA-256 per file), and
-- a local CPU smoke command whose failure stops the recipe before anything is
-- launched remotely.
--
--   needs {run, inst} -> produces {code = {dir, files = {{path, bytes, sha256}}, tree_sha256},
--                                  run_json = {doc, path}}
--   opts: code_dir (required), smoke (a shell command run locally in code_dir; {tmp}
--         is a fresh temp dir, {python} the local python3), smoke_timeout (300 s),
--         config_files {paths}, data {paths}, params {k=v} (recorded as given)
--   prepare.tree(dir) -> {files = {{path, bytes, sha256}...}, tree_sha256 =}
--   prepare.git(dir) -> {commit =, dirty = bool} | nil
local fs = require "gpurent.util.fs"
local hash = require "gpurent.util.hash"
local json = require "gpurent.util.json"
local ledger = require "gpurent.state.ledger"
local errors = require "gpurent.util.errors"

local prepare = {name = "prepare", needs = {"run", "inst"}, produces = {"code", "run_json"}}

local q = require("gpurent.util.shell").quote

local SKIP = {[".git"] = true, ["__pycache__"] = true, [".DS_Store"] = true}

-- Every regular file under dir (sorted), with its size and SHA-256; the tree hash
-- is the SHA-256 of "path\0sha256\n" lines, so it names the content, not the mtimes.
function prepare.tree(dir)
  local files = {}
  local function walk(rel)
    local full = rel == "" and dir or (dir .. "/" .. rel)
    local names = {}
    for n in fs.dir(full) do
      if n ~= "." and n ~= ".." and not SKIP[n] and not n:match("%.pyc$") then names[#names + 1] = n end
    end
    table.sort(names)
    for _, n in ipairs(names) do
      local r = rel == "" and n or (rel .. "/" .. n)
      local mode = fs.symlinkattributes(dir .. "/" .. r, "mode")
      if mode == "directory" then walk(r)
      elseif mode == "file" then
        local hex, bytes = hash.sha256_file(dir .. "/" .. r)
        files[#files + 1] = {path = r, bytes = bytes, sha256 = hex}
      end
    end
  end
  walk("")
  local h = hash.sha256_new()
  for _, f in ipairs(files) do h:update(f.path .. "\0" .. f.sha256 .. "\n") end
  return {files = files, tree_sha256 = h:hex()}
end

local function capture(cmd)
  local pipe = io.popen(cmd .. " 2>/dev/null")
  if not pipe then return nil end
  local out = pipe:read("a")
  local ok = pipe:close()
  return ok and out or nil
end

function prepare.git(dir)
  local commit = capture("git -C " .. q(dir) .. " rev-parse HEAD")
  if not commit or not commit:match("^%x+") then return nil end
  local status = capture("git -C " .. q(dir) .. " status --porcelain -- .") or ""
  return {commit = commit:match("%x+"), dirty = status:match("%S") ~= nil}
end

-- Run the local smoke command; every line shown; its exit status is the gate.
function prepare.smoke(r, cmd, o)
  local tmp = os.tmpname()
  os.remove(tmp)
  fs.mkdirs(tmp)
  local line = cmd:gsub("{tmp}", function() return q(tmp) end):gsub("{python}", "python3")
  local timeout = o.smoke_timeout or 300
  local full = string.format("cd %s && timeout %d sh -c %s 2>&1", q(o.code_dir), timeout, q(line))
  r:say("prepare", "local CPU smoke: %s", line)
  local pipe = assert(io.popen(full))
  for l in pipe:lines() do r:say("prepare", "  smoke| %s", l) end
  local ok, how, code = pipe:close()
  os.execute("rm -rf " .. q(tmp))
  if not ok then
    errors.refuse(string.format("prepare: the local smoke command failed (%s %s): nothing was launched on %s",
      tostring(how), tostring(code), r.host), 0)
  end
  r:say("prepare", "smoke passed")
end

function prepare.run(ctx, o)
  o = o or {}
  local inst, r = require("gpurent.lifecycle").session(ctx), ctx.run
  if not o.code_dir or not fs.is_dir(o.code_dir) then
    errors.usage("prepare: code_dir " .. tostring(o.code_dir) .. " is not a directory", 0)
  end
  -- the run id must be new on the box too (an id is never reused)
  local res = inst:sh("for d in " .. q(r.paths.active) .. " " .. q(r.paths.export) .. " " .. q(r.paths.partial) ..
    "; do [ -e \"$d\" ] && echo \"exists $d\"; done; true", {timeout = 60, idempotent = true})
  local clash = res.stdout:match("exists ([^\n]+)")
  if clash then errors.refuse("prepare: run id " .. r.id .. " is already used on " .. r.host .. " (" .. clash .. ")", 0) end
  r:say("prepare", "run id %s (unique on %s)", r.id, r.host)
  local tree = prepare.tree(o.code_dir)
  if #tree.files == 0 then errors.usage("prepare: code_dir " .. o.code_dir .. " holds no files", 0) end
  local git = prepare.git(o.code_dir)
  local code = {dir = o.code_dir, tree_sha256 = tree.tree_sha256, files = json.array(tree.files)}
  if git then code.git_commit, code.git_dirty = git.commit, git.dirty end
  r:say("prepare", "code %s: %d files, tree sha256 %s%s", o.code_dir, #tree.files, tree.tree_sha256:sub(1, 16),
    git and string.format(", git %s%s", git.commit:sub(1, 12), git.dirty and " (uncommitted changes)" or "") or "")
  local function hashes(list)
    local out = {}
    for _, pth in ipairs(list or {}) do
      if not fs.exists(pth) then errors.usage("prepare: " .. pth .. " does not exist", 0) end
      local hex, bytes = hash.sha256_file(pth)
      out[#out + 1] = {path = pth, bytes = bytes, sha256 = hex}
    end
    return json.array(out)
  end
  local doc = {
    run_id = r.id, project = r.project, host = r.host, profile = r.profile_name,
    created_at_utc = os.date("!%Y-%m-%dT%H:%M:%S+00:00"), recipe = r.recipe,
    code = code, configs = hashes(o.config_files), data = hashes(o.data),
    command = o.command, params = o.params,
  }
  local dir = ledger.state_dir() .. "/runs/" .. r.id
  fs.mkdirs(dir)
  local path = dir .. "/run.json"
  fs.atomic_write(path, json.encode_stable(doc))
  r:say("prepare", "identities bound into %s", path)
  if o.smoke and o.smoke ~= "" then prepare.smoke(r, o.smoke, o)
  else r:say("prepare", "no smoke command given: skipping the local CPU smoke test (not recommended)") end
  return {code = {dir = o.code_dir, files = tree.files, tree_sha256 = tree.tree_sha256},
          run_json = {doc = doc, path = path}}
end

return setmetatable(prepare, {__call = function(_, ...) return prepare.run(...) end})

-- Phase 5b, pull (LIFECYCLE.md, MANIFEST.md): from an explicit expected roster,
-- checked-sync each sealed capsule to the durable tier, write PULL_MANIFEST.json
-- there (path, bytes, SHA-256 per file, built from the roster - never from a
-- directory listing, which is only used to refuse unexpected entries), pull the
-- result root resumably, and verify it locally (exact file set, sizes, hashes,
-- checkpoints load with the user's command) before PULL_VERIFIED.json is written.
-- It runs under the run's finish lock (gpurent.run_lock): one puller at a time
-- writes the result root, its manifest and the local copy.
-- A count, a size heuristic or an old checkpoint is never evidence; zero files fail.
--
--   needs {run, inst} (uses cells when given) -> produces {verified = {result_root =,
--         local_dir =, manifest =, verified =, bundle =}}
--   opts: roster (capsule files per result dir; capsule.DEFAULT_ROSTER), cells (result
--         directory names = run ids; ctx.cells, else {r.id}), bundle (result root name; r.id),
--         load_cmd (local command, {} = the checkpoint path), local_dir (r.local_dir),
--         required (files every result dir must hold; manifest.REQUIRED)
--   pull.remote_manifest_reader(inst, r, bundle) -> fn() -> text, label   (for the gate)
--   pull.fetch(inst, r, opts) -> the verified table, under the finish lock, outside a lifecycle
local storage = require "gpurent.lifecycle.storage"
local manifest = require "gpurent.lifecycle.manifest"
local json = require "gpurent.util.json"
local hash = require "gpurent.util.hash"
local fs = require "gpurent.util.fs"
local errors = require "gpurent.util.errors"
local run_lock = require "gpurent.lifecycle.run_lock"
local remote = require "gpurent.remote"
local capsule = require "gpurent.lifecycle.capsule"

local pull = {name = "pull", needs = {"run", "inst"}, produces = {"verified"}, finishes = true,
  report = function(ctx) return "verified results in " .. ctx.verified.local_dir end}
local q = storage.q

function pull.result_root(r, bundle)
  if not r.paths.results then errors.usage("pull: profile " .. r.profile_name .. " has no durable tier", 0) end
  return r.paths.results .. "/" .. (bundle or r.id)
end

local function dirname(p) return p:match("^(.*)/[^/]*$") end
local function basename(p) return p:match("([^/]+)$") end

-- Facts about the result root: one line per roster file, then every entry present.
-- (on the box: lua/gpurent/remote/pull_facts.sh)

-- The manifest table exactly as manifest.build makes it (MANIFEST.md), from facts
-- read on the box: the builder itself walks a local tree, the box is remote.
function pull.build_remote(inst, root, cells, roster, o)
  local expected, want = {}, {}
  for _, c in ipairs(cells) do
    expected[c] = true
    for _, f in ipairs(roster) do want[#want + 1] = c .. "/" .. f end
  end
  local res = inst:sh(remote.script("pull_facts", {ROOT = root, FILES = remote.lines(want, "pull: roster")}),
    {timeout = o.timeout or 300})
  local files, problems, listed, total = {}, {}, {}, 0
  for _, f in ipairs(want) do listed[f] = true end
  local dirs_needed = {}
  for _, f in ipairs(want) do
    local d = dirname(f)
    while d do dirs_needed[d] = true; d = dirname(d) end
  end
  for line in res.stdout:gmatch("[^\n]+") do
    local bytes, hex, path = line:match("^file (%d+) (%x+) (.+)$")
    if bytes then
      files[#files + 1] = {path = path, bytes = tonumber(bytes), sha256 = hex}
      total = total + tonumber(bytes)
    elseif line:match("^missing ") then
      problems[#problems + 1] = line:sub(9) .. ": missing (named in the expected roster)"
    elseif line:match("^bad ") then
      problems[#problems + 1] = line:sub(5)
    else
      local e = line:match("^entry (.+)$")
      if e and e ~= manifest.FILE and e ~= manifest.VERIFIED_FILE and not e:match("%.tmp$")
         and not listed[e] and not dirs_needed[e] then
        local top = e:match("^[^/]+")
        problems[#problems + 1] = e .. (expected[top] and ": unexpected (not in the roster)" or ": unexpected top-level entry (not in the roster)")
      end
    end
  end
  if res.code ~= 0 and #problems == 0 then problems[#problems + 1] = "facts script exited " .. tostring(res.code) end
  for _, c in ipairs(cells) do
    for _, req in ipairs(o.required or manifest.REQUIRED) do
      local have = false
      for _, f in ipairs(files) do if f.path == c .. "/" .. req then have = true end end
      if not have then problems[#problems + 1] = c .. "/" .. req .. ": required file missing" end
    end
  end
  if #files == 0 then problems[#problems + 1] = "zero files (an empty aggregation is a failure)" end
  if #problems > 0 then
    error("pull: PULL_MANIFEST for " .. root .. " not written:\n  " .. table.concat(problems, "\n  "), 0)
  end
  table.sort(files, function(a, b) return a.path < b.path end)
  local names = {}
  for _, c in ipairs(cells) do names[#names + 1] = c end
  table.sort(names)
  local m = {
    schema = manifest.SCHEMA, run_id = o.run_id, created_at_utc = os.date("!%Y-%m-%dT%H:%M:%S+00:00"),
    top_level_dirs = json.array(names), files = json.array(files), totals = {files = #files, bytes = total},
  }
  manifest.validate(m)
  return m, json.encode_stable(m)
end

function pull.remote_manifest_reader(inst, r, bundle)
  local file = pull.result_root(r, bundle) .. "/" .. manifest.FILE
  return function()
    local res = inst:sh("cat -- " .. q(file), {timeout = 60, idempotent = true})
    if res.code ~= 0 then error("cat " .. file .. " on " .. r.host .. " exited " .. tostring(res.code) .. ": " .. (res.stderr or ""), 0) end
    return res.stdout
  end, r.host .. ":" .. file .. " (over SSH)"
end

local function pull_verified(inst, r, o)
  o = o or {}
  local cells = o.cells or {r.id}
  local bundle = o.bundle or r.id
  local roster = capsule.check_roster(r, o.roster or capsule.DEFAULT_ROSTER)
  -- the cell names are a MANIFEST.md roster: letters, digits, . _ - ; no duplicates; not empty
  manifest.parse_roster(table.concat(cells, "\n"))
  local root = pull.result_root(r, bundle)
  local durable = r.paths.durable_tier
  r:say("pull", "expected roster: %d result dir(s) [%s] x %d files [%s]", #cells, table.concat(cells, ", "), #roster,
    table.concat(roster, ", "))
  -- 1. checked-sync every capsule file to the durable tier (copy, rename, re-hash)
  for _, c in ipairs(cells) do
    local export = r.paths.export_dir .. "/" .. c
    for _, f in ipairs(roster) do
      local dir = root .. "/" .. c .. (dirname(f) and ("/" .. dirname(f)) or "")
      local ok, res = pcall(r.retrying, r, inst, "pull", "checked sync of " .. c .. "/" .. f, function()
        return storage.checked_sync(inst, export .. "/" .. f, durable,
          {profile = r.profile, dir = dir, name = basename(f), quiet = true, timeout = o.sync_timeout or 300})
      end)
      if not ok then error("pull: " .. tostring(res), 0) end
    end
  end
  r:say("pull", "checked-synced %d file(s) to %s (each copy re-read: size and SHA-256 match)", #cells * #roster, root)
  -- 2. PULL_MANIFEST.json on the durable tier, from the roster
  local m, text = r:retrying(inst, "pull", "the manifest facts", function()
    return pull.build_remote(inst, root, cells, roster, {run_id = bundle, required = o.required})
  end)
  inst:sh(remote.script("put_file", {FILE = root .. "/" .. manifest.FILE}), {stdin = text, timeout = 60, check = true})
  local msha = hash.sha256(text)
  r:say("pull", "wrote %s/%s: %d files, %d bytes, sha256 %s", root, manifest.FILE, m.totals.files, m.totals.bytes, msha:sub(1, 16))
  pcall(r.ledger, r, function(L)
    L:record_manifest{run_id = r.id, kind = "pull_manifest", path = r.host .. ":" .. root .. "/" .. manifest.FILE,
      sha256 = msha, files = m.totals.files, bytes = m.totals.bytes}
  end)
  -- 3. pull resumably (.part files resume; each file's SHA-256 checked against the box)
  local local_parent = o.local_dir or r.local_dir or "runs"
  fs.mkdirs(local_parent)
  local local_dir = local_parent .. "/" .. bundle
  local got = r:retrying(inst, "pull", "the download", function()
    return inst:get(root, local_parent, {verify = true, progress = o.progress or false, stall_timeout = 60})
  end)
  pcall(r.ledger, r, function(L)
    L:record_transfer{run_id = r.id, instance = r.host, direction = "get", local_path = local_dir, remote_path = root,
      bytes = got.bytes, sha256 = msha, outcome = "ok"}
  end)
  r:say("pull", "pulled %d files (%d bytes) into %s", #got.files, got.bytes, local_dir)
  -- 4. verify: the pulled manifest must be the one just written, then the full check
  local pulled = fs.read_file(local_dir .. "/" .. manifest.FILE)
  if hash.sha256(pulled) ~= msha then
    error("pull: the pulled " .. manifest.FILE .. " is not the one written on the box (changed meanwhile?)", 0)
  end
  if (not o.load_cmd or o.load_cmd == "") and o.load_check then
    r:say("pull", "no local load= given: a checkpoint passes when its SHA-256 is one the box's load check passed before the seal")
  elseif not o.load_cmd or o.load_cmd == "" then
    r:say("pull", "WARNING: no checkpoint load command: verification will refuse checkpoints (a file that does not load is not a result)")
  end
  local v = manifest.verify(local_dir, {load_cmd = o.load_cmd, load_check = (not o.load_cmd or o.load_cmd == "") and o.load_check or nil})
  pcall(r.ledger, r, function(L)
    L:record_manifest{run_id = r.id, kind = "pull_verified", path = local_dir .. "/" .. manifest.VERIFIED_FILE,
      sha256 = v.manifest_sha256, files = v.files, bytes = v.bytes}
  end)
  r:say("pull", "VERIFIED %s: roster, %d files, %d bytes, every SHA-256, checkpoints load; wrote %s", local_dir, v.files,
    v.bytes, manifest.VERIFIED_FILE)
  return {result_root = root, local_dir = local_dir, manifest = m, verified = v, bundle = bundle}
end

function pull.fetch(inst, r, o) return run_lock.hold(r, inst, pull_verified, inst, r, o) end

function pull.run(ctx, o)
  local opts = {}
  for k, v in pairs(o or {}) do opts[k] = v end
  opts.cells = opts.cells or ctx.cells
  -- no local load= : the box's load check before the seal is the evidence (same bytes):
  -- this process's seal, or the verdicts the ledger kept for the run or its cells
  if not opts.load_cmd or opts.load_cmd == "" then
    local ok, recorded = pcall(ctx.run.ledger, ctx.run, function(L) return L:box_loaded(opts.cells or {ctx.run.id}) end)
    if ctx.export or (ok and next(recorded)) then opts.load_check = capsule.loaded_on_box(ctx.export, ok and recorded or nil) end
  end
  return {verified = pull.fetch(require("gpurent.lifecycle").session(ctx), ctx.run, opts)}
end

return setmetatable(pull, {__call = function(_, ...) return pull.run(...) end})

-- Phase 5a, close (LIFECYCLE.md): seal the run's capsule. The exact capsule files
-- (the roster: run.json plus paths under the run's out dir) are copied into
-- export/.partial/<run-id>, validated (present, non-empty, same SHA-256 as their
-- source, no scratch/caches/temp files), then renamed atomically to
-- export/<run-id> - a rename on one filesystem (the audit checked it). On any
-- failure the partial capsule moves to quarantine/<run-id>--<attempt> with a
-- REASON file. Before the rename every checkpoint of the capsule (*.pth .pt .ckpt)
-- goes through the load check on the box (gpurent.lifecycle.capsule): one that does
-- not load is quarantined, never sealed (so never synced or listed by pull). The
-- check is opts.box_load, else the one launch kept in .gpurent/load_check, else the
-- default torch check. Each file the check passed is marked loaded = true (the
-- pull's default when no local load= is given). On a validation failure, a
-- sealed export is never overwritten. It runs under the run's
-- finish lock (gpurent.run_lock): a second finisher's close would rebuild the
-- partial capsule under this one's hashing.
--
--   needs {run, inst} -> produces {export = {export, files = {{path, bytes, sha256}}, already}}
--   opts.roster: capsule paths (gpurent.lifecycle.capsule: the rules and the default);
--   opts.box_load: the load command on the box ({} the checkpoint, {python});
--   opts.python: the box interpreter for it (ctx.python, else the profile's);
--                run.json comes from active/<run-id>/, everything else from
--                active/<run-id>/out/
--   close.seal(inst, r, opts) -> the same table, under the finish lock, outside a lifecycle
local run_lock = require "gpurent.lifecycle.run_lock"
local remote = require "gpurent.remote"
local capsule = require "gpurent.lifecycle.capsule"

local close = {name = "close", needs = {"run", "inst"}, produces = {"export"}, finishes = true,
  report = function(ctx) return "sealed export " .. ctx.export.export end}

close.DEFAULT_ROSTER = capsule.DEFAULT_ROSTER
close.check_roster = capsule.check_roster

-- The on-box steps: lua/gpurent/remote/close_{seal,finish,quarantine}.sh.

-- The load check on the partial capsule's checkpoints; marks each loaded file, adds
-- a "does not load" reason to bad for the others.
local function load_checks(inst, r, o, roster, got, bad)
  local cks = {}
  for _, f in ipairs(roster) do if capsule.is_checkpoint(f) then cks[#cks + 1] = f end end
  if #cks == 0 then return end
  local check = ""
  if o.box_load then
    check = capsule.load_check{command = o.box_load,
      python = o.python or (r.profile.env and r.profile.env.python) or "python3"}.shell
  end
  local P = r.paths
  local res = inst:sh(remote.script("close_load", {PARTIAL = P.partial, CODE = P.code, META = P.meta,
    FILES = remote.lines(cks, "close: checkpoints"), CHECK = check}), {timeout = o.load_timeout or 900})
  local loaded = {}
  for line in res.stdout:gmatch("[^\n]+") do
    local f = line:match("^loaded (.+)$")
    if f then loaded[f] = true end
    local why = line:match("^bad (.+)$")
    if why then bad[#bad + 1] = why end
  end
  for _, f in ipairs(cks) do
    if not loaded[f] and #bad == 0 then bad[#bad + 1] = "load check gave no verdict for " .. f .. " (exit " ..
      tostring(res.code) .. "): " .. (res.stderr or "") end
  end
  for _, g in ipairs(got) do if loaded[g.path] then g.loaded = true end end
  if #bad == 0 then r:say("close", "load check on the box passed: %s", table.concat(cks, ", ")) end
end

-- The load check's verdicts outlive this process: each checkpoint it passed is kept
-- in the ledger (a manifest row of kind box_load), so a later pull of the same bytes
-- (`gpurent watch --finish`, a sweep's cells sealed by an earlier watch) can take
-- the box's word for them as this process's pull does.
local function record_loaded(r, files)
  pcall(r.ledger, r, function(L)
    for _, f in ipairs(files) do
      if f.loaded then L:record_manifest{run_id = r.id, kind = "box_load", path = f.path, sha256 = f.sha256, bytes = f.bytes} end
    end
  end)
end

local function recall_loaded(r, files)
  local ok, known = pcall(r.ledger, r, function(L) return L:box_loaded({r.id}) end)
  if not ok then return end
  for _, f in ipairs(files) do if known[f.sha256] then f.loaded = true end end
end

local function seal(inst, r, o)
  o = o or {}
  local roster = capsule.check_roster(r, o.roster or capsule.DEFAULT_ROSTER)
  local P = r.paths
  local res = inst:sh(remote.script("close_seal", {ACTIVE = P.active, OUT = P.out, PARTIAL = P.partial,
    EXPORT = P.export, FILES = remote.lines(roster, "close: roster"),
    SCRATCH = remote.lines(r.profile.checkpoints.scratch, "close: scratch")}), {timeout = 600})
  local got, bad = {}, {}
  for line in res.stdout:gmatch("[^\n]+") do
    local bytes, hex, path = line:match("^file (%d+) (%x+) (.+)$")
    if bytes then got[#got + 1] = {path = path, bytes = tonumber(bytes), sha256 = hex} end
    local why = line:match("^bad (.+)$")
    if why then bad[#bad + 1] = why end
  end
  if res.code ~= 0 and #bad == 0 then bad[#bad + 1] = "close script exited " .. tostring(res.code) .. ": " .. (res.stderr or "") end
  local already = res.stdout:match("^already ") ~= nil
  if already then
    if #bad > 0 then
      error("close: the sealed export " .. P.export .. " exists but does not hold the roster: " .. table.concat(bad, "; ") ..
        " (a sealed export is never overwritten)", 0)
    end
    r:say("close", "export %s is already sealed with the %d roster files: not rewritten", P.export, #got)
    recall_loaded(r, got)
    return {export = P.export, files = got, already = true}
  end
  if #bad == 0 then load_checks(inst, r, o, roster, got, bad) end
  if #bad == 0 then
    local fin = inst:sh(remote.script("close_finish", {PARTIAL = P.partial, EXPORT = P.export}), {timeout = 120})
    if fin.stdout:match("sealed ") then
      local lines = {string.format("sealed %s (renamed from export/.partial on one filesystem):", P.export)}
      for _, f in ipairs(got) do lines[#lines + 1] = string.format("  %10d  %s  %s", f.bytes, f.sha256:sub(1, 16), f.path) end
      r:say("close", table.concat(lines, "\n"))
      record_loaded(r, got)
      return {export = P.export, files = got}
    end
    bad[#bad + 1] = (fin.stdout:match("bad ([^\n]+)") or "rename failed") .. " " .. (fin.stderr or "")
  end
  local reason = table.concat(bad, "\n") .. "\n"
  local qres = inst:sh(remote.script("close_quarantine", {PARTIAL = P.partial, QUAR = P.quarantine, ID = r.id}),
    {stdin = reason, timeout = 120})
  local where = qres.stdout:match("quarantined ([^\n]+)") or "(quarantine failed: " .. (qres.stderr or "") .. ")"
  error(string.format("close: the capsule of %s failed validation; moved to %s:\n  %s", r.id, where,
    table.concat(bad, "\n  ")), 0)
end

function close.seal(inst, r, o) return run_lock.hold(r, inst, seal, inst, r, o) end

function close.run(ctx, o)
  local opts = {}
  for k, v in pairs(o or {}) do opts[k] = v end
  opts.python = opts.python or ctx.python
  local inst = require("gpurent.lifecycle").session(ctx)
  local export = close.seal(inst, ctx.run, opts)
  -- a scheduler's accounting of the run's jobs, unless the watch already read it final
  require("gpurent.billing.usage").note(inst, ctx.run, "close", {unless_final = true})
  return {export = export}
end

return setmetatable(close, {__call = function(_, ...) return close.run(...) end})

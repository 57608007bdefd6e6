-- gpurent.gate: the teardown gate (the Iron Law of ../shared/design/LIFECYCLE.md).
-- Every destructive verb asks it first; it refuses (exit code 3, nothing sent)
-- unless BOTH hold, where the verb needs them:
--   1. evidence, of one of two kinds:
--      run:  a local PULL_VERIFIED.json for the run, whose PULL_MANIFEST.json copy
--            still matches the remote PULL_MANIFEST.json re-read now, path for path, byte
--            for byte, hash for hash (and the local files are still there, size for size);
--      disk: every file that dies with the instance is covered by a verified pull, is
--            reproducible or was discarded by the person (gpurent.coverage over the
--            inventory taken on the box: gpurent.inventory), passed in as o.disk;
--   2. approval from the person: `--approve INSTANCE` on the gpurent command line or
--      the instance name typed on the terminal. Both live in C (runtime/approval.c);
--      nothing in Lua can grant it, so a recipe, a library or the REPL cannot.
-- Which verb needs what:
--   release: disk evidence + approval, always (plus the run evidence when a pulled dir and
--            a manifest reader are given); no option or profile waives it.
--   delete_durable: run evidence + approval, always.
--   power_off: approval (it interrupts running tasks); disk evidence too when the profile
--              says the platform's power-off is irreversible (gpurent.platform.power_off_irreversible).
-- Every decision, allowed or refused and why, is printed and recorded in the ledger.
--
--   gate.check{action=, instance=, names={uuid...}, pulled_dir=, read_remote_manifest=fn,
--              remote_label=, disk={problems=, details=, ok_text=}, irreversible=bool,
--              job_running=bool, interactive=true, dry_run=false, run_id=, record=fn,
--              out=file} -> decision
--   gate.approved_name(names) -> the first name the person approved, or nil
--   decision = {allowed=true, action=, instance=, approved_by="flag"|"tty", reasons={}}
--   (a refusal raises gpurent.refuse, whose .decision holds the same record)
--
-- read_remote_manifest(instance) -> text: in production an SSH read of the result
-- root on the durable tier; gate.local_reader(dir) reads a local directory instead
-- (a mounted durable tier, or the testbed's tier seen from the host) and says so in
-- every message: it is not a remote read.
-- The C functions, captured when this module loads, and checked to be C functions:
-- a Lua stand-in put in their place is refused outright. (Lua is not a sandbox: code
-- that rewrites gpurent's own modules can still fool this view, which is why the
-- transport re-checks approval in C before sending a destructive call; http.c.)
local approval = (function()
  local a = require("gpurent.core").approval
  local t = {granted = a.granted, ask = a.ask}
  for _, f in pairs(t) do
    local info = type(f) == "function" and debug.getinfo(f, "S")
    if not info or info.what ~= "C" then return nil end
  end
  return t
end)()
local errors = require "gpurent.util.errors"
local fs = require "gpurent.util.fs"
local json = require "gpurent.util.json"
local manifest = require "gpurent.lifecycle.manifest"

local gate = {}

gate.NEEDS = {
  release = {evidence = "disk", approval = true},
  delete_durable = {evidence = "run", approval = true},
  power_off = {evidence = false, approval = true},
  delete_files = {evidence = false, approval = true},   -- `gpurent clean HOST --delete PATH ...`
  cancel_job = {evidence = false, approval = true},     -- a scheduler's stop verb (scancel): as a meter stop
}

-- The name to hand to the transport (C checks it again): one the person approved.
function gate.approved_name(names)
  if not approval then return nil end
  for _, n in ipairs(names) do
    if approval.granted(n) == true then return n end
  end
  return nil
end

-- A reader over a local directory holding the result root's PULL_MANIFEST.json.
function gate.local_reader(dir)
  return function()
    local p = dir .. "/" .. manifest.FILE
    if not fs.exists(p) then error("no " .. manifest.FILE .. " in " .. dir .. " (local read)", 0) end
    return fs.read_file(p)
  end, "local directory " .. dir .. " (a local read, not over SSH)"
end

-- The ledger write, kept in one function so the gate's records have one path.
function gate.ledger_record(d)
  local ledger = require "gpurent.state.ledger"
  local L = ledger.open()
  local ok, err = pcall(function()
    L:upsert_instance{name = d.instance, profile = d.profile or require("gpurent.config.profile").default_name()}
    L:record_gate{gate = "teardown", action = d.action, decision = d.allowed and "allow" or "refuse",
                  reason = table.concat(d.reasons, "; "), approved_by = d.approved_by,
                  run_id = d.run_id, instance = d.instance}
  end)
  L:close()
  if not ok then error(err, 0) end
end

local function evidence(o, reasons)
  if type(o.pulled_dir) ~= "string" or o.pulled_dir == "" then
    reasons[#reasons + 1] = "no local pulled directory given (where PULL_VERIFIED.json lives)"
    return
  end
  local ok, v, mlocal = pcall(manifest.read_verified, o.pulled_dir)
  if not ok then reasons[#reasons + 1] = tostring(v); return end
  -- the local copy must still be there: sizes are cheap to re-check
  for _, f in ipairs(mlocal.files) do
    local size = fs.attributes(o.pulled_dir .. "/" .. f.path, "size")
    if size ~= f.bytes then
      reasons[#reasons + 1] = string.format("local %s: %s now, %d bytes when verified", f.path,
        size and (size .. " bytes") or "missing", f.bytes)
    end
  end
  if type(o.read_remote_manifest) ~= "function" then
    reasons[#reasons + 1] = "no way to re-read the remote PULL_MANIFEST.json was given"
    return
  end
  local label = o.remote_label or "the remote result root"
  local rok, text = pcall(o.read_remote_manifest, o.instance)
  if not rok or type(text) ~= "string" then
    reasons[#reasons + 1] = "cannot re-read PULL_MANIFEST.json from " .. label .. ": " .. tostring(text)
    return
  end
  local pok, mremote = pcall(function() return manifest.validate(json.decode(text, "remote " .. manifest.FILE), "remote " .. manifest.FILE) end)
  if not pok then reasons[#reasons + 1] = tostring(mremote); return end
  local diffs = manifest.compare(mlocal, mremote, "verified", "remote")
  if #diffs > 0 then
    reasons[#reasons + 1] = "the remote PULL_MANIFEST.json (" .. label .. ") no longer matches the verified pull: "
      .. table.concat(diffs, "; ", 1, math.min(#diffs, 10)) .. (#diffs > 10 and "; ..." or "")
  end
  return v
end

-- Approval from the C capability only; o.approved or similar fields are never read.
local function approved(o, names)
  if not approval then return nil, "the approval functions were replaced by Lua code: no approval can be trusted" end
  for _, n in ipairs(names) do
    if approval.granted(n) == true then return "flag" end
  end
  if o.interactive == false or o.dry_run then return nil, "no --approve " .. o.instance .. " on the command line" end
  local prompt = string.format("gpurent: %s %s%s. This cannot be undone by gpurent.",
    o.action, o.instance, o.job_running and " (a job is still running on it)" or "")
  if o.action == "power_off" then
    prompt = string.format("gpurent: power off %s%s (reversible; it stops running tasks).", o.instance,
      o.job_running and " while a job is still running" or "")
  end
  if o.action == "delete_files" then
    prompt = string.format("gpurent: delete on %s: %s. This cannot be undone.", o.instance,
      table.concat(o.targets or {}, ", "))
  end
  local ok, why = approval.ask(o.instance, prompt)
  if ok == true then return "tty" end
  return nil, "no approval: no --approve " .. o.instance .. " on the command line, and " .. tostring(why)
end

-- The whole-disk evidence: the coverage verdict the caller computed from an inventory.
local function disk_evidence(o, reasons)
  if type(o.disk) ~= "table" or type(o.disk.problems) ~= "table" then
    reasons[#reasons + 1] = "no inventory of what dies with the instance was checked (gpurent.coverage)"
    return
  end
  for _, p in ipairs(o.disk.problems) do reasons[#reasons + 1] = p end
end

local function evidence_kind(o, needs)
  if o.action == "power_off" and o.irreversible == true then return "disk" end
  return needs.evidence
end

function gate.check(o)
  assert(type(o) == "table", "gate.check: options table required")
  local needs = gate.NEEDS[o.action]
  if not needs then error("gate.check: unknown action " .. tostring(o.action), 2) end
  if type(o.instance) ~= "string" or o.instance == "" then error("gate.check: instance name required", 2) end
  local need_evidence = evidence_kind(o, needs)
  local reasons = {}
  local run_check = need_evidence == "run" or (need_evidence == "disk" and o.pulled_dir ~= nil and o.read_remote_manifest ~= nil)
  if run_check then evidence(o, reasons) end
  if need_evidence == "disk" then disk_evidence(o, reasons) end
  local names = {o.instance}
  for _, n in ipairs(o.names or {}) do names[#names + 1] = n end
  local by, why
  if #reasons == 0 then          -- ask the person only when the evidence holds
    by, why = approved(o, names)
    if not by then reasons[#reasons + 1] = why end
  else
    reasons[#reasons + 1] = "approval not asked: the evidence above failed"
  end
  local d = {allowed = #reasons == 0, action = o.action, instance = o.instance, approved_by = by,
             reasons = reasons, run_id = o.run_id, dry_run = o.dry_run, profile = o.profile_name}
  local out = o.out or io.stderr
  local proof = (run_check and "; verified pull matches the remote manifest" or "")
    .. (need_evidence == "disk" and ("; " .. tostring(o.disk and o.disk.ok_text)) or "")
  local head = string.format("gate: %s %s: %s", o.action, o.instance,
    d.allowed and ("allowed (approval: " .. by .. proof .. ")") or "refused")
  if o.dry_run then head = head .. " [dry run]" end
  out:write(head, "\n")
  for _, r in ipairs(reasons) do out:write("  - ", r, "\n") end
  for _, line in ipairs(need_evidence == "disk" and o.disk and o.disk.details or {}) do out:write("  ", line, "\n") end
  if not o.dry_run then
    local rok, rerr = pcall(o.record or gate.ledger_record, d)
    if not rok then
      if d.allowed then
        d.allowed = false
        reasons[#reasons + 1] = "the decision could not be recorded in the ledger: " .. tostring(rerr)
        out:write("  - ", reasons[#reasons], "\n")
      else
        out:write("  (ledger: ", tostring(rerr), ")\n")
      end
    end
  end
  if not d.allowed then
    local ok, e = pcall(errors.refuse, string.format("teardown gate refused %s on %s: %s", o.action, o.instance,
      table.concat(reasons, "; ")), 0)
    assert(not ok)
    e.decision = d
    error(e, 0)
  end
  return d
end

return gate

-- Phase 5c, teardown: the billing gate (gpurent.gate) and the meter-stop verb,
-- nothing else. The gate refuses (exit 3, nothing sent) without the person's
-- approval (`--approve INSTANCE` on the gpurent command line, or the name typed on
-- the terminal) and, where the verb is destructive, without a verified pull whose
-- manifest still matches the one on the box. This phase adds one precondition of
-- its own, the Iron Law's order: no meter-stop before PULL_VERIFIED.json exists.
--
--   teardown(inst, r, opts) -> {decision =, status =}
--   opts: pulled_dir (where PULL_VERIFIED.json is), bundle (result root name; r.id),
--         instance (the API's name or uuid; r.host), client (gpurent.billing.autodl
--         client; made from the environment's token when absent), dry_run
local gate = require "gpurent.gate"
local manifest = require "gpurent.manifest"
local errors = require "gpurent.errors"

local teardown = {}

function teardown.run(inst, r, o)
  o = o or {}
  local pulled = o.pulled_dir
  local ok, why = pcall(manifest.read_verified, pulled or "")
  if not pulled or not ok then
    errors.refuse("teardown: no meter-stop before a verified pull: " .. tostring(pulled and why or "no pulled_dir given"), 0)
  end
  local autodl = require "gpurent.billing.autodl"
  local client = o.client or autodl.client{dry_run = o.dry_run}
  if not client:has_token() then
    errors.refuse("teardown: no AutoDL developer token (AUTODL_TOKEN / AUTODL_TOKEN_FILE): power it off on the console", 0)
  end
  local it = client:find(o.instance or r.host)
  local b = r.profile.billing or {}
  local irreversible = (b.meter_stop and b.meter_stop.irreversible == true)
    or (b.verbs and b.verbs.power_off and b.verbs.power_off.reversible == false) or false
  local reader, label = require("gpurent.phases.pull").remote_manifest_reader(inst, r, o.bundle)
  local d = gate.check{action = "power_off", instance = it.name, names = {it.uuid, o.instance or r.host},
    irreversible = irreversible, pulled_dir = pulled, read_remote_manifest = reader, remote_label = label,
    interactive = require("gpurent.core").sys.isatty(0), dry_run = o.dry_run, run_id = r.id,
    profile_name = r.profile_name}
  local verb = b.meter_stop and b.meter_stop.verb or "power_off"
  r:say("teardown", "gate allowed %s (%s) of %s (%s): sending it", verb, "power_off", it.name, it.uuid)
  local st = client:power_off(it.uuid, {wait = o.wait ~= false, deadline = o.deadline})
  pcall(r.ledger, r, function(L)
    L:record_billing{instance = r.host, action = "power_off", outcome = st and "ok" or "accepted",
      meter = st == "shutdown" and "off" or nil, power_state = st, run_id = r.id}
  end)
  r:say("teardown", "%s: %s (meter off; %s)", it.name, tostring(st or "power-off accepted"),
    irreversible and "irreversible on this platform" or "reversible: every disk kept; mind the auto-release clock")
  return {decision = d, status = st}
end

return setmetatable(teardown, {__call = function(_, ...) return teardown.run(...) end})

-- gpurent.billing.stop: the one guarded function that powers off or releases an
-- instance. The teardown phase, `gpurent billing power-off|release` and the REPL all
-- call it through their platform (gpurent.platform: P.stop(o) is this function with
-- o.platform = P), so the order below holds everywhere:
--   find the instance -> (power-off with SSH: take the inventory of what dies with it)
--   -> gate.check (approval always; release: the whole-disk evidence of
--   gpurent.coverage over the inventory; power-off: the same where the profile calls
--   it irreversible) -> send the verb through the client -> ledger -> print.
--
--   stop.run{verb = "power_off" | "release", ref = NAME|UUID, platform = P (default: the
--            profile's), client = P's billing client (default: P.require_client, raising
--            o.without_client = "usage" | "refusal" with o.context when there is no token),
--            inst = connected instance | target = ssh
--            alias (power-off: inventory first), pulled = {dirs}, discard = {globs},
--            pulled_dir =, read_remote_manifest =, remote_label = (release: the run check
--            too), profile =, profile_name =, run_id =, dry_run =, wait =, deadline =,
--            interactive =, say = fn(fmt, ...), out = file} -> {decision =, status =, item =}
--   stop.take_inventory(client, target, ref, o) -> inv, path
local coverage = require "gpurent.billing.coverage"
local errors = require "gpurent.util.errors"
local gate = require "gpurent.lifecycle.gate"
local inventory = require "gpurent.billing.inventory"
local platform = require "gpurent.platform"
local profile_mod = require "gpurent.config.profile"

local stop = {}

local function default_say(out)
  return function(fmt, ...) out:write(string.format(fmt, ...), "\n") end
end

local function load_profile(o)
  if o.profile then return o.profile end
  o.profile = profile_mod.load(o.profile_name or profile_mod.default_name())
  return o.profile
end

-- The ledger's billing row; a ledger failure is said, never fatal after the verb was sent.
local function record(o, it, t)
  local ok, err = pcall(function()
    local L = require("gpurent.state.ledger").open()
    L:upsert_instance{name = it.name, profile = o.profile_name or profile_mod.default_name(), provider_id = it.uuid}
    L:record_billing{instance = it.name, action = t.action, outcome = t.outcome, meter = t.meter,
      power_state = t.power_state, request_id = t.request_id, run_id = o.run_id}
    -- a power-off gpurent caused starts the platform's release clock now (gpurent.billing.clock)
    if t.action == "power_off" and t.meter == "off" then
      require("gpurent.billing.clock").powered_off(L, {instance = it.name, profile = load_profile(o), started_at = os.time()})
    end
    L:close()
  end)
  if not ok then (o.out or io.stderr):write("gpurent: (ledger: ", tostring(err), ")\n") end
end

-- Inventory over an open instance (or a target to connect to), saved atomically.
function stop.take_inventory(client, target, ref, o)
  o = o or {}
  local it = client:find(ref)
  local inst, opened = o.inst, false
  if not inst then inst, opened = require("gpurent.transport.instance").connect(target), true end
  local ok, inv = pcall(inventory.take, inst, {profile = load_profile(o), item = it, target = target or ref,
    profile_name = o.profile_name})
  if opened then pcall(inst.close, inst) end
  if not ok then error(inv, 0) end
  local path = inventory.save(inv)
  local say = o.say or default_say(o.out or io.stdout)
  say("inventory of %s (%s) taken %s over SSH (%s): %d files, %s on what dies with it; %d hashed; %d PULL_MANIFEST.json re-read; saved %s",
    it.name, it.uuid, inv.taken_at_utc, tostring(target or ref), inv.totals.files, coverage.size_text(inv.totals.bytes),
    inv.totals.hashed, inv.totals.manifests, path)
  return inv, path, it
end

-- power-off: the inventory is a read, so a failure to take one does not keep the
-- meter running; it is said, and the later release will ask for one.
local function inventory_before_power_off(o, it)
  if not (o.inst or o.target) then
    o.say("no inventory taken (no SSH target): before a release, take one while %s runs: %s", it.name,
      inventory.command(it.name, it.name))
    return nil
  end
  local ok, inv = pcall(stop.take_inventory, o.client, o.target or (o.inst and tostring(o.inst)), o.ref, o)
  if ok then return inv end
  o.say("no inventory taken: %s; a release will need one (%s)", tostring(inv), inventory.command(o.target or it.name, it.name))
  return nil
end

local function disk_verdict(o, it, inv, verb)
  local out = o.out or io.stdout
  if verb == "release" then
    local ok, loaded = pcall(inventory.load, it.uuid)
    if not ok then return {problems = {tostring(loaded)}, details = {}} end
    inv = loaded
  end
  return coverage.evaluate(inv, it, {pulled = o.pulled, discard = o.discard, profile = load_profile(o), out = out,
    need_status = verb == "release" and "shutdown" or nil})
end

local function check(o, it, inv, irreversible)
  local disk = (o.verb == "release" or irreversible) and disk_verdict(o, it, inv, o.verb) or nil
  local ok, err = pcall(gate.check, {action = o.verb, instance = it.name, names = {it.uuid, o.ref},
    irreversible = irreversible, disk = disk, pulled_dir = o.pulled_dir, read_remote_manifest = o.read_remote_manifest,
    remote_label = o.remote_label, interactive = o.interactive, dry_run = o.dry_run, run_id = o.run_id,
    profile_name = o.profile_name})
  if ok then return err end
  if o.dry_run and errors.is_refusal(err) then
    o.say("dry run: the gate would refuse now (see above)")
    return nil
  end
  error(err, 0)
end

local function send(o, it, irreversible)
  local c, name = o.client, gate.approved_name({it.name, it.uuid, o.ref}) or it.name
  if o.verb == "release" then
    local _, rid, dry = c:release(it.uuid, {approval = name})
    if dry then return nil end
    record(o, it, {action = "release", outcome = "accepted", meter = "off", power_state = "released", request_id = rid})
    o.say("%s: release accepted (request_id %s)", it.name, tostring(rid))
    return "released"
  end
  local st = c:power_off(it.uuid, {wait = o.wait ~= false, deadline = o.deadline, approval = name})
  if c.dry_run then return nil end
  record(o, it, {action = "power_off", outcome = st and "ok" or "accepted", meter = st == "shutdown" and "off" or nil,
    power_state = st})
  o.say("%s: %s (meter off; %s)", it.name, tostring(st or "power-off accepted"),
    irreversible and "irreversible on this platform" or "reversible: every disk kept; mind the auto-release clock")
  return st
end

function stop.run(o)
  assert(type(o) == "table" and (o.verb == "power_off" or o.verb == "release"), "stop.run: verb power_off|release")
  if type(o.ref) ~= "string" or o.ref == "" then errors.usage("stop.run: the instance name or uuid is required", 0) end
  o.out = o.out or io.stdout
  o.say = o.say or default_say(o.out)
  o.platform = o.platform or platform.of(load_profile(o))
  o.client = o.client or o.platform.require_client{dry_run = o.dry_run, kind = o.without_client, context = o.context}
  if not o.client:has_token() then o.platform.require_client{kind = o.without_client, context = o.context} end
  local it = o.client:find(o.ref)
  local irreversible = o.verb == "power_off" and platform.power_off_irreversible(load_profile(o))
  local inv = nil
  -- an irreversible power-off is judged on an inventory taken now; a reversible one
  -- takes it after the gate allowed it, so a refusal costs no SSH round trip
  if irreversible then inv = inventory_before_power_off(o, it)
  elseif o.verb == "power_off" and #(o.discard or {}) > 0 then
    o.say("--discard has no effect on this power-off: it is reversible and deletes nothing")
  end
  local d = check(o, it, inv, irreversible)
  if o.verb == "power_off" and not irreversible and d and not o.dry_run then inventory_before_power_off(o, it) end
  local st = send(o, it, irreversible)
  return {decision = d, status = st, item = it}
end

return stop

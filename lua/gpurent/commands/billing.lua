-- gpurent billing: the meter and the power verbs on AutoDL's developer API.
-- status reads; power-on checks the budget; power-off and release go through the
-- teardown gate (gpurent.gate), whose approval only the person gives (`--approve`,
-- parsed by the C host, or the instance name typed on the terminal).
local autodl = require "gpurent.billing.autodl"
local billing = require "gpurent.billing"
local cli = require "gpurent.cli"
local errors = require "gpurent.errors"
local gate = require "gpurent.gate"
local json = require "gpurent.json"

local M = {summary = "AutoDL meter, balance, danger clocks; power-on/off and release (gated)"}
M.usage = [[usage:
  gpurent billing status [INSTANCE] [--json]
  gpurent billing power-on INSTANCE [--dry-run] [--no-wait] [--retries N] [--backoff S]
  gpurent billing power-off INSTANCE [--approve INSTANCE] [--dry-run] [--no-wait]
  gpurent billing release INSTANCE --pulled DIR (--remote-manifest TARGET:PATH | --durable-dir DIR)
                          [--approve INSTANCE] [--dry-run]
  gpurent billing budget INSTANCE YUAN [--warn FRACTION]
  gpurent billing autostop TARGET (--idle 30m | --ttl 6h) [--interval 60s] [--stop-stalled]
                          [--threshold PCT] [--mode tmux|nohup] [--profile NAME]
  gpurent billing autostop TARGET --status [--json] | --off

INSTANCE is the AutoDL instance uuid or name. The token comes from $AUTODL_TOKEN, or a
file (mode 600; a file others can read is refused): $AUTODL_TOKEN_FILE, or autodl.token_file in
~/.config/gpurent/config.yaml.

release (and power-off where the profile calls it irreversible) needs BOTH a verified
pull and your approval: DIR holds PULL_VERIFIED.json and the PULL_MANIFEST.json it
verified (gpurent verify DIR); the remote PULL_MANIFEST.json is re-read now, over SSH
from TARGET:PATH (TARGET an ssh_config alias or user@host:port, PATH the result root),
or --durable-dir reads a local directory instead (a mounted durable tier; said so in
the output). Approval: --approve INSTANCE on this command line, or type the name when
asked on the terminal. power-off (AutoDL's reversible 关机) needs only approval.
--dry-run prints the exact API call (token shown as ***) instead of sending it.
autostop installs a watchdog ON the box (TARGET: ssh_config alias or user@host:port) that
runs the profile's in-instance power-off (AutoDL `shutdown`: reversible, disks kept) once
the box is idle for the window (no job of ours, last job's durable sync verified, GPU idle,
nobody logged in) or the TTL has passed; arming it is your approval of that power-off.
Exit codes: 0 ok, 1 error, 2 usage, 3 refused by the gate or the budget.]]

local SPEC = {json = "flag", dry_run = "flag", no_wait = "flag", retries = "value", backoff = "value",
              pulled = "value", remote_manifest = "value", durable_dir = "value", warn = "value",
              deadline = "value",
              -- autostop (lua/gpurent/billing/autostop.lua)
              idle = "value", ttl = "value", interval = "value", stop_stalled = "flag", threshold = "value",
              mode = "value", profile = "value", off = "flag", status = "flag"}

local function ledger_billing(t)
  local ok, err = pcall(function()
    local L = require("gpurent.ledger").open()
    L:upsert_instance{name = t.instance, profile = "autodl", provider_id = t.uuid}
    L:record_billing{instance = t.instance, action = t.action, outcome = t.outcome, meter = t.meter,
                     power_state = t.power_state, price_per_hour = t.price, request_id = t.request_id,
                     detail = t.detail}
    L:close()
  end)
  if not ok then io.stderr:write("gpurent: (ledger: ", tostring(err), ")\n") end
end

local function money(v) return v and string.format("%.2f", v) or "?" end

local function profile_facts()
  local _, b = autodl.profile_api()
  local irreversible = false
  if b and b.verbs and b.verbs.power_off and b.verbs.power_off.reversible == false then irreversible = true end
  if b and b.meter_stop and b.meter_stop.irreversible == true then irreversible = true end
  return {irreversible_power_off = irreversible,
          auto_release_days = b and b.auto_release and b.auto_release.after_days or billing.AUTO_RELEASE_DAYS}
end

local function status(c, ref, opts)
  local bal = c:balance()
  local items = ref and {c:find(ref)} or c:instances()
  local all = ref and c:instances() or items
  local burn, now = 0, os.time()
  for _, it in ipairs(all) do
    if it.status == "running" then burn = burn + (billing.price_per_hour(it) or 0) end
  end
  local budgets, facts = billing.budgets(), profile_facts()
  local rows = {}
  for _, it in ipairs(items) do
    local spent = billing.spent(it, now)
    local bstate, btext = billing.budget_state(spent, budgets[it.name] or budgets[it.uuid])
    rows[#rows + 1] = {name = it.name, uuid = it.uuid, status = it.status, price_per_hour = billing.price_per_hour(it),
      accrued = spent, budget = bstate, budget_text = btext,
      danger_clocks = json.array(billing.danger_clocks(it, {balance = bal.assets, burn_per_hour = burn, now = now,
        auto_release_days = facts.auto_release_days}))}
  end
  if opts.json then
    io.write(json.encode_stable({balance = bal.assets, accumulate = bal.accumulate, voucher_balance = bal.voucher_balance,
      burn_per_hour = burn, instances = json.array(rows)}))
    return 0
  end
  io.write(string.format("balance %s yuan (spent to date %s, vouchers %s); burning %s yuan/h\n",
    money(bal.assets), money(bal.accumulate), money(bal.voucher_balance), money(burn)))
  for _, r in ipairs(rows) do
    io.write(string.format("%s (%s): %s, %s yuan/h, accrued this session %s yuan, budget %s\n",
      r.name, r.uuid, r.status, money(r.price_per_hour), money(r.accrued),
      r.budget == "none" and "none" or (r.budget .. ": " .. r.budget_text)))
    for _, d in ipairs(r.danger_clocks) do io.write("  danger: ", d.text, "\n") end
  end
  return 0
end

-- The remote PULL_MANIFEST.json reader: SSH when a target is given, else a local dir.
local function manifest_reader(opts)
  if opts.remote_manifest then
    local target, path = opts.remote_manifest:match("^(.-):(/.*)$")
    if not target or target == "" then errors.usage("--remote-manifest wants TARGET:/absolute/result/root", 0) end
    local file = path:gsub("/+$", "") .. "/PULL_MANIFEST.json"
    return function()
      local inst = require("gpurent.instance").connect(target)
      local r = inst:sh("cat -- '" .. file:gsub("'", "'\\''") .. "'", {timeout = 60})
      inst:close()
      if r.code ~= 0 then error("cat " .. file .. " on " .. target .. " exited " .. tostring(r.code) .. ": " .. (r.stderr or ""), 0) end
      return r.stdout
    end, target .. ":" .. file .. " (over SSH)"
  elseif opts.durable_dir then
    return gate.local_reader(opts.durable_dir)
  end
  return nil, nil
end

local function power_on(c, ref, opts)
  local it = c:find(ref)
  local budget = billing.budgets()[it.name] or billing.budgets()[it.uuid]
  -- spend so far: the ledger's metered intervals, plus the stretch running now
  billing.check_billable(it.name, billing.spent(it), "power_on", budget)
  local st = c:power_on(it.uuid, {retries = tonumber(opts.retries), backoff = tonumber(opts.backoff),
    wait = not opts.no_wait, deadline = tonumber(opts.deadline)})
  if c.dry_run then return 0 end
  ledger_billing{instance = it.name, uuid = it.uuid, action = "power_on", outcome = st and "ok" or "accepted",
                 meter = st == "running" and "on" or nil, power_state = st, price = billing.price_per_hour(it)}
  io.write(string.format("%s: %s\n", it.name, st or "power-on accepted"))
  return 0
end

local function power_off(c, ref, opts)
  local it = c:find(ref)
  local facts = profile_facts()
  local reader, label = manifest_reader(opts)
  local ok, err = pcall(gate.check, {action = "power_off", instance = it.name, names = {it.uuid, ref},
    irreversible = facts.irreversible_power_off, pulled_dir = opts.pulled, read_remote_manifest = reader,
    remote_label = label, dry_run = opts.dry_run})
  if not ok then
    if opts.dry_run and errors.is_refusal(err) then io.write("dry run: the gate would refuse now (see above)\n")
    else error(err, 0) end
  end
  local st = c:power_off(it.uuid, {wait = not opts.no_wait, deadline = tonumber(opts.deadline)})
  if c.dry_run then return 0 end
  ledger_billing{instance = it.name, uuid = it.uuid, action = "power_off", outcome = st and "ok" or "accepted",
                 meter = st == "shutdown" and "off" or nil, power_state = st}
  io.write(string.format("%s: %s\n", it.name, st or "power-off accepted"))
  return 0
end

local function release(c, ref, opts)
  local it = c:find(ref)
  local reader, label = manifest_reader(opts)
  local ok, err = pcall(gate.check, {action = "release", instance = it.name, names = {it.uuid, ref},
    pulled_dir = opts.pulled, read_remote_manifest = reader, remote_label = label, dry_run = opts.dry_run})
  if not ok then
    if opts.dry_run and errors.is_refusal(err) then io.write("dry run: the gate would refuse now (see above)\n")
    else error(err, 0) end
  end
  -- The approval name handed to C is one the person approved; C checks it again.
  local approved = nil
  for _, n in ipairs({it.name, it.uuid, ref}) do
    if require("gpurent.core").approval.granted(n) then approved = n; break end
  end
  local _, rid, dry = c:release(it.uuid, {approval = approved or it.name})
  if dry then return 0 end
  ledger_billing{instance = it.name, uuid = it.uuid, action = "release", outcome = "accepted", meter = "off",
                 power_state = "released", request_id = rid}
  io.write(string.format("%s: release accepted (request_id %s)\n", it.name, tostring(rid)))
  return 0
end

function M.main(args)
  local opts, pos = cli.options(args, SPEC, M.usage)
  if opts.help or #pos == 0 then io.write(M.usage, "\n"); return opts.help and 0 or 2 end
  local verb, ref = pos[1], pos[2]
  if verb == "budget" then
    if not ref or not tonumber(pos[3]) then errors.usage("usage: gpurent billing budget INSTANCE YUAN [--warn F]", 0) end
    billing.set_budget(ref, tonumber(pos[3]), tonumber(opts.warn))
    io.write(string.format("budget for %s: %s yuan (warn at %d%%)\n", ref, pos[3],
      math.floor(100 * (tonumber(opts.warn) or billing.WARN_FRACTION) + 0.5)))
    return 0
  end
  if verb == "autostop" then return require("gpurent.billing.autostop").command(ref, opts) end
  local verbs = {status = true, ["power-on"] = true, ["power-off"] = true, release = true}
  if not verbs[verb] then errors.usage("unknown billing verb " .. verb .. "\n" .. M.usage, 0) end
  if verb ~= "status" and not ref then errors.usage("gpurent billing " .. verb .. " needs INSTANCE", 0) end
  local c = autodl.client{dry_run = opts.dry_run}
  if not c:has_token() then
    errors.usage("no AutoDL developer token: set AUTODL_TOKEN or AUTODL_TOKEN_FILE (or autodl.token_file in ~/.config/gpurent/config.yaml)", 0)
  end
  if verb == "status" then return status(c, ref, opts) end
  if verb == "power-on" then return power_on(c, ref, opts) end
  if verb == "power-off" then return power_off(c, ref, opts) end
  return release(c, ref, opts)
end

return M

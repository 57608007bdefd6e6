-- gpurent billing: the meter and the power verbs on the platform's API (gpurent.platform:
-- the profile's, --profile NAME or the default profile).
-- status reads; power-on checks the budget; inventory records what dies with the
-- instance (gpurent.inventory); power-off and release go through the platform's one
-- guarded function (P.stop = gpurent.billing.stop: the teardown gate, whose approval only the person
-- gives: `--approve`, parsed by the C host, or the instance name typed on the terminal).
local billing = require "gpurent.billing"
local cli = require "gpurent.cli"
local errors = require "gpurent.util.errors"
local gate = require "gpurent.lifecycle.gate"
local json = require "gpurent.util.json"
local money_json = require "gpurent.util.money"
local platform = require "gpurent.platform"
local profile_mod = require "gpurent.config.profile"
local stop = require "gpurent.billing.stop"

local M = {summary = "the platform's meter, balance, budgets, danger clocks; create, power-on/off, release and a scheduler's job cancel (gated)"}
M.usage = [[usage:
  gpurent billing status [INSTANCE] [--json]
  gpurent billing power-on INSTANCE [--dry-run] [--no-wait] [--retries N] [--backoff S]
  gpurent billing inventory TARGET INSTANCE
  gpurent billing power-off INSTANCE [--ssh TARGET] [--approve INSTANCE] [--dry-run] [--no-wait]
  gpurent billing release INSTANCE [--pulled DIR]... [--discard GLOB]...
                          [--remote-manifest TARGET:PATH | --durable-dir DIR] [--approve INSTANCE] [--dry-run]
  gpurent billing budget INSTANCE YUAN [--warn FRACTION]
  gpurent billing budget --account YUAN [--warn FRACTION]
  gpurent billing create NAME --gpu-spec SPEC --image IMAGE [--data-center DC,...] [--gpus N]
                          [--cuda V] [--disk-gb N] [--start-command CMD] [--stock-attempts N]
                          [--stock-wait 10m] [--stock-backoff 10s] [--identity KEY] [--approve NAME]
                          [--dry-run] [--profile NAME]
  gpurent billing autostop TARGET (--idle 30m | --ttl 6h | --budget YUAN) [--interval 60s] [--stop-stalled]
                          [--threshold PCT] [--budget-warn PCT] [--mode tmux|nohup] [--profile NAME]
  gpurent billing autostop TARGET --status [--json] | --off
  gpurent billing cancel HOST RUN_ID|JOB_ID|JOB_TASK [--approve HOST] [--dry-run] [--profile NAME]

INSTANCE is the platform's instance uuid or name (the profile's platform: --profile NAME,
default the default profile). status --json gives money (balance,
price_per_hour, accrued, ...) as decimal strings in thousandths of a yuan, e.g. "0.088". The API token
comes from the environment variable or the file (mode 600; a file others can read is refused)
that the profile's billing.api.token names; a missing token is reported with their names.

release deletes the data disk and the system disk, and the platform may release only a
powered-off box, which SSH cannot reach: so `inventory` (TARGET: the box's ssh_config
alias or user@host:port) lists, while it runs, every file that dies with it (the profile's
release section) and hashes those whose size some PULL_MANIFEST.json on the box names;
power-off takes one too when it has SSH access (--ssh TARGET; an alias added with `gpurent host add`
is its own TARGET; or from the teardown phase).
release then needs BOTH your approval and, from the inventory of the powered-on stretch
that ended in this power-off, every file covered: by a verified pull (same size and
SHA-256 as a file of any run's PULL_VERIFIED.json whose manifest equals one re-read on
the box; runs from the ledger and each --pulled DIR), by the profile's reproducible globs
(caches), or by --discard GLOB (relative to the tier's mount point, e.g. 'otherproj/**',
or absolute; echoed with sizes before anything is sent; a glob matching nothing is an
error). A refusal lists what is not pulled, largest first, and the command that pulls it.
--remote-manifest TARGET:PATH / --durable-dir DIR also re-check the first --pulled DIR
against the result root's PULL_MANIFEST.json now (over SSH / a local directory).
Approval: --approve INSTANCE on this command line, or type the name when asked on the
terminal. power-off needs only approval where the profile calls it reversible.
--dry-run prints the exact API call (token shown as ***) instead of sending it.
autostop installs a watchdog ON the box (TARGET: ssh_config alias or user@host:port) that
runs the profile's in-instance power-off (billing.meter_stop.in_instance_verb; reversible) once
the box is idle for the window (no job of ours, last job's durable sync verified, GPU idle,
nobody logged in) or the TTL has passed, or (--budget YUAN) once the box's spend reaches
YUAN: the price and the spend so far come from the API at arming; it warns at --budget-warn
PCT (80) in its log, `--status` and, when you put the platform's push token in
~/.gpurent/autostop/push.token on the box, a push; at the budget it copies each running
job's newest checkpoint to the job's durable dir (sha256 re-read), then powers off, jobs
or not. Arming it is your approval of that power-off.
budget: a billable step (power-on, create, a run's launch, each sweep cell) on a box whose
spend (the ledger, refreshed from the provider's state and price) reached its budget is
refused; past --warn (default 0.8) it warns. --account sets one budget for the whole account.
create starts a meter: it needs --approve NAME and passes the budget gate first; out of
stock it retries with a growing wait, at most --stock-attempts (6) tries within --stock-wait
(10m), the first wait --stock-backoff (10s) then doubling, then gives up naming both; the
new instance, once running, becomes the ssh alias NAME linked to its uuid by
`gpurent host add NAME --uuid UUID [--identity KEY]` (first contact included).
cancel stops a job on a scheduler (Slurm: scancel), named by its job id or by the run whose
current job it is (HOST: the cluster's alias; its profile: --profile, else the ledger's
record of HOST or the run's, else the default): the scheduler is asked what the job is,
then the gate asks for approval as for a power-off (--approve HOST, or the name typed on
the terminal); refused, nothing is sent (exit 3). --dry-run names the job and the gate's
verdict and sends nothing. A job that already ended is left alone.
Every verb that talks to the API refreshes the ledger from the provider (gpurent cost).
Exit codes: 0 ok, 1 error, 2 usage, 3 refused by the gate or the budget.]]

local SPEC = {json = "flag", dry_run = "flag", no_wait = "flag", retries = "value", backoff = "value",
              remote_manifest = "value", durable_dir = "value", warn = "value", ssh = "value",
              deadline = "value", account = "flag",
              -- create
              gpu_spec = "value", image = "value", data_center = "value", gpus = "value", cuda = "value",
              disk_gb = "value", start_command = "value", stock_attempts = "value", stock_wait = "value",
              stock_backoff = "value", identity = "value",
              -- autostop (lua/gpurent/billing/autostop.lua)
              idle = "value", ttl = "value", interval = "value", stop_stalled = "flag", threshold = "value",
              mode = "value", profile = "value", off = "flag", status = "flag", budget = "value", budget_warn = "value"}

local function ledger_billing(t)
  local ok, err = pcall(function()
    local L = require("gpurent.state.ledger").open()
    L:upsert_instance{name = t.instance, profile = t.profile, provider_id = t.uuid}
    L:record_billing{instance = t.instance, action = t.action, outcome = t.outcome, meter = t.meter,
                     power_state = t.power_state, price_per_hour = t.price, request_id = t.request_id,
                     detail = t.detail}
    L:close()
  end)
  if not ok then io.stderr:write("gpurent: (ledger: ", tostring(err), ")\n") end
end

local function money(v) return v and string.format("%.2f", v) or "?" end

local function profile_facts(p)
  local b = p.billing or {}
  local durable = profile_mod.durable_tier(p)
  return {irreversible_power_off = platform.power_off_irreversible(p),
          auto_release_days = b.auto_release and b.auto_release.after_days or billing.AUTO_RELEASE_DAYS,
          survivor = durable and durable.path}
end

local function status(c, ref, opts)
  local bal = c:balance()
  local items = ref and {c:find(ref)} or c:instances()
  local all = ref and c:instances() or items
  -- the ledger follows the provider (cost, status, budgets); a failure is said, not fatal
  local ok, err = pcall(require("gpurent.billing.meter").refresh, c, {profile = opts.profile_name, items = all, wallet = bal})
  if not ok then io.stderr:write("gpurent: the ledger was not refreshed: ", errors.message(err), "\n") end
  local burn, now = 0, os.time()
  for _, it in ipairs(all) do
    if it.status == "running" then burn = burn + (billing.price_per_hour(it) or 0) end
  end
  local budgets, facts = billing.budgets(), profile_facts(opts.profile_table)
  local rows = {}
  for _, it in ipairs(items) do
    local spent = billing.spent(it, now)
    local bstate, btext = billing.budget_state(spent, budgets[it.name] or budgets[it.uuid])
    rows[#rows + 1] = {name = it.name, uuid = it.uuid, status = it.status, price_per_hour = billing.price_per_hour(it),
      accrued = spent, budget = bstate, budget_text = btext,
      danger_clocks = json.array(billing.danger_clocks(it, {balance = bal.assets, burn_per_hour = burn, now = now,
        auto_release_days = facts.auto_release_days, survivor = facts.survivor}))}
  end
  if opts.json then
    for _, r in ipairs(rows) do money_json.fields(r, {"price_per_hour", "accrued"}) end
    io.write(json.encode_stable(money_json.fields({balance = bal.assets, accumulate = bal.accumulate,
      voucher_balance = bal.voucher_balance, burn_per_hour = burn, instances = json.array(rows)},
      {"balance", "accumulate", "voucher_balance", "burn_per_hour"})))
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
      local inst = require("gpurent.transport.instance").connect(target)
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
  -- spend so far: the ledger refreshed from the provider (every stretch it billed)
  billing.budget_gate{instance = it.alias or it.name, action = "power_on", client = c, profile = opts.profile_name}
  local st = c:power_on(it.uuid, {retries = tonumber(opts.retries), backoff = tonumber(opts.backoff),
    wait = not opts.no_wait, deadline = tonumber(opts.deadline)})
  if c.dry_run then return 0 end
  ledger_billing{instance = it.name, uuid = it.uuid, profile = opts.profile_name, action = "power_on", outcome = st and "ok" or "accepted",
                 meter = st == "running" and "on" or nil, power_state = st, price = billing.price_per_hour(it)}
  io.write(string.format("%s: %s\n", it.name, st or "power-on accepted"))
  return 0
end

local function power_off(c, ref, opts)
  -- --pulled / --discard count where the profile calls power-off irreversible (it judges the disk)
  -- an alias added with `gpurent host add` is its own SSH target: the short command
  -- (`power-off HOST --approve HOST`) still takes the inventory a later release needs
  local target = opts.ssh or (require("gpurent.hosts").read_hosts()[ref] and ref or nil)
  opts.platform.stop{verb = "power_off", client = c, ref = ref, target = target, dry_run = opts.dry_run,
    profile = opts.profile_table, profile_name = opts.profile_name,
    pulled = opts.pulled, discard = opts.discard, wait = not opts.no_wait, deadline = tonumber(opts.deadline)}
  return 0
end

local function release(c, ref, opts)
  local reader, label = manifest_reader(opts)
  if reader and #opts.pulled == 0 then
    errors.usage("--remote-manifest / --durable-dir re-check a verified pull: give its --pulled DIR too", 0)
  end
  opts.platform.stop{verb = "release", client = c, ref = ref, pulled = opts.pulled, discard = opts.discard,
    pulled_dir = reader and opts.pulled[1] or nil, read_remote_manifest = reader, remote_label = label,
    dry_run = opts.dry_run, profile = opts.profile_table, profile_name = opts.profile_name}
  return 0
end

local function positive_int(v, what)
  local n = v and math.tointeger(tonumber(v))
  if v and (not n or n < 1) then errors.usage(what .. " wants a positive integer, not " .. tostring(v), 0) end
  return n
end

-- A new instance: approval and the budget gate first (nothing is sent on a refusal),
-- then create with the stock bound, then the host alias and its ledger link.
local function create(c, name, opts)
  require("gpurent.lifecycle.run").check_name("instance name", name)
  if not opts.gpu_spec or not opts.image then
    errors.usage("gpurent billing create " .. name .. " needs --gpu-spec SPEC and --image IMAGE", 0)
  end
  local dcs
  if opts.data_center then
    dcs = {}
    for dc in opts.data_center:gmatch("[^,%s]+") do dcs[#dcs + 1] = dc end
    if #dcs == 0 then errors.usage("--data-center wants DC[,DC...]", 0) end
  end
  local o = {client = c, name = name, gpu_spec = opts.gpu_spec, image = opts.image, data_centers = dcs,
    gpus = positive_int(opts.gpus, "--gpus"), cuda = opts.cuda and positive_int(opts.cuda, "--cuda"),
    disk_gb = opts.disk_gb and math.tointeger(tonumber(opts.disk_gb)), start_command = opts.start_command,
    attempts = positive_int(opts.stock_attempts, "--stock-attempts"),
    max_wait = opts.stock_wait and require("gpurent.billing.autostop").parse_duration(opts.stock_wait, "--stock-wait"),
    backoff = opts.stock_backoff and require("gpurent.billing.autostop").parse_duration(opts.stock_backoff, "--stock-backoff"),
    deadline = tonumber(opts.deadline)}
  if opts.disk_gb and not o.disk_gb then errors.usage("--disk-gb wants an integer", 0) end
  if not c.dry_run and not gate.approved_name({name}) then
    errors.refuse(string.format("create %s starts a meter: pass --approve %s to approve it; nothing was sent", name, name), 0)
  end
  billing.budget_gate{instance = name, action = "create", client = c, profile = opts.profile_name}
  local r = opts.platform.create(o)
  if c.dry_run then return 0 end
  io.write(string.format("%s: created %s (%s) after %d attempt(s); running\n", name, r.uuid,
    r.item.region_sign or "?", r.attempts))
  ledger_billing{instance = name, uuid = r.uuid, profile = opts.profile_name, action = "create", outcome = "ok",
    meter = "on", power_state = "running", price = billing.price_per_hour(r.item)}
  io.write(string.format("%s: meter ON at %s yuan/h\n", name, money(billing.price_per_hour(r.item))))
  -- the alias in the same step, by `gpurent host add NAME --uuid UUID`'s own code: the
  -- snapshot's address, the ledger link, the first contact (host key, setup)
  local args = {"add", name, "--uuid", r.uuid, "--profile", opts.profile_name}
  if opts.identity then args[#args + 1] = "--identity"; args[#args + 1] = opts.identity end
  local rc = require("gpurent.commands.host").main(args)
  if rc ~= 0 then
    io.stderr:write(string.format("gpurent: %s is created and registered (its meter is ON), but the first contact failed\n", name))
  end
  return rc
end

-- --pulled and --discard may be given many times: taken out before cli.options.
local REPEATED = {pulled = true, discard = true}
local function repeated_options(args)
  local rest, lists, i = {}, {pulled = {}, discard = {}}, 1
  while i <= #args do
    local a = args[i]
    if a == "--" then table.move(args, i, #args, #rest + 1, rest); break end
    local name, value = a:match("^%-%-(%w+)=(.*)$")
    if not name and REPEATED[a:sub(3)] and a:sub(1, 2) == "--" then
      name, value, i = a:sub(3), args[i + 1], i + 1
      if value == nil then errors.usage("option " .. a .. " needs a value", 0) end
    end
    if name and REPEATED[name] then lists[name][#lists[name] + 1] = value else rest[#rest + 1] = a end
    i = i + 1
  end
  return rest, lists
end

function M.main(args)
  local rest, lists = repeated_options(args)
  local opts, pos = cli.options(rest, SPEC, M.usage)
  opts.pulled, opts.discard = lists.pulled, lists.discard
  if opts.help then io.write(M.usage, "\n"); return 0 end
  if #pos == 0 then errors.usage("billing needs a verb (status, power-on, power-off, release, ...)\n" .. M.usage, 0) end
  local verb, ref = pos[1], pos[2]
  if (#opts.pulled > 0 or #opts.discard > 0) and verb ~= "release" and verb ~= "power-off" then
    errors.usage("--pulled and --discard belong to release (and power-off), not to " .. tostring(verb), 0)
  end
  if verb == "budget" then
    if opts.account then table.insert(pos, 2, billing.ACCOUNT); ref = billing.ACCOUNT end
    if not ref or not tonumber(pos[3]) or pos[4] then
      errors.usage("usage: gpurent billing budget INSTANCE YUAN [--warn F] | --account YUAN [--warn F]", 0)
    end
    billing.set_budget(ref, tonumber(pos[3]), tonumber(opts.warn))
    io.write(string.format("budget for %s: %s yuan (warn at %d%%)\n", ref == billing.ACCOUNT and "the account" or ref, pos[3],
      math.floor(100 * (tonumber(opts.warn) or billing.WARN_FRACTION) + 0.5)))
    return 0
  end
  if verb == "autostop" then return require("gpurent.billing.autostop").command(ref, opts) end
  if verb == "cancel" then
    if not ref or not pos[3] or pos[4] then
      errors.usage("usage: gpurent billing cancel HOST RUN_ID|JOB_ID|JOB_TASK [--approve HOST] [--dry-run] [--profile NAME]", 0)
    end
    for k in pairs(opts) do
      if k ~= "profile" and k ~= "dry_run" and k ~= "pulled" and k ~= "discard" and k ~= "help" then
        errors.usage("--" .. k:gsub("_", "-") .. " does not belong to gpurent billing cancel", 0)
      end
    end
    return require("gpurent.billing.cancel").run(ref, pos[3], {profile = opts.profile, dry_run = opts.dry_run})
  end
  if opts.account then errors.usage("--account belongs to gpurent billing budget", 0) end
  for _, k in ipairs({"gpu_spec", "image", "data_center", "gpus", "cuda", "disk_gb", "start_command", "stock_attempts",
      "stock_wait", "stock_backoff", "identity"}) do
    if opts[k] and verb ~= "create" then errors.usage("--" .. k:gsub("_", "-") .. " belongs to gpurent billing create", 0) end
  end
  local verbs = {status = true, ["power-on"] = true, ["power-off"] = true, release = true, inventory = true,
                 create = true}
  if not verbs[verb] then errors.usage("unknown billing verb " .. verb .. "\n" .. M.usage, 0) end
  if verb ~= "status" and not ref then errors.usage("gpurent billing " .. verb .. " needs INSTANCE", 0) end
  opts.profile_name = opts.profile or profile_mod.default_name()
  opts.profile_table = profile_mod.load(opts.profile_name)
  opts.platform = platform.of(opts.profile_table)
  if verb == "create" and not (opts.platform.verbs or {}).create then
    return platform.of("generic").create()     -- no API to create with: refuses
  end
  local c = opts.platform.require_client{dry_run = opts.dry_run}
  if verb == "create" then return create(c, ref, opts) end
  if verb == "status" then return status(c, ref, opts) end
  if verb == "power-on" then return power_on(c, ref, opts) end
  if verb == "power-off" then
    power_off(c, ref, opts)
    pcall(require("gpurent.billing.meter").refresh, c, {profile = opts.profile_name})
    return 0
  end
  if verb == "inventory" then
    if not pos[3] then errors.usage("usage: gpurent billing inventory TARGET INSTANCE (TARGET: the box's ssh alias)", 0) end
    stop.take_inventory(c, ref, pos[3], {profile = opts.profile_table, profile_name = opts.profile_name})
    return 0
  end
  return release(c, ref, opts)
end

return M

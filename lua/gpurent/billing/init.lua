-- gpurent.billing: the meter, budgets, danger clocks and idle detection. Policy
-- only: the API calls are the platform's client (gpurent.platform), the gate is
-- gpurent.lifecycle.gate.
--
--   billing.parse_time(iso) -> unix seconds | nil           (an API's {time, valid} too)
--   billing.accrued(item, now) -> yuan since the last power-on (price x powered-on time)
--   billing.danger_clocks(item, {balance=, burn_per_hour=, now=, auto_release_days=15,
--                                survivor = the durable tier's path (what a release spares)})
--       -> {{name=, deadline=, seconds_left=, text=}...}
--   billing.budget_state(spent, budget) -> "none" | "ok" | "warn" | "exceeded", text
--   billing.budgets() / billing.set_budget(instance, yuan, warn_fraction)
--   billing.check_billable(instance, spent, action [, budget]) -- refuses (exit 3) over budget
--   billing.budget_gate{instance=, action=, client=?, profile=?, refresh=?, now=, ledger_path=}
--       -> state, text   THE budget gate of every new billable step (launch, each sweep cell,
--       create, power-on): refreshes the ledger from the provider when it can, then refuses
--       (exit 3) a box whose spend reached its budget, or any step once the account's
--       budget (billing.ACCOUNT, `gpurent billing budget --account YUAN`) is spent
--   billing.box_budget{instance=, budgets=?, price=?, profile=?, now=, ledger_path=}
--       -> {yuan=, spent=, price=, at=} | nil, why   what a loop on the box (no API token
--       there) needs to keep this box's budget: the budget, the ledger's spend at `at`
--       (refresh first: budget_gate does), the provider's price per hour of the box
--   billing.parse_gpu_util(text) -> {percent...} | nil, why  (nvidia-smi csv, noheader, nounits)
--   billing.idle_patrol{read_util=, job_alive=, idle_seconds=, notify=, now=} -> patrol
--       patrol:tick() -> state {idle=, idle_for=, notified=, why=}
--   billing.notify{instance=, kind=, message=, push=, out=, ledger_path=, profile=}
--       gpurent.notify.send: terminal + ledger; push(m) when given (the platform's channel,
--       P.notify), within its limits (held and summarised when over)
--   billing.idle_patrol without notify= but with instance=: notifies through gpurent.notify
local errors = require "gpurent.util.errors"
local fs = require "gpurent.util.fs"
local json = require "gpurent.util.json"

local billing = {}

billing.AUTO_RELEASE_DAYS = 15
billing.WARN_FRACTION = 0.8
billing.ACCOUNT = "*"          -- the budgets.json key of the account-wide budget

-- ---- time ---------------------------------------------------------------------

local function days_from_civil(y, m, d)       -- Howard Hinnant's algorithm (UTC, no tz)
  y = m <= 2 and y - 1 or y
  local era = (y >= 0 and y or y - 399) // 400
  local yoe = y - era * 400
  local doy = (153 * (m + (m > 2 and -3 or 9)) + 2) // 5 + d - 1
  local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  return era * 146097 + doe - 719468
end

function billing.parse_time(v)
  if type(v) == "table" then
    if v.valid == false then return nil end
    v = v.time
  end
  if type(v) ~= "string" then return nil end
  local y, mo, d, h, mi, s, rest = v:match("^(%d%d%d%d)-(%d%d)-(%d%d)[T ](%d%d):(%d%d):(%d%d)%.?%d*(.*)$")
  if not y then return nil end
  local t = days_from_civil(tonumber(y), tonumber(mo), tonumber(d)) * 86400 + tonumber(h) * 3600
    + tonumber(mi) * 60 + tonumber(s)
  if rest == "Z" or rest == "" then return t end
  local sign, oh, om = rest:match("^([+-])(%d%d):?(%d%d)$")
  if not sign then return nil end
  local off = (tonumber(oh) * 3600 + tonumber(om) * 60) * (sign == "+" and 1 or -1)
  return t - off
end

-- ---- the meter ------------------------------------------------------------------

-- Price in yuan per hour from a list item / snapshot (API money is thousandths).
function billing.price_per_hour(item, per_yuan)
  local p = item and (item.payg_price or item.price_per_hour_milli)
  if type(p) ~= "number" then return nil end
  return p / (per_yuan or 1000)
end

-- What the current powered-on stretch has cost: price x time since started_at.
function billing.accrued(item, now, price)
  now = now or os.time()
  price = price or billing.price_per_hour(item)
  if not price or item.status ~= "running" then return 0 end
  local started = billing.parse_time(item.started_at)
  if not started then return nil end
  return price * math.max(0, now - started) / 3600
end

-- Spend to date for budgets: what the ledger metered for this instance (every
-- recorded power-on stretch), or, when the ledger knows nothing, the API's current
-- stretch. Never less than the current stretch.
function billing.spent(item, now)
  now = now or os.time()
  local current = billing.accrued(item, now) or 0
  local ok, cost = pcall(function()
    local ledger = require "gpurent.state.ledger"
    if not ledger.exists() then return 0 end
    local L = ledger.open()
    local total = 0
    for _, r in ipairs(L:status(now)) do
      if r.name == item.name or (item.uuid and r.provider_id == item.uuid) then total = total + (r.accrued_cost or 0) end
    end
    L:close()
    return total
  end)
  if not ok then return current end
  return math.max(cost, current)
end

-- ---- danger clocks -----------------------------------------------------------------

local function fmt_left(s)
  if s <= 0 then return "now" end
  local d, h = s // 86400, (s % 86400) // 3600
  if d > 0 then return string.format("%dd %dh", d, h) end
  return string.format("%dh %dm", h, (s % 3600) // 60)
end
billing.fmt_left = fmt_left

function billing.danger_clocks(item, o)
  o = o or {}
  local now = o.now or os.time()
  local clocks = {}
  if item.status == "shutdown" then
    local stopped = billing.parse_time(item.stopped_at)
    if stopped then
      local days = o.auto_release_days or billing.AUTO_RELEASE_DAYS
      local deadline = stopped + days * 86400
      clocks[#clocks + 1] = {name = "auto_release", deadline = deadline, seconds_left = deadline - now,
        text = string.format("auto-release in %s (%d days after power-off): / and the data disk are deleted; %s",
          fmt_left(deadline - now), days, o.survivor and ("only " .. o.survivor .. " survives") or "nothing on the box survives")}
    end
    clocks[#clocks + 1] = {name = "storage_trickle",
      text = "powered off, but the data disk storage still bills a small rate until release"}
  end
  if o.balance and o.burn_per_hour and o.burn_per_hour > 0 and item.status == "running" then
    local secs = math.floor(o.balance / o.burn_per_hour * 3600)
    clocks[#clocks + 1] = {name = "low_balance", deadline = now + secs, seconds_left = secs,
      text = string.format("balance %.2f yuan lasts %s at %.2f yuan/h for the running instances; arrears force a power-off",
        o.balance, fmt_left(secs), o.burn_per_hour)}
  end
  return clocks
end

-- ---- budgets -------------------------------------------------------------------------

local function budgets_path()
  return require("gpurent.state.ledger").state_dir() .. "/budgets.json"
end

function billing.budgets()
  local p = budgets_path()
  if not fs.exists(p) then return {} end
  return json.decode(fs.read_file(p), p)
end

function billing.set_budget(instance, yuan, warn)
  if type(yuan) ~= "number" or yuan <= 0 then errors.usage("budget must be a positive number of yuan", 0) end
  warn = warn or billing.WARN_FRACTION
  if warn <= 0 or warn > 1 then errors.usage("--warn must be a fraction in (0, 1]", 0) end
  local all = billing.budgets()
  all[instance] = {yuan = yuan, warn = warn}
  local p = budgets_path()
  fs.mkdirs(p:match("^(.*)/"))
  fs.atomic_write(p, json.encode_stable(all))
end

function billing.budget_state(spent, budget)
  if not budget then return "none", "no budget set" end
  if not spent then return "unknown", "spend unknown" end
  local warn = budget.warn or billing.WARN_FRACTION
  local text = string.format("%.2f of %.2f yuan (%.0f%%)", spent, budget.yuan, 100 * spent / budget.yuan)
  if spent >= budget.yuan then return "exceeded", text end
  if spent >= warn * budget.yuan then return "warn", text end
  return "ok", text
end

-- New billable actions (power_on, launch) are refused once the budget is spent.
function billing.check_billable(instance, spent, action, budget)
  budget = budget or billing.budgets()[instance]
  local state, text = billing.budget_state(spent, budget)
  if state == "exceeded" then
    errors.refuse(string.format("budget exceeded for %s: %s; %s refused (raise it: gpurent billing budget %s YUAN)",
      instance, text, action, instance), 0)
  elseif state == "warn" then
    io.stderr:write(string.format("gpurent: warning: %s has spent %s of its budget\n", instance, text))
  end
  return state, text
end

-- The budget of a box: set on any of its names (an ssh alias, the provider's name, its uuid).
local function budget_of(names, all)
  for _, n in ipairs(names) do if all[n] then return all[n], n end end
  return nil
end

-- Names and ledger spend of a box, every row linked to it counted once.
local function box_spend(ref, now, path)
  local ledger = require "gpurent.state.ledger"
  local meter = require "gpurent.billing.meter"
  local names, total = {ref}, 0
  if not ledger.exists(path) then return names, 0 end
  local L <close> = ledger.open(path)
  local rows, uuid = meter.group(L, ref)
  if uuid then names[#names + 1] = uuid end
  local mine = {}
  for _, r in ipairs(rows) do mine[r.name] = true; if r.name ~= ref then names[#names + 1] = r.name end end
  local account = 0
  for _, r in ipairs(L:status(now)) do
    account = account + (r.accrued_cost or 0)
    if mine[r.name] then total = total + (r.accrued_cost or 0) end
  end
  return names, total, account
end

function billing.budget_gate(o)
  local now = o.now or os.time()
  local meter = require "gpurent.billing.meter"
  local refreshed, why = nil, nil
  if o.refresh ~= false then
    if o.client then
      local ok, r = pcall(meter.refresh, o.client, {profile = o.profile or require("gpurent.config.profile").default_name(),
        now = now, ledger_path = o.ledger_path})
      refreshed, why = ok and r or nil, not ok and errors.message(r) or nil
    else
      refreshed, why = meter.try_refresh{profile = o.profile, now = now}
    end
  end
  local names, spent, account = box_spend(o.instance, now, o.ledger_path)
  local all = o.budgets or billing.budgets()
  local note = (refreshed or o.refresh == false) and "" or (" (ledger only: " .. tostring(why or "not refreshed") .. ")")
  local acct = all[billing.ACCOUNT]
  if acct then
    local st, text = billing.budget_state(account or 0, acct)
    if st == "exceeded" then
      errors.refuse(string.format("account budget exceeded: spent %s%s; %s on %s refused (raise it: gpurent billing budget --account YUAN)",
        text, note, o.action, o.instance), 0)
    elseif st == "warn" then
      io.stderr:write(string.format("gpurent: warning: the account has spent %s of its budget\n", text))
    end
  end
  local budget, key = budget_of(names, all)
  if not budget then return "none", "no budget set" end
  local st, text = billing.budget_state(spent, budget)
  if st == "exceeded" then
    errors.refuse(string.format("budget exceeded for %s: %s%s; %s refused (raise it: gpurent billing budget %s YUAN)",
      o.instance, text, note, o.action, key), 0)
  elseif st == "warn" then
    -- past the warn fraction: the terminal line, the ledger, and the platform's push
    -- when configured (within its limits: gpurent.notify)
    local msg = string.format("warning: %s has spent %s of its budget (%s)", o.instance, text, o.action)
    local sent = pcall(require("gpurent.notify").send, {kind = "budget", message = msg, instance = o.instance,
      push = true, profile_name = o.profile, ledger_path = o.ledger_path, out = io.stderr})
    if not sent then io.stderr:write("gpurent: ", msg, "\n") end
  end
  return st, text
end

-- The box's price per hour from the platform's API; nil, why without one.
local function api_price(instance, profile)
  local profile_mod = require "gpurent.config.profile"
  local p = type(profile) == "table" and profile or profile_mod.load(profile or profile_mod.default_name())
  local c, why = require("gpurent.platform").of(p).client()
  if not c then return nil, why end
  local price = billing.price_per_hour(c:find(instance), c.per_yuan)
  if not price then return nil, "the provider gives no price for " .. instance end
  return price
end

function billing.box_budget(o)
  local now = o.now or os.time()
  local names, spent = box_spend(o.instance, now, o.ledger_path)
  local budget = budget_of(names, o.budgets or billing.budgets())
  if not budget then return nil, "no budget set" end
  local price, why = o.price, nil
  if not price then
    local ok, res, no = pcall(api_price, o.instance, o.profile)
    if not ok then return nil, errors.message(res) end
    price, why = res, no
  end
  if not price then return nil, why end
  return {yuan = budget.yuan, spent = spent or 0, price = price, at = now}
end

-- ---- idle detection ----------------------------------------------------------------

-- nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits: one integer
-- per line. Anything else (an error text, "[N/A]", nothing) is not a reading.
function billing.parse_gpu_util(text)
  if type(text) ~= "string" then return nil, "no output" end
  local out = {}
  for line in text:gmatch("[^\n]+") do
    line = line:match("^%s*(.-)%s*$")
    if line ~= "" then
      local n = line:match("^(%d+)$")
      if not n or tonumber(n) > 100 then return nil, "unreadable GPU utilisation: " .. line:sub(1, 80) end
      out[#out + 1] = tonumber(n)
    end
  end
  if #out == 0 then return nil, "no GPU utilisation lines" end
  return out
end

-- A patrol: idle means every GPU at or under threshold AND no live job, continuously
-- for idle_seconds. A reading that fails, times out or is garbage counts as activity
-- (never conclude idle on doubt). read_util() -> text; job_alive() -> bool|nil.
function billing.idle_patrol(o)
  local p = {o = o, idle_since = nil, notified = false}
  local now = o.now or os.time
  local threshold = o.threshold or 5
  function p.tick()
    local t = now()
    local ok, text = pcall(o.read_util)
    local utils, why = nil, nil
    if ok then utils, why = billing.parse_gpu_util(text) else why = tostring(text) end
    local busy = not utils
    if utils then for _, u in ipairs(utils) do if u > threshold then busy = true; why = "GPU busy (" .. u .. "%)" end end end
    local aok, alive = true, false
    if o.job_alive then aok, alive = pcall(o.job_alive) end
    if not aok or alive ~= false then busy = true; why = why or (aok and "a job is running" or "job state unreadable: " .. tostring(alive)) end
    if busy then
      p.idle_since, p.notified = nil, false
      return {idle = false, why = why or "busy"}
    end
    p.idle_since = p.idle_since or t
    local idle_for = t - p.idle_since
    local state = {idle = true, idle_for = idle_for}
    if idle_for >= o.idle_seconds and not p.notified then
      p.notified = true
      state.notified = true
      local text = string.format("idle for %s: GPU at or under %d%% and no job of ours running; the meter is still on",
        fmt_left(idle_for), threshold)
      if o.notify then o.notify(text)
      elseif o.instance then
        require("gpurent.notify").send{kind = "idle", instance = o.instance, message = text, profile_name = o.profile_name}
      end
    end
    return state
  end
  return p
end

-- Terminal always, the ledger always, the push channel when one is given (push{title=,
-- name=, content=} -> sent, why: P.notify); gpurent.notify keeps the channel's limits.
function billing.notify(n)
  local P = n.platform
  if not P and n.push and n.profile then      -- the profile's own channel: counted under its platform
    local ok, p = pcall(require("gpurent.config.profile").load, n.profile)
    local okP, of = pcall(require("gpurent.platform").of, ok and p or nil)
    if okP and of.notify == n.push then P = of end
  end
  local r = require("gpurent.notify").send{kind = n.kind or "idle", message = n.message, instance = n.instance,
    run_id = n.run_id, push = (P and n.push == P.notify) and true or n.push or false, platform = P,
    channel = n.channel, limits = n.limits, out = n.out, ledger_path = n.ledger_path, profile_name = n.profile}
  return r.push == "sent" or r.push == "summarized"
end

return billing

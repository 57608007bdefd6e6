-- gpurent.billing.meter: the ledger's meter kept to the provider's own word. gpurent
-- records the power verbs it sends, but a box started or stopped elsewhere (the
-- console, arrears, another laptop) bills all the same: refresh() reads every
-- instance's state, price and start/stop times from the platform's API and writes
-- the stretches the ledger has not seen as billing events (action "status", at the
-- provider's own times), so `gpurent cost` counts them; it also sets the power state
-- of every ledger row linked to the instance (an alias from `host add --uuid`).
-- reconcile() sets the ledger's total beside the wallet's accumulated spend: the
-- difference is shown, never hidden (spend before the ledger began, storage while
-- off, instances released before gpurent saw them).
--
--   meter.refresh(client, {profile=, currency=, now=, ledger_path=, items=, wallet=})
--       -> {instances = {...}, wallet = {...}}   (items/wallet: already read from the API)
--   meter.record(items, o) -> {...}               a listing already read, into the ledger
--   meter.observe(P, items, {per_yuan=}) -> {...} the client's hook on every full listing
--   meter.try_refresh(o) -> report | nil, why    the default profile's platform, when it has a client
--   meter.group(L, ref) -> {rows}, uuid           ledger rows of one box (name, alias or uuid)
--   meter.spent(ref, now [, ledger_path]) -> yuan the ledger's metered cost of that box
--   meter.reconcile(ledger_total, wallet) -> {ledger=, wallet=, difference=, text=}
local billing = require "gpurent.billing"
local ledger = require "gpurent.state.ledger"

local meter = {}

-- The provider's status as the ledger's words (power_state, meter).
local STATES = {running = {"running", "on"}, shutdown = {"stopped", "off"}}

-- Every ledger row that names one box: by name, by the uuid it is linked to, and
-- every row linked to the same uuid (ssh aliases). uuid: the link, if any.
function meter.group(L, ref, uuid)
  if not uuid then
    local r = L.db:query("SELECT provider_id FROM instances WHERE name = ? OR provider_id = ?", ref, ref)[1]
    uuid = r and r.provider_id
  end
  local rows = L.db:query("SELECT * FROM instances WHERE name = ? OR (provider_id IS NOT NULL AND provider_id = ?) ORDER BY id",
    ref, uuid or ref)
  return rows, uuid
end

local function last_meter_event(L, ids)
  if #ids == 0 then return nil end
  local marks = string.rep("?,", #ids):sub(1, -2)
  return L.db:query("SELECT meter, at, price_per_hour FROM billing_events WHERE meter IS NOT NULL AND instance_id IN ("
    .. marks .. ") ORDER BY at DESC, id DESC LIMIT 1", table.unpack(ids))[1]
end

-- The stretches the provider reports and the ledger lacks, as {meter, at} events.
function meter.missing_events(item, last)
  local S, P = billing.parse_time(item.started_at), billing.parse_time(item.stopped_at)
  local out = {}
  local function add(m, at) out[#out + 1] = {meter = m, at = at} end
  if item.status == "running" and S then
    if last and last.meter == "on" then
      -- on in the ledger, but the provider stopped and restarted it since: close and reopen
      if P and P > last.at and S > P then add("off", P); add("on", S) end
    else
      add("on", math.max(S, last and last.at or S))
    end
  elseif item.status == "shutdown" and P then
    if last and last.meter == "on" then
      add("off", math.max(P, last.at))
    elseif S and S < P and (not last or S > last.at) then
      add("on", S); add("off", P)                      -- a whole stretch run elsewhere
    end
  end
  return out
end

local function refresh_item(L, item, o)
  local price = billing.price_per_hour(item, o.per_yuan)
  local rows = meter.group(L, item.name, item.uuid)
  local home
  for _, r in ipairs(rows) do if r.name == item.name then home = r end end
  home = home or rows[1]
  local name = home and home.name or item.name
  L:upsert_instance{name = name, profile = home and home.profile or o.profile, provider_id = item.uuid,
    currency = o.currency, price_per_hour = price, at = o.now}
  if not home then rows = meter.group(L, item.name, item.uuid) end
  local ids = {}
  for _, r in ipairs(rows) do ids[#ids + 1] = r.id end
  local added = meter.missing_events(item, last_meter_event(L, ids))
  for _, e in ipairs(added) do
    L:record_billing{instance = name, action = "status", outcome = "ok", meter = e.meter, at = e.at,
      price_per_hour = e.meter == "on" and price or nil,
      detail = string.format("provider: %s (%s at %s), not sent by gpurent", item.status,
        e.meter == "on" and "started" or "stopped", ledger.time_text(e.at))}
  end
  local st = STATES[item.status] or {item.status, "unknown"}
  for _, r in ipairs(rows) do
    L.db:run("UPDATE instances SET power_state = ?, meter = ?, price_per_hour = coalesce(?, price_per_hour), updated_at = ? WHERE id = ?",
      st[1], st[2], price, o.now, r.id)
  end
  return {name = name, uuid = item.uuid, status = item.status, price_per_hour = price, added = #added}
end

-- A listing already read from the API, into the ledger (no API call): every instance
-- in it gets its row, power state, price and the stretches the ledger lacks.
function meter.record(items, o)
  o = o or {}
  o.now = o.now or os.time()
  local L <close> = ledger.open(o.ledger_path)
  local out = {}
  L:transaction(function()
    for _, item in ipairs(items) do out[#out + 1] = refresh_item(L, item, o) end
  end)
  return out
end

function meter.refresh(client, o)
  o = o or {}
  o.now = o.now or os.time()
  o.per_yuan = o.per_yuan or client.per_yuan
  local items = o.items or client:instances()
  local wallet = o.wallet or client:balance()
  return {instances = meter.record(items, o), wallet = wallet}
end

-- The platform client's hook on every listing of the whole account (P's client calls
-- it from instances()): an instance started on the console that gpurent never
-- touched enters the ledger the first time any command lists it, so `gpurent cost`
-- and `status` count it from then on, even without a token.
function meter.observe(P, items, o)
  o = o or {}
  local name = require("gpurent.billing.clock").profile_name_for(P)
  local ok, p = pcall(require("gpurent.config.profile").load, name)
  local money = ok and p.billing and p.billing.money or {}
  return meter.record(items, {profile = name, currency = money.currency, per_yuan = o.per_yuan or money.per_yuan,
    now = o.now, ledger_path = o.ledger_path})
end

-- Refresh through the default (or named) profile's platform; nil, why when it has no
-- client (no token, no API) or the API failed: callers print why and go on with
-- what the ledger holds.
function meter.try_refresh(o)
  o = o or {}
  local ok, res, why = pcall(function()
    local profile = require "gpurent.config.profile"
    local name = o.profile or profile.default_name()
    local p = profile.load(name)
    local c, no = require("gpurent.platform").of(p).client(o.client_opts)
    if not c then return nil, no end
    local money = p.billing and p.billing.money or {}
    return meter.refresh(c, {profile = name, currency = money.currency, per_yuan = money.per_yuan, now = o.now})
  end)
  if not ok then return nil, require("gpurent.util.errors").message(res) end
  return res, why
end

-- What the ledger metered for one box (every linked row), in yuan.
function meter.spent(ref, now, path)
  if not ledger.exists(path) then return 0 end
  local L <close> = ledger.open(path)
  local rows = meter.group(L, ref)
  local names = {}
  for _, r in ipairs(rows) do names[r.name] = true end
  local total = 0
  for _, r in ipairs(L:status(now)) do if names[r.name] then total = total + (r.accrued_cost or 0) end end
  return total
end

function meter.reconcile(ledger_total, wallet)
  local w = wallet and wallet.accumulate
  if not w then return nil end
  local d = w - ledger_total
  local cents = math.floor(math.abs(d) * 100 + 0.5)
  return {ledger = ledger_total, wallet = w, difference = d,
    text = string.format("wallet: spent to date %.2f yuan (the provider's); ledger %.2f; difference %s%d.%02d%s",
      w, ledger_total, (d >= 0 or cents == 0) and "+" or "-", cents // 100, cents % 100,
      cents > 0 and " (not in the ledger: spend before it began, storage while powered off, "
        .. "instances released before gpurent saw them)" or "")}
end

return meter

-- gpurent.billing.clock: the release clock of a powered-off box (a platform that
-- releases a box left powered off for N days, with its disks: the profile's
-- billing.auto_release). Policy only: the days and the reminder days come from the
-- profile, the words from the platform (P.hints.release_clock / auto_released /
-- clock_short), the ledger keeps the clock (danger_clocks, name auto_release) and the
-- reminders sent (clock_reminders), gpurent.notify tells the person.
--
--   clock.rules(profile) -> {days=, remind_days={...}, survivor=} | nil (no such clock)
--   clock.powered_off(L, {instance=, profile=, started_at=}) -> clock id | nil
--   clock.powered_on(L, instance, at?)
--   clock.observe(P, items, {now=, out=})   the provider's whole list, seen now: each box's
--       ledger row (updated when the ledger knows it, by uuid or name; made for a powered-off
--       box), its power state (not its meter: that is the billing events'),
--       power state, region and stop time (a console power-off counts from the provider's
--       stopped time); a box gone from the list after its clock ran out is explained
--       (and notified once) as the auto-release. Called by the platform's client.
--   clock.explain_missing(ref) -> text | nil   "b1 was powered off on DATE, 15 days ago: ..."
--   clock.remind{out=, now=}   reminders due (the profile's remind_days), each once per clock
--   clock.view(c, now) -> {instance, started_at, deadline, days, days_off, days_left, survivor}
--   clock.short(c, now) -> "b1 off 10d: ... releases it in 5d"   (status, prompt, connect)
--   clock.open(now) -> {view...}   every open release clock
--   clock.peers_of(name, region?) -> {view...}   open clocks of OTHER boxes in name's region
--   clock.connect_warning(target, cfg)   the one line printed at a connect (once per process)
--   clock.on_command()   what every gpurent command does first: reminders and held pushes
local ledger = require "gpurent.state.ledger"

local clock = {}

clock.NAME = "auto_release"
local DAY = 86400

local function load_profile(name)
  local profile_mod = require "gpurent.config.profile"
  local ok, p = pcall(profile_mod.load, name or profile_mod.default_name())
  return ok and p or nil
end

local function platform_of(p)
  local ok, P = pcall(require("gpurent.platform").of, p)
  return ok and P or require("gpurent.platform").of(nil)
end

function clock.rules(p)
  local ar = type(p) == "table" and p.billing and p.billing.auto_release
  if type(ar) ~= "table" or not ar.after_days then return nil end
  for _, d in ipairs(ar.remind_days or {}) do
    if d >= ar.after_days then
      require("gpurent.util.errors").usage(string.format("profile of platform %s: billing.auto_release.remind_days: " ..
        "day %d is not before after_days %d (the box is released by then): name days below %d",
        tostring(p.platform), d, ar.after_days, ar.after_days), 0)
    end
  end
  local durable = require("gpurent.config.profile").durable_tier(p)
  return {days = ar.after_days, remind_days = ar.remind_days or {}, survivor = durable and durable.path}
end

function clock.powered_off(L, t)
  local p = type(t.profile) == "table" and t.profile or load_profile(t.profile)
  local r = clock.rules(p)
  if not r then return nil end
  return L:open_clock{instance = t.instance, name = clock.NAME, started_at = t.started_at,
    deadline = t.started_at + r.days * DAY, note = "powered off: released after " .. r.days .. " days"}
end

function clock.powered_on(L, instance, at)
  L:clear_danger_clock(instance, clock.NAME, at)
end

function clock.view(c, now)
  now = now or os.time()
  local p = load_profile(c.profile)
  local r = clock.rules(p) or {days = math.floor((c.deadline - c.started_at) / DAY + 0.5)}
  local started = c.started_at or (c.deadline - r.days * DAY)
  return {instance = c.instance, started_at = started, deadline = c.deadline, days = r.days,
          days_off = math.max(0, (now - started) // DAY), days_left = math.max(0, -((now - c.deadline) // DAY)),
          seconds_left = c.deadline - now, survivor = r.survivor, id = c.id, region = c.region,
          profile = p, platform = platform_of(p)}
end

function clock.short(c, now)
  local v = c.days_off and c or clock.view(c, now)
  local h = v.platform.hints and v.platform.hints.clock_short
  if h then return h(v) end
  return string.format("%s off %dd: released in %dd", v.instance, v.days_off, v.days_left)
end

-- fn(L) on the ledger; nil without one, unless `create` (what the provider shows is recorded).
local function with_ledger(fn, create)
  if not create and not ledger.exists() then return nil end
  local L = ledger.open()
  local ok, res = pcall(fn, L)
  L:close()
  if not ok then error(res, 0) end
  return res
end

function clock.open(now)
  return with_ledger(function(L)
    local out = {}
    for _, c in ipairs(L:open_clocks(clock.NAME)) do out[#out + 1] = clock.view(c, now) end
    return out
  end) or {}
end

-- ---- the provider's view ------------------------------------------------------------------

local function row_of(L, it)
  return L.db:query("SELECT * FROM instances WHERE provider_id = ? ORDER BY id LIMIT 1", it.uuid)[1]
    or L.db:query("SELECT * FROM instances WHERE name = ?", it.name)[1]
end

local function profile_name_for(P)
  local profile_mod = require "gpurent.config.profile"
  local name = profile_mod.default_name()
  local p = load_profile(name)
  if p and p.platform == P.name then return name end
  return P.name
end
clock.profile_name_for = profile_name_for     -- the profile a platform's listing is recorded under

local function released_text(v)
  local P = v.platform
  return P.hints and P.hints.auto_released and P.hints.auto_released(v)
    or string.format("%s was powered off on %s, %d days ago: the platform released it with its disks",
      v.instance, os.date("!%Y-%m-%d", v.started_at), v.days_off)
end

-- The box vanished from the account: after its clock ran out, that is the auto-release
-- (recorded, and its text returned for one notification); earlier, nothing is concluded.
local function vanished(L, c, now)
  local v = clock.view(c, now)
  if v.days_off < v.days - 1 then return nil end
  L.db:run("UPDATE instances SET power_state = 'released', meter = 'off', updated_at = ? WHERE name = ?", now, c.instance)
  L:clear_danger_clock(c.instance, clock.NAME, now)
  return {text = released_text(v), view = v}
end

function clock.observe(P, items, o)
  o = o or {}
  if not P.item_facts then return end
  local now = o.now or os.time()
  local gone = {}
  with_ledger(function(L)
    local seen = {}
    local pname = nil
    for _, it in ipairs(items) do
      seen[it.uuid or ""], seen[it.name or ""] = true, true
      local f = P.item_facts(it)
      local row = row_of(L, it)
      -- a box the ledger knows, or a powered-off one (its clock runs); the meter column
      -- is left to the billing events (a meter "on" with no event would read as 0.00)
      if row or f.powered_off then
        pname = pname or profile_name_for(P)
        local name = row and row.name or it.name
        L:upsert_instance{name = name, profile = row and row.profile or pname, provider_id = it.uuid,
          power_state = f.power_state, at = now}
        if f.region then L:set_region(name, f.region) end
        if f.powered_off then
          local open = L.db:query([[SELECT c.started_at FROM danger_clocks c JOIN instances i ON i.id = c.instance_id
            WHERE i.name = ? AND c.name = ? AND c.cleared_at IS NULL]], name, clock.NAME)[1]
          local start = f.stopped_at or (open and open.started_at) or now
          if open and open.started_at and f.stopped_at and f.stopped_at > open.started_at + 60 then
            clock.powered_on(L, name, now)            -- powered on and off again unseen: a new stretch
          end
          clock.powered_off(L, {instance = name, profile = row and row.profile or pname, started_at = start})
        elseif f.running then
          clock.powered_on(L, name, now)
        end
      end
    end
    for _, c in ipairs(L:open_clocks(clock.NAME)) do
      if c.provider_id and not seen[c.provider_id] and not seen[c.instance] then gone[#gone + 1] = c end
    end
  end, true)
  for _, c in ipairs(gone) do
    local r = with_ledger(function(L) return vanished(L, c, now) end)
    if r then
      require("gpurent.notify").send{kind = "auto_release", instance = c.instance, message = r.text, once = true,
        out = o.out, profile = r.view.profile, platform = r.view.platform}
    end
  end
  clock.remind{now = now, out = o.out}
end

function clock.explain_missing(ref)
  return with_ledger(function(L)
    local c = L:last_clock(ref, clock.NAME)
    if not c then return nil end
    local v = clock.view(c)
    if v.days_off < v.days - 1 then return nil end
    return released_text(v)
  end)
end

-- ---- reminders ------------------------------------------------------------------------------

function clock.remind(o)
  o = o or {}
  local now = o.now or os.time()
  local due = with_ledger(function(L)
    local list = {}
    for _, c in ipairs(L:open_clocks(clock.NAME)) do
      local v = clock.view(c, now)
      local top = nil
      for _, d in ipairs(clock.rules(v.profile) and clock.rules(v.profile).remind_days or {}) do
        if v.days_off >= d and (not top or d > top) then top = d end
      end
      if top and L:remind_once(c.id, top, nil, now) then
        -- the earlier days are covered by this one: one message, never a burst of three
        for _, d in ipairs(clock.rules(v.profile).remind_days) do if d < top then L:remind_once(c.id, d, nil, now) end end
        list[#list + 1] = v
      end
    end
    return list
  end) or {}
  for _, v in ipairs(due) do
    local h = v.platform.hints and v.platform.hints.release_clock
    local text = h and h(v) or string.format("%s has been powered off for %d days: released in %d days with its disks",
      v.instance, v.days_off, v.days_left)
    require("gpurent.notify").send{kind = "release_clock", instance = v.instance, message = text, out = o.out,
      profile = v.profile, platform = v.platform}
  end
  return #due
end

-- ---- peers: the boxes of the same region --------------------------------------------------

local function region_of(L, name, cfg)
  local r = L.db:query("SELECT region FROM instances WHERE name = ? OR provider_id = ?", name, name)[1]
  if r and r.region then return r.region end
  -- the profile's host pattern names the region in the HostName (connect.{region}...)
  local host = cfg and cfg.hostname
  if not host then return nil end
  for _, c in ipairs(L:open_clocks(clock.NAME)) do
    local p = load_profile(c.profile)
    local pat = p and p.connect and p.connect.host_pattern
    if pat and pat:find("{region}", 1, true) then
      local lua_pat = "^" .. pat:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0"):gsub("{region}", "([%%w_-]+)"):gsub("{[%w_]+}", "[%%w_-]+") .. "$"
      local region = host:match(lua_pat)
      if region then return region end
    end
  end
  return nil
end

function clock.peers_of(name, cfg, now)
  return with_ledger(function(L)
    local region = region_of(L, name, cfg)
    if not region then return {} end
    local out = {}
    for _, c in ipairs(L:open_clocks(clock.NAME)) do
      if c.region == region and c.instance ~= name and c.provider_id ~= name then out[#out + 1] = clock.view(c, now) end
    end
    return out
  end) or {}
end

local warned = {}

function clock.connect_warning(target, cfg, out)
  if warned[target] then return end
  warned[target] = true
  local ok, peers = pcall(clock.peers_of, target, cfg)
  if not ok or #peers == 0 then return end
  local parts = {}
  for _, v in ipairs(peers) do parts[#parts + 1] = clock.short(v) end
  (out or io.stderr):write("gpurent: warning: a powered-off peer of ", target, " in its region: ",
    table.concat(parts, "; "), "\n")
end

function clock.on_command(o)
  o = o or {}
  local sd = require "gpurent.state.dir"
  if not ledger.exists(o.ledger_path) then sd.clear_pending(o.ledger_path); return end
  local ok, err = pcall(clock.remind, o)
  if not ok then (o.out or io.stderr):write("gpurent: (release clock reminders: ", tostring(err), ")\n") end
  pcall(require("gpurent.notify").flush, o)
  -- nothing left to remind of or to send: the next command skips all of this
  pcall(function()
    local L = ledger.open(o.ledger_path)
    local left = L:pending_work()
    L:close()
    if not left then sd.clear_pending(o.ledger_path) end
  end)
end

return clock

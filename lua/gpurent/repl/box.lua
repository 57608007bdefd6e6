-- gpurent.repl.box: what `gpurent repl HOST` knows about the box it is bound to.
--
--   local b = box.new(host)             b:attach(inst)  (after connecting)
--   b:profile_name(explicit) -> name, why    which profile the helpers use:
--       --profile NAME; else the profile the ledger recorded for HOST; else a profile
--       whose connect.alias_pattern / host_pattern matches the alias / HostName;
--       else the default profile when its platform's account has the instance (asked
--       through gpurent.platform); else generic-ssh
--   b:platform() -> P, the platform of the session's profile (before one is chosen:
--       the default profile's);  b:default_platform() -> P, profile (the default profile's)
--   b:item() -> the platform's list item matched to HOST | nil, why
--       matched by the uuid the ledger links to the alias (`host add --uuid`), by
--       name or uuid equal to HOST, else by the ssh endpoint of the instance's
--       snapshot (proxy_host:ssh_port = the alias's HostName:Port)
--   b:meter() -> {source = "api"|"ledger", meter = "on"|"off"|..., accrued, currency,
--                 price_per_hour, status, item | row} | nil, why
--   b:meter_text() -> "1.23 CNY meter on" | "meter off" | "meter ?" | "meter manual" | nil
--       (read at most every 30 s; nil when the profile's billing.meter is none)
--   b:remember(m)   b:invalidate()      keep a fresh reading / read again next time
--   b:clock_text() -> "b1 off 10d: ... releases it in 5d" | nil   the release clocks the prompt
--       names (gpurent.billing.clock): a powered-off same-region peer of HOST, or for a
--       local REPL every powered-off box; read from the ledger at most every 30 s
--
-- The prompt must never show a false 0.00: an unknown meter reads "meter ?".
local box = {}
local Box = {}
Box.__index = Box

local METER_TTL = 30          -- seconds between two meter reads for the prompt
local API_TIMEOUT = 5         -- seconds: the prompt waits on this call
local MAX_SNAPSHOTS = 20      -- endpoint matching reads at most this many snapshots

function box.new(host)
  return setmetatable({host = host}, Box)
end

function Box:attach(inst)
  self.inst = inst
end

-- The session's profile: its billing.meter says whether a meter can be read at all.
function Box:set_profile(p)
  self.profile = p
  self.meter_cache = nil
  self.client_obj, self.platform_obj = nil, nil
end

-- Forget what was read, e.g. after power_off(): the next prompt reads again.
function Box:invalidate()
  self.meter_cache = nil
end

---------------------------------------------------------------- the ledger

-- The ledger's row for HOST (by name, or a provider id equal to HOST); nil, why when
-- there is no ledger, no row, or the ledger cannot be read.
function Box:ledger_row()
  local ledger = require "gpurent.state.ledger"
  if not ledger.exists(ledger.default_path()) then return nil, "no ledger yet" end
  local ok, rows = pcall(function()
    local L = ledger.open()
    local st = L:status()
    L:close()
    return st
  end)
  if not ok then return nil, "the ledger cannot be read: " .. tostring(rows) end
  for _, row in ipairs(rows) do
    if row.name == self.host or row.provider_id == self.host then return row end
  end
  return nil, "the ledger has no record of " .. self.host
end

---------------------------------------------------------------- the provider

-- The platform of the session's profile; before one is chosen, the default profile's
-- (its account is asked whether it has this host: profile_name below).
function Box:platform()
  if not self.platform_obj then
    if self.profile then self.platform_obj = require("gpurent.platform").of(self.profile)
    else self.platform_obj = self:default_platform() end
  end
  return self.platform_obj
end

-- The default profile's platform and profile (nil when it does not load: generic).
function Box:default_platform()
  local profile = require "gpurent.config.profile"
  local ok, dp = pcall(function() return profile.load(profile.default_name()) end)
  return require("gpurent.platform").of(ok and dp or nil), ok and dp or nil
end

local function api_name(P) return (P.title or P.name) .. " API" end

-- The platform's billing client when it has an API and a token, else nil, why.
function Box:client()
  if self.client_obj == nil then
    local c, why = self:platform().client{timeout = API_TIMEOUT}
    if c then self.client_obj = c else self.client_obj, self.client_why = false, why end
  end
  if not self.client_obj then return nil, self.client_why end
  return self.client_obj
end

local function by_field(items, field, value)
  if not value then return nil end
  for _, it in ipairs(items) do if it[field] == value then return it end end
  return nil
end

-- The instance whose snapshot's ssh endpoint is the one this session connected to.
function Box:match_endpoint(c, items)
  local cfg = self.inst and self.inst.cfg
  if not (cfg and cfg.hostname and cfg.port) then return nil end
  for i, it in ipairs(items) do
    if i > MAX_SNAPSHOTS then break end
    local ok, snap = pcall(c.snapshot, c, it.uuid)
    if ok and snap.proxy_host == cfg.hostname and tonumber(snap.ssh_port) == tonumber(cfg.port) then return it end
  end
  return nil
end

function Box:find_item(c, items)
  local row = self:ledger_row()
  return by_field(items, "uuid", self.uuid) or by_field(items, "uuid", row and row.provider_id)
    or by_field(items, "name", self.host) or by_field(items, "uuid", self.host)
    or self:match_endpoint(c, items)
end

function Box:item()
  local c, why = self:client()
  if not c then return nil, why end
  local ok, items = pcall(c.instances, c)
  if not ok then return nil, api_name(self:platform()) .. ": " .. tostring(items) end
  local it = self:find_item(c, items)
  if not it then return nil, "no instance of this " .. (self:platform().title or "platform") .. " account matches " .. self.host end
  self.uuid = it.uuid
  return it
end

---------------------------------------------------------------- the profile

-- Why the profile p fits this host ("its alias matches gpu-{project}-{n}"), or nil.
function Box:pattern_fit(p)
  local hostname = self.inst and self.inst.cfg and self.inst.cfg.hostname
  return require("gpurent.platform").profile_fits(p, self.host, hostname)
end

-- A profile whose alias or host pattern fits this host (gpurent.platform.profile_for_host).
function Box:profile_by_pattern()
  local hostname = self.inst and self.inst.cfg and self.inst.cfg.hostname
  return require("gpurent.platform").profile_for_host(self.host, hostname)
end

function Box:profile_name(explicit)
  if explicit then return explicit, "--profile" end
  local row = self:ledger_row()
  if row and row.profile then return row.profile, "the ledger's record of " .. self.host end
  local name, why = self:profile_by_pattern()
  if name then return name, why end
  local it = self:item()
  if it then
    return require("gpurent.config.profile").default_name(), (self:platform().title or "platform") .. " instance " .. it.uuid
  end
  return "generic-ssh", "no platform recognised"
end

---------------------------------------------------------------- the meter

local function meter_word(status)
  if status == "running" then return "on" end
  if status == "shutdown" or status == "released" then return "off" end
  return status or "?"
end

function Box:meter_from_api()
  local it, why = self:item()
  if not it then return nil, why end
  local billing = require "gpurent.billing"
  return {source = "api", status = it.status, meter = meter_word(it.status), item = it, currency = "CNY",
          price_per_hour = billing.price_per_hour(it), accrued = billing.spent(it)}
end

function Box:meter_from_ledger()
  local row, why = self:ledger_row()
  if not row then return nil, why end
  if row.meter ~= "on" and row.meter ~= "off" then
    return nil, "the ledger has no billing record of " .. self.host .. " (meter " .. tostring(row.meter) .. ")"
  end
  return {source = "ledger", meter = row.meter, status = row.power_state, accrued = row.accrued_cost,
          currency = row.currency, price_per_hour = row.price_per_hour, row = row}
end

-- The real state: the platform's API when it has one and a token, else the ledger.
function Box:meter()
  local m, why_api = self:meter_from_api()
  if m then return m end
  local l, why_ledger = self:meter_from_ledger()
  if l then return l end
  return nil, why_api .. "; " .. why_ledger
end

-- Money only while the meter runs: an "accrued 0.00" beside a stopped meter reads
-- as "this box cost nothing", which the current stretch alone cannot say.
local function text_of(m)
  if not m then return "meter ?" end
  if m.meter ~= "on" then return "meter " .. tostring(m.meter) end
  local cost = m.accrued and require("gpurent.state.ledger").money_text(m.accrued, m.currency) or "?"
  return string.format("%s meter on", cost)
end

function Box:clock_text()
  local now = require("gpurent.util.sys").now()
  if self.clock_cache and now - self.clock_cache.at < METER_TTL then return self.clock_cache.text end
  local clock = require "gpurent.billing.clock"
  local views = self.host and clock.peers_of(self.host, self.inst and self.inst.cfg) or clock.open()
  local parts = {}
  for _, v in ipairs(views) do parts[#parts + 1] = clock.short(v) end
  self.clock_cache = {at = now, text = #parts > 0 and table.concat(parts, "; ") or nil}
  return self.clock_cache.text
end

-- Keep a meter just read (by meter()) for the prompt.
function Box:remember(m)
  self.meter_cache = {at = require("gpurent.util.sys").now(), text = text_of(m)}
end

-- The profile's billing.meter decides what can be known: "none" (the local machine)
-- shows no meter; "manual" (a box billed outside gpurent's reach) says so unless the
-- ledger recorded a state; "api" asks the provider.
function Box:meter_text()
  local kind = self.profile and self.profile.billing and self.profile.billing.meter
  if kind == "none" then return nil end
  local now = require("gpurent.util.sys").now()
  if self.meter_cache and now - self.meter_cache.at < METER_TTL then return self.meter_cache.text end
  if kind == "manual" then
    local m = self:meter_from_ledger()
    self.meter_cache = {at = now, text = m and text_of(m) or "meter manual"}
    return self.meter_cache.text
  end
  self:remember((self:meter()))
  return self.meter_cache.text
end

return box

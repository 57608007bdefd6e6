-- gpurent status: what the ledger says about each instance: profile, power state,
-- meter, accrued cost, danger clocks, and the current run and phase. Reads only; until
-- the billing and lifecycle code record live state, it shows what the ledger holds.
-- Power state and cost are first refreshed from the platform's API when the default
-- profile has one (gpurent.billing.meter), for every row linked to an instance.
local cli = require "gpurent.cli"
local json = require "gpurent.util.json"
local ledger = require "gpurent.state.ledger"
local money = require "gpurent.util.money"
local meter = require "gpurent.billing.meter"

local M = {summary = "instances, meters, accrued cost, danger clocks, current run (from the ledger)"}
M.usage = [[usage: gpurent status [--json]
Shows each instance the ledger knows: profile, power state, meter, accrued cost
(refreshed first from the provider's API when the default profile's token is set),
danger clocks (e.g. release after 15 days powered off), current run and phase.
--json: the same as JSON; money (accrued_cost, price_per_hour) is a decimal string in
thousandths of the currency unit, e.g. "0.088" (exact: no binary-float digits).
The ledger is $GPURENT_STATE_DIR/ledger.sqlite, else $XDG_STATE_HOME/gpurent/ledger.sqlite.]]

-- The release clock of a powered-off box reads in days (gpurent.billing.clock: the
-- platform's words, e.g. "b1 off 10d: ... releases it in 5d"); other clocks by name.
local function clocks_text(clocks, row, now)
  local parts = {}
  for _, c in ipairs(clocks) do
    if c.name == "auto_release" and row.meter == "on" then
      -- powered on since the ledger last saw the provider's list: the clock no longer runs
    elseif c.name == "auto_release" and c.started_at then
      parts[#parts + 1] = require("gpurent.billing.clock").short({instance = row.name, started_at = c.started_at,
        deadline = c.deadline, profile = row.profile}, now)
    else
      parts[#parts + 1] = c.seconds_left >= 0 and (c.name .. " in " .. ledger.duration_text(c.seconds_left))
        or (c.name .. " OVERDUE " .. ledger.duration_text(-c.seconds_left))
    end
  end
  return #parts > 0 and table.concat(parts, "; ") or "-"
end

local function phase_text(p, now)
  if not p then return "-" end
  if p.ended_at then return p.name .. " (" .. (p.outcome or "ended") .. ")" end
  return p.name .. " (running " .. ledger.duration_text(now - p.started_at) .. ")"
end

-- One name per box: rows the ledger links to one provider instance (an ssh alias from
-- `host add --uuid` and the API's own name) are one instance: costs add up, the newest
-- known power state and meter win, the run is whichever row has one. names = every name.
local function merge_linked(rows)
  local by_id, out = {}, {}
  for _, r in ipairs(rows) do
    local first = r.provider_id and by_id[r.provider_id]
    if not first then
      if r.provider_id then by_id[r.provider_id] = r end
      r.names = {r.name}
      out[#out + 1] = r
    else
      first.names[#first.names + 1] = r.name
      first.accrued_cost = (first.accrued_cost or 0) + (r.accrued_cost or 0)
      for _, c in ipairs(r.danger_clocks) do first.danger_clocks[#first.danger_clocks + 1] = c end
      local function known(v) return v ~= "unknown" and v or nil end
      if (r.updated_at or 0) > (first.updated_at or 0) then
        first.power_state = known(r.power_state) or first.power_state
        first.meter = known(r.meter) or first.meter
        first.price_per_hour = r.price_per_hour or first.price_per_hour
        first.currency, first.updated_at = r.currency or first.currency, r.updated_at
      end
      if not first.run and r.run then first.run, first.phase = r.run, r.phase end
    end
  end
  return out
end

local function display_name(r)
  if #r.names < 2 then return r.name end
  return r.names[1] .. " (" .. table.concat(r.names, ", ", 2) .. ")"
end

local function as_json(path, rows)
  for _, r in ipairs(rows) do
    r.danger_clocks = json.array(r.danger_clocks)
    r.run = r.run or json.null
    r.phase = r.phase or json.null
    money.fields(r, {"accrued_cost", "price_per_hour"})
  end
  return json.encode_stable({ledger = path, instances = json.array(rows)})
end

function M.main(args)
  local opts, rest = cli.options(args, {json = "flag"}, M.usage)
  if opts.help then io.write(M.usage, "\n"); return 0 end
  if #rest > 0 then gpurent.usage_error("status takes no arguments\n" .. M.usage, 0) end
  local fresh, why = meter.try_refresh()
  local path = ledger.default_path()
  if not ledger.exists(path) then
    if opts.json then io.write(json.encode_stable({ledger = path, instances = json.array()}))
    else io.write("nothing recorded yet (no ledger at ", path, ")\n") end
    return 0
  end
  local L <close> = ledger.open(path)
  local now = os.time()
  local rows = merge_linked(L:status(now))
  if opts.json then io.write(as_json(path, rows)); return 0 end
  if #rows == 0 then io.write("no instances in the ledger (", path, ")\n"); return 0 end
  local t = {{"INSTANCE", "PROFILE", "POWER", "METER", "ACCRUED", "DANGER CLOCKS", "RUN", "PHASE"}}
  for _, r in ipairs(rows) do
    t[#t + 1] = {display_name(r), r.profile, r.power_state, r.meter, ledger.money_text(r.accrued_cost, r.currency),
      clocks_text(r.danger_clocks, r, now), r.run and r.run.id or "-", phase_text(r.phase, now)}
  end
  io.write(ledger.table_text(t))
  local linked = false
  for _, r in ipairs(rows) do linked = linked or r.provider_id ~= nil end
  if not fresh and linked then
    io.stderr:write("gpurent: power and cost as last recorded (provider not asked: ", tostring(why), ")\n")
  end
  return 0
end

return M

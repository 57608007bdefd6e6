-- gpurent cost: what the metered time recorded in the ledger cost, per instance and
-- per run (the instance's metered time inside the run's window), since a date. It
-- first refreshes the ledger from the platform's API when the default profile has one
-- (gpurent.billing.meter: instances started elsewhere count) and sets the ledger's
-- total beside the wallet's accumulated spend. A run on a scheduler (Slurm) has no
-- meter: its GPU- and CPU-hours come from the cluster's accounting (sacct, through
-- gpurent.billing.usage: asked again here for the runs whose figures may still
-- change), priced where its profile gives slurm.price_per_gpu_hour.
local cli = require "gpurent.cli"
local json = require "gpurent.util.json"
local ledger = require "gpurent.state.ledger"
local meter = require "gpurent.billing.meter"
local money = require "gpurent.util.money"
local usage = require "gpurent.billing.usage"

local M = {summary = "accrued cost per run and per instance (from the ledger)"}
M.usage = [[usage: gpurent cost [--since DATE] [--json]
DATE is local time: YYYY-MM-DD, or YYYY-MM-DD HH:MM[:SS] (a T may replace the space).
Cost is metered time (billing events that turned the meter on and off) times the
price per hour in force; a run's cost is its instance's metered time during the run.
With the platform's API at hand (the default profile's token), the ledger is first
refreshed from the provider's own state, price and start/stop times (instances started
on the console count too), and its total is shown beside the wallet's accumulated
spend with the difference.
A run on a Slurm cluster has no meter: its row shows the GPU-hours and CPU-hours the
cluster's accounting (sacct) gives for all its jobs, and their cost at the profile's
slurm.price_per_gpu_hour (in its billing.money.currency), or "no price"; the cluster is
asked again for the runs whose jobs had not ended (the watch and the close record them too).
--json: money (cost, totals) is a decimal string in thousandths of the currency unit,
e.g. "0.088" (exact: no binary-float digits); a scheduler run has "usage": {gpu_hours,
cpu_hours, jobs, final, cost (absent without a price), currency}.]]

-- A scheduler run's usage in the JSON document: hours as numbers, money as decimal text.
local function usage_json(u)
  local out = {jobs = json.array(u.job_ids), final = u.final, states = u.states, currency = u.currency,
    gpu_hours = tonumber(usage.hours(u.gpu_seconds)), cpu_hours = tonumber(usage.hours(u.cpu_seconds)),
    gpu_seconds = u.gpu_seconds, cpu_seconds = u.cpu_seconds, cost = u.cost}
  return money.fields(out, {"cost"})
end

-- Local date/time text -> Unix seconds, or nil.
function M.parse_date(s)
  local y, mo, d, rest = s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)(.*)$")
  if not y then return nil end
  local h, mi, sec = 0, 0, 0
  if rest ~= "" then
    h, mi, sec = rest:match("^[T ](%d%d):(%d%d):?(%d?%d?)$")
    if not h then return nil end
    sec = sec ~= "" and sec or 0
  end
  local t = {year = tonumber(y), month = tonumber(mo), day = tonumber(d), hour = tonumber(h),
             min = tonumber(mi), sec = tonumber(sec), isdst = nil}
  if t.month < 1 or t.month > 12 or t.day < 1 or t.day > 31 or t.hour > 23 or t.min > 59 or t.sec > 60 then
    return nil
  end
  return os.time(t)
end

function M.main(args)
  local opts, rest = cli.options(args, {json = "flag", since = "value"}, M.usage)
  if opts.help then io.write(M.usage, "\n"); return 0 end
  if #rest > 0 then gpurent.usage_error("unexpected argument " .. rest[1] .. "\n" .. M.usage, 0) end
  local since
  if opts.since then
    since = M.parse_date(opts.since)
    if not since then gpurent.usage_error("--since: cannot read date " .. string.format("%q", opts.since) ..
      " (expected YYYY-MM-DD or YYYY-MM-DD HH:MM[:SS])", 0) end
  end
  local fresh, why = meter.try_refresh()
  local path = ledger.default_path()
  local acct = ledger.exists(path) and usage.refresh_open{out = io.stderr} or {problems = {}}
  if not ledger.exists(path) then
    if opts.json then io.write(json.encode_stable({ledger = path, instances = json.array(), runs = json.array(), totals = {}}))
    else io.write("nothing recorded yet (no ledger at ", path, ")\n") end
    return 0
  end
  local L <close> = ledger.open(path)
  local report = L:cost{since = since}
  local all_time = 0
  for _, v in pairs((since and L:cost{} or report).totals) do all_time = all_time + v end
  local rec = fresh and meter.reconcile(all_time, fresh.wallet)
  if opts.json then
    report.ledger = path
    report.provider = rec and money.fields({refreshed = true, wallet_accumulate = rec.wallet, ledger_total = rec.ledger,
      difference = rec.difference}, {"wallet_accumulate", "ledger_total", "difference"}) or {refreshed = false, why = why}
    for _, i in ipairs(report.instances) do money.fields(i, {"cost", "price_per_hour"}) end
    for _, r in ipairs(report.runs) do
      money.fields(r, {"cost", "price_per_hour"})
      if r.usage then r.usage = usage_json(r.usage) end
    end
    report.usage_problems = json.array(acct.problems)
    for cur, v in pairs(report.totals) do report.totals[cur] = money.decimal(v) end
    report.instances, report.runs = json.array(report.instances), json.array(report.runs)
    io.write(json.encode_stable(report))
    return 0
  end
  io.write(since and ("cost since " .. ledger.time_text(since) .. "\n") or "cost since the ledger began\n")
  local t = {{"INSTANCE", "METERED", "COST"}}
  for _, i in ipairs(report.instances) do
    t[#t + 1] = {i.name, ledger.duration_text(i.metered_seconds), ledger.money_text(i.cost, i.currency)}
  end
  io.write("\nper instance:\n", #t > 1 and ledger.table_text(t) or "(none)\n")
  t = {{"RUN", "INSTANCE", "RECIPE", "STATUS", "STARTED", "METERED", "COST"}}
  local jobs = {{"RUN", "INSTANCE", "JOBS", "STATE", "GPU-H", "CPU-H", "COST"}}
  for _, r in ipairs(report.runs) do
    local u = r.usage
    -- a scheduler's run: no meter, its cost is its GPU-hours at the profile's price
    t[#t + 1] = {r.id, r.instance or "-", r.recipe or "-", r.status, ledger.time_text(r.started_at),
      u and "-" or ledger.duration_text(r.metered_seconds), u and usage.cost_text(u) or ledger.money_text(r.cost, r.currency)}
    if u then
      jobs[#jobs + 1] = {r.id, r.instance or "-", table.concat(u.job_ids, ","), u.states .. (u.final and "" or " (so far)"),
        usage.hours(u.gpu_seconds), usage.hours(u.cpu_seconds), usage.cost_text(u)}
    end
  end
  io.write("\nper run:\n", #t > 1 and ledger.table_text(t) or "(none)\n")
  if #jobs > 1 then io.write("\nper run on a scheduler (its accounting: sacct):\n", ledger.table_text(jobs)) end
  for _, p in ipairs(acct.problems) do io.write("scheduler accounting: ", p, "\n") end
  local totals = {}
  for cur, v in pairs(report.totals) do totals[#totals + 1] = ledger.money_text(v, cur ~= "?" and cur or nil) end
  table.sort(totals)
  io.write("\ntotal: ", #totals > 0 and table.concat(totals, ", ") or "0.00", "\n")
  io.write(rec and (rec.text .. "\n") or ("provider: not asked (" .. tostring(why or "no client") .. "); the ledger only\n"))
  return 0
end

return M

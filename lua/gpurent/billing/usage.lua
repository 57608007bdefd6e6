-- gpurent.billing.usage: what a scheduler's accounting says a run used (issue 19): GPU-
-- and CPU-seconds per job, and a cost where the profile prices a GPU-hour, read through
-- the run's platform (P.usage(inst, r): Slurm's sacct) and kept in the ledger
-- (job_usage), so `gpurent cost` shows them beside the metered money. Read whenever a
-- command talks to the cluster anyway: the end of a watch, the close, and `gpurent
-- cost` (which asks only about the runs whose figures may still change).
--
--   usage.refresh(inst, r) -> u | nil      P.usage + the ledger; nil: the platform keeps no
--                                          accounting, or the run has no job yet
--   usage.record(run_id, instance, acct) -> u   a platform's read into the ledger (acct as
--       P.usage returns it; a sweep: the array's job id through P.accounting)
--   usage.note(inst, r, phase [, {unless_final = true}])   refresh and say it; never raises
--   usage.refresh_open{ledger_path=, out=} -> {refreshed = n, problems = {text...}}
--   usage.hours(seconds) -> "0.0042"   usage.cost_text(u) -> "0.01 EUR" | "no price"
--   usage.text(u) -> "job 12 COMPLETED: 0.0042 GPU-h, 0.0042 CPU-h, cost 0.01 EUR"
--   (u = ledger:usage(run_id): jobs, gpu_seconds, cpu_seconds, final, cost, currency, states)
local errors = require "gpurent.util.errors"
local ledger = require "gpurent.state.ledger"
local platform = require "gpurent.platform"

local usage = {}

function usage.hours(seconds) return string.format("%.4f", (seconds or 0) / 3600) end

function usage.cost_text(u)
  if not u or not u.cost then return "no price" end
  return ledger.money_text(u.cost, u.currency)
end

function usage.text(u)
  local jobs = u.jobs == 1 and ("job " .. u.job_ids[1]) or (u.jobs .. " jobs")
  return string.format("%s %s: %s GPU-h, %s CPU-h, %s%s", jobs, u.states, usage.hours(u.gpu_seconds),
    usage.hours(u.cpu_seconds), u.cost and ("cost " .. usage.cost_text(u)) or "no price (slurm.price_per_gpu_hour)",
    u.final and "" or " so far")
end

function usage.record(run_id, instance, acct, o)
  o = o or {}
  local L = ledger.open(o.ledger_path)
  local ok, u = pcall(function()
    L:record_usage{run_id = run_id, instance = instance, jobs = acct.jobs, replace = true,
      price_per_gpu_hour = acct.price_per_gpu_hour, currency = acct.currency}
    return L:usage(run_id)
  end)
  L:close()
  if not ok then error(u, 0) end
  return u
end

function usage.refresh(inst, r, o)
  local P = platform.of(r.profile)
  if not P.usage then return nil end
  local acct = P.usage(inst, r)
  if #acct.jobs == 0 then return nil end
  return usage.record(r.id, r.host, acct, o)
end

local function recorded(r)
  local ok, u = pcall(r.ledger, r, function(L) return L:usage(r.id) end)
  return ok and u or nil
end

-- At the end of a watch or a close: the figures said on the run's own lines. A failure
-- to read them is said; the run's outcome does not depend on its accounting.
function usage.note(inst, r, phase, o)
  o = o or {}
  if not platform.of(r.profile).usage then return end
  if o.unless_final then
    local u = recorded(r)
    if u and u.final then return end
  end
  local ok, u = pcall(usage.refresh, inst, r)
  if not ok then
    r:say(phase, "usage: not read from the scheduler's accounting (%s); `gpurent cost` asks again",
      errors.message(u):match("[^\n]*"))
  elseif u then
    r:say(phase, "usage: %s", usage.text(u))
  end
end

-- For `gpurent cost`: every run on an instance whose platform keeps accounting and
-- whose figures may still change, asked over one connection per host.
function usage.refresh_open(o)
  o = o or {}
  local profile_mod = require "gpurent.config.profile"
  local run = require "gpurent.lifecycle.run"
  local report = {refreshed = 0, problems = {}}
  local function problem(fmt, ...) report.problems[#report.problems + 1] = string.format(fmt, ...) end
  local L = ledger.open(o.ledger_path)
  local ok, open = pcall(function()
    local names, keeps = {}, {}   -- keeps[profile name]: its platform keeps accounting
    for _, i in ipairs(L.db:query("SELECT name, profile FROM instances ORDER BY name")) do
      if keeps[i.profile] == nil then
        local pok, p = pcall(profile_mod.load, i.profile)
        keeps[i.profile] = pok and platform.of(p).usage ~= nil
      end
      if keeps[i.profile] then names[#names + 1] = i.name end
    end
    return L:usage_open(names)
  end)
  L:close()
  if not ok then error(open, 0) end
  local conns = {}
  for _, row in ipairs(open) do
    local rok, err = pcall(function()
      local r = run.load(row.id, {ledger_path = o.ledger_path, out = o.out or io.stderr})
      local c = conns[r.host]
      if c and c.failed then return end
      if not c then
        local cok, inst = pcall(r.connect, r)
        c = cok and {inst = inst} or {failed = true}
        conns[r.host] = c
        if not cok then
          problem("%s: not reached (%s)", r.host, errors.message(inst):match("[^\n]*"))
          return
        end
      else
        local P = platform.of(r.profile)
        if P.connected then P.connected(c.inst, r) end
      end
      if usage.refresh(c.inst, r, o) then report.refreshed = report.refreshed + 1 end
    end)
    if not rok then problem("run %s: %s", row.id, errors.message(err):match("[^\n]*")) end
  end
  for _, c in pairs(conns) do if c.inst then pcall(c.inst.close, c.inst) end end
  return report
end

return usage

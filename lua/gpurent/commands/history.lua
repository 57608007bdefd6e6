-- gpurent history: runs recorded in the ledger, newest first; with --run ID, that
-- run's phases, transfers, manifests, billing calls, gate decisions and notifications
-- in time order.
local cli = require "gpurent.cli"
local json = require "gpurent.util.json"
local ledger = require "gpurent.state.ledger"
local money = require "gpurent.util.money"

local M = {summary = "runs recorded in the ledger, or one run's events"}
M.usage = [[usage: gpurent history [--run ID] [--limit N] [--json]
Without --run: the most recent runs (default 50). With --run ID: everything the
ledger holds for that run (phases, transfers, manifests, billing, gates, notifications).]]

local function run_line(r)
  local dur = r.ended_at and ledger.duration_text(r.ended_at - r.started_at)
    or ("running " .. ledger.duration_text(os.time() - r.started_at))
  return {r.id, r.instance or "-", r.recipe or "-", r.status, ledger.time_text(r.started_at), dur}
end

local describe = {
  phase = function(e)
    if not e.ended_at then return e.name .. " started (not ended)" end
    return string.format("%s %s after %s%s", e.name, e.outcome or "ended",
      ledger.duration_text(e.ended_at - e.started_at), e.detail and (": " .. e.detail) or "")
  end,
  transfer = function(e)
    return string.format("%s %s %s %s%s", e.direction, e.local_path or "-", e.direction == "get" and "<-" or "->",
      e.remote_path or "-", string.format(" (%s bytes, %s)", e.bytes or "?", e.outcome))
  end,
  manifest = function(e) return string.format("%s %s (%s files, %s bytes)", e.kind, e.path or "-", e.files or "?", e.bytes or "?") end,
  billing = function(e)
    return string.format("%s %s%s%s", e.action, e.outcome, e.meter and (", meter " .. e.meter) or "",
      e.detail and (": " .. e.detail) or "")
  end,
  gate = function(e)
    return string.format("%s gate %s %s%s%s", e.gate, e.decision, e.action, e.reason and (": " .. e.reason) or "",
      e.approved_by and (" (approved by " .. e.approved_by .. ")") or "")
  end,
  notification = function(e) return e.kind .. ": " .. e.message end,
}

local function one_run(L, id, as_json)
  local run = L:run(id)
  if not run then gpurent.usage_error("no run " .. id .. " in the ledger " .. L.path, 0) end
  local events = L:run_history(id)
  if as_json then
    run.params = run.params_json and json.decode(run.params_json, "params") or nil
    run.params_json = nil
    for _, e in ipairs(events) do money.fields(e, {"price_per_hour"}) end
    io.write(json.encode_stable({run = run, events = json.array(events)}))
    return 0
  end
  local r = run_line(run)
  io.write(string.format("run %s on %s, recipe %s: %s, started %s, %s\n", r[1], r[2], r[3], r[4], r[5], r[6]))
  local t = {{"TIME", "KIND", "WHAT"}}
  for _, e in ipairs(events) do t[#t + 1] = {ledger.time_text(e.at), e.kind, describe[e.kind](e)} end
  if #events == 0 then io.write("(nothing recorded for this run yet)\n") else io.write(ledger.table_text(t)) end
  return 0
end

function M.main(args)
  local opts, rest = cli.options(args, {json = "flag", run = "value", limit = "value"}, M.usage)
  if opts.help then io.write(M.usage, "\n"); return 0 end
  if #rest > 0 then gpurent.usage_error("unexpected argument " .. rest[1] .. "\n" .. M.usage, 0) end
  local limit = 50
  if opts.limit then
    limit = math.tointeger(tonumber(opts.limit))
    if not limit or limit < 1 then gpurent.usage_error("--limit takes a positive integer, got " .. opts.limit, 0) end
  end
  local path = ledger.default_path()
  if not ledger.exists(path) then
    if opts.run then gpurent.usage_error("no run " .. opts.run .. " (no ledger at " .. path .. ")", 0) end
    if opts.json then io.write(json.encode_stable({ledger = path, runs = json.array()}))
    else io.write("nothing recorded yet (no ledger at ", path, ")\n") end
    return 0
  end
  local L <close> = ledger.open(path)
  if opts.run then return one_run(L, opts.run, opts.json) end
  local runs = L:runs(limit)
  if opts.json then io.write(json.encode_stable({ledger = path, runs = json.array(runs)})); return 0 end
  if #runs == 0 then io.write("no runs in the ledger (", path, ")\n"); return 0 end
  local t = {{"RUN", "INSTANCE", "RECIPE", "STATUS", "STARTED", "DURATION"}}
  for _, r in ipairs(runs) do t[#t + 1] = run_line(r) end
  io.write(ledger.table_text(t))
  return 0
end

return M

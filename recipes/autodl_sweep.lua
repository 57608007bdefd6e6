-- autodl_sweep.lua: a queue of cells (one `<config> <task> [epochs]` per line) that
-- runs ON the boxes (gpurent.lifecycle.queue, on-box lua/gpurent/remote/run_queue.sh,
-- under the one detach starter): closing the laptop or killing gpurent does not stop
-- it, and `gpurent watch SWEEP-HOST [--finish]` re-attaches. The run_queue semantics
-- of LIFECYCLE.md: blank and # lines skipped and not counted; start=N resumes from
-- cell N; before each cell a disk-budget gate on the bytes and inodes of every tier
-- the cell writes (it names the tier and the dimension that is short); each cell's
-- failure recorded - training OR durable sync - and the queue going on; a final
-- `QUEUE DONE` line naming the failed cells and a non-zero exit when any failed.
-- budget= (or `gpurent billing budget`) gates the launch and, on the box, every cell:
-- over it, the cells left are "not started: budget", a notification goes out, and
-- the sweep exits 3.
-- Several hosts (host=a1,a2, one region) share one queue on the region FS: a free box
-- claims the next cell by an atomic rename, and every output line names its host. A
-- host that fails is reported as such, never counted as a cell; a sweep that ran no
-- cell, or whose cells produced no result, fails whatever the exit codes.
-- The parameters every lifecycle recipe shares are declared once, by name, in
-- gpurent.lifecycle.params; this recipe's own (and its changes to shared ones) are tables.
local shared = require "gpurent.lifecycle.params"
local params = gpurent.recipe {
  description = "Run a queue of training cells over one or more AutoDL instances",
  params = shared.list {
    {name = "host", type = "list", help = "ssh alias(es); several fan the queue out"},
    "project", "code", "queue",
    {name = "train", help = "command template: {config} {task} {epochs} {python} {out}"},
    "start", "smoke", "expected", "load", "box_load", "pull", "local_dir",
    "floor", "floor_durable", "floor_inodes",
    "interval", "stall", "max_wait", "mode",
    {name = "notify", type = "boolean", default = false, help = "also push the sweep's end through the platform's channel"},
    {name = "budget", type = "number", help = "spend budget in yuan per box: checked at launch and on the box before each cell"},
  },
}
local lifecycle = require "gpurent.lifecycle"
local phases = require "gpurent.lifecycle.phases"
local run = require "gpurent.lifecycle.run"
local queue = require "gpurent.lifecycle.queue"
local errors = require "gpurent.util.errors"
local fs = require "gpurent.util.fs"

local cells = run.parse_queue(fs.read_file(params.queue))
local todo = {}
for _, c in ipairs(cells) do if c.index >= params.start then todo[#todo + 1] = c end end
if #todo == 0 then
  errors.usage(string.format("sweep: no cell to run: %s holds %d cell(s) and start=%d (a sweep of zero cells is a failure)",
    params.queue, #cells, params.start), 0)
end
local sweep = run.new_id(params.project .. "-sweep")
print(string.format("[sweep] %s: %d cells in %s, running %d (from cell %d) on %s", sweep, #cells, params.queue, #todo,
  params.start, table.concat(params.host, ", ")))
-- several hosts print at once: every line of a host's runs starts with [HOST]
local function label(host) return #params.host > 1 and host or nil end
-- several hosts: one queue on the region FS, its cells claimed one at a time
local shared = #params.host > 1 and {} or nil
if shared then
  -- refused before anything runs when the profile has no region-wide durable tier
  local profile_mod = require "gpurent.config.profile"
  queue.shared_tier(profile_mod.load(profile_mod.default_name()))
end

-- the local smoke test, once for the whole sweep
local smoked = false
local smoke = lifecycle.phase{name = "smoke", needs = {"run"}, run = function(ctx)
  if smoked or not params.smoke then return end
  smoked = true
  phases.prepare.smoke(ctx.run, params.smoke, {code_dir = params.code})
end}
-- which hosts' queues were started (a Ctrl-C after that detaches them: they run on)
local launched, runs = {}, {}
local mark = lifecycle.phase{name = "launched", needs = {"run", "job"}, run = function(ctx)
  launched[ctx.run.host] = true
end}
local host_phases = {phases.connect, phases.setup, phases.audit, phases.environment, smoke, phases.prepare, phases.install,
  queue.launch, mark, queue.watch}
if params.pull then host_phases[#host_phases + 1] = phases.pull end
host_phases[#host_phases + 1] = queue.verdict

local function run_host(host)
  local r = run.new{host = host, project = params.project, id = sweep .. "-" .. host, recipe = "autodl_sweep",
    parent = sweep, kind = "queue", label = label(host), interval = params.interval, stall_seconds = params.stall,
    max_wait = params.max_wait, roster = params.expected, load_cmd = params.load, local_dir = params.local_dir}
  runs[host] = r
  return lifecycle.attempt(r, host_phases, {tell = false, options = {
    audit = {gotchas = false, hogs = false},
    prepare = {code_dir = params.code, command = params.train, params = {queue = params.queue, start = params.start}},
    queue_launch = {cells = todo, sweep = sweep, train = params.train, shared = shared, mode = params.mode,
      floor = params.floor, floor_durable = params.floor_durable, floor_inodes = params.floor_inodes,
      roster = params.expected, box_load = params.box_load, budget = params.budget},
    queue_watch = {seal = true, roster = params.expected, box_load = params.box_load, interval = params.interval,
      stall = params.stall, max_wait = params.max_wait},
    -- a host whose cells all failed has nothing to pull: its cells are reported as failed
    pull = params.pull and {skip = function(ctx) return #ctx.cells == 0 end,
      roster = params.expected, load_cmd = params.load, local_dir = params.local_dir} or nil,
  }})
end

-- one host: its lifecycle owns Ctrl-C (detached, with the re-attach command); several
-- hosts: a Ctrl-C that ends the fan-out leaves every started queue running, said here
local results
if #params.host == 1 then
  results = {{ok = true, value = run_host(params.host[1])}}
else
  local ok, res = pcall(gpurent.parallel, params.host, run_host)
  if not ok then
    if not errors.is(res, "interrupted") then error(res, 0) end
    require("gpurent.util.sys").clear_interrupt()
    local again = {}
    for _, host in ipairs(params.host) do
      if runs[host] then runs[host]:finish(launched[host] and "detached" or "interrupted") end
      if launched[host] then again[#again + 1] = "`gpurent watch " .. sweep .. "-" .. host .. "`" end
    end
    errors.raise("interrupted", string.format("sweep %s interrupted: %s", sweep, #again > 0 and
      ("the queue keeps running on the box; re-attach with " .. table.concat(again, ", ") .. " (--finish seals and pulls)")
      or "no queue was started yet"), 0)
  end
  results = res
end

-- a failed host is a host, not a cell: it is named apart from the cells
local ran, ok, failed, stopped, host_failures, detached, budget_stops, not_started = 0, 0, {}, {}, {}, {}, {}, {}
for i, res in ipairs(results) do
  local out = res.ok and res.value or nil
  -- a queue that died or timed out still counts the cells that ran (its error carries them)
  local s = out and ((out.ctx and out.ctx.swept) or (type(out.error) == "table" and out.error.swept))
  if s then
    ran, ok = ran + s.ran, ok + #s.ok
    for _, f in ipairs(s.failed) do failed[#failed + 1] = f end
    if s.stopped then stopped[#stopped + 1] = params.host[i] .. ": " .. s.stopped end
    if s.budget then budget_stops[#budget_stops + 1] = params.host[i] .. ": " .. queue.budget_text(s) end
    for _, n in ipairs(s.not_started or {}) do not_started[#not_started + 1] = n end
  end
  if out and out.status == "detached" then
    detached[#detached + 1] = sweep .. "-" .. params.host[i]
  elseif out and out.status == "interrupted" then
    errors.raise("interrupted", "sweep " .. sweep .. " interrupted before its queue started: nothing runs on the box for it", 0)
  elseif not (out and out.ok) and not (out and out.phase == "queue_verdict") then
    host_failures[#host_failures + 1] = "host " .. params.host[i] .. ": " ..
      errors.message(out and out.error or res.error):match("[^\n]*")
  end
end
if #detached > 0 then
  errors.raise("interrupted", string.format("sweep %s detached: the queue keeps running on the box; re-attach with %s",
    sweep, "`gpurent watch " .. table.concat(detached, "`, `gpurent watch ") .. "` (--finish seals and pulls)"), 0)
end
table.sort(failed, function(a, b) return a.index < b.index end)
local names = {}
for _, f in ipairs(failed) do names[#names + 1] = string.format("cell %d (%s: %s)", f.index, f.id, f.why) end
for _, why in ipairs(stopped) do print("[sweep] stopped at the disk gate on " .. why) end
for _, why in ipairs(budget_stops) do print("[sweep] stopped by the budget on " .. why) end
table.sort(not_started)
local unstarted = {}
for i, n in ipairs(not_started) do unstarted[i] = tostring(n) end
local summary = string.format("QUEUE DONE %s: %d cell(s) run, %d ok, %d failed%s%s%s%s", sweep, ran, ok, #failed,
  #failed > 0 and (": " .. table.concat(names, "; ")) or "",
  ran < #todo and string.format("; %d cell(s) not run", #todo - ran) or "",
  #unstarted > 0 and ("; not started (budget): cell(s) " .. table.concat(unstarted, ", ")) or
    (#budget_stops > 0 and "; stopped by the budget" or ""),
  #host_failures > 0 and ("; " .. #host_failures .. " host(s) failed: " .. table.concat(host_failures, "; ")) or "")
print(summary)
-- the ledger's notification line always; the platform's push when asked, within its limits
pcall(require("gpurent.notify").send, {kind = "sweep", message = summary, instance = params.host[1],
  push = params.notify, out = io.stderr})
if #failed > 0 or #stopped > 0 or #host_failures > 0 or #budget_stops > 0 or ok == 0 then
  local why = {}
  if ran == 0 then why[#why + 1] = "no cell ran" elseif ok == 0 then why[#why + 1] = "no cell produced a result" end
  if #failed > 0 then why[#why + 1] = #failed .. " cell(s) failed" end
  if #stopped > 0 then why[#why + 1] = "stopped at the disk gate" end
  if #budget_stops > 0 then why[#why + 1] = "stopped by the budget (" .. table.concat(budget_stops, "; ") .. ")" end
  if #host_failures > 0 then why[#why + 1] = #host_failures .. " host(s) failed" end
  -- the budget, not the trainer, ended it: exit 3 like the budget gate's refusal
  errors.raise(#budget_stops > 0 and "refusal" or "remote", "sweep " .. sweep .. ": " .. table.concat(why, ", "), 0)
end

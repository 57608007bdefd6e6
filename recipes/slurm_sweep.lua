-- slurm_sweep.lua: a queue of cells (one `<config> <task> [epochs]` per line) run as ONE
-- Slurm job array on a cluster (sbatch --array=1-N%K: the array index is the cell's
-- number in the queue file, K the parallel= cap). The queue semantics of autodl_sweep.lua
-- (gpurent.lifecycle.queue): blank and # lines skipped and not counted, start=N, each
-- cell its own run (id SWEEP-cNN, its own directory, the same wrapper as a run: DONE/
-- FAILED markers, the durable sync, its exit code), a failed cell recorded while the
-- others go on, a summary of every cell (ok/failed, exit code, command line) and a
-- non-zero exit when any failed, none ran, or none produced a result. The array's
-- state comes from squeue/sacct per task (gpurent.platform.slurm.queue_status): a
-- pending task is waiting for the scheduler, not stalled. The ledger holds the sweep's
-- queue run (SWEEP-HOST, kind queue) and each cell (kind cell, parent the queue run).
-- Time limits and pre-emption, as slurm_train.lua: with the profile's `slurm.requeue:
-- true` and `signal: USR1`, a cell's trainer gets SIGUSR1 `signal_seconds` before the
-- limit, writes its checkpoint and exits, and its array task requeues itself (scontrol
-- requeue JOB_TASK: that cell only). The restarted task finds the cell's newest
-- checkpoint in $GPURENT_RESUME ($GPURENT_RESTART > 0). The watch says "cell N ...
-- requeued (attempt K), resuming from <checkpoint>", the summary "ok ..., requeued
-- (attempt K), resumed from <checkpoint>": a requeued cell is never a failed one (a
-- task Slurm requeues after a pre-emption or a node failure the same). A cell is counted
-- and sealed once its task has left the queue, never on its marker alone. With `requeue:
-- false` a pre-empted task ends PREEMPTED, one whose node failed NODE_FAIL: the cell
-- fails naming that state, and nothing is resubmitted by itself (resubmit=SWEEP does).
-- The disk-budget gate (floor=, floor_durable=, floor_inodes=, as autodl_sweep's): each
-- array task checks the free bytes and inodes of every tier its cell writes on its
-- compute node before the trainer; a tier below a floor ends that cell FAILED (stage=
-- gate, "disk gate: tier T (PATH) is short of bytes|inodes: ..."), never started. Each
-- task gates itself, so the other cells run (a node's own scratch may have room another
-- lacks) and a short shared tier gates every later cell the same way; resubmit=SWEEP
-- reruns gated cells with the floors it is given, as failed ones.
--
--   resubmit=SWEEP: a second array of only the sweep's failed cells (--array=3,7), the
--   same installed cells and commands; the cells that succeeded are kept, and the
--   summary covers them all. The queue file and train= are not needed then.
-- `gpurent watch SWEEP-HOST` re-attaches (--finish seals and pulls) as for any sweep.
-- The parameters every lifecycle recipe shares are declared once, by name, in
-- gpurent.lifecycle.params; this recipe's own (and its changes to shared ones) are tables.
local shared = require "gpurent.lifecycle.params"
local params = gpurent.recipe {
  description = "Run a queue of training cells as one Slurm job array; resubmit=SWEEP reruns only its failed cells",
  params = shared.list {
    {name = "host", help = "ssh alias of the login node (gpurent host add NAME 'ssh user@login')"},
    {name = "profile", help = "the cluster's profile (slurm, or a site overlay extending it; default slurm, " ..
     "with resubmit= the sweep's)"},
    "project",
    {name = "code", required = false, help = "local code directory pushed to the cluster (a new sweep)"},
    {name = "queue", required = false, help = "queue file: <config> <task> [epochs] per line (a new sweep)"},
    {name = "train", required = false, help = "command template: {config} {task} {epochs} {python} {out} (a new sweep)"},
    "start",
    {name = "parallel", type = "integer", help = "at most this many cells at once (the array's %K; default: the scheduler's)"},
    {name = "resubmit", help = "a sweep id: submit only its failed cells again"},
    "smoke",
    {name = "expected", help = "capsule roster: files every result holds (resubmit=: the sweep's own)"},
    "load", "box_load", "pull", "local_dir", "interval", "stall", "max_wait",
    "floor", "floor_durable", "floor_inodes",
    {name = "gotchas", default = false},
  },
}
local lifecycle = require "gpurent.lifecycle"
local phases = require "gpurent.lifecycle.phases"
local run = require "gpurent.lifecycle.run"
local queue = require "gpurent.lifecycle.queue"
local errors = require "gpurent.util.errors"
local fs = require "gpurent.util.fs"

local watch_opts = {seal = true, roster = params.expected, box_load = params.box_load, interval = params.interval,
  stall = params.stall, max_wait = params.max_wait}
-- a sweep whose cells all failed has nothing to pull: its cells are reported as failed
local pull_opts = params.pull and {skip = function(ctx) return #ctx.cells == 0 end,
  roster = params.expected, load_cmd = params.load, local_dir = params.local_dir} or nil

-- Every cell on its own line: ok/failed, its exit code (the wrapper's marker), its command.
local function report(sweep, s)
  local state = {}
  -- the marker's "exit=N stage=S" (its time is in the cell's run)
  local function exit_of(text) return ((text or ""):gsub(" at=%d+", "")) end
  -- a cell Slurm requeued (its time limit, a pre-emption) says so: it resumed, it did not fail
  local function requeued(c) return c.requeued and (", " .. c.requeued) or "" end
  for _, c in ipairs(s.ok) do state[c.index] = {"ok", exit_of(c.text) .. requeued(c)} end
  for _, c in ipairs(s.failed) do state[c.index] = {"FAILED", exit_of(c.why) .. requeued(c)} end
  for _, c in ipairs(s.table or {}) do
    local st = state[c.index] or {"not run", ""}
    print(string.format("[sweep] cell %d %s %s (%s) run %s: %s", c.index, st[1], st[2], c.desc, c.id,
      c.command or "?"))
  end
  local why = queue.failures(s)
  print(string.format("QUEUE DONE %s: %d cell(s) run, %d ok, %d failed%s", sweep, s.ran, #s.ok, #s.failed,
    #why > 0 and (": " .. table.concat(why, "; ")) or ""))
  return why
end

local function conclude(sweep, out)
  local s = out.ctx and out.ctx.swept or (type(out.error) == "table" and out.error.swept)
  if out.status == "detached" or out.status == "interrupted" then error(out.error, 0) end
  if not s then error(out.error or ("sweep " .. sweep .. ": no cell was followed"), 0) end
  local why = report(sweep, s)
  pcall(require("gpurent.notify").send, {kind = "sweep", message = "sweep " .. sweep .. ": " .. #s.ok .. " ok, " ..
    #s.failed .. " failed", instance = params.host, out = io.stderr})
  if not out.ok and out.phase ~= "queue_verdict" then error(out.error, 0) end
  if #why > 0 then errors.raise("remote", "sweep " .. sweep .. ": " .. table.concat(why, "; "), 0) end
end

-- the disk gate's floors, refused before anything is submitted when one is no size
queue.floors(params)

-- ---- resubmit=SWEEP: only the failed cells, as a second array ------------------------
if params.resubmit then
  for _, k in ipairs{"queue", "train", "code", "smoke"} do
    if params[k] then
      errors.usage("resubmit=" .. params.resubmit .. ": " .. k .. "= does not apply: the sweep's installed cells run " ..
        "again with their own commands and code (a changed command is a new sweep)", 0)
    end
  end
  if params.start ~= 1 then errors.usage("resubmit=: start= does not apply (the failed cells are rerun)", 0) end
  local id = params.resubmit:match("%-" .. params.host:gsub("%p", "%%%0") .. "$") and params.resubmit or
    (params.resubmit .. "-" .. params.host)
  local r = run.load(id, {profile = params.profile})
  if r.kind ~= "queue" or not tostring(r.recipe):match("^slurm_sweep") then
    errors.usage("resubmit=" .. params.resubmit .. ": run " .. id .. " is not a Slurm sweep (recipe " ..
      tostring(r.recipe) .. ")", 0)
  end
  if r.status == "succeeded" then
    errors.usage(string.format("resubmit=%s: the sweep %s succeeded (ledger): every cell is ok, nothing to resubmit",
      params.resubmit, id), 0)
  end
  local P = require("gpurent.platform").of(r.profile)
  if not P.resubmit_queue then
    errors.usage("resubmit=: platform " .. tostring(P.name) .. " has no job arrays to resubmit", 0)
  end
  -- what to resubmit, settled before the lifecycle owns the sweep's ledger status: a
  -- refusal (a task still queued or running, no failed cell) changes nothing
  local inst = r:connect()
  local ok, failed = pcall(P.failed_cells, inst, r)
  inst:close()
  if not ok then error(failed, 0) end
  print(string.format("[sweep] %s: cell(s) %s of %s failed: resubmitting them on %s", params.resubmit,
    table.concat(failed, ", "), id, params.host))
  local resubmit = lifecycle.phase{name = "resubmit", needs = {"run", "inst"}, produces = {"job"}, run = function(ctx)
    return {job = P.resubmit_queue(lifecycle.session(ctx), ctx.run, {parallel = params.parallel,
      gate = queue.gate_lines(ctx.run.profile, params)}).job}
  end}
  -- the cells are sealed and pulled against the roster the sweep was started with
  watch_opts.roster = r.roster or watch_opts.roster
  if pull_opts then pull_opts.roster, pull_opts.load_cmd = watch_opts.roster, params.load or r.load_cmd end
  local list = {phases.connect, resubmit, queue.watch}
  if params.pull then list[#list + 1] = phases.pull end
  list[#list + 1] = queue.verdict
  conclude(params.resubmit, lifecycle.attempt(r, list, {tell = false, options = {queue_watch = watch_opts,
    pull = pull_opts}}))
  return
end

-- ---- a new sweep -----------------------------------------------------------------------
for _, k in ipairs{"code", "queue", "train"} do
  if not params[k] then errors.usage("slurm_sweep: " .. k .. "= is required for a new sweep (or resubmit=SWEEP)", 0) end
end
local cells = run.parse_queue(fs.read_file(params.queue))
local todo = {}
for _, c in ipairs(cells) do if c.index >= params.start then todo[#todo + 1] = c end end
if #todo == 0 then
  errors.usage(string.format("sweep: no cell to run: %s holds %d cell(s) and start=%d (a sweep of zero cells is a " ..
    "failure); nothing was submitted", params.queue, #cells, params.start), 0)
end
if params.parallel ~= nil and params.parallel < 1 then
  errors.usage("slurm_sweep: parallel=" .. params.parallel .. ": at least 1 cell at once", 0)
end
local sweep = run.new_id(params.project .. "-sweep")
print(string.format("[sweep] %s: %d cells in %s, running %d (from cell %d) as one Slurm job array on %s%s", sweep,
  #cells, params.queue, #todo, params.start, params.host,
  params.parallel and (", at most " .. params.parallel .. " at once") or ""))

local smoke = lifecycle.phase{name = "smoke", needs = {"run"}, run = function(ctx)
  if params.smoke then phases.prepare.smoke(ctx.run, params.smoke, {code_dir = params.code}) end
end}
local list = {phases.connect, phases.setup, phases.audit, phases.environment, smoke, phases.prepare, phases.install,
  queue.launch, queue.watch}
if params.pull then list[#list + 1] = phases.pull end
list[#list + 1] = queue.verdict

local r = run.new{host = params.host, project = params.project, profile = params.profile or "slurm", id = sweep .. "-" .. params.host,
  recipe = "slurm_sweep", parent = sweep, kind = "queue", interval = params.interval, stall_seconds = params.stall,
  max_wait = params.max_wait, roster = params.expected, load_cmd = params.load, local_dir = params.local_dir}
conclude(sweep, lifecycle.attempt(r, list, {tell = false, options = {
  audit = {gotchas = params.gotchas, hogs = false},
  prepare = {code_dir = params.code, command = params.train, params = {queue = params.queue, start = params.start}},
  queue_launch = {cells = todo, sweep = sweep, train = params.train, parallel = params.parallel,
    roster = params.expected, box_load = params.box_load, floor = params.floor, floor_durable = params.floor_durable,
    floor_inodes = params.floor_inodes},
  queue_watch = watch_opts,
  pull = pull_opts,
}}))

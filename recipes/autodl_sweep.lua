-- autodl_sweep.lua: a queue of cells (one `<config> <task> [epochs]` per line) with
-- the run_queue semantics of LIFECYCLE.md: blank and # lines skipped and not
-- counted; start=N resumes from cell N; a free-space gate before each cell (abort
-- below the floor); each cell's failure recorded - training OR durable sync; a final
-- `QUEUE DONE` line naming the failed cells; a non-zero exit when any failed.
-- Several hosts (host=a1,a2) fan the queue out: each host takes the next cell, and
-- every output line names its host. A host that fails (before or after its cells) is
-- reported as such, never counted as a cell; a sweep that ran no cell, or whose cells
-- produced no result, fails whatever the exit codes.
local params = gpurent.recipe {
  description = "Run a queue of training cells over one or more AutoDL instances",
  params = {
    {name = "host", type = "list", required = true, help = "ssh alias(es); several fan the queue out"},
    {name = "project", required = true, help = "project name"},
    {name = "code", required = true, help = "local code directory"},
    {name = "queue", required = true, help = "queue file: <config> <task> [epochs] per line"},
    {name = "train", required = true, help = "command template: {config} {task} {epochs} {python} {out}"},
    {name = "start", type = "integer", default = 1, help = "first cell to run (resume)"},
    {name = "smoke", help = "local CPU smoke command, run once before any cell"},
    {name = "expected", type = "list", help = "capsule roster",
     default = {"run.json", "train.csv", "best.pth", "best_metrics.json", "test/final/metrics.json"}},
    {name = "load", help = "checkpoint load command ({} = path); with pull=yes"},
    {name = "box_load", help = "checkpoint load check on the box before the sync and seal ({} = path; default torch)"},
    {name = "pull", type = "boolean", default = false, help = "pull and verify the finished cells"},
    {name = "local_dir", default = "runs", help = "where pulled results go"},
    {name = "floor", default = "64M", help = "free bytes the live tier must have before each cell"},
    {name = "floor_inodes", type = "integer", default = 100, help = "free inodes on the durable tier before each cell"},
    {name = "interval", type = "number", default = 30}, {name = "stall", type = "number", default = 600},
    {name = "max_relaunches", type = "integer", default = 1}, {name = "max_wait", type = "number", default = 86400},
    {name = "mode", default = "auto", allowed = {"auto", "tmux", "nohup"}},
  },
}
local lifecycle = require "gpurent.lifecycle"
local phases = require "gpurent.lifecycle.phases"
local run = require "gpurent.lifecycle.run"
local storage = require "gpurent.lifecycle.storage"
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

local nexti, abort, smoked = 1, nil, false
local done, failed = {}, {}

-- before each cell: the live tier's bytes and the durable tier's inodes (abort below the floor)
local free_gate = lifecycle.phase{name = "free_gate", needs = {"run", "inst"}, run = function(ctx)
  local profile, box = ctx.run.profile, lifecycle.session(ctx)
  storage.free_gate(box, profile.checkpoints.live_tier, {profile = profile, min_bytes = params.floor})
  storage.free_gate(box, profile.checkpoints.durable_tier, {profile = profile, min_inodes = params.floor_inodes})
end}
local cell_phases = {free_gate, phases.prepare, phases.launch, phases.watch, phases.close}

-- One cell: its own run, starting from its host's session and environment.
local function run_cell(host_ctx, host, c)
  local r = run.new{host = host, project = params.project, id = string.format("%s-c%02d", sweep, c.index),
    recipe = "autodl_sweep", parent = sweep, interval = params.interval, stall_seconds = params.stall,
    max_relaunches = params.max_relaunches, max_wait = params.max_wait, label = label(host)}
  r:say("cell", "cell %d (%s %s %s) -> run %s on %s", c.index, c.config, c.task, tostring(c.epochs or ""), r.id, host)
  local cmd = params.train:gsub("{config}", c.config):gsub("{task}", c.task):gsub("{epochs}", tostring(c.epochs or 0))
  local out = lifecycle.attempt(r, cell_phases, {tell = false, context = lifecycle.inherit(host_ctx), options = {
    prepare = {code_dir = params.code, command = params.train, params = c},
    launch = {command = cmd, mode = params.mode, roster = params.expected, box_load = params.box_load},
    close = {roster = params.expected, box_load = params.box_load},
  }})
  if out.ok then
    done[#done + 1] = {cell = c, id = r.id, host = host}
    return r.id
  end
  local why = errors.message(out.error):match("[^\n]*")
  failed[#failed + 1] = {cell = c, id = r.id, why = why}
  r:say("cell", "cell %d FAILED: %s", c.index, why)
  if out.phase == "free_gate" and errors.is(out.error, "refusal") then abort = why end
end

-- the local smoke test, once for the whole sweep
local smoke = lifecycle.phase{name = "smoke", needs = {"run"}, run = function(ctx)
  if smoked or not params.smoke then return end
  smoked = true
  phases.prepare.smoke(ctx.run, params.smoke, {code_dir = params.code})
end}
-- each host takes the next cell until the queue is empty (or the free-space gate aborts)
local queue = lifecycle.phase{name = "queue", needs = {"run", "inst"}, produces = {"cells"}, run = function(ctx)
  local mine = {}
  while not abort and nexti <= #todo do
    local c = todo[nexti]
    nexti = nexti + 1
    mine[#mine + 1] = run_cell(ctx, ctx.run.host, c)
  end
  return {cells = mine}
end}
local host_phases = {phases.connect, phases.setup, phases.audit, phases.environment, smoke, queue}
if params.pull then host_phases[#host_phases + 1] = phases.pull end

local results = gpurent.parallel(params.host, function(host)
  local r = run.new{host = host, project = params.project, id = sweep .. "-" .. host, recipe = "autodl_sweep/host",
    parent = sweep, label = label(host)}
  return lifecycle.attempt(r, host_phases, {tell = false, options = {
    audit = {gotchas = false, hogs = false},
    -- a host whose cells all failed has nothing to pull: its cells are reported as failed
    pull = params.pull and {skip = function(ctx) return #ctx.cells == 0 end, bundle = sweep .. "-" .. host,
      roster = params.expected, load_cmd = params.load, local_dir = params.local_dir} or nil,
  }})
end)

-- a failed host is a host, not a cell: it is named apart from the cells
local host_failures = {}
for i, res in ipairs(results) do
  local out = res.ok and res.value or nil
  if not (out and out.ok) then
    host_failures[#host_failures + 1] = "host " .. params.host[i] .. ": " ..
      errors.message(out and out.error or res.error):match("[^\n]*")
  end
end
table.sort(failed, function(a, b) return a.cell.index < b.cell.index end)
local names = {}
for _, f in ipairs(failed) do names[#names + 1] = string.format("cell %d (%s: %s)", f.cell.index, f.id, f.why) end
local ran = #done + #failed
if abort then print("[sweep] aborted at the free-space gate: " .. abort) end
print(string.format("QUEUE DONE %s: %d cell(s) run, %d ok, %d failed%s%s%s", sweep, ran, #done, #failed,
  #failed > 0 and (": " .. table.concat(names, "; ")) or "",
  ran < #todo and string.format("; %d cell(s) not run", #todo - ran) or "",
  #host_failures > 0 and ("; " .. #host_failures .. " host(s) failed: " .. table.concat(host_failures, "; ")) or ""))
if #failed > 0 or abort or #host_failures > 0 or #done == 0 then
  local why = {}
  if #done == 0 then why[#why + 1] = "no cell produced a result" end
  if #failed > 0 then why[#why + 1] = #failed .. " cell(s) failed" end
  if abort then why[#why + 1] = "aborted at the free-space gate" end
  if #host_failures > 0 then why[#why + 1] = #host_failures .. " host(s) failed" end
  errors.raise("remote", "sweep " .. sweep .. ": " .. table.concat(why, ", "), 0)
end

-- gpurent watch RUN: re-attach to a run from any shell - after the terminal closed,
-- the laptop slept, or gpurent itself was killed. The run's host, paths and watch
-- settings come from the ledger; its state comes from the box (gpurent.monitor),
-- so this watcher is as good as the one that started the job. The phases (connect,
-- watch, and with --finish close and pull) run under gpurent.lifecycle, which owns
-- the ledger, the finish lock and Ctrl-C (the job keeps running: "detached").
-- A sweep's queue run (kind "queue") is followed by gpurent.lifecycle.queue instead:
-- per-cell state from the box, and with --finish the cells sealed, pulled and verified.
local cli = require "gpurent.cli"
local errors = require "gpurent.util.errors"

local M = {summary = "re-attach to a run and watch it until it finishes, dies or stalls"}
M.usage = [[usage: gpurent watch RUN [--interval S] [--stall S] [--max-wait S] [--max-relaunches N] [--once] [--finish] [--notify] [--json]
RUN is a run id from the ledger (gpurent history). A sweep's queue run (SWEEP-HOST) shows
each cell's state from the box (--once: one line per cell) and follows the on-box queue
to its QUEUE DONE; --finish then seals the DONE cells and pulls + verifies them. One probe per tick, one round trip each:
session/process alive, the wrapper's markers, last log line, newest artifact, df -h/-i,
cgroup memory + oom_kill, GPU. A probabilistic failure is relaunched (the identical command
resumes from its checkpoint) up to --max-relaunches; anything else stops with its remedy.
--once prints one status line and exits (0 running or finished, 1 dead, 4 stalled).
--finish: once it FINISHED, do what the interrupted recipe would have: seal the export
(close) and pull + verify it (pull), with the roster, load command and local dir recorded
for the run in the ledger. One gpurent at a time finishes a run: while another holds
the run's finish lock, --finish stops naming its host and PID (exit 3). The outcome of
--finish is a notification line in the ledger; --notify also pushes it through the
platform's channel, within its limits.
--json: the progress lines go to stderr and stdout gets one JSON object at the end:
{"run", "host", "state", "exit_code"} (with --once also "why" and "status", the line).
Exit codes: 0 finished, 1 dead or unreachable, 2 usage, 3 another gpurent is finishing
the run, 4 stalled, 5 timeout (still running).]]

local EXIT = {finished = 0, dead = 1, unreachable = 1, fast_finish = 1, stalled = 4, timeout = 5}

local function as_json(r, state, code, extra)
  local json = require "gpurent.util.json"
  local doc = {run = r.id, host = r.host, state = state, exit_code = code}
  for k, v in pairs(extra or {}) do doc[k] = v end
  io.write(json.encode_stable(doc))
end

function M.main(args)
  local opts, pos = cli.options(args, {interval = "value", stall = "value", max_wait = "value",
    max_relaunches = "value", once = "flag", finish = "flag", notify = "flag", json = "flag"}, M.usage)
  if opts.help then io.write(M.usage, "\n"); return 0 end
  if #pos ~= 1 then errors.usage(M.usage, 0) end
  if opts.notify and not opts.finish then errors.usage("gpurent watch: --notify goes with --finish (it pushes the outcome)", 0) end
  -- with --json, stdout carries only the JSON document: the progress lines go to stderr
  local r = require("gpurent.lifecycle.run").load(pos[1], {out = opts.json and io.stderr or nil})
  local o = {interval = tonumber(opts.interval), stall_seconds = tonumber(opts.stall),
    max_wait = tonumber(opts.max_wait), max_relaunches = tonumber(opts.max_relaunches)}
  r:say("watch", "re-attaching to %s on %s (ledger status %s)", r.id, r.host, tostring(r.status))
  if r.kind == "queue" then
    -- a sweep's on-box queue: per-cell state from the box; --finish seals and pulls its cells
    local state, code = require("gpurent.lifecycle.queue").reattach(r, opts, o)
    if opts.finish then
      pcall(require("gpurent.notify").send, {kind = "watch_finish", instance = r.host, run_id = r.id, push = opts.notify,
        message = string.format("queue %s on %s: %s (exit %d)", r.id, r.host, tostring(state), code), out = io.stderr})
    end
    if opts.json then as_json(r, state, code) end
    return code
  end
  if opts.once then
    local inst = r:connect()
    local monitor = require "gpurent.lifecycle.monitor"
    local f = monitor.probe(inst, r)
    local v = monitor.classify(f, {stall_seconds = o.stall_seconds or r.stall_seconds, expected_seconds = r.expected_seconds})
    local line = monitor.status_line(f, v)
    r:say("watch", "%s", line)
    local code = ({running = 0, finished = 0, stalled = 4})[v.state] or 1
    if opts.json then as_json(r, v.state, code, {why = v.why, status = line}) end
    return code
  end
  local lifecycle, phases = require "gpurent.lifecycle", require "gpurent.lifecycle.phases"
  local list = {phases.connect, phases.watch}
  if opts.finish then list[#list + 1] = phases.close; list[#list + 1] = phases.pull end
  -- the job runs on the box already: Ctrl-C detaches; without --finish a finished
  -- job leaves the run's status to the finisher
  -- --finish ends the run: the engine's notification says how (pushed with --notify)
  local out = lifecycle.attempt(r, list, {tell = opts.finish and true or false, push = opts.notify,
    partial = not opts.finish, context = {job = {reattached = true}},
    options = {watch = o, close = opts.finish and {roster = r.roster} or nil,
               pull = opts.finish and {roster = r.roster, load_cmd = r.load_cmd, local_dir = r.local_dir} or nil}})
  local state = out.ok and "finished" or (type(out.error) == "table" and out.error.watch_state)
  if not state then error(out.error, 0) end
  if opts.json then as_json(r, state, EXIT[state] or 1) end
  return EXIT[state] or 1
end

return M

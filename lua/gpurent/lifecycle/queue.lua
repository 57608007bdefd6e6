-- gpurent.lifecycle.queue: a sweep's queue that runs ON the box, so that closing the
-- laptop (or killing gpurent) does not stop the sweep. LIFECYCLE.md's run_queue
-- semantics live in the on-box loop lua/gpurent/remote/run_queue.sh (blank and #
-- lines not counted, start=N, the per-cell disk-budget gate on bytes and inodes of
-- every tier a cell writes, a failed cell recorded and the queue going on, QUEUE
-- DONE with a non-zero exit); this module installs it, starts it under the one detach
-- starter (remote/detach.sh, through remote/queue_start.sh), follows it, and finishes
-- its cells. Each cell is a run of its own (id SWEEP-cNN, parent the queue run) with
-- the same wrapper as a single run (remote/run_wrapper.sh: DONE/FAILED markers, the
-- durable sync), so `gpurent watch CELL` works on a cell as on any run.
--
-- A platform with a scheduler of its own (Slurm) gets the installed cells through
-- P.start_queue(inst, r, {table, cells, commands, sweep, parallel, gate}) instead of the
-- on-box loop (gate: queue.gate_lines, the disk-budget gate each cell checks where it
-- runs, before its wrapper), and queue.status returns P.queue_status(inst, r) in the same shape (events with
-- a `key`; `waiting`: a line said while the scheduler holds cells; "requeue" events and
-- an end's `requeued`: a cell the scheduler requeued and that resumed): the following,
-- sealing, summary, ledger cells and pull below are shared.
--
-- The queue run (kind "queue" in the ledger, id SWEEP-HOST) is what `gpurent watch`
-- re-attaches to: the cells' state comes from the box (META/cells, cells.log, QDONE).
-- Several boxes of one region share one queue directory on the region-shared durable
-- tier: a box claims a cell by renaming pending/cell.N into claimed/HOST/ (one
-- rename on one filesystem), so a free box takes the next cell and no two boxes run
-- the same one. A box that does not see the queue another box created is refused.
--
-- Phases (gpurent.lifecycle):
--   queue.launch   needs {run, inst, code} (uses python, env, hook, cred_file, run_json)
--                  -> {job, queue}; opts: cells (parsed queue lines to run), sweep (id), roster and
--                  box_load (the checkpoint load check, as launch's), budget (yuan, as launch's),
--                  train (command template: {config} {task} {epochs} and launch's
--                  {python} {out} {code} {run_id} {project}), shared (a table shared by
--                  the sweep's hosts: one queue directory on the region FS), mode,
--                  floor (live tier bytes, 64M), floor_durable (durable tier bytes, 1M),
--                  floor_inodes (each tier, 100)
--   queue.watch    needs {run, inst} -> {cells = ids with a result, swept = summary};
--                  opts: interval, stall, max_wait, seal (close each DONE cell), roster, box_load;
--                  its errors (watch_state dead, timeout, unreachable) carry `swept` too
--   queue.verdict  needs {swept}: fails the queue run when a cell failed, the gate
--                  stopped it, or no cell produced a result
--   queue.reattach(r, opts, o) -> state, exit code   (`gpurent watch QUEUE_RUN`; opts: the
--                  command's flags once, finish; o: interval, stall_seconds, max_wait)
--   queue.status(inst, r) -> {alive, pid, table, events, pending, done}
--   queue.cell_id(sweep, n), queue.cell_command(template, cell), queue.gate_lines(profile, o)
--   queue.floors(o) -> {floor, floor_durable, floor_inodes} (bytes, inodes; usage error: not a size)
--   queue.shared_tier(profile) -> the region-wide durable tier a shared queue lives on (usage error: none)
local run = require "gpurent.lifecycle.run"
local detach = require "gpurent.lifecycle.detach"
local monitor = require "gpurent.lifecycle.monitor"
local storage = require "gpurent.lifecycle.storage"
local profile_mod = require "gpurent.config.profile"
local remote = require "gpurent.remote"
local errors = require "gpurent.util.errors"
local json = require "gpurent.util.json"
local sched = require "gpurent.transport.sched"
local sys = require "gpurent.util.sys"
local q = require("gpurent.util.shell").quote

local queue = {}

local function lifecycle() return require "gpurent.lifecycle" end
local function phases() return require "gpurent.lifecycle.phases" end

function queue.cell_id(sweep, n) return string.format("%s-c%02d", sweep, n) end

function queue.script_path(r) return r.paths.meta .. "/queue-v1.sh" end

-- The cell's words go into the command as quoted shell words (data, whatever they hold);
-- the launch placeholders ({python} {out} ...) are left for launch.expand.
function queue.cell_command(template, c)
  local words = {config = c.config, task = c.task, epochs = tostring(c.epochs or 0)}
  return (template:gsub("{(%a+)}", function(k)
    local v = words[k]
    if v then return q(v) end
  end))
end

local function describe(c)
  return c.config .. " " .. c.task .. (c.epochs and (" " .. c.epochs) or "")
end

-- The gate's floors, settled before anything is pushed: a floor that is no size (or a
-- negative count) is refused naming the parameter, with nothing changed.
function queue.floors(o)
  local out = {}
  for _, k in ipairs{"floor", "floor_durable"} do
    local v = o[k] or (k == "floor" and "64M" or "1M")
    local ok, n = pcall(storage.parse_size, v)
    if not ok then
      errors.usage(string.format("queue: %s=%s is no size (a number of bytes, or with a unit: 64M, 10G, 1T); " ..
        "nothing was started", k, tostring(v)), 0)
    end
    out[k] = n
  end
  out.floor_inodes = o.floor_inodes or 100
  if not math.tointeger(out.floor_inodes) or out.floor_inodes < 0 then
    errors.usage("queue: floor_inodes=" .. tostring(o.floor_inodes) .. " is no count of inodes >= 0; nothing was started", 0)
  end
  return out
end

-- The gate's lines: every tier a cell writes (the live tier; the durable tier when the
-- profile syncs checkpoints to it), each with its floor of free bytes and inodes.
function queue.gate_lines(p, o)
  local f = queue.floors(o)
  local lines, seen = {}, {}
  local function add(t, bytes)
    if not t or seen[t.name] then return end
    seen[t.name] = true
    lines[#lines + 1] = string.format("%s\t%d\t%d\t%s", t.name, bytes, f.floor_inodes, t.path)
  end
  add(profile_mod.live_tier(p), f.floor)
  if #(p.checkpoints.sync or {}) > 0 then add(profile_mod.durable_tier(p), f.floor_durable) end
  return remote.lines(lines, "queue: gate")
end

-- Where the queue's cells wait: beside the queue run on its own box, or (several boxes)
-- on the region-shared durable tier.
function queue.shared_tier(p)
  local t = profile_mod.durable_tier(p)
  if not t or t.scope ~= "region" then
    errors.usage(string.format("queue: several hosts share one queue on a region-wide durable tier, and profile %s " ..
      "has none (durable tier %s, scope %s): run one sweep per host", tostring(p.platform),
      tostring(t and t.name), tostring(t and t.scope)), 0)
  end
  return t
end

function queue.dir(r, o)
  if not o.shared then return r.paths.meta .. "/queue" end
  return queue.shared_tier(r.profile).path .. "/" .. r.project .. "/queues/" .. o.sweep
end

-- The wrapper a cell gets: launch's, with the queue run's code directory.
local function wrapper_text(ctx, cr, command, lc)
  local p, durable = cr.profile, profile_mod.durable_tier(cr.profile)
  local env = {}
  for k, v in pairs(ctx.env or {}) do env[k] = v end
  return detach.wrapper(cr, {version = 1, command = phases().launch.expand(cr, command, ctx.python), env = env,
    hook = ctx.hook, cred_file = ctx.cred_file, sync = p.checkpoints.sync or {}, scratch = p.checkpoints.scratch or {},
    durable_dir = cr.paths.durable_ckpt, durable_tier = durable and durable.path, load_check = lc and lc.shell or nil})
end

local function cell_doc(ctx, id, c, command)
  local doc = {}
  for k, v in pairs(ctx.run_json and ctx.run_json.doc or {}) do doc[k] = v end
  doc.run_id, doc.command, doc.parent = id, command, ctx.run.id
  doc.params = {cell = c.index, config = c.config, task = c.task, epochs = c.epochs, line = c.line}
  return json.encode_stable(doc)
end

-- ---- launch -----------------------------------------------------------------------

queue.launch = {name = "queue_launch", needs = {"run", "inst", "code"}, produces = {"job", "queue"}}

local function refuse_or_fail(res, what, r)
  if res.code == 0 then return end
  local out = res.stdout or ""
  local why = out:match("refuse ([^\n]*)")
  if why then errors.refuse(string.format("%s on %s: %s", what, r.host, why), 0) end
  error(string.format("%s on %s: exited %s: %s%s", what, r.host, tostring(res.code), out:match("bad ([^\n]*)") or out,
    res.stderr or ""), 0)
end

local function milli(yuan) return yuan and math.floor(yuan * 1000 + 0.5) or 0 end

function queue.launch.run(ctx, o)
  o = o or {}
  local inst, r = lifecycle().session(ctx), ctx.run
  if type(o.cells) ~= "table" or #o.cells == 0 then
    errors.usage("queue: no cell to run on " .. r.host .. " (a sweep of zero cells is a failure)", 0)
  end
  if not o.sweep or not o.train then errors.usage("queue: options sweep and train are required", 0) end
  local P = require("gpurent.platform").of(r.profile)
  if o.parallel ~= nil and not P.start_queue then
    errors.usage(string.format("queue: parallel=%s: the on-box queue of platform %s runs one cell at a time per box " ..
      "(several boxes: host=a,b)", tostring(o.parallel), tostring(P.name)), 0)
  end
  local qdir = queue.dir(r, o)
  -- the budget gate before the box's meter runs the cells (on the box, the armed
  -- autostop watchdog parks it when the budget is spent: gpurent billing autostop --budget)
  local budget_line = r:check_budget(o.budget, o.instance, "sweep of " .. #o.cells .. " cell(s)")
  if budget_line then r:say("queue", "%s", budget_line) end
  -- and before every cell, on the box: the box has no API token, so the queue gets the
  -- budget, the spend now and the price, and counts on from there (run_queue.sh)
  local hand, no_hand = r:box_budget(o.budget, o.instance)
  if hand then
    r:say("queue", "the queue checks the budget before each cell on the box: %.2f of %.2f yuan spent, %.2f yuan/h",
      hand.spent, hand.yuan, hand.price)
  elseif budget_line then
    r:say("queue", "the budget is not re-checked before each cell on the box: %s", tostring(no_hand))
  end
  -- the checkpoint load check, settled before anything is pushed (as for a single run):
  -- each cell's wrapper runs it before the durable sync, and its seal before sealing
  local lc = phases().launch.load_check(inst, r, {roster = o.roster, box_load = o.box_load},
    ctx.python or (r.profile.env and r.profile.env.python) or "python3")
  local n, bytes = phases().launch.push_code(inst, r, ctx.code)
  r:say("queue", "pushed %d files (%d bytes) to %s, shared by the cells; every SHA-256 re-read on the box", n, bytes,
    r.paths.code)
  local table_lines, init_lines, commands = {}, {}, {}
  for _, c in ipairs(o.cells) do
    local id = queue.cell_id(o.sweep, c.index)
    local cr = run.new{host = r.host, project = r.project, profile = r.profile, id = id, record = false, out = r.out}
    cr.paths.code = r.paths.code
    local command = queue.cell_command(o.train, c)
    local res = inst:sh(remote.script("queue_cell", {CELL_ACTIVE = cr.paths.active, ID = id,
      WRAPPER = wrapper_text(ctx, cr, command, lc), RUN_JSON = cell_doc(ctx, id, c, command)}), {timeout = 60})
    refuse_or_fail(res, "queue: installing cell " .. c.index, r)
    if lc then
      inst:sh(remote.script("put_file", {FILE = cr.paths.meta .. "/load_check"}), {stdin = lc.shell, timeout = 60, check = true})
    end
    table_lines[#table_lines + 1] = string.format("%d\t%s\t%s", c.index, id, describe(c))
    init_lines[#init_lines + 1] = string.format("%d\t%s", c.index, id)
    commands[c.index] = phases().launch.expand(cr, command, ctx.python)
  end
  -- a platform with a scheduler of its own runs the installed cells as its jobs (Slurm:
  -- one job array, gpurent.platform.slurm.start_queue) instead of the on-box loop
  if P.start_queue then
    return P.start_queue(inst, r, {table = table_lines, cells = o.cells, commands = commands, sweep = o.sweep,
      parallel = o.parallel, gate = queue.gate_lines(r.profile, o)})
  end
  local init = inst:sh(remote.script("queue_init", {QDIR = qdir, CELLS = remote.lines(init_lines, "queue: cells")}),
    {timeout = 90})
  refuse_or_fail(init, "queue: creating " .. qdir, r)
  if o.shared and init.stdout:match("^created ") then
    -- one region FS, one creator: a second creator sees a filesystem of its own
    if o.shared.creator and o.shared.creator ~= r.host then
      inst:sh("rm -rf " .. q(qdir), {timeout = 60})
      errors.refuse(string.format("queue: %s does not see the queue %s that %s created on the region-shared FS " ..
        "(another region?): the boxes of one sweep share one region; run one sweep per region", r.host, qdir,
        o.shared.creator), 0)
    end
    o.shared.creator = r.host
  end
  r:say("queue", "%s the queue %s (%d cell(s))%s", init.stdout:match("^created ") and "created" or "joined", qdir,
    #o.cells, o.shared and ": the boxes of this region claim its cells one at a time" or "")
  local script = queue.script_path(r)
  inst:sh(remote.script("run_install", {PATH = script}), {timeout = 60, check = true,
    stdin = remote.script("run_queue", {RUN_ID = r.id, HOST = r.host, META = r.paths.meta, LOG = r.paths.log,
      QDIR = qdir, ACTIVE = r.paths.root .. "/active", SHARED = o.shared and 1 or 0,
      GATE = queue.gate_lines(r.profile, o), BUDGET_MILLI = milli(hand and hand.yuan), SPENT_MILLI = milli(hand and hand.spent),
      SPENT_AT = hand and math.floor(hand.at) or 0, PRICE_MILLI = milli(hand and hand.price)})})
  local st = inst:sh(remote.script("queue_start", {META = r.paths.meta, SESSION = r.session, SCRIPT = script,
    LOG = r.paths.log, MODE = o.mode or "auto", QDIR = qdir, TABLE = remote.lines(table_lines, "queue: table")}),
    {timeout = 60})
  refuse_or_fail(st, "queue: starting " .. r.id, r)
  local mode, pid = st.stdout:match("mode (%a+)"), tonumber(st.stdout:match("pid (%d+)"))
  r:say("queue", "queue %s runs on %s under %s (pid %s), whatever happens to this gpurent; re-attach from any " ..
    "shell with `gpurent watch %s` (--finish seals and pulls the cells); log %s", r.id, r.host,
    mode == "tmux" and ("tmux (session " .. r.session .. ")") or "nohup + setsid", tostring(pid), r.id, r.paths.log)
  return {job = {mode = mode, pid = pid, script = script, queue = true}, queue = {dir = qdir, script = script}}
end

-- ---- the box's state --------------------------------------------------------------

function queue.status(inst, r)
  -- a scheduler's queue (Slurm: a job array) is read the scheduler's way, in the same shape
  local P = require("gpurent.platform").of(r.profile)
  if P.queue_status then return P.queue_status(inst, r) end
  local res = inst:sh(remote.script("queue_status", {META = r.paths.meta, SESSION = r.session,
    SCRIPT = queue.script_path(r)}), {timeout = 60, idempotent = true})
  if res.code ~= 0 then error(string.format("queue status of %s on %s: exit %s: %s", r.id, r.host, tostring(res.code),
    res.stderr or ""), 0) end
  local st = {table = {}, by_index = {}, events = {}, pending = 0}
  for line in res.stdout:gmatch("[^\n]+") do
    local k, v = line:match("^gq_(%a+) ?(.*)$")
    if k == "alive" then
      local a, pid = v:match("^(%d) (%S+)")
      st.alive, st.pid = a == "1", tonumber(pid)
    elseif k == "cell" then
      local n, id, desc = v:match("^(%d+)\t(%S+)\t(.*)$")
      if n then
        local c = {index = tonumber(n), id = id, desc = desc}
        st.table[#st.table + 1], st.by_index[c.index] = c, c
      end
    elseif k == "event" then
      local kind, n, rest = v:match("^(%a+) (%d+) (.*)$")
      if kind == "start" then
        local id, at = rest:match("^(%S+) (%d+)")
        st.events[#st.events + 1] = {kind = "start", index = tonumber(n), id = id, at = tonumber(at)}
      elseif kind == "end" then
        local id, outcome, text = rest:match("^(%S+) (%a+) ?(.*)$")
        st.events[#st.events + 1] = {kind = "end", index = tonumber(n), id = id, ok = outcome == "ok", text = text}
      elseif kind == "gate" or kind == "budget" or kind == "notrun" then
        st.events[#st.events + 1] = {kind = kind, index = tonumber(n), text = rest}
      end
    elseif k == "pending" then
      local count, nxt = v:match("^(%d+) (%S+)")
      st.pending, st.next = tonumber(count) or 0, tonumber(nxt)
    elseif k == "done" then
      if v:match("^exit=") then
        st.done = {exit = tonumber(v:match("exit=(%d+)")), ran = tonumber(v:match("ran=(%d+)")),
          ok = tonumber(v:match("ok=(%d+)")), failed = tonumber(v:match("failed=(%d+)"))}
      elseif st.done then st.done.line = v end
    end
  end
  return st
end

-- A cell's own run: from the ledger when a watcher recorded it already, else recorded
-- now (the box that claimed it is its host).
local function cell_run(r, id)
  -- a cell lives where its queue run does: the queue run's profile, whatever the ledger names
  local ok, cr = pcall(run.load, id, {out = r.out, profile = r.profile})
  if not ok then
    cr = run.new{host = r.host, project = r.project, profile = r.profile, id = id,
      recipe = (r.recipe or "autodl_sweep") .. "/cell", parent = r.id, kind = "cell", roster = r.roster, load_cmd = r.load_cmd, interval = r.interval,
      stall_seconds = r.stall_seconds, out = r.out}
  end
  cr.label, cr.paths.code = r.label, r.paths.code
  return cr
end

-- ---- following the queue ----------------------------------------------------------

local function triage(r, inst, cr, n)
  local ok, f = pcall(monitor.probe, inst, cr, {timeout = 30})
  if not ok then return end
  local v = monitor.classify(f, {stall_seconds = 1e9})
  r:say("watch", "cell %d %s", n, monitor.status_line(f, v))
  local t = v.triage
  if t then
    r:say("watch", "  cause: %s", t.cause)
    if t.evidence then r:say("watch", "  evidence: %s", t.evidence) end
    local tail = f.tail or {}
    for i = math.max(1, #tail - 3), #tail do r:say("watch", "    | %s", tail[i]) end
    -- the tier and the dimension that filled, advice for that one only (as a run's watch)
    for _, x in ipairs(t.full or {}) do
      if x.advice then r:say("watch", "  full: the %s tier's %s -> %s", x.tier, x.dim, x.advice) end
    end
    r:say("watch", "  class %s -> remedy %s (the queue went on to the next cell)", t.class, t.remedy)
  end
end

-- seal a DONE cell's capsule (close, as a lifecycle of the cell's own run)
local function seal(r, inst, cr, o)
  if cr.status == "succeeded" then
    r:say("queue", "cell run %s was finished earlier (ledger status succeeded): not sealed again", cr.id)
    return true
  end
  local out = lifecycle().attempt(cr, {phases().close}, {tell = false, context = {inst = inst},
    options = {close = {roster = o.roster or r.roster, box_load = o.box_load}}})
  return out.ok, out.error
end

local function on_event(S, ev)
  local r, inst, o = S.r, S.inst, S.o
  local c = S.st.by_index[ev.index] or {desc = "?"}
  if ev.kind == "start" then
    local cr = cell_run(r, ev.id)
    S.runs[ev.index], S.running[ev.index] = cr, cr
    S.ran = S.ran + 1
    r:say("cell", "cell %d (%s) -> run %s on %s", ev.index, c.desc, ev.id, r.host)
  elseif ev.kind == "requeue" then
    -- the scheduler put the cell back in its queue (its time limit, a pre-emption): the
    -- same attempt resumes from its checkpoint; not a failure, not a new cell
    r:say("cell", "cell %d (%s): run %s %s", ev.index, c.desc, ev.id, ev.text)
  elseif ev.kind == "end" then
    local cr = S.runs[ev.index] or cell_run(r, ev.id)
    S.running[ev.index] = nil
    if ev.ok then
      r:say("cell", "cell %d: run %s DONE on the box (%s)%s", ev.index, ev.id, ev.text,
        ev.requeued and (", " .. ev.requeued) or "")
      local ok, err = true, nil
      if o.seal then ok, err = seal(r, inst, cr, o) end
      if ok then
        S.ok[#S.ok + 1] = {index = ev.index, id = ev.id, text = ev.text, requeued = ev.requeued}
        S.cells[#S.cells + 1] = ev.id
      else
        local why = "sealing failed: " .. errors.message(err):match("[^\n]*")
        S.failed[#S.failed + 1] = {index = ev.index, id = ev.id, why = why, requeued = ev.requeued}
        r:say("cell", "cell %d FAILED: %s", ev.index, why)
      end
    else
      S.failed[#S.failed + 1] = {index = ev.index, id = ev.id, why = ev.text, requeued = ev.requeued}
      r:say("cell", "cell %d FAILED: run %s: %s", ev.index, ev.id, ev.text)
      triage(r, inst, cr, ev.index)
      if cr.status ~= "failed" then cr:finish("failed") end
    end
  elseif ev.kind == "gate" then
    S.stopped = string.format("cell %d not run: %s", ev.index, ev.text)
    r:say("queue", "DISK GATE on %s: %s (this box takes no more cells)", r.host, S.stopped)
  elseif ev.kind == "budget" then
    S.budget = {index = ev.index, text = ev.text}
    local msg = string.format("sweep queue %s stopped by the budget before cell %d: %s; raise the budget " ..
      "(gpurent billing budget %s YUAN) and run the rest with start=%d", r.id, ev.index, ev.text, r.host, ev.index)
    r:say("queue", "BUDGET on %s: %s", r.host, msg)
    -- terminal, ledger and the platform's push (within its limits); once per queue run
    pcall(require("gpurent.notify").send, {kind = "budget", message = msg, instance = r.host, run_id = r.id,
      push = true, once = true, profile_name = r.profile_name, out = io.stderr})
  elseif ev.kind == "notrun" then
    S.not_started[#S.not_started + 1] = ev.index
    r:say("cell", "cell %d (%s): not started: budget", ev.index, c.desc)
  end
end

local function tick_running(S, t0)
  for n, cr in pairs(S.running) do
    local ok, f = pcall(monitor.probe, S.inst, cr, {timeout = 30})
    if ok then
      local v = monitor.classify(f, {stall_seconds = S.o.stall or S.r.stall_seconds or 600})
      S.r:say("watch", "t+%ds cell %d %s", math.floor(sys.now() - t0), n, monitor.status_line(f, v))
      if v.state == "stalled" then
        S.r:say("watch", "  STALLED: %s: inspect it (py-spy dump / strace -p %s) or stop it (`gpurent watch %s`); " ..
          "the queue waits for it", v.why, tostring(f.pid), cr.id)
      end
    end
  end
end

-- What the queue did so far (also carried by a follow error as `swept`, so a sweep
-- whose queue died or timed out still counts the cells that ran).
local function summary(S, o)
  local failed = {}
  for i, f in ipairs(S.failed) do failed[i] = f end
  table.sort(failed, function(a, b) return a.index < b.index end)
  return {ran = S.ran, ok = S.ok, failed = failed, cells = S.cells, stopped = S.stopped, pending = S.pending,
          budget = S.budget, not_started = S.not_started, table = S.st and S.st.table,
          exit = S.done and S.done.exit, line = S.done and S.done.line, host = S.r.host, run = S.r.id, shared = o.shared}
end

function queue.follow(inst, r, o)
  o = o or {}
  local interval = o.interval or r.interval or 30
  local max_wait = o.max_wait or r.max_wait or 86400
  local S = {r = r, inst = inst, o = o, runs = {}, running = {}, ok = {}, failed = {}, cells = {}, ran = 0, seen = {},
    not_started = {}}
  local t0, fails = sys.now(), 0
  r:say("queue", "following the queue %s on %s every %gs (bounded at %ds)", r.id, r.host, interval, max_wait)
  while true do
    local ok, st = pcall(queue.status, inst, r)
    if not ok then
      fails = fails + 1
      r:say("queue", "queue probe failed (%d in a row): %s; the queue runs on the box, retrying", fails,
        errors.message(st):match("[^\n]*"))
      if fails >= (o.probe_failures or 20) then
        errors.raise("remote", "queue " .. r.id .. ": " .. r.host .. " unreachable", 0,
          {watch_state = "unreachable", still_running = true, swept = summary(S, o)})
      end
      if require("gpurent.transport.ssh").is_error(st, "timeout") then pcall(inst.reconnect, inst) end
    else
      fails = 0
      S.st, S.pending = st, st.pending
      if #st.table == 0 then
        error("queue: " .. r.id .. " was never started on " .. r.host .. " (no cell table in " .. r.paths.meta .. ")", 0)
      end
      -- each event once: the on-box log only grows (its position is its key); a scheduler's
      -- state is re-read whole each time, its events carry their own key (cell and attempt)
      for i, ev in ipairs(st.events) do
        local key = ev.key or ("#" .. i)
        if not S.seen[key] then S.seen[key] = true; on_event(S, ev) end
      end
      -- cells the scheduler still holds: waiting, not stalled (said with its reason)
      if st.waiting and not st.done then r:say("watch", "t+%ds %s", math.floor(sys.now() - t0), st.waiting) end
      if st.done then
        S.done = st.done
        r:say("queue", "on the box: %s", st.done.line or "QUEUE DONE")
        break
      end
      if not st.alive then
        -- a cell that started and has no end: its result is not known to the queue, it is rerun too
        local from, cut = st.next, {}
        for n in pairs(S.running) do
          cut[#cut + 1] = tostring(n)
          if not from or n < from then from = n end
        end
        table.sort(cut)
        errors.raise("remote", string.format("queue %s on %s is gone without QUEUE DONE (%s%d cell(s) still pending): " ..
          "the box rebooted or the queue was killed%s", r.id, r.host,
          #cut > 0 and ("cell " .. table.concat(cut, ", ") .. " started and not ended, ") or "", st.pending,
          from and string.format("; run the rest with start=%d", from) or ""), 0,
          {watch_state = "dead", swept = summary(S, o)})
      end
      tick_running(S, t0)
    end
    if sys.now() - t0 >= max_wait then
      r:say("queue", "TIMEOUT after %ds: the queue keeps running on %s; re-attach with gpurent watch %s", max_wait,
        r.host, r.id)
      errors.raise("remote", "queue " .. r.id .. " still running after " .. max_wait .. "s", 0,
        {watch_state = "timeout", still_running = true, swept = summary(S, o)})
    end
    sched.sleep(interval)
  end
  return summary(S, o)
end

queue.watch = {name = "queue_watch", needs = {"run", "inst"}, produces = {"cells", "swept"}}

function queue.watch.run(ctx, o)
  local inst = lifecycle().session(ctx)
  local w = queue.follow(inst, ctx.run, o)
  -- a scheduler's accounting of the sweep's jobs (Slurm: the array's tasks), into the ledger
  require("gpurent.billing.usage").note(inst, ctx.run, "queue")
  return {cells = w.cells, swept = w}, string.format("%d cell(s) run, %d ok, %d failed", w.ran, #w.ok, #w.failed)
end

-- ---- the verdict ------------------------------------------------------------------

-- The budget's stop in words: before which cell, why, and the cells never started.
function queue.budget_text(s)
  local b = s.budget
  local ns = {}
  for i, n in ipairs(s.not_started or {}) do ns[i] = tostring(n) end
  return string.format("stopped by the budget before cell %d: %s%s", b.index, b.text,
    #ns > 0 and ("; not started (budget): cell(s) " .. table.concat(ns, ", ")) or "")
end

-- Why a queue run failed, whatever the exit codes: failed cells, the gate, the budget, no result.
function queue.failures(s)
  local why = {}
  if #s.failed > 0 then
    local names = {}
    for _, f in ipairs(s.failed) do names[#names + 1] = string.format("cell %d (%s: %s)", f.index, f.id, f.why) end
    why[#why + 1] = #s.failed .. " cell(s) failed: " .. table.concat(names, "; ")
  end
  if s.stopped then why[#why + 1] = "stopped at the disk gate: " .. s.stopped end
  if s.budget then why[#why + 1] = queue.budget_text(s) end
  if s.ran == 0 and not s.shared and not s.budget then why[#why + 1] = "no cell ran" end
  if s.ran > 0 and #s.ok == 0 then why[#why + 1] = "no cell produced a result" end
  -- a cell whose start was seen and whose end never was: its outcome is unknown, not ok
  local ended = #s.ok + #s.failed
  if s.ran > ended then why[#why + 1] = (s.ran - ended) .. " cell(s) started and never ended" end
  return why
end

queue.verdict = {name = "queue_verdict", needs = {"run", "swept"}, produces = {},
  report = function(ctx) return string.format("%d cell(s) ok", #ctx.swept.ok) end}

function queue.verdict.run(ctx)
  local why = queue.failures(ctx.swept)
  if #why > 0 then
    errors.raise("remote", "queue " .. ctx.run.id .. " on " .. ctx.run.host .. ": " .. table.concat(why, "; "), 0)
  end
end

-- ---- `gpurent watch QUEUE_RUN` ----------------------------------------------------

local function once(r)
  local inst = r:connect()
  local st = queue.status(inst, r)
  local state, budget = {}, nil
  for _, ev in ipairs(st.events) do
    if ev.kind == "start" then state[ev.index] = "running (run " .. ev.id .. ")"
    elseif ev.kind == "requeue" then state[ev.index] = "running (run " .. ev.id .. "), " .. ev.text
    elseif ev.kind == "end" then state[ev.index] = (ev.ok and "DONE" or "FAILED") .. " (run " .. ev.id .. ": " .. ev.text .. ")"
    elseif ev.kind == "gate" then state[ev.index] = "not run: disk gate: " .. ev.text
    elseif ev.kind == "notrun" then state[ev.index] = "not started: budget"
    elseif ev.kind == "budget" then budget = ev.text end
  end
  local bad = false
  for _, c in ipairs(st.table) do
    local s = state[c.index] or "pending"
    if s:match("^FAILED") or s:match("^not run") then bad = true end
    r:say("watch", "cell %d (%s): %s", c.index, c.desc, s)
  end
  r:say("watch", "queue %s: %s", st.alive and "running" or "not running", st.done and st.done.line or
    (st.pending .. " cell(s) pending"))
  if budget then r:say("watch", "stopped by the budget: %s", budget) end
  inst:close()
  if not st.alive and not st.done then return "dead", 1 end
  if st.done and st.done.exit == 3 then return "finished", 3 end
  local code = (bad or (st.done and st.done.exit ~= 0)) and 1 or 0
  return st.done and "finished" or "running", code
end

function queue.reattach(r, opts, o)
  if o.max_relaunches then
    errors.usage("watch " .. r.id .. ": --max-relaunches does not apply to a sweep's queue run: each cell runs once " ..
      "on the box (rerun a failed cell with start=N)", 0)
  end
  if opts.once then return once(r) end
  local P = phases()
  local list = {P.connect, queue.watch}
  if opts.finish then list[#list + 1] = P.pull; list[#list + 1] = queue.verdict end
  local out = lifecycle().attempt(r, list, {tell = false, partial = not opts.finish, context = {job = {reattached = true}},
    options = {
      queue_watch = {interval = o.interval, stall = o.stall_seconds, max_wait = o.max_wait, seal = opts.finish,
        roster = r.roster},
      pull = opts.finish and {skip = function(ctx) return #ctx.cells == 0 end, roster = r.roster,
        load_cmd = r.load_cmd, local_dir = r.local_dir} or nil,
    }})
  if out.ok then
    local s = out.ctx.swept
    if not opts.finish and #queue.failures(s) > 0 then return "finished", s.budget and 3 or 1 end
    return "finished", 0
  end
  local state = type(out.error) == "table" and out.error.watch_state
  if state then return state, ({timeout = 5, stalled = 4})[state] or 1 end
  -- the budget, not the trainer, ended the queue: exit 3, as the budget gate's refusal
  if out.phase == "queue_verdict" then return "finished", (out.ctx and out.ctx.swept and out.ctx.swept.budget) and 3 or 1 end
  error(out.error, 0)
end

return queue

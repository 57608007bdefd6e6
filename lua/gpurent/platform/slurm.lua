-- gpurent.platform.slurm: a GPU cluster driven through its own scheduler (issue 19).
-- gpurent reaches the login node over SSH; a run's wrapper (the same on-box
-- completion chain as elsewhere: DONE/FAILED markers, durable sync) runs on a compute
-- node as a batch job: P.start_detached writes a batch script whose #SBATCH lines
-- come from the profile's `slurm:` keys (remote/slurm_submit.sh) and submits it with
-- `sbatch --parsable`, recording the job id in the attempt's meta dir (aN/jobid).
-- Watch reads the job's state through P.job_state (squeue, else sacct): PENDING is
-- waiting for the scheduler, not a stalled job. There is no billing API, no meter and
-- no instance to release: the stop verb is `scancel` of the run's job, behind the
-- teardown gate's approval (gate action cancel_job: refused without --approve HOST).
--
--   slurm.sbatch_options(profile, r) -> {"--partition=gpu", ...}   one #SBATCH line each
--   slurm.start_detached(inst, r, {script=}) -> {mode="sbatch", attempt=, job=, how=}
--   slurm.job_state(inst, r) -> {id=, state=, reason=, active=, pending=, unknown=, restarts=, resume=, ended=} | nil
--     (no job); restarts/resume: the job was requeued that many times and resumes from that checkpoint;
--     ended = {class=, cause=}: Slurm itself ended it, PREEMPTED or NODE_FAIL, and did not requeue it
--   slurm.stop{inst=, run= r | job= ID, host=} -> {decision=, job=, status="cancelled"}
--   slurm.start_queue / queue_status / resubmit_queue: a sweep as one job array (below)
--   slurm.read_accounting(text) -> {ids=, jobs=}: slurm_usage.sh's output, read
--   slurm.accounting(inst, {ids=, meta=}, profile) -> {ids=, jobs={{id, state, elapsed, gpus,
--       cpus, gpu_seconds, cpu_seconds, final}...}, price_per_gpu_hour=, currency=}   (sacct)
--   slurm.usage(inst, r) -> the same for every job of a run's attempts (gpurent.billing.usage)
--   slurm.job_info(inst, job) -> {id=, state=, name=, reason=, active=, pending=} | nil
--   slurm.connected(inst, r)   the profile's ~ paths made absolute with the login node's $HOME
--   slurm.multinode_command(command, nodes) -> the command run once a node through srun
--     with MASTER_ADDR/MASTER_PORT/NNODES/NODE_RANK/WORLD_SIZE (r.nodes adds --nodes=N)
--   (and the interface every platform has: gpurent.platform's header)
local errors = require "gpurent.util.errors"
local hosts = require "gpurent.hosts"
local remote = require "gpurent.remote"

local slurm = {name = "slurm", title = "Slurm", gotchas = "gpurent.gotchas.slurm", verbs = {cancel_job = {gated = true}}}

slurm.login_example = "ssh user@login.example.org"

-- The universal probes that look at the GPUs of the box they reach: here the login
-- node, which has none. gpurent check answers them n/a with this reason; S-GPU-ALLOC
-- looks inside an allocation instead (gotchas/slurm.lua).
local IN_ALLOCATION = "the cluster's GPUs are on its compute nodes, not the login node: S-GPU-ALLOC looks " ..
  "inside an allocation (srun --gres=gpu:1)"
slurm.gotchas_elsewhere = {["U-NOGPU"] = IN_ALLOCATION, ["U-ZOMBIE-VRAM"] = IN_ALLOCATION, ["U-XID"] = IN_ALLOCATION,
                           ["U-THROTTLE"] = IN_ALLOCATION, ["U-CUDA-MISMATCH"] = IN_ALLOCATION}

local NO_API = "a Slurm cluster has no billing API in gpurent: jobs are accounted by the scheduler (sacct)"

function slurm.client() return nil, NO_API end

function slurm.require_client(o)
  o = o or {}
  errors.raise(o.kind or "usage", (o.context or "") .. NO_API .. "; stop a run's job with its scancel (gated)", 0)
end

function slurm.parse_login(text)
  return hosts.parse_ssh_command(text, slurm.login_example)
end

slurm.hints = {no_token = NO_API}

function slurm.hints.unreachable(host)
  return string.format("(the cluster's login node %s does not answer: check the VPN or bastion it needs; " ..
    "a new address? gpurent host add %s 'ssh user@login.example.org')", host, host)
end

function slurm.hints.teardown_reminder(host)
  return string.format("no meter on %s (a Slurm cluster): a finished job has left the queue; the run's files stay " ..
    "in scratch (which the cluster may purge) and its best checkpoint in home until you delete them", host)
end

function slurm.notify() return false, "no push channel on this platform" end
function slurm.notify_ready() return false, "no push channel on this platform" end

function slurm.create()
  errors.usage("a Slurm cluster has no instances to create: gpurent host add NAME 'ssh user@login.example.org' " ..
    "--profile slurm, then run on it", 0)
end

function slurm.in_instance_power_off()
  errors.usage("a Slurm login node is not powered off by gpurent: stop a run's job (scancel, gated) instead", 0)
end

-- ---- the batch request ---------------------------------------------------------------

local SIGNALS = {USR1 = true, USR2 = true, TERM = true, INT = true}

-- One #SBATCH option per set key of the profile's `slurm:` map; the run's own output,
-- name and working directory. Every key the profile sets is honoured here.
function slurm.sbatch_options(p, r)
  local s = p.slurm
  if type(s) ~= "table" then
    errors.usage("profile " .. tostring(p.platform) .. " has no slurm: map (partition, account, qos, gres, time, " ..
      "requeue, signal, signal_seconds): see profiles/slurm.yaml", 0)
  end
  local opts = {"--job-name=" .. r.session, "--output=" .. r.paths.log, "--open-mode=append", "--chdir=" .. r.paths.meta}
  for _, k in ipairs{"partition", "account", "qos", "gres", "time"} do
    if s[k] ~= nil then opts[#opts + 1] = "--" .. k .. "=" .. tostring(s[k]) end
  end
  if r.nodes and r.nodes > 1 then   -- multi-node: one launcher task a node (slurm.multinode_command)
    opts[#opts + 1] = "--nodes=" .. math.tointeger(r.nodes)
    opts[#opts + 1] = "--ntasks-per-node=1"
  end
  opts[#opts + 1] = s.requeue and "--requeue" or "--no-requeue"
  if s.signal then
    if not SIGNALS[s.signal] then errors.usage("profile slurm.signal " .. tostring(s.signal) .. ": one of USR1 USR2 TERM INT", 0) end
    opts[#opts + 1] = string.format("--signal=B:%s@%d", s.signal, s.signal_seconds or 120)
  end
  for _, o in ipairs(opts) do
    if o:find("[\n\r]") then errors.usage("profile slurm: the option " .. string.format("%q", o) .. " holds a newline", 0) end
  end
  return opts
end

-- The guard + the batch script + sbatch in one round trip (remote/slurm_submit.sh):
-- never a second job while this run's current one is still queued or running.
function slurm.start_detached(inst, r, o)
  o = o or {}
  -- the wrapper's paths are filled in quoted: a ~ would stay a literal directory name
  -- on the compute node, and Slurm expands none in --output/--chdir
  if tostring(r.paths.meta):sub(1, 1) ~= "/" then
    errors.usage(string.format("profile %s: the run root %s is not absolute; a batch job needs absolute paths " ..
      "(Slurm expands no ~): set tiers.*.path and checkpoints.run_root/live_dir/durable_dir to your cluster's " ..
      "home and scratch in a site overlay (extends: slurm); nothing was submitted", tostring(r.profile.platform),
      tostring(r.paths.root)), 0)
  end
  local opts = slurm.sbatch_options(r.profile, r)
  local sig = r.profile.slurm.signal or ""
  local rq = slurm.requeue_vars(r)
  local res = inst:sh(remote.script("slurm_submit", {META = r.paths.meta, SCRIPT = o.script, LOG = r.paths.log,
    OPTIONS = remote.lines(opts, "slurm options"), SIGNAL = sig, REQUEUE = rq.REQUEUE, GRACE = rq.GRACE,
    CKPTS = rq.CKPTS}), {timeout = 60})
  local out = res.stdout or ""
  local refuse = out:match("refuse ([^\n]*)")
  if refuse then
    errors.refuse("launch " .. r.id .. " on " .. r.host .. ": " .. refuse .. " (no second copy of a live job)", 0)
  end
  local job = out:match("job (%d+)")
  if res.code ~= 0 or not job then
    error(string.format("launch %s on %s: sbatch failed (exit %s): %s%s", r.id, r.host, tostring(res.code), out,
      res.stderr or ""), 0)
  end
  return {mode = "sbatch", attempt = tonumber(out:match("attempt (%d+)")), job = job,
          how = "Slurm job " .. job .. " (sbatch " .. table.concat(opts, " ", 5) .. ")"}
end

-- ---- the job's state -------------------------------------------------------------------

-- Slurm's states that still hold (or will hold) the job: never a second copy meanwhile.
local PENDING = {PENDING = true, REQUEUED = true, REQUEUE_HOLD = true, REQUEUE_FED = true, CONFIGURING = true,
                 RESV_DEL_HOLD = true, SUSPENDED = true, RESIZING = true, SPECIAL_EXIT = false}
local RUNNING = {RUNNING = true, COMPLETING = true, STAGE_OUT = true, SIGNALING = true, STOPPED = true}

function slurm.job_state(inst, r)
  local res = inst:sh(remote.script("slurm_job_state", {META = r.paths.meta}), {timeout = 30, idempotent = true})
  local id, state, reason = (res.stdout or ""):match("gr_job (%d+) (%S+) ?([^\n]*)")
  if not id then return nil end
  state = state:match("^(%u[%u_]*)") or state      -- sacct says "CANCELLED by 0"
  -- UNKNOWN: neither squeue nor sacct could say (a slow controller, accounting not yet
  -- written): counted as still active, so the watch waits instead of relaunching a copy
  local unknown = state == "UNKNOWN"
  local st = {id = id, state = state, reason = reason ~= "" and reason ~= "None" and reason or nil, unknown = unknown,
          pending = PENDING[state] == true, active = unknown or PENDING[state] == true or RUNNING[state] == true}
  st.ended = slurm.scheduler_end(state, r.profile, "job " .. id)
  slurm.parse_requeue(st, res.stdout)
  st.note = slurm.requeue_text(st) or slurm.stuck_text(st)   -- the watch line shows it beside the state
  return st
end

-- ---- the scheduler's own ends: pre-emption and node failure ---------------------
-- What Slurm 22.05 reports (seen on the testbed, tests/spec/slurm_preempt_spec.lua): a
-- --requeue job that is pre-empted (PreemptMode=REQUEUE) or whose node fails goes
-- RUNNING -> COMPLETING -> PENDING (reason BeginTime) in squeue, the same job id, and
-- runs again (SLURM_RESTART_COUNT + 1): an active job, waited for, never relaunched.
-- Only sacct shows PREEMPTED / NODE_FAIL for it, as the record of the allocation that
-- ended (and for a moment as the job's only record): job_state and queue_status read
-- squeue first. A --no-requeue job (or one Slurm does not requeue: PreemptMode=CANCEL)
-- ends PREEMPTED / NODE_FAIL for good: that is the run's end, named with its state,
-- never a relaunch of a copy (the scheduler took the node; a person decides what next).
slurm.SCHEDULER_ENDS = {
  PREEMPTED = {class = "preempted", what = "pre-empted by a higher-priority job"},
  NODE_FAIL = {class = "node_fail", what = "its node failed"},
}

-- scheduler_end(state, profile, name, then_what) -> {class=, state=, cause=} | nil: the words
-- of a final PREEMPTED / NODE_FAIL ("Slurm job 12 PREEMPTED: pre-empted by ... and not
-- requeued (...); THEN_WHAT"); then_what: what the person may do (default: a single run's).
function slurm.scheduler_end(state, p, name, then_what)
  local e = slurm.SCHEDULER_ENDS[state]
  if not e then return nil end
  local s = p and p.slurm or {}
  local why = s.requeue and "Slurm did not requeue it: PreemptMode=CANCEL, or its requeue limit" or
    "submitted --no-requeue: the profile's slurm.requeue is off"
  return {class = e.class, state = state, cause = string.format("Slurm %s %s: %s and not requeued (%s); %s", name,
    state, e.what, why, then_what or "not relaunched: the scheduler ended it, run it again when you choose")}
end

-- ---- requeue and resume (the time limit, a pre-emption) ----------------------------
-- Slurm never requeues a job its time limit ended (TIMEOUT is final); it requeues one
-- that was pre-empted, hit a node failure or was `scontrol requeue`d. So with the
-- profile's `requeue: true` and a `signal:`, the batch shell does what a cluster's
-- long-running trainers do (Lightning's SLURMEnvironment, submitit): on the signal
-- before the limit it forwards it to the trainer (which writes its checkpoint and
-- exits), waits up to GRACE seconds for that, and requeues its own job. The restart
-- (the same job id, SLURM_RESTART_COUNT + 1) exports GPURENT_RESUME: the newest of
-- the profile's checkpoints.scratch files in the run's out dir. A requeued job is one
-- attempt of the run: never a relaunch, never a second sbatch.

-- The batch script's requeue variables: REQUEUE ("1" or ""), GRACE (seconds from the
-- signal to the requeue: the signal's lead minus 10 s for the requeue itself), CKPTS.
function slurm.requeue_vars(r)
  local s = r.profile.slurm
  local ckpts = {}
  if r.paths.out then   -- a run's out dir (a bare script submitted by hand has none)
    for _, name in ipairs(r.profile.checkpoints.scratch or {}) do ckpts[#ckpts + 1] = r.paths.out .. "/" .. name end
  end
  local lead = tonumber(s.signal_seconds) or 120
  return {REQUEUE = (s.requeue and s.signal) and "1" or "", GRACE = tostring(math.max(1, math.floor(lead - 10))),
          CKPTS = remote.lines(ckpts, "checkpoints.scratch")}
end

-- aN/requeue (written by the batch shell): "restart=K at=T job=J ckpt=PATH [requested]".
function slurm.parse_requeue(st, stdout)
  local line = (stdout or ""):match("gr_requeue ([^\n]*)")
  if not line then return st end
  st.restarts = tonumber(line:match("restart=(%d+)"))
  local ck = line:match("ckpt=(.-)%s*requested$") or line:match("ckpt=(.*)$")
  st.resume = ck ~= "" and ck or nil
  st.requeue_requested = line:find(" requested$") ~= nil
  return st
end

-- The watch line's words for a requeued job: "requeued (attempt 2), resuming from PATH".
function slurm.requeue_text(st)
  if not (st and st.restarts and st.restarts > 0) then return nil end
  return string.format("requeued (attempt %d), resuming from %s", st.restarts + 1,
    st.resume or "no checkpoint (starting over)")
end

-- Pending reasons that waiting does not clear: the request exceeds what the partition
-- or the association allows. Still pending (Slurm keeps it; an admin may change the
-- limit), but the watch line says why it will not start by itself.
slurm.STUCK_REASONS = {
  PartitionNodeLimit = "the job asks for more nodes than the partition has or allows (--nodes)",
  PartitionTimeLimit = "the job's --time is over the partition's limit (slurm.time)",
  BadConstraints = "no node fits the job's constraints",
  InvalidAccount = "the account is not valid (slurm.account)",
  InvalidQOS = "the QoS is not valid for this account (slurm.qos)",
  QOSMaxWallDurationPerJobLimit = "the job's --time is over the QoS's limit (slurm.time)",
}

function slurm.stuck_text(st)
  local why = st and st.pending and st.reason and slurm.STUCK_REASONS[st.reason]
  if not why then return nil end
  return string.format("%s does not clear by waiting: %s; cancel it (gated scancel) and resubmit", st.reason, why)
end

-- ---- multi-node jobs -------------------------------------------------------------------
-- A run with nodes = N > 1 asks for N nodes, one task each (sbatch_options), and its
-- command runs once per node through srun, with the rendezvous torchrun wants from
-- Slurm's variables: MASTER_ADDR (the allocation's first host), MASTER_PORT (from the
-- job id unless set), NNODES, NODE_RANK (SLURM_NODEID), WORLD_SIZE (nodes x GPUs a
-- node; torchrun recomputes it for its workers). The command text goes through a
-- quoted here-document, so the quoting launch.expand gave it survives unchanged:
--   torchrun --nnodes=$NNODES --node_rank=$NODE_RANK --nproc_per_node=gpu \
--     --master_addr=$MASTER_ADDR --master_port=$MASTER_PORT train.py
slurm.MULTINODE_END = "GPURENT_NODE_COMMAND_END"

function slurm.multinode_command(command, nodes)
  nodes = math.tointeger(tonumber(nodes))
  if not nodes or nodes < 1 then errors.usage("nodes=" .. tostring(nodes) .. ": a whole number of nodes, 1 or more", 0) end
  if nodes == 1 then return command end
  for line in (command .. "\n"):gmatch("([^\n]*)\n") do
    if line == slurm.MULTINODE_END then
      errors.usage("the train command holds a line " .. slurm.MULTINODE_END .. " (reserved for the multi-node wrapper)", 0)
    end
  end
  return table.concat({
    "GPURENT_NODE_COMMAND=$(cat <<'" .. slurm.MULTINODE_END .. "'",
    command,
    slurm.MULTINODE_END,
    ")",
    'MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
    'MASTER_PORT=${MASTER_PORT:-$((20000 + ${SLURM_JOB_ID:-0} % 20000))}',
    'NNODES=${SLURM_JOB_NUM_NODES:-1}',
    'WORLD_SIZE=$((NNODES * ${SLURM_GPUS_ON_NODE:-1}))',
    'export GPURENT_NODE_COMMAND MASTER_ADDR MASTER_PORT NNODES WORLD_SIZE',
    'echo "[gpurent] multi-node: $NNODES node(s) $SLURM_JOB_NODELIST, rendezvous $MASTER_ADDR:$MASTER_PORT"',
    "srun --nodes=\"$NNODES\" --ntasks-per-node=1 --kill-on-bad-exit=1 bash -c " ..
      "'export NODE_RANK=\"$SLURM_NODEID\"; eval \"$GPURENT_NODE_COMMAND\"'",
  }, "\n")
end

-- ---- the stop verb: scancel behind the gate ----------------------------------------

function slurm.stop(o)
  o = o or {}
  local gate = require "gpurent.lifecycle.gate"
  local inst = o.inst
  local host = o.host or (o.run and o.run.host) or o.ref or o.target
  if type(host) ~= "string" or host == "" then errors.usage("slurm.stop: the host (cluster alias) is required", 0) end
  if not inst then inst = require("gpurent.transport.instance").connect(o.target or host) end
  local job = o.job
  if not job and o.run then
    local st = slurm.job_state(inst, o.run)
    job = st and st.id
    if not job then errors.usage("run " .. tostring(o.run.id) .. " on " .. host .. " has no Slurm job recorded", 0) end
  end
  if not slurm.is_job_id(job) then
    errors.usage("slurm.stop: a job id (digits, or JOB_TASK for one task of an array) or a run is required", 0)
  end
  -- the same gate as a meter stop: approval for the host, asked in C; refusal sends nothing
  local decision = gate.check{action = "cancel_job", instance = host, names = {tostring(job)}, dry_run = o.dry_run,
    run_id = o.run and o.run.id, profile_name = o.profile_name or "slurm", interactive = o.interactive, out = o.out}
  if o.dry_run then return {decision = decision, job = job, status = "dry_run"} end
  local res = inst:sh("scancel " .. tostring(job), {timeout = 60})
  if res.code ~= 0 then
    error(string.format("scancel %s on %s exited %s: %s", tostring(job), host, tostring(res.code), res.stderr or ""), 0)
  end
  return {decision = decision, job = job, status = "cancelled"}
end

-- ---- sweeps: one job array (issue 19) -------------------------------------------------
-- A sweep's cells (installed by gpurent.lifecycle.queue.launch: each cell's own wrapper
-- and run.json) run as the tasks of ONE `sbatch --array`: the array index is the cell's
-- number in the queue file, each task runs its cell's wrapper in the cell's directory
-- (output <cell>/slurm-%A_%a.out); `parallel=K` is the array's %K. The queue run's meta
-- dir holds the cell table (cells), the commands, and one sN/ per submission (batch.sh,
-- jobid, cells). gpurent.lifecycle.queue follows it through slurm.queue_status, in the
-- on-box queue's shape, so watch, seal, summary, ledger cells and pull are the queue's.
--
--   slurm.array_spec({3, 1, 2, 7}, 2) -> "1-3,7%2"
--   slurm.start_queue(inst, r, {table=, cells=, commands=, parallel=, gate=}) -> {job=, queue=}
--     gate: the disk-budget gate's lines (gpurent.lifecycle.queue.gate_lines); each array task
--     checks them on its compute node before its cell's wrapper: a tier below a floor ends the
--     cell FAILED (stage=gate, the marker names the tier, its path and what is short)
--   slurm.queue_status(inst, r) -> queue.status's table (table, events, pending, alive, done, waiting);
--     a cell requeued by its task (the profile's requeue + signal, as a single run) or by the
--     scheduler is an event "requeue" and no failure: its FAILED marker counts only once its
--     task has ended (a restart archives it and resumes)
--   slurm.failed_cells(inst, r) -> {numbers}, status   (refused while a task is queued or running)
--   slurm.resubmit_queue(inst, r, {parallel=, gate=}) -> {job=, queue=, cells = {numbers}}   (a gated
--     cell is a failed one: resubmitted, checked again against this submission's floors)

function slurm.array_spec(indices, parallel)
  local seen, list = {}, {}
  for _, n in ipairs(indices) do
    if not math.tointeger(n) or n < 0 then errors.usage("slurm: array index " .. tostring(n) .. " is not a number >= 0", 0) end
    if not seen[n] then seen[n] = true; list[#list + 1] = n end
  end
  if #list == 0 then errors.usage("slurm: a job array of no cell", 0) end
  table.sort(list)
  local parts, i = {}, 1
  while i <= #list do
    local j = i
    while j < #list and list[j + 1] == list[j] + 1 do j = j + 1 end
    parts[#parts + 1] = j > i and (list[i] .. "-" .. list[j]) or tostring(list[i])
    i = j + 1
  end
  local spec = table.concat(parts, ",")
  if parallel ~= nil then
    if not math.tointeger(parallel) or parallel < 1 then
      errors.usage("slurm: parallel=" .. tostring(parallel) .. ": the most cells at once is a whole number >= 1", 0)
    end
    spec = spec .. "%" .. math.tointeger(parallel)
  end
  return spec
end

local function absolute_root(r, what)
  if tostring(r.paths.meta):sub(1, 1) ~= "/" then
    errors.usage(string.format("profile %s: the run root %s is not absolute; a batch job needs absolute paths " ..
      "(Slurm expands no ~): set tiers.*.path and checkpoints.run_root/live_dir/durable_dir to your cluster's " ..
      "home and scratch in a site overlay (extends: slurm); nothing was %s", tostring(r.profile.platform),
      tostring(r.paths.root), what), 0)
  end
end

-- The cells' ids are SWEEP-cNN (gpurent.lifecycle.queue.cell_id): the output of task N
-- goes into cell N's directory (%2a: the index zero-padded to two digits, as cNN).
local function cell_output(r, rows)
  local prefix
  for _, row in ipairs(rows) do
    local p = row.id:match("^(.*)%-c%d+$")
    if not p or row.id ~= string.format("%s-c%02d", p, row.index) or (prefix and p ~= prefix) then
      error(string.format("slurm sweep %s: cell %d's run id %s is not SWEEP-c%02d", r.id, row.index, row.id, row.index), 0)
    end
    prefix = p
  end
  return r.paths.root .. "/active/" .. prefix .. "-c%2a/slurm-%A_%a.out"
end

local function submit_array(inst, r, rows, numbers, o)
  absolute_root(r, "submitted")
  local spec = slurm.array_spec(numbers, o.parallel)
  local opts = slurm.sbatch_options(r.profile, r)
  for i, opt in ipairs(opts) do
    if opt:match("^%-%-output=") then opts[i] = "--output=" .. cell_output(r, rows) end
  end
  opts[#opts + 1] = "--array=" .. spec
  local cells = {}
  for i, n in ipairs(numbers) do cells[i] = tostring(n) end
  -- each task requeues itself as a single run's job does (the profile's requeue and
  -- signal); a cell resumes from its own out dir's checkpoints.scratch
  local rq = slurm.requeue_vars(r)
  local res = inst:sh(remote.script("slurm_queue_submit", {META = r.paths.meta, ACTIVE = r.paths.root .. "/active",
    OPTIONS = remote.lines(opts, "slurm options"), SIGNAL = r.profile.slurm.signal or "",
    REQUEUE = rq.REQUEUE, GRACE = rq.GRACE, CKPT_NAMES = remote.lines(r.profile.checkpoints.scratch or {},
      "checkpoints.scratch"),
    TABLE = o.table and remote.lines(o.table, "slurm sweep: cells") or "",
    COMMANDS = o.commands and remote.lines(o.commands, "slurm sweep: commands") or "",
    CELLS = remote.lines(cells, "slurm sweep: cell numbers"), GATE = o.gate or ""}), {timeout = 90})
  local out = res.stdout or ""
  local refuse = out:match("refuse ([^\n]*)")
  if refuse then errors.refuse("sweep " .. r.id .. " on " .. r.host .. ": " .. refuse .. "; nothing was submitted", 0) end
  local job = out:match("job (%d+)")
  if res.code ~= 0 or not job then
    error(string.format("sweep %s on %s: sbatch --array=%s failed (exit %s): %s%s", r.id, r.host, spec,
      tostring(res.code), out:match("bad ([^\n]*)") or out, res.stderr or ""), 0)
  end
  local n = tonumber(out:match("submission (%d+)"))
  r:say("queue", "sweep %s: %d cell(s) [%s] as Slurm array job %s (sbatch --array=%s, submission %d); each task runs " ..
    "its cell's wrapper, output in the cell's directory (slurm-%s_N.out); re-attach with `gpurent watch %s`",
    r.id, #numbers, table.concat(cells, ","), job, spec, n, job, r.id)
  return {job = {mode = "sbatch", job = job, array = spec, queue = true},
          queue = {dir = r.paths.meta, job = job, submission = n, array = spec}}
end

function slurm.start_queue(inst, r, o)
  local rows, numbers, commands = {}, {}, {}
  for _, line in ipairs(o.table) do
    local n, id = line:match("^(%d+)\t(%S+)\t")
    rows[#rows + 1], numbers[#numbers + 1] = {index = tonumber(n), id = id}, tonumber(n)
    commands[#commands + 1] = n .. "\t" .. tostring(o.commands and o.commands[tonumber(n)] or "")
  end
  return submit_array(inst, r, rows, numbers, {table = o.table, commands = commands, parallel = o.parallel,
    gate = o.gate})
end

-- Slurm's task states that still hold a task (waiting, or its node at work).
local function task_pending(state) return PENDING[state] == true end
local function task_active(state) return PENDING[state] == true or RUNNING[state] == true end

function slurm.queue_status(inst, r)
  local res = inst:sh(remote.script("slurm_queue_status", {META = r.paths.meta, ACTIVE = r.paths.root .. "/active"}),
    {timeout = 60, idempotent = true})
  if res.code ~= 0 then
    error(string.format("sweep status of %s on %s: exit %s: %s", r.id, r.host, tostring(res.code), res.stderr or ""), 0)
  end
  local st = {table = {}, by_index = {}, events = {}, pending = 0, alive = false}
  local tasks, acct, cmds, requeues, submission, job, unknown = {}, {}, {}, {}, 0, nil, nil
  for line in (res.stdout or ""):gmatch("[^\n]+") do
    local k, v = line:match("^gs_(%a+) ?(.*)$")
    if k == "job" then
      local n, j = v:match("^(%d+) (%S+)")
      submission, job = tonumber(n) or 0, j ~= "none" and j or nil
    elseif k == "task" then
      local idx, state, reason = v:match("^(%d+)|([^|]*)|(.*)$")
      if idx then tasks[tonumber(idx)] = {state = state:match("^(%u[%u_]*)") or state, reason = reason} end
    elseif k == "unknown" then
      unknown = v
    elseif k == "cmd" then
      local n, cmd = v:match("^(%d+)\t(.*)$")
      if n then cmds[tonumber(n)] = cmd end
    elseif k == "acct" then
      local id, state, code = v:match("^([^|]+)|([^|]*)|(.*)$")
      if id then acct[id] = {state = state:match("^(%u[%u_]*)") or state, exit = code} end
    elseif k == "requeue" then
      local n, line = v:match("^(%d+)\t(.*)$")
      if n then requeues[tonumber(n)] = slurm.parse_requeue({}, "gr_requeue " .. line) end
    elseif k == "cell" then
      local n, id, att, started, mark, text, desc = v:match("^(%d+)\t(%S+)\t(%d+)\t(%S+)\t(%S+)\t([^\t]*)\t(.*)$")
      if n then
        local c = {index = tonumber(n), id = id, desc = desc, attempt = tonumber(att), started = tonumber(started),
                   mark = mark ~= "-" and mark or nil, text = text}
        st.table[#st.table + 1], st.by_index[c.index] = c, c
      end
    end
  end
  local running, pending, reasons, ok, failed = 0, 0, {}, 0, 0
  local resubmit = "not resubmitted: resubmit=" .. tostring(r.id) .. " reruns the failed cells"
  for _, t in pairs(tasks) do
    t.active = task_active(t.state)
    if t.active then st.alive = true end
    if task_pending(t.state) then
      pending = pending + 1
      if t.reason ~= "" and t.reason ~= "None" then reasons[t.reason] = true end
    elseif t.active then running = running + 1 end
  end
  for _, c in ipairs(st.table) do
    c.command = cmds[c.index]
    local key = c.index .. " " .. c.attempt
    if c.started then
      st.events[#st.events + 1] = {kind = "start", index = c.index, id = c.id, at = c.started, key = "start " .. key}
    end
    local task = tasks[c.index]
    -- requeued (by its batch shell before the limit, or by the scheduler): one event per
    -- restart, in the single run's words ("requeued (attempt N), resuming from PATH")
    local rq = requeues[c.index]
    c.requeued = slurm.requeue_text(rq)
    if c.requeued then
      st.events[#st.events + 1] = {kind = "requeue", index = c.index, id = c.id, text = c.requeued,
        key = "requeue " .. key .. " " .. rq.restarts}
      -- the restarts that ran (a requested one has not, yet), for the cell's end
      local ran = rq.requeue_requested and rq.restarts - 1 or rq.restarts
      if ran > 0 then
        c.resumed = string.format("requeued (attempt %d), resumed from %s", ran + 1, rq.resume or
          "no checkpoint (started over)")
      end
    end
    local text = c.mark and c.text
    -- squeue could not answer: no task is known to have ended (a task nobody can see is not
    -- a dead one), so no cell ends this time; the sweep waits, as a run's UNKNOWN job does
    if unknown then text = nil; goto next_cell end
    -- a marker while its task is still queued or running is not the cell's end: FAILED,
    -- the batch shell may requeue it (the trainer exited on the signal before the limit)
    -- and the restart resumes it; DONE, Slurm may still requeue the task (pre-empted or
    -- its node failed before the batch shell exited), and the restart archives that
    -- DONE and runs again. Either is the cell's end (counted, sealed) once the task ended.
    if c.mark and task and task.active then text = nil end
    -- a task the scheduler ended for good (pre-empted, its node failed: not requeued)
    local ended = task and slurm.scheduler_end(task.state, r.profile, "array task " .. tostring(job) .. "_" ..
      c.index, resubmit)
    if not c.mark and not (task and task.active) and job then
      -- the task ended and the wrapper wrote no marker: killed (time limit, scancel, node
      -- failure, memory) before or while it ran; slurmctld, else sacct, says how
      -- (sacct names the task JOB_N; an array of one task by the job id alone)
      local a = acct[job .. "_" .. c.index] or acct[job] or {}
      local code, sig = tostring(a.exit):match("^(%d+):(%d+)$")
      ended = ended or (not task and slurm.scheduler_end(a.state, r.profile, "array task " .. job .. "_" .. c.index,
        resubmit))
      -- (a task killed with its node records exit code 0:0: no exit of the wrapper's, so "?")
      text = string.format("exit=%s stage=%s (%s%s; the wrapper left no marker)",
        sig and (sig ~= "0" and tostring(128 + tonumber(sig)) or code ~= "0" and code) or "?",
        c.started and "vanished" or "not-run",
        ended and ended.cause or ("Slurm " .. (task and task.state or a.state or "state unknown")),
        a.exit and (", exit code " .. a.exit) or "")
    end
    -- and says so whatever marker its killed wrapper left
    if text and ended and c.mark then text = text .. " (" .. ended.cause .. ")" end
    if text then
      st.events[#st.events + 1] = {kind = "end", index = c.index, id = c.id, ok = c.mark == "DONE", text = text,
        key = "end " .. key, requeued = c.resumed}
      c.state = c.mark == "DONE" and "ok" or "failed"
      if c.mark == "DONE" then ok = ok + 1 else failed = failed + 1 end
    end
    ::next_cell::
  end
  if unknown then
    st.alive, st.unknown = true, unknown
    st.waiting = string.format("Slurm array job %s: its tasks' state is UNKNOWN (%s): waiting, not counting a cell " ..
      "nobody can see as ended", tostring(job), unknown)
  end
  st.pending = pending
  st.job, st.submission = job, submission
  if pending > 0 then
    local why = {}
    for k in pairs(reasons) do why[#why + 1] = k end
    table.sort(why)
    st.waiting = string.format("Slurm array job %s: %d cell(s) PENDING%s, %d running: waiting for the scheduler, " ..
      "not stalled", tostring(job), pending, #why > 0 and (" (" .. table.concat(why, ", ") .. ")") or "", running)
  end
  if not st.alive and #st.table > 0 then
    local exit = (failed > 0 or ok == 0) and 1 or 0
    st.done = {exit = exit, ok = ok, failed = failed, ran = ok + failed,
      line = string.format("ARRAY DONE %s: Slurm array job %s (submission %d): %d cell(s), %d ok, %d failed",
        r.id, tostring(job or "none: sbatch failed"), submission, #st.table, ok, failed)}
  end
  return st
end

-- The cells a resubmission runs: those whose current attempt did not end DONE. Refused
-- while a task of the sweep is queued or running; a usage error when none failed.
function slurm.failed_cells(inst, r)
  local st = slurm.queue_status(inst, r)
  if #st.table == 0 then
    errors.usage("sweep " .. r.id .. " on " .. r.host .. " has no cell table: it was never submitted", 0)
  end
  if st.unknown then
    errors.refuse(string.format("sweep %s: cannot tell whether Slurm array job %s still has tasks queued or running " ..
      "(%s): try again once the controller answers; nothing was submitted", r.id, tostring(st.job), st.unknown), 0)
  end
  if st.alive then
    errors.refuse(string.format("sweep %s: Slurm array job %s still has tasks queued or running: re-attach with " ..
      "`gpurent watch %s`, resubmit once it ended; nothing was submitted", r.id, tostring(st.job), r.id), 0)
  end
  local failed = {}
  for _, c in ipairs(st.table) do
    if c.state ~= "ok" then failed[#failed + 1] = c.index end
  end
  if #failed == 0 then
    errors.usage(string.format("sweep %s: all %d cell(s) succeeded: nothing to resubmit", r.id, #st.table), 0)
  end
  return failed, st
end

function slurm.resubmit_queue(inst, r, o)
  o = o or {}
  local failed, st = slurm.failed_cells(inst, r)
  local out = submit_array(inst, r, st.table, failed, {parallel = o.parallel, gate = o.gate})
  out.cells = failed
  return out
end

-- ---- one job by its id (gpurent billing cancel) -------------------------------------

-- slurm.job_info(inst, job) -> {id, state, name, reason, pending, active} | nil (unknown job)
-- A Slurm job id: digits, or JOB_TASK (one task of a job array: a sweep's cell).
function slurm.is_job_id(job)
  job = tostring(job or "")
  return job:match("^%d+$") ~= nil or job:match("^%d+_%d+$") ~= nil
end

function slurm.job_info(inst, job)
  job = tostring(job)
  if not slurm.is_job_id(job) then
    errors.usage("a Slurm job id is digits (or JOB_TASK for one task of an array), not " .. string.format("%q", job), 0)
  end
  local res = inst:sh(remote.script("slurm_job_info", {JOB = job}), {timeout = 30, idempotent = true})
  local id, state, name, reason = (res.stdout or ""):match("gr_job ([%d_]+) (%S+) ?([^|\n]*)|?([^\n]*)")
  if not id then return nil end
  state = state:match("^(%u[%u_]*)") or state
  return {id = id, state = state, name = name ~= "" and name or nil,
          reason = reason ~= "" and reason ~= "None" and reason or nil,
          pending = PENDING[state] == true, active = PENDING[state] == true or RUNNING[state] == true}
end

-- ---- accounting: GPU- and CPU-hours from sacct ------------------------------------
-- What a run (or a sweep's array) used, as the scheduler's accounting storage records
-- it: per job, every allocation's elapsed seconds times the GPUs (gres/gpu=N) and CPUs
-- (cpu=N) of its AllocTRES, and a cost when the profile prices a GPU-hour
-- (slurm.price_per_gpu_hour, in billing.money.currency when the profile names one).

-- sacct lines ("JOBID|STATE|ELAPSEDRAW|ALLOCTRES") -> {{id, state, elapsed, gpus, cpus,
-- gpu_seconds, cpu_seconds, final}...} in first-seen order; a requeued job's
-- allocations add up under its id, its state is the last one's.
function slurm.parse_sacct(lines)
  local jobs, by_id = {}, {}
  for _, line in ipairs(lines) do
    local id, state, elapsed, tres = line:match("^([^|]+)|([^|]*)|(%d*)|?([^|]*)")
    if id then
      local j = by_id[id]
      if not j then
        j = {id = id, elapsed = 0, gpus = 0, cpus = 0, gpu_seconds = 0, cpu_seconds = 0}
        by_id[id] = j
        jobs[#jobs + 1] = j
      end
      local secs = tonumber(elapsed) or 0
      local gpus = tonumber((("," .. tres):match(",gres/gpu=(%d+)"))) or 0
      local cpus = tonumber((("," .. tres):match(",cpu=(%d+)"))) or 0
      j.state = state:match("^(%u[%u_]*)") or state
      j.elapsed = j.elapsed + secs
      j.gpus, j.cpus = math.max(j.gpus, gpus), math.max(j.cpus, cpus)
      j.gpu_seconds, j.cpu_seconds = j.gpu_seconds + secs * gpus, j.cpu_seconds + secs * cpus
      -- a job still queued or running (or a pending array range, 123_[2-5]) may change
      j.final = not (PENDING[j.state] == true or RUNNING[j.state] == true or id:find("[", 1, true) ~= nil)
    end
  end
  return jobs
end

-- The profile's price of a GPU-hour and its currency (nil, nil: not priced).
function slurm.price(p)
  local s, money = p and p.slurm or {}, p and p.billing and p.billing.money
  return s.price_per_gpu_hour, s.price_per_gpu_hour and money and money.currency or nil
end

-- slurm.accounting(inst, {ids = {"123", "124_0", ...}, meta = run meta dir}, profile) ->
-- {ids = {...}, jobs = parse_sacct(...), price_per_gpu_hour =, currency =}: one round
-- trip. ids: job ids, or an array's job id (all its tasks); meta: a run's .gpurent dir
-- (every attempt's aN/jobid). Raises when sacct fails (no accounting storage).
function slurm.accounting(inst, o, p)
  o = o or {}
  local ids = {}
  for _, id in ipairs(o.ids or {}) do
    id = tostring(id)
    if not id:match("^%d+$") and not id:match("^%d+_%d+$") then
      errors.usage("slurm.accounting: job id " .. string.format("%q", id) .. " is not a Slurm job id (123 or 123_4)", 0)
    end
    ids[#ids + 1] = id
  end
  local res = inst:sh(remote.script("slurm_usage", {META = o.meta or "", JOBS = remote.lines(ids, "job ids")}),
    {timeout = 60, idempotent = true})
  local out = res.stdout or ""
  local failure = out:match("gr_error ([^\n]*)")
  if res.code ~= 0 or failure then
    error(string.format("sacct on %s: %s", tostring(inst.host or inst.name or "the login node"),
      failure or ("exit " .. tostring(res.code) .. ": " .. (res.stderr or ""))), 0)
  end
  local acct = slurm.read_accounting(out)
  acct.price_per_gpu_hour, acct.currency = slurm.price(p)
  return acct
end

-- slurm_usage.sh's output -> {ids = {...}, jobs = parse_sacct(...)}, each job's final
-- false while its array's figures may still change
function slurm.read_accounting(out)
  local got, lines = {}, {}
  for id in (out:match("gr_ids ([^\n]*)") or ""):gmatch("[^,%s-]+") do got[#got + 1] = id end
  for line in out:gmatch("gr_acct ([^\n]*)") do lines[#lines + 1] = line end
  local jobs = slurm.parse_sacct(lines)
  -- an array's own id on a row of its own: slurmdbd has not split the array into its
  -- tasks yet (123_1, 123_2, ...), so the figures are not the last word
  local arrays = {}
  for id in (out:match("gr_arrays ([^\n]*)") or ""):gmatch("[^,%s-]+") do arrays[id] = true end
  for _, j in ipairs(jobs) do if arrays[j.id] then j.final = false end end
  -- nor while it lists fewer of an array's tasks than were submitted: slurmdbd can hold
  -- back the rows of tasks that ended before the last one (seen: only 5_3 of 1-3)
  local expect, seen = {}, {}
  for id, n in out:gmatch("gr_expect (%d+) (%d+)") do expect[id] = (expect[id] or 0) + tonumber(n) end
  for _, j in ipairs(jobs) do
    local a = j.id:match("^(%d+)_%d+$")
    if a then seen[a] = (seen[a] or 0) + 1 end
  end
  for _, j in ipairs(jobs) do
    local a = j.id:match("^(%d+)_") or j.id
    if expect[a] and (seen[a] or 0) < expect[a] then j.final = false end
  end
  return {ids = got, jobs = jobs}
end

-- The platform hook gpurent.billing.usage reads: every job of a run's attempts.
function slurm.usage(inst, r)
  return slurm.accounting(inst, {meta = r.paths.meta}, r.profile)
end

-- ---- home: the profile's ~ paths on this cluster ------------------------------------
-- Slurm expands no ~ (in --output, --chdir, nor in the quoted values of the wrapper),
-- so once the login node answers, the run's profile has its ~ paths made absolute with
-- the login node's $HOME (shared with the compute nodes), one round trip, and the
-- run's paths are derived again. A path an overlay gives absolute is left as it is.

local function home_path(path, home)
  if path == "~" then return home end
  if type(path) == "string" and path:sub(1, 2) == "~/" then return (home == "/" and "" or home) .. path:sub(2) end
  return path
end

local function tilde_paths(p)
  local found = {}
  for name, t in pairs(p.tiers or {}) do
    if type(t) == "table" and home_path(t.path, "/h") ~= t.path then found[#found + 1] = {t, "path", "tiers." .. name} end
  end
  for k, v in pairs(p.checkpoints or {}) do
    if home_path(v, "/h") ~= v then found[#found + 1] = {p.checkpoints, k, "checkpoints." .. k} end
  end
  return found
end

-- The hook gpurent.lifecycle.run's Run:connect calls once the session is open.
function slurm.connected(inst, r)
  local found = tilde_paths(r.profile)
  if #found == 0 then return end
  local res = inst:sh('printf "gr_home %s\\n" "$HOME"', {timeout = 30, idempotent = true})
  local home = (res.stdout or ""):match("gr_home (/[^\n]*)")
  if not home then
    error(string.format("%s: cannot read the login node's $HOME for the profile's ~ paths (exit %s): %s%s; give " ..
      "absolute paths in a site overlay (extends: slurm)", tostring(r.host), tostring(res.code), res.stdout or "",
      res.stderr or ""), 0)
  end
  home = home:gsub("/+$", "")
  if home == "" then home = "/" end
  for _, f in ipairs(found) do f[1][f[2]] = home_path(f[1][f[2]], home) end
  r.paths = require("gpurent.lifecycle.run").paths(r.profile, r.project, r.id)
  r:say("connect", "~ is %s on %s (the login node's $HOME): run root %s", home, r.host, r.paths.root)
end

return slurm

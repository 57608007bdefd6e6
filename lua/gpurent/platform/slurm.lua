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
--   slurm.job_state(inst, r) -> {id=, state=, reason=, active=, pending=, restarts=, resume=} | nil (no job)
--     restarts/resume: the job was requeued that many times and resumes from that checkpoint
--   slurm.stop{inst=, run= r | job= ID, host=} -> {decision=, job=, status="cancelled"}
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
  local st = {id = id, state = state, reason = reason ~= "" and reason ~= "None" and reason or nil,
          pending = PENDING[state] == true, active = PENDING[state] == true or RUNNING[state] == true}
  slurm.parse_requeue(st, res.stdout)
  st.note = slurm.requeue_text(st) or slurm.stuck_text(st)   -- the watch line shows it beside the state
  return st
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
  if not tostring(job or ""):match("^%d+$") then errors.usage("slurm.stop: a job id (digits) or a run is required", 0) end
  -- the same gate as a meter stop: approval for the host, asked in C; refusal sends nothing
  local decision = gate.check{action = "cancel_job", instance = host, names = {tostring(job)}, dry_run = o.dry_run,
    run_id = o.run and o.run.id, profile_name = "slurm", interactive = o.interactive, out = o.out}
  if o.dry_run then return {decision = decision, job = job, status = "dry_run"} end
  local res = inst:sh("scancel " .. tostring(job), {timeout = 60})
  if res.code ~= 0 then
    error(string.format("scancel %s on %s exited %s: %s", tostring(job), host, tostring(res.code), res.stderr or ""), 0)
  end
  return {decision = decision, job = job, status = "cancelled"}
end

return slurm

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
--   slurm.job_state(inst, r) -> {id=, state=, reason=, active=, pending=} | nil (no job)
--   slurm.stop{inst=, run= r | job= ID, host=} -> {decision=, job=, status="cancelled"}
--   slurm.accounting(inst, {ids=, meta=}, profile) -> {ids=, jobs={{id, state, elapsed, gpus,
--       cpus, gpu_seconds, cpu_seconds, final}...}, price_per_gpu_hour=, currency=}   (sacct)
--   slurm.usage(inst, r) -> the same for every job of a run's attempts (gpurent.billing.usage)
--   slurm.job_info(inst, job) -> {id=, state=, name=, reason=, active=, pending=} | nil
--   slurm.connected(inst, r)   the profile's ~ paths made absolute with the login node's $HOME
--   (and the interface every platform has: gpurent.platform's header)
local errors = require "gpurent.util.errors"
local hosts = require "gpurent.hosts"
local remote = require "gpurent.remote"

local slurm = {name = "slurm", title = "Slurm", gotchas = nil, verbs = {cancel_job = {gated = true}}}

slurm.login_example = "ssh user@login.example.org"

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
  local res = inst:sh(remote.script("slurm_submit", {META = r.paths.meta, SCRIPT = o.script, LOG = r.paths.log,
    OPTIONS = remote.lines(opts, "slurm options"), SIGNAL = sig}), {timeout = 60})
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
  return {id = id, state = state, reason = reason ~= "" and reason ~= "None" and reason or nil,
          pending = PENDING[state] == true, active = PENDING[state] == true or RUNNING[state] == true}
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
    run_id = o.run and o.run.id, profile_name = o.profile_name or "slurm", interactive = o.interactive, out = o.out}
  if o.dry_run then return {decision = decision, job = job, status = "dry_run"} end
  local res = inst:sh("scancel " .. tostring(job), {timeout = 60})
  if res.code ~= 0 then
    error(string.format("scancel %s on %s exited %s: %s", tostring(job), host, tostring(res.code), res.stderr or ""), 0)
  end
  return {decision = decision, job = job, status = "cancelled"}
end

-- ---- one job by its id (gpurent billing cancel) -------------------------------------

-- slurm.job_info(inst, job) -> {id, state, name, reason, pending, active} | nil (unknown job)
function slurm.job_info(inst, job)
  job = tostring(job)
  if not job:match("^%d+$") then errors.usage("a Slurm job id is digits, not " .. string.format("%q", job), 0) end
  local res = inst:sh(remote.script("slurm_job_info", {JOB = job}), {timeout = 30, idempotent = true})
  local id, state, name, reason = (res.stdout or ""):match("gr_job (%d+) (%S+) ?([^|\n]*)|?([^\n]*)")
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
  local got, lines = {}, {}
  for id in (out:match("gr_ids ([^\n]*)") or ""):gmatch("[^,%s-]+") do got[#got + 1] = id end
  for line in out:gmatch("gr_acct ([^\n]*)") do lines[#lines + 1] = line end
  local price, currency = slurm.price(p)
  return {ids = got, jobs = slurm.parse_sacct(lines), price_per_gpu_hour = price, currency = currency}
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

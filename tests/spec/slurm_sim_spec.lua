-- slurm_sim_spec.lua: the Slurm testbed (tests/sim/slurm-sim) is a real cluster
-- that the Slurm platform's end-to-end tests can rely on.
--
-- Brings one cluster up in a private GPURENT_SIM_DIR and drives it the way a
-- user (and gpurent) will: over real ssh to the login node with the ssh_config
-- block slurm-sim wrote. It checks a batch job runs and is accounted in sacct
-- with its GPU, a GPU is visible inside an allocation only, a drained node and
-- a down partition leave a job PENDING with its reason, USR1 reaches the batch
-- shell before the time limit kills the job (TIMEOUT), a --requeue job restarts,
-- a 3-task array runs, scancel ends a job's processes, and `down` leaves no
-- process, port, mount or file behind. Needs root and the Debian packages of
-- `make deps`: it fails (not skips) without them.
local slurmbed = require "slurmbed"

local sh = slurmbed.sh
local q = T.q

-- The script of the time-limit job: traps USR1 (the checkpoint signal) and
-- records each start with Slurm's restart count, then sleeps until killed.
local SIGJOB = [[#!/bin/bash
trap 'echo "USR1 restart=${SLURM_RESTART_COUNT:-0}"' USR1
echo "start restart=${SLURM_RESTART_COUNT:-0}"
while true; do sleep 1 & wait $!; done
]]

-- The host paths Slurm and munge would use by default: the testbed must not touch them.
local HOST_PATHS = "/etc/slurm /etc/munge /run/munge /run/slurm /var/spool/slurmctld "
  .. "/var/spool/slurmd /var/lib/slurm /var/log/slurm /var/log/munge /var/lib/munge /run/mysqld"

local function host_paths_snapshot()
  return sh("find " .. HOST_PATHS .. " -printf '%p %s %T@\\n' 2>/dev/null | sort")
end

-- Is the recorded {pid, start} (from /proc) still that process?
local function starttime(pid)
  local stat = T.read("/proc/" .. pid .. "/stat")
  if not stat then return nil end
  local fields = {}
  for f in stat:match("%) (.*)$"):gmatch("%S+") do fields[#fields + 1] = f end
  if fields[1] == "Z" or fields[1] == "X" then return nil end
  return fields[20]
end

describe("slurm-sim (the Slurm testbed)", function()
  local c, up_out, etc_before
  local timelimit_job

  setup(function()
    assert(slurmbed.available())
    etc_before = host_paths_snapshot()
    c = slurmbed.new()
    up_out = c:up()
    -- The time-limit job starts first: Slurm's 30 s limit checks pace the spec, and
    -- the other tests run while it waits for its USR1 and then its TIMEOUT.
    T.write(c.dir .. "/slurm/home/sigjob.sh", SIGJOB)
    timelimit_job = c:sbatch("--time=1 --signal=B:USR1@50 --open-mode=append -o sigjob.out sigjob.sh")
  end)

  teardown(function() if c then c:teardown() end end)

  it("prints an ssh_config block and a known_hosts line the OpenSSH client uses as is", function()
    assert.matches("^Host cluster\n  HostName 127%.0%.2%.1\n  Port %d+\n  User root\n", up_out)
    local port = up_out:match("Port (%d+)")
    assert.matches("%[127%.0%.2%.1%]:" .. port .. " ssh%-ed25519 ", T.read(c.dir .. "/known_hosts"))
    local out, rc = c:ssh("hostname; sinfo -h -o '%P %a %T %D %G'")
    assert.equals(0, rc, out)
    assert.equals("simcluster-login\ngpu* up idle 1 gpu:2\n", out)
  end)

  it("lets gpurent's own ssh (libssh2) reach the login node through the same ssh_config", function()
    local inst = gpurent.connect("cluster", {config = c.ssh_config})
    local res = inst:sh("sinfo -h -o '%P %G'; command -v sbatch squeue sacct scancel", {timeout = 30})
    inst:close()
    assert.equals(0, res.code, res.stderr)
    assert.equals("gpu* gpu:2\n/usr/bin/sbatch\n/usr/bin/squeue\n/usr/bin/sacct\n/usr/bin/scancel\n", res.stdout)
  end)

  it("restarts a --requeue job after a requeue, SLURM_RESTART_COUNT counting, sacct keeping both runs", function()
    local id = c:sbatch("--requeue --open-mode=append -o requeue.out sigjob.sh")
    assert.is_truthy(c.wait_for(function() return c:ssh("cat requeue.out 2>/dev/null"):match("start restart=0") end, 30))
    local out, rc = c:ssh("scontrol requeue " .. id)   -- what a pre-emption does to a --requeue job
    assert.equals(0, rc, out)
    local got = c.wait_for(function() return c:ssh("cat requeue.out"):match("start restart=1") end, 40)
    assert.is_truthy(got, "the requeued job did not start again: " .. c:ssh("cat requeue.out; squeue"))
    out, rc = c:ssh("scancel " .. id)
    assert.equals(0, rc, out)
    local runs = c.wait_for(function()
      local states = c:ssh("sacct -n -P -X -D -j " .. id .. " -o State")
      return states:match("REQUEUED") and states:match("CANCELLED") and states
    end, 20)
    assert.is_truthy(runs, c:ssh("sacct -X -D -j " .. id))
  end)

  it("runs a batch job on the compute node and accounts its GPU in sacct", function()
    local id = c:sbatch("--gres=gpu:1 -o job-%j.out --wrap 'echo on $(hostname) gpus=$SLURM_JOB_GPUS; sleep 1'")
    assert.equals("COMPLETED", c:wait_state(id, {COMPLETED = true, FAILED = true}, 30))
    assert.equals("on node1 gpus=0\n", c:ssh("cat job-" .. id .. ".out"))
    -- GPU-hours come from AllocTRES (gres/gpu=N) x ElapsedRaw (s); slurmdbd gets the
    -- record shortly after the job ends.
    local row = c.wait_for(function()
      local out = c:ssh("sacct -n -P -X -j " .. id .. " -o State,AllocTRES,ElapsedRaw")
      return out:match("^COMPLETED|[^\n]*gres/gpu=1[^\n]*|%d+\n") and out
    end, 20)
    assert.is_truthy(row, "sacct has no COMPLETED record with gres/gpu=1 for job " .. id)
    assert.is_true(tonumber(row:match("|(%d+)\n$")) >= 1)
  end)

  it("shows GPUs inside an allocation only, one per requested GPU", function()
    local out, rc = c:ssh("nvidia-smi -L")
    assert.equals(127, rc, "the login node has no nvidia-smi: " .. out)
    out, rc = c:ssh("srun --gres=gpu:1 nvidia-smi -L")
    assert.equals(0, rc, out)
    assert.matches("^GPU 0: NVIDIA A100%-SXM4%-80GB %(UUID: GPU%-[%x-]+%)\n$", out)
    out = c:ssh("srun --gres=gpu:2 nvidia-smi --query-gpu=index --format=csv,noheader")
    assert.equals("0\n1\n", out)
    out, rc = c:ssh("srun nvidia-smi -L 2>/dev/null")
    assert.equals("No devices were found\n", out)
    assert.equals(6, rc)
  end)

  it("delivers USR1 (--signal=B:USR1@N) to the batch shell before the time limit", function()
    assert.is_truthy(timelimit_job, "the time-limit job was not submitted")
    local got = c.wait_for(function()
      return c:ssh("cat sigjob.out 2>/dev/null"):match("start restart=0\nUSR1 restart=0\n")
    end, 30)
    assert.is_truthy(got, "no USR1 before the time limit: " .. c:ssh("cat sigjob.out; squeue"))
    -- Slurm's limits are whole minutes: bring this job's end to now. slurmctld checks
    -- limits every 30 s from its start (USR1 came at the first check), so the spec's
    -- other tests run meanwhile and the TIMEOUT is checked near the end.
    local out, rc = c:ssh("scontrol update JobId=" .. timelimit_job .. " EndTime=now")
    assert.equals(0, rc, out)
  end)

  it("keeps a job PENDING with its reason while the node is drained or the partition down", function()
    local out, rc = c:sim("drain --reason maintenance")
    assert.equals(0, rc, out)
    local id = c:sbatch("--wrap true")
    sh("sleep 3")
    assert.equals("PENDING Nodes required for job are DOWN, DRAINED or reserved for jobs in higher priority partitions\n",
      c:ssh("squeue -h -j " .. id .. " -o '%T %r'"))
    assert.matches("drain", c:ssh("sinfo -h -o %T"))
    assert.equals(0, select(2, c:sim("partition down")))
    assert.equals(0, select(2, c:sim("resume")))
    sh("sleep 3")
    assert.equals("PENDING PartitionDown\n", c:ssh("squeue -h -j " .. id .. " -o '%T %r'"))
    assert.equals(0, select(2, c:sim("partition up")))
    assert.equals("COMPLETED", c:wait_state(id, {COMPLETED = true, FAILED = true}, 30))
  end)

  it("runs a job array of 3 tasks, each with its index", function()
    local id = c:sbatch("--array=0-2 -o arr-%A_%a.out --wrap 'echo task $SLURM_ARRAY_TASK_ID'")
    local done = c.wait_for(function()
      local out = c:ssh("sacct -n -P -X -j " .. id .. " -o JobID,State")
      local n = 0
      for _ in out:gmatch(id .. "_%d|COMPLETED") do n = n + 1 end
      return n == 3
    end, 40)
    assert.is_truthy(done, c:ssh("sacct -X -j " .. id .. "; squeue"))
    assert.equals("task 0\ntask 1\ntask 2\n", c:ssh("cat arr-" .. id .. "_0.out arr-" .. id .. "_1.out arr-" .. id .. "_2.out"))
  end)

  it("scancel ends a running job and its processes", function()
    local id = c:sbatch("-o cancel.out --wrap 'echo $$ > cancel.pid; sleep 300'")
    assert.equals("RUNNING", c:wait_state(id, {RUNNING = true}, 30))
    local pid = c.wait_for(function() return c:ssh("cat cancel.pid 2>/dev/null"):match("^(%d+)") end, 10)
    assert.is_truthy(pid)
    local out, rc = c:sim("exec --node kill -0 " .. pid)
    assert.equals(0, rc, "the job's shell runs on the node: " .. out)
    out, rc = c:ssh("scancel " .. id)
    assert.equals(0, rc, out)
    assert.equals("CANCELLED", c:wait_state(id, {CANCELLED = true}, 30))
    local gone = c.wait_for(function() return select(2, c:sim("exec --node kill -0 " .. pid)) ~= 0 end, 15)
    assert.is_truthy(gone, "job shell " .. pid .. " survived scancel")
  end)

  it("ended the time-limited job as TIMEOUT after its USR1", function()
    assert.is_truthy(timelimit_job, "the time-limit job was not submitted")
    assert.equals("TIMEOUT", c:wait_state(timelimit_job, {TIMEOUT = true, COMPLETED = true, FAILED = true}, 75))
    assert.matches("USR1 restart=0\n.*CANCELLED AT %S+ DUE TO TIME LIMIT", c:ssh("cat sigjob.out"))
  end)

  it("down leaves no process, port, mount or file behind, and the host's Slurm paths untouched", function()
    local st = c:status()
    assert.is_true(st.running)
    local procs = {}
    for _, pid in ipairs(st.pids) do procs[pid] = starttime(pid) end
    assert.is_true(#st.pids >= 8, "expected launchers, inits, munged, mariadbd, slurmdbd, slurmctld, slurmd, sshd")
    local out, rc = c:sim("down")
    assert.equals(0, rc, out)
    for pid, start in pairs(procs) do
      assert.is_not.equals(start, starttime(pid), "process " .. pid .. " survived down")
    end
    for _, addr in ipairs(st.ports) do
      local ip, port = addr:match("^(.+):(%d+)$")
      local _, open = sh("timeout 2 bash -c " .. q("exec 3<>/dev/tcp/" .. ip .. "/" .. port))
      assert.is_not.equals(0, open, addr .. " still listens")
    end
    assert.is_nil(T.read("/proc/self/mountinfo"):find(c.dir, 1, true))
    assert.is_nil(io.open(c.dir .. "/slurm"), "the cluster's files remain")
    assert.is_nil(T.read(c.dir .. "/ssh_config"):find("Host cluster", 1, true))
    assert.is_nil(T.read(c.dir .. "/known_hosts"):find("127.0.2.1", 1, true))
    assert.equals(etc_before, host_paths_snapshot())
    T.rmtree(c.dir)
  end)
end)

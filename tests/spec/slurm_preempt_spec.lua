-- slurm_preempt_spec.lua: the scheduler's own ends of a job, for real on the Slurm testbed
-- (tests/sim/slurm-sim up --preempt urgent: a second partition on the node whose jobs
-- pre-empt the default one's, PreemptType=preempt/partition_prio, PreemptMode=REQUEUE).
-- Pre-emption: a job submitted to `urgent` that needs the whole node. Node failure:
-- `scontrol update nodename=node1 state=down`, as an administrator or slurmctld does
-- when a node stops answering. What Slurm 22.05 reports (platform/slurm.lua):
--   - a --requeue job (the profile's slurm.requeue) goes back to PENDING (BeginTime), the
--     same job id, and runs again: the watch waits for it, the restart resumes from its
--     checkpoint, and the run finishes as one attempt (never a relaunched copy);
--   - a --no-requeue job ends PREEMPTED / NODE_FAIL: the run's end, named with that
--     state (triage class preempted / node_fail, remedy stop), never a relaunch; a
--     sweep's cell the same (its task's state in the cell's end, no resubmission).
-- One cluster for the file. Needs root and `make deps`: fails (not skips) without them.
local slurmbed = require "slurmbed"

local sh = slurmbed.sh
local q = T.q

describe("Slurm pre-emption and node failure", function()
  local c, code_dir
  setup(function()
    assert(slurmbed.available())
    c = slurmbed.new()
    c:up("--preempt urgent")
    c:workspace{site = slurmbed.SITE, norequeue = slurmbed.SITE .. "slurm:\n  requeue: false\n"}
    code_dir = c.dir .. "/code"
    sh("cp -r " .. q(T.root .. "/examples/tiny-train/.") .. " " .. q(code_dir))
    T.write(code_dir .. "/configs/long.json", '{"steps": 400, "step_seconds": 0.25}\n')
    T.write(code_dir .. "/configs/mid.json", '{"steps": 40, "step_seconds": 0.25}\n')
  end)
  teardown(function() if c then c:teardown() end end)

  -- gpurent in the background (its output and then "rc=N" in LOG)
  local function background(args, log)
    local runner = io.popen("( cd " .. q(T.root) .. " && " .. c:env() .. " timeout -k 5 200 " .. q(T.bin) .. " " ..
      args .. " >" .. q(log) .. " 2>&1; echo rc=$? >>" .. q(log) .. " ) &")
    runner:close()
  end
  local function train_run(project, profile, steps, log)
    background(table.concat({"run recipes/slurm_train.lua host=cluster project=" .. project, "profile=" .. profile,
      "code=" .. q(code_dir), q("train={python} train.py --out {out} --steps " .. steps .. " --step-seconds 0.25"),
      q("box_load={python} load_check.py {}"), "interval=1", "stall=60", "local_dir=" .. q(c.pulled), "gotchas=no"},
      " "), log)
    local job = c.wait_for(function() return (T.read(log) or ""):match("under Slurm job (%d+) %(sbatch ") end, 90)
    assert.truthy(job, T.read(log))
    return job, T.read(log):match("%[run%] run (%S+):")
  end
  local function rc_of(log, seconds) return c.wait_for(function() return (T.read(log) or ""):match("rc=(%d+)") end, seconds) end
  -- the trainer's log has reached step N (of its current run: after the Kth resume)
  local function at_step(active, n, resumes)
    return c.wait_for(function()
      local tlog = c:ssh("cat " .. active .. "/train.log 2>/dev/null")
      local _, k = tlog:gsub("resume checkpoint from GPURENT_RESUME", "")
      local from = 0
      for s in tlog:gmatch("resumed from step (%d+)") do from = tonumber(s) end
      local last = 0
      for s in tlog:gmatch("\nstep (%d+)/") do last = tonumber(s) end
      return k >= (resumes or 0) and last >= math.max(n, from + 4) and last
    end, 90)
  end
  -- a job on the urgent partition that needs the whole node: the gpu partition's jobs there
  -- are pre-empted (requeued, or cancelled when --no-requeue)
  local function preempt()
    return c:sbatch("--partition=urgent --cpus-per-task=8 --output=/dev/null --wrap 'sleep 2'")
  end
  -- the node fails; slurmctld kills its jobs; then it is back (ReturnToService=2 may have
  -- returned it already: resume is refused then, which is fine)
  local function fail_node(job)
    local out, rc = c:ssh("scontrol update nodename=node1 state=down reason=gpurent-test")
    assert.are.equal(0, rc, out)
    assert.truthy(c.wait_for(function() return c:job_state(job) ~= "RUNNING" end, 30))
    c:ssh("scontrol update nodename=node1 state=resume")
  end
  -- every allocation of a job, as sacct records them (-D: a requeued job's earlier ones
  -- too), once slurmdbd has them all (it lags slurmctld by a moment)
  local function allocations(job, want)
    local function read() return (c:ssh("sacct -n -D -X -P -j " .. job .. " -o State | tr '\\n' ' '")) end
    return c.wait_for(function() local a = read(); return a == want and a end, 30) or read()
  end
  -- a test that fails leaves no job behind for the next one
  local function no_leftovers() finally(function() c:ssh("scancel --partition=gpu") end) end

  it("waits for a --requeue job through a pre-emption and a node failure, and it resumes from its checkpoint",
    function()
    no_leftovers()
    local log = c.dir .. "/requeued.out"
    local job, run_id = train_run("rq", "site", 60, log)
    local active = "scratch/rq/active/" .. run_id
    assert.truthy(at_step(active, 8), c:ssh("cat " .. active .. "/train.log"))
    preempt()
    assert.truthy(at_step(active, 0, 1), "no restart after the pre-emption: " .. c:ssh("cat " .. active .. "/train.log"))
    fail_node(job)
    assert.are.equal("0", rc_of(log, 150), T.read(log))
    local out = T.read(log)
    local ckpt = "/root/" .. active .. "/out/latest.pth"
    -- Slurm's own record: pre-empted, its node failed, then it completed (one job id)
    assert.are.equal("PREEMPTED NODE_FAIL COMPLETED ", allocations(job, "PREEMPTED NODE_FAIL COMPLETED "))
    -- the watch waited through both (PENDING in between), named each restart, and finished
    assert.truthy(out:find("job " .. job .. " PENDING", 1, true), out)
    assert.truthy(out:find("requeued (attempt 2), resuming from " .. ckpt, 1, true), out)
    assert.truthy(out:find("requeued (attempt 3), resuming from " .. ckpt, 1, true), out)
    assert.truthy(out:find("FINISHED: exit 0", 1, true), out)
    for _, bad in ipairs{"STALLED", "DEAD", "relaunch", "attempt 2 RUNNING", "attempt 2 PENDING"} do
      assert.falsy(out:find(bad, 1, true), bad .. " in:\n" .. out)
    end
    assert.are.equal("1\n", c:ssh("cat " .. active .. "/.gpurent/current"))
    assert.are.equal(job .. "\n", c:ssh("cat " .. active .. "/.gpurent/a1/jobid"))
    -- the trainer resumed twice from its checkpoint, never from scratch, and finished
    local tlog = c:ssh("cat " .. active .. "/train.log")
    local froms = {}
    for s in tlog:gmatch("resume checkpoint from GPURENT_RESUME: [^\n]+\nresumed from step (%d+)\n") do
      froms[#froms + 1] = tonumber(s)
    end
    assert.are.equal(2, #froms, tlog)
    assert.truthy(froms[1] >= 6 and froms[2] > froms[1], tlog)
    assert.truthy(tlog:find("training finished: 60 steps", 1, true), tlog)
  end)

  it("ends a --no-requeue run Slurm pre-empted as PREEMPTED, named, and relaunches nothing", function()
    no_leftovers()
    local log = c.dir .. "/preempted.out"
    local job, run_id = train_run("pre", "norequeue", 400, log)
    local active = "scratch/pre/active/" .. run_id
    assert.truthy(at_step(active, 4), c:ssh("cat " .. active .. "/train.log"))
    preempt()
    local rc = rc_of(log, 90)
    local out = T.read(log)
    assert.truthy(rc and rc ~= "0", out)
    assert.are.equal("PREEMPTED ", allocations(job, "PREEMPTED "))
    assert.truthy(out:find("DEAD: Slurm job " .. job .. " PREEMPTED: pre-empted by a higher-priority job and not " ..
      "requeued (submitted --no-requeue: the profile's slurm.requeue is off); not relaunched", 1, true), out)
    assert.truthy(out:find("class preempted -> remedy stop", 1, true), out)
    for _, bad in ipairs{"relaunch ", "attempt 2", "FINISHED"} do
      assert.falsy(out:find(bad, 1, true), bad .. " in:\n" .. out)
    end
    assert.are.equal("1\n", c:ssh("cat " .. active .. "/.gpurent/current"))
    -- nothing of the run is queued or running any more (no copy was submitted)
    assert.are.equal("", c:ssh("squeue -h --partition=gpu -o %i"))
  end)

  local function sweep_run(project, profile, queue, log)
    local queue_file = c.dir .. "/" .. project .. ".txt"
    T.write(queue_file, queue)
    background(table.concat({"run recipes/slurm_sweep.lua host=cluster profile=" .. profile, "project=" .. project,
      "code=" .. q(code_dir), "queue=" .. q(queue_file),
      q("train={python} train.py --config {config} --task {task} --epochs {epochs} --out {out}"),
      q("box_load={python} load_check.py {}"), "interval=1 stall=60"}, " "), log)
    local job = c.wait_for(function() return (T.read(log) or ""):match("as Slurm array job (%d+)") end, 90)
    assert.truthy(job, T.read(log))
    return job, T.read(log):match("%[sweep%] (%S+): 2 cells in")
  end

  it("waits for a --requeue sweep's pre-empted tasks, which resume, and counts no failed cell", function()
    no_leftovers()
    local log = c.dir .. "/sweep-rq.out"
    local job, sweep = sweep_run("swrq", "site", "configs/mid.json fit\nconfigs/mid.json eval\n", log)
    for n = 1, 2 do assert.truthy(at_step("scratch/swrq/active/" .. sweep .. "-c0" .. n, 6), T.read(log)) end
    preempt()
    assert.are.equal("0", rc_of(log, 120), T.read(log))
    local out = T.read(log)
    assert.truthy(out:find("QUEUE DONE " .. sweep .. ": 2 cell(s) run, 2 ok, 0 failed", 1, true), out)
    for n = 1, 2 do
      local id = sweep .. "-c0" .. n
      assert.are.equal("PREEMPTED COMPLETED ", allocations(job .. "_" .. n, "PREEMPTED COMPLETED "))
      local ckpt = "/root/scratch/swrq/active/" .. id .. "/out/latest.pth"
      assert.truthy(out:find("run " .. id .. " requeued (attempt 2), resuming from " .. ckpt, 1, true), out)
      assert.truthy(out:find("[sweep] cell " .. n .. " ok exit=0 stage=done, requeued (attempt 2), resumed from " .. ckpt,
        1, true), out)
      local tlog = c:ssh("cat scratch/swrq/active/" .. id .. "/train.log")
      assert.truthy(tlog:find("resume checkpoint from GPURENT_RESUME: " .. ckpt, 1, true), tlog)
      assert.truthy(tlog:find("training finished: 40 steps", 1, true), tlog)
    end
    for _, bad in ipairs{"FAILED", "vanished", "STALLED"} do assert.falsy(out:find(bad, 1, true), bad .. " in:\n" .. out) end
    assert.are.equal("1\n", c:ssh("cat scratch/swrq/active/" .. sweep .. "-cluster/.gpurent/array_current"))
  end)

  it("ends a --no-requeue sweep cell whose node failed as NODE_FAIL, named, and resubmits nothing", function()
    no_leftovers()
    local log = c.dir .. "/sweep-nf.out"
    local job, sweep = sweep_run("nf", "norequeue", "configs/ok.json fit 1\nconfigs/long.json fit\n", log)
    -- cell 1 done, cell 2 training: then the node fails
    assert.truthy(c.wait_for(function() return (T.read(log) or ""):find("[cell] cell 1: run " .. sweep .. "-c01 DONE",
      1, true) end, 90), T.read(log))
    assert.truthy(at_step("scratch/nf/active/" .. sweep .. "-c02", 4))
    fail_node(job .. "_2")
    local rc = rc_of(log, 90)
    local out = T.read(log)
    assert.truthy(rc and rc ~= "0", out)
    assert.are.equal("NODE_FAIL ", allocations(job .. "_2", "NODE_FAIL "))
    assert.truthy(out:find("[sweep] cell 2 FAILED exit=", 1, true), out)
    assert.truthy(out:find("(Slurm array task " .. job .. "_2 NODE_FAIL: its node failed and not requeued (submitted " ..
      "--no-requeue: the profile's slurm.requeue is off); not resubmitted: resubmit=" .. sweep .. "-cluster reruns the " ..
      "failed cells", 1, true), out)
    assert.falsy(out:find("cell 2 FAILED exit=0 ", 1, true), "a killed cell reads exit 0:\n" .. out)
    assert.truthy(out:find("[sweep] cell 1 ok exit=0 stage=done", 1, true), out)
    assert.truthy(out:find("QUEUE DONE " .. sweep .. ": 2 cell(s) run, 1 ok, 1 failed", 1, true), out)
    -- one submission: nothing resubmitted by itself
    assert.are.equal("1\n", c:ssh("cat scratch/nf/active/" .. sweep .. "-cluster/.gpurent/array_current"))
    assert.are.equal("", c:ssh("squeue -h -j " .. job .. " -o %i"))
  end)
end)

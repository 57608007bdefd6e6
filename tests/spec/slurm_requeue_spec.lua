-- slurm_requeue_spec.lua: a Slurm job that outlives its time limit, end to end on the
-- testbed (tests/sim/slurm-sim). The site overlay gives the job a 1-minute limit and
-- the signal 50 s before it; the tiny trainer needs longer than one allocation gives
-- it. Slurm sends SIGUSR1, the trainer writes its checkpoint and exits, the batch shell
-- requeues its own job (Slurm never requeues a TIMEOUT), and the restarted job - the
-- same job id, the same gpurent attempt - resumes from $GPURENT_RESUME and finishes;
-- the watch line says "requeued (attempt N), resuming from <checkpoint>", never a
-- relaunch or a stall, and the run is sealed, pulled and verified. A job the scheduler
-- requeues itself (scontrol requeue, as a pre-emption does) resumes the same way. Needs root and
-- `make deps`: fails (not skips) without them.
local slurmbed = require "slurmbed"
local cjson = require "cjson"

local sh = slurmbed.sh
local q = T.q

describe("a Slurm job requeued before its time limit", function()
  local c, state, home, pulled
  setup(function()
    assert(slurmbed.available())
    c = slurmbed.new()
    c:up()
    -- shortlimit: slurmctld checks limits every 30 s: the signal comes 10-40 s into each run;
    -- longlimit: a pre-emption stand-in (the scheduler requeues a job: SIGTERM, no warning)
    c:workspace{shortlimit = slurmbed.SITE .. 'slurm:\n  time: "0:01:00"\n  signal_seconds: 50\n',
      longlimit = slurmbed.SITE}
    state, home, pulled = c.state, c.home, c.pulled
  end)
  teardown(function() if c then c:teardown() end end)

  local function env() return c:env() .. " timeout -k 5 300" end
  local function g(args) return c:gpurent(args, 300) end

  it("checkpoints on SIGUSR1, requeues itself, resumes from the checkpoint and finishes to a verified pull", function()
    local steps = 180   -- 45 s of steps: more than the 10-40 s before the first signal
    local code, out, err = g(table.concat({"run recipes/slurm_train.lua host=cluster project=tiny profile=shortlimit",
      "code=examples/tiny-train",
      q("train={python} train.py --out {out} --steps " .. steps .. " --step-seconds 0.25"),
      q("smoke=python3 train.py --smoke --out {tmp}"),
      q("load=python3 " .. T.root .. "/examples/tiny-train/load_check.py {}"),
      q("box_load={python} load_check.py {}"), "interval=1", "stall=60", "local_dir=" .. q(pulled), "gotchas=no"}, " "))
    assert.are.equal(0, code, out .. err)
    local run_id = out:match("%[run%] run (%S+):")
    local job = out:match("under Slurm job (%d+) %(sbatch ")
    assert.truthy(run_id and job, out)
    local active = "scratch/tiny/active/" .. run_id
    local ckpt = "/root/" .. active .. "/out/latest.pth"
    -- the watch line names the requeue and the checkpoint; nothing was relaunched or stalled
    assert.truthy(out:find("job " .. job .. " RUNNING, requeued (attempt 2), resuming from " .. ckpt, 1, true) or
      out:find("job " .. job .. " PENDING (BeginTime), requeued (attempt 2), resuming from " .. ckpt, 1, true),
      "no requeue in the watch lines: " .. out)
    assert.truthy(out:find("FINISHED: exit 0", 1, true), out)
    for _, bad in ipairs{"STALLED", "DEAD", "relaunch", "attempt 2 RUNNING", "attempt 2 PENDING"} do
      assert.falsy(out:find(bad, 1, true), bad .. " in:\n" .. out)
    end
    -- one sbatch, one gpurent attempt: the same job id ran again
    local meta = active .. "/.gpurent"
    assert.are.equal("1\n", c:ssh("cat " .. meta .. "/current"))
    assert.are.equal(job .. "\n", c:ssh("cat " .. meta .. "/a1/jobid"))
    assert.are.equal("COMPLETED", c:wait_state(job, {COMPLETED = true, FAILED = true}, 30))
    assert.are_not.equal(0, select(2, c:ssh("test -e " .. meta .. "/a2")))
    -- the trainer: checkpoint on the signal, told where to resume, resumed from that step
    local log = c:ssh("cat " .. active .. "/train.log")
    local at = tonumber(log:match("SIGUSR1: checkpoint written at step (%d+)"))
    assert.truthy(at and at > 0 and at < steps, log)
    assert.truthy(log:find("[gpurent] SIGUSR1 from Slurm (restart 0): forwarded to the job", 1, true), log)
    assert.truthy(log:find("[gpurent] requeued (attempt 2 of Slurm job " .. job .. "): resuming from " .. ckpt, 1, true), log)
    assert.truthy(log:find("resume checkpoint from GPURENT_RESUME: " .. ckpt .. "\nresumed from step " .. at .. "\n", 1, true), log)
    assert.truthy(log:find("training finished: " .. steps .. " steps", 1, true), log)
    assert.falsy(log:find("starting from scratch", log:find("requeued", 1, true), true), "a restart started over:\n" .. log)
    -- every step exactly once, in order: no step lost or redone across the requeue(s)
    c:assert_steps_once(active .. "/out/train.csv", steps)
    assert.matches("^exit=0 stage=done", c:ssh("cat " .. meta .. "/a1/DONE"))
    assert.matches("^exit=138 stage=train", c:ssh("cat " .. meta .. "/a1/restart-1/FAILED"))
    -- sealed, pulled, verified
    local v = cjson.decode(T.read(pulled .. "/" .. run_id .. "/PULL_VERIFIED.json"))
    assert.are.equal(run_id, v.run_id)
    local metrics = sh("find " .. q(pulled .. "/" .. run_id) .. " -path '*/test/final/metrics.json'"):match("%S+")
    assert.truthy(metrics, sh("find " .. q(pulled)))
    assert.are.equal(steps, cjson.decode(T.read(metrics)).steps)
  end)

  it("resumes a job the scheduler requeued without warning (a pre-emption) from its last periodic checkpoint", function()
    local log = c.dir .. "/preempt.out"
    local runner = io.popen("( cd " .. q(T.root) .. " && " .. env() .. " " .. q(T.bin) .. " " .. table.concat({
      "run recipes/slurm_train.lua host=cluster project=pre profile=longlimit code=examples/tiny-train",
      q("train={python} train.py --out {out} --steps 60 --step-seconds 0.25"),
      q("box_load={python} load_check.py {}"), "interval=1", "stall=60", "local_dir=" .. q(pulled), "gotchas=no"}, " ") ..
      " >" .. q(log) .. " 2>&1; echo rc=$? >>" .. q(log) .. " ) &")
    runner:close()
    local job = c.wait_for(function() return (T.read(log) or ""):match("under Slurm job (%d+) %(sbatch ") end, 90)
    assert.truthy(job, T.read(log))
    local run_id = T.read(log):match("%[run%] run (%S+):")
    local active = "scratch/pre/active/" .. run_id
    assert.truthy(c.wait_for(function() return c:ssh("cat " .. active .. "/train.log 2>/dev/null"):find("step 10/60", 1, true) end, 60))
    local _, rc = c:ssh("scontrol requeue " .. job)
    assert.are.equal(0, rc)
    local done = c.wait_for(function() return (T.read(log) or ""):match("rc=(%d+)") end, 150)
    local out = T.read(log)
    assert.are.equal("0", done, out)
    local ckpt = "/root/" .. active .. "/out/latest.pth"
    assert.truthy(out:find("requeued (attempt 2), resuming from " .. ckpt, 1, true), out)
    for _, bad in ipairs{"STALLED", "DEAD", "relaunch"} do assert.falsy(out:find(bad, 1, true), bad .. " in:\n" .. out) end
    local tlog = c:ssh("cat " .. active .. "/train.log")
    local from = tonumber(tlog:match("resume checkpoint from GPURENT_RESUME: [^\n]+\nresumed from step (%d+)\n"))
    assert.truthy(from and from >= 10, tlog)
    assert.truthy(tlog:find("training finished: 60 steps", 1, true), tlog)
    assert.falsy(tlog:find("SIGUSR1", 1, true), "a pre-emption sends no warning signal here:\n" .. tlog)
    assert.are.equal("1\n", c:ssh("cat " .. active .. "/.gpurent/current"))
  end)
end)

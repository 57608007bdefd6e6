-- slurm_batch_spec.lua: the Slurm platform's detach starter on the testbed
-- (tests/sim/slurm-sim), through gpurent's own SSH: slurm.start_detached submits a
-- run's script as a batch job and records its id; a second start while that job is
-- queued or running is refused (no second copy of a live job); the signal Slurm sends
-- the batch shell before the time limit (--signal=B:USR1@N) reaches the program the
-- wrapper runs; job_state follows the job from RUNNING to CANCELLED. Needs root and
-- `make deps`: fails (not skips) without them.
local slurmbed = require "slurmbed"
local errors = require "gpurent.util.errors"

local q = T.q

-- Stands in for the run wrapper: a shell that records its attempt and runs a "trainer"
-- (python) that takes the checkpoint signal with its own handler and trains on; the
-- shell around it must survive the signal (a killed wrapper would end the job).
local FAKE_WRAPPER = [[#!/bin/bash
echo "wrapper attempt $1 on $(hostname)" >> /root/batchrun/train.log
python3 -c '
import signal, time
def got(*_):
    open("/root/batchrun/train.log", "a").write("trainer got USR1\n")
signal.signal(signal.SIGUSR1, got)
while True:
    time.sleep(1)
'
echo "wrapper: the trainer exited $?" >> /root/batchrun/train.log
]]

describe("the Slurm platform's batch submission", function()
  local c, inst, r, S
  setup(function()
    assert(slurmbed.available())
    c = slurmbed.new()
    c:up()
    slurmbed.sh("mkdir -p " .. q(c.dir .. "/slurm/home/batchrun"))
    T.write(c.dir .. "/slurm/home/batchrun/fake-wrapper.sh", FAKE_WRAPPER)
    inst = gpurent.connect("cluster", {config = c.ssh_config})
    S = require("gpurent.platform").of("slurm")
    local p = require("gpurent.config.profile").load("slurm")
    -- a 1-minute limit, the signal 50 s before it: slurmctld sends it at its first check
    p.slurm.time, p.slurm.signal_seconds = "1", 50
    r = {id = "batchrun", host = "cluster", session = "gr-batchrun", profile = p,
         paths = {root = "/root/batchrun", meta = "/root/batchrun/.gpurent", log = "/root/batchrun/train.log"}}
  end)
  teardown(function()
    if inst then pcall(inst.close, inst) end
    if c and c.dir then c:down() end
  end)

  local job
  it("submits the script as a batch job with the profile's request and records the job id", function()
    local st = S.start_detached(inst, r, {script = "/root/batchrun/fake-wrapper.sh"})
    job = st.job
    assert.are.equal("sbatch", st.mode)
    assert.are.equal(1, st.attempt)
    assert.matches("^%d+$", job)
    assert.are.equal(job .. "\n", c:ssh("cat /root/batchrun/.gpurent/a1/jobid"))
    assert.are.equal("RUNNING", c:wait_state(job, {RUNNING = true}, 30))
    local js = S.job_state(inst, r)
    assert.are.same({id = job, state = "RUNNING", active = true, pending = false, unknown = false}, js)
    assert.truthy(c.wait_for(function()
      return c:ssh("cat /root/batchrun/train.log 2>/dev/null"):find("wrapper attempt 1 on node1", 1, true)
    end, 20))
  end)

  it("refuses a second start while the run's job is queued or running, and submits nothing", function()
    assert.truthy(job, "needs the submitted job")
    local ok, e = pcall(S.start_detached, inst, r, {script = "/root/batchrun/fake-wrapper.sh"})
    assert.is_false(ok)
    assert.is_true(errors.is(e, "refusal"), tostring(e))
    assert.truthy(errors.message(e):find("Slurm job " .. job .. " (attempt 1) is RUNNING", 1, true), errors.message(e))
    assert.are.equal("1\n", c:ssh("cat /root/batchrun/.gpurent/current"))
    assert.are.equal("", c:ssh("squeue -h -o %i | grep -v '^" .. job .. "$'"))
  end)

  it("forwards the signal Slurm sends before the time limit to the program", function()
    assert.truthy(job, "needs the submitted job")
    local got = c.wait_for(function()
      return c:ssh("cat /root/batchrun/train.log"):find("trainer got USR1", 1, true)
    end, 45)
    local log = c:ssh("cat /root/batchrun/train.log")
    assert.truthy(got, "the program never got USR1: " .. log)
    assert.matches("%[gpurent%] SIGUSR1 from Slurm %(restart 0%): forwarded to the job", log)
    -- the wrapper's shell ignored it: the job runs on, the trainer was not ended
    slurmbed.sh("sleep 2")
    assert.are.equal("RUNNING", c:job_state(job))
    assert.falsy(c:ssh("cat /root/batchrun/train.log"):find("the trainer exited", 1, true))
    assert.are.equal(0, select(2, c:ssh("scancel " .. job)))
    assert.are.equal("CANCELLED", c:wait_state(job, {CANCELLED = true}, 30))
    local js = S.job_state(inst, r)
    assert.are.equal("CANCELLED", js.state)
    assert.is_false(js.active)
  end)

  it("refuses a run root with a ~ (Slurm expands none) before submitting anything", function()
    local r2 = {id = "tilde", host = "cluster", session = "gr-tilde", profile = r.profile,
                paths = {root = "~/scratch/x", meta = "~/scratch/x/.gpurent", log = "~/scratch/x/train.log"}}
    local ok, e = pcall(S.start_detached, inst, r2, {script = "/root/batchrun/fake-wrapper.sh"})
    assert.is_false(ok)
    assert.are.equal(2, errors.exit_code(e))
    assert.truthy(errors.message(e):find("is not absolute", 1, true), errors.message(e))
    assert.are_not.equal(0, select(2, c:ssh("test -e " .. q("scratch/x"))))
  end)
end)

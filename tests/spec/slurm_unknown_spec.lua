-- slurm_unknown_spec.lua: a job the scheduler cannot describe is not a dead job. On the
-- Slurm testbed (tests/sim/slurm-sim) with its real slurmctld paused (SIGSTOP: squeue
-- then times out, as on a loaded controller), the run's job state is UNKNOWN and still
-- active (the watch waits, it does not relaunch), and the submit guard refuses a second
-- copy because it cannot tell the first one ended; a sweep's status ends no cell then (its
-- DONE one is not counted, its silent one not "vanished") and the sweep waits. Resumed,
-- the same job reads RUNNING.
-- Needs root and `make deps`: fails (not skips) without them.
local slurmbed = require "slurmbed"

local sh = slurmbed.sh
local q = T.q

describe("a Slurm job the controller cannot describe", function()
  local c, job, ctld
  setup(function()
    assert(slurmbed.available())
    c = slurmbed.new()
    c:up()
    job = c:sbatch("--wrap 'sleep 300'")
    assert.are.equal("RUNNING", c:wait_state(job, {RUNNING = true}, 30))
    -- a run's meta dir as slurm.start_detached leaves it: attempt 1, its job id
    local _, rc = c:ssh("mkdir -p /root/m/a1 && echo 1 > /root/m/current && echo " .. job .. " > /root/m/a1/jobid")
    assert.are.equal(0, rc)
    -- and a sweep's as slurm.start_queue leaves it (submission 1 of this job), with one cell
    -- whose wrapper wrote DONE and one that wrote nothing yet
    _, rc = c:ssh("mkdir -p /root/sm/s1 /root/sa/sw-c01/.gpurent/a1 /root/sa/sw-c02/.gpurent/a1 && " ..
      "echo 1 > /root/sm/array_current && echo " .. job .. " > /root/sm/s1/jobid && " ..
      "printf '1\\tsw-c01\\tconfigs/a.json fit\\n2\\tsw-c02\\tconfigs/b.json fit\\n' > /root/sm/cells && " ..
      "for n in 1 2; do echo 1 > /root/sa/sw-c0$n/.gpurent/current; echo 100 > /root/sa/sw-c0$n/.gpurent/a1/started; done && " ..
      "echo 'exit=0 stage=done at=130' > /root/sa/sw-c01/.gpurent/a1/DONE")
    assert.are.equal(0, rc)
    for _, pid in ipairs(c:status().pids) do
      pid = string.format("%d", pid)
      local f = io.open("/proc/" .. pid .. "/comm")
      if f and f:read("l") == "slurmctld" then ctld = pid end
      if f then f:close() end
    end
    assert.truthy(ctld, "no slurmctld among the cluster's processes: " .. require("cjson").encode(c:status().pids))
  end)
  teardown(function()
    if ctld then sh("kill -CONT " .. ctld) end
    if c then c:teardown() end
  end)

  -- an on-box script of gpurent's, filled by remote.script
  local function script(name, vars)
    local code, text, err = T.run("-e " .. q(string.format("io.write(require('gpurent.remote').script(%q, %s))", name, vars)))
    assert.are.equal(0, code, text .. err)
    return text
  end
  local function on_login(name, vars) return c:ssh("sh -c " .. q(script(name, vars)), 90) end

  -- slurm.job_state's reading of the script's line (the Lua side of the same probe)
  local function job_state(line)
    local code, out, err = T.run("-e " .. q(string.format([[
local S = require("gpurent.platform.slurm")
local st = S.job_state({sh = function() return {code = 0, stdout = %q} end}, {paths = {meta = "/root/m"}})
print(st.state, tostring(st.active), tostring(st.pending), tostring(st.unknown))]], line)))
    assert.are.equal(0, code, out .. err)
    return out
  end

  -- slurm.queue_status's reading of the sweep status script's lines: {alive, ends, waiting}
  local function queue_status(lines)
    local code, out, err = T.run("-e " .. q(string.format([[
local S = require("gpurent.platform.slurm")
local st = S.queue_status({sh = function() return {code = 0, stdout = %q} end},
  {id = "sw-cluster", host = "cluster", paths = {meta = "/root/sm", root = "/root"}})
local ends = 0
for _, ev in ipairs(st.events) do if ev.kind == "end" then ends = ends + 1 end end
print(tostring(st.alive), ends, tostring(st.done ~= nil), st.waiting or "-")]], lines)))
    assert.are.equal(0, code, out .. err)
    return out
  end

  it("is UNKNOWN and active while squeue cannot answer, and the submit guard refuses a second copy", function()
    assert.truthy(on_login("slurm_job_state", '{META = "/root/m"}'):find("gr_job " .. job .. " RUNNING", 1, true))
    sh("kill -STOP " .. ctld)
    -- the probe and the guard side by side (each waits out squeue's timeout)
    -- (and a sweep's status beside them: the same squeue, the same wait)
    local both = c:ssh("sh -c " .. q(script("slurm_job_state", '{META = "/root/m"}')) .. " > /root/probe.out & sh -c " ..
      q(script("slurm_queue_status", '{META = "/root/sm", ACTIVE = "/root/sa"}')) .. " > /root/sweep.out & sh -c " ..
      q(script("slurm_submit", '{META = "/root/m", SCRIPT = "/bin/true", LOG = "/root/m/log", ' ..
        'OPTIONS = "", SIGNAL = "", REQUEUE = "", GRACE = "1", CKPTS = ""}')) .. "; wait; echo '<>'; cat /root/probe.out", 90)
    local guard, out = both:match("^(.*)<>\n(.*)$")
    -- a sweep whose tasks nobody can see: no cell ends (not the DONE one, not the silent
    -- one as "vanished"), the sweep is not over, and the watch line says why it waits
    local sweep = c:ssh("cat /root/sweep.out")
    assert.truthy(sweep:find("\ngs_unknown squeue: ", 1, true), sweep)
    assert.falsy(sweep:find("gs_task", 1, true), sweep)
    assert.truthy(queue_status(sweep):find("^true\t0\tfalse\tSlurm array job " .. job .. ": its tasks' state is " ..
      "UNKNOWN %(squeue: "), queue_status(sweep))
    assert.truthy(out and out:find("gr_job " .. job .. " UNKNOWN squeue: ", 1, true), both)
    assert.are.equal("UNKNOWN\ttrue\tfalse\ttrue\n", job_state(out))
    assert.truthy(guard:find("refuse cannot tell whether Slurm job " .. job .. " (attempt 1) is still live: squeue: ",
      1, true), guard)
    local _, rc = c:ssh("test ! -e /root/m/a2")
    assert.are.equal(0, rc, "a second attempt was started")
    sh("kill -CONT " .. ctld)
    out = on_login("slurm_job_state", '{META = "/root/m"}')
    assert.truthy(out:find("gr_job " .. job .. " RUNNING", 1, true), out)
    assert.are.equal("RUNNING\ttrue\tfalse\tfalse\n", job_state(out))
  end)
end)

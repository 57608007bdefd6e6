-- slurm_sweep_requeue_spec.lua: a sweep cell that outlives its time limit requeues
-- itself and resumes, as a single run's job does (slurm_requeue_spec), end to end on
-- the Slurm testbed (tests/sim/slurm-sim). Two cells as one job array; the site overlay
-- gives every task a 1-minute limit and the signal 50 s before it (slurmctld checks
-- limits every 30 s: the signal comes 10-40 s into each run), and cell 1's trainer
-- needs longer than that. Its task forwards SIGUSR1, the trainer writes its checkpoint
-- and exits, the task requeues itself (scontrol requeue JOB_1: cell 1 only), and the
-- restart resumes from the cell's $GPURENT_RESUME and finishes: every step once. The
-- sweep ends ok with both cells done; the watch and the summary say cell 1 was
-- requeued and resumed, and nothing counted it as a failed cell. One cluster for the
-- file. Needs root and `make deps`: fails (not skips) without them. Below it, the
-- status's reading of a requeued cell's lines without a cluster (every task state).
local slurmbed = require "slurmbed"

local sh = slurmbed.sh
local q = T.q

describe("a sweep cell requeued before its time limit", function()
  local c, code_dir, queue_file
  setup(function()
    assert(slurmbed.available())
    c = slurmbed.new()
    c:up()
    c:workspace{shortlimit = slurmbed.SITE .. 'slurm:\n  time: "0:01:00"\n  signal_seconds: 50\n'}
    code_dir = c.dir .. "/code"
    sh("cp -r " .. q(T.root .. "/examples/tiny-train/.") .. " " .. q(code_dir))
    -- 45 s of steps: more than the 10-40 s before the first signal
    T.write(code_dir .. "/configs/long.json", '{"steps": 180, "step_seconds": 0.25}\n')
    queue_file = c.dir .. "/queue.txt"
    T.write(queue_file, "configs/long.json fit\nconfigs/ok.json fit 1\n")
  end)
  teardown(function() if c then c:teardown() end end)

  it("checkpoints on SIGUSR1, requeues its own task, resumes and ends ok; the sweep counts no failed cell", function()
    local code, out, err = c:gpurent(table.concat({"run recipes/slurm_sweep.lua host=cluster profile=shortlimit",
      "project=rq code=" .. q(code_dir), "queue=" .. q(queue_file),
      q("train={python} train.py --config {config} --task {task} --epochs {epochs} --out {out}"),
      q("box_load={python} load_check.py {}"), "interval=1 stall=60"}, " "), 300)
    assert.are.equal(0, code, out .. err)
    local sweep = out:match("%[sweep%] (%S+): 2 cells in")
    local job = out:match("as Slurm array job (%d+) %(sbatch %-%-array=1%-2, submission 1%)")
    assert.truthy(sweep and job, out)
    local active = "scratch/rq/active/" .. sweep .. "-c01"
    local ckpt = "/root/" .. active .. "/out/latest.pth"
    -- the watch names the requeue and the checkpoint, the summary the resume; no failure
    assert.truthy(out:find("\n[cell] cell 1 (configs/long.json fit): run " .. sweep .. "-c01 requeued (attempt 2), " ..
      "resuming from " .. ckpt .. "\n", 1, true), "no requeue event: " .. out)
    assert.truthy(out:find("\n%[sweep%] cell 1 ok exit=0 stage=done, requeued %(attempt %d+%), resumed from " ..
      ckpt:gsub("%p", "%%%0") .. " %(configs/long%.json fit%) run " .. sweep:gsub("%p", "%%%0") .. "%-c01: "), out)
    assert.truthy(out:find("\n[sweep] cell 2 ok exit=0 stage=done (configs/ok.json fit 1)", 1, true), out)
    assert.truthy(out:find("\nQUEUE DONE " .. sweep .. ": 2 cell(s) run, 2 ok, 0 failed\n", 1, true), out)
    for _, bad in ipairs{"cell 1 FAILED", "cell(s) failed", "STALLED", "vanished"} do
      assert.falsy(out:find(bad, 1, true), bad .. " in:\n" .. out)
    end
    -- one submission, one attempt of the cell: the same task ran again, its killed run archived
    local meta = active .. "/.gpurent"
    assert.are.equal("1\n", c:ssh("cat scratch/rq/active/" .. sweep .. "-cluster/.gpurent/array_current"))
    assert.are.equal("1\n", c:ssh("cat " .. meta .. "/current"))
    assert.matches("^exit=0 stage=done", c:ssh("cat " .. meta .. "/a1/DONE"))
    assert.matches("^exit=138 stage=train", c:ssh("cat " .. meta .. "/a1/restart-1/FAILED"))
    assert.are.equal(job .. "_1\n", c:ssh("cat " .. meta .. "/a1/array_task"))
    -- the trainer: checkpoint on the signal, told where to resume, resumed from that step
    local log = c:ssh("cat " .. active .. "/train.log")
    local at = tonumber(log:match("SIGUSR1: checkpoint written at step (%d+)"))
    assert.truthy(at and at > 0 and at < 180, log)
    assert.truthy(log:find("[gpurent] SIGUSR1 from Slurm (restart 0): forwarded to the job", 1, true), log)
    assert.truthy(log:find("[gpurent] requeue: Slurm array task " .. job .. "_1 back to the queue before its limit " ..
      "(attempt 2)", 1, true), log)
    assert.truthy(log:find("[gpurent] requeued (attempt 2 of Slurm array task " .. job .. "_1): resuming from " .. ckpt,
      1, true), log)
    assert.truthy(log:find("resume checkpoint from GPURENT_RESUME: " .. ckpt .. "\nresumed from step " .. at .. "\n", 1,
      true), log)
    assert.truthy(log:find("training finished: 180 steps", 1, true), log)
    assert.falsy(log:find("starting from scratch", log:find("requeued", 1, true), true), "a restart started over:\n" .. log)
    -- every step exactly once, in order: no step lost or redone across the requeue(s)
    c:assert_steps_once(active .. "/out/train.csv", 180)
    -- cell 2 was not requeued; Slurm ends both tasks COMPLETED (the requeued one too)
    local meta2 = "scratch/rq/active/" .. sweep .. "-c02/.gpurent"
    assert.are_not.equal(0, select(2, c:ssh("test -e " .. meta2 .. "/a1/requeue")))
    local acct = c.wait_for(function()
      local o = c:ssh("sacct -n -X -P -j " .. job .. " -o JobID,State | sort")
      return o == job .. "_1|COMPLETED\n" .. job .. "_2|COMPLETED\n" and o
    end, 30)
    assert.truthy(acct, c:ssh("sacct -n -X -P -j " .. job .. " -o JobID,State"))
    -- the ledger: the sweep and both cells succeeded
    local L = require("gpurent.state.ledger").open(c.state .. "/ledger.sqlite")
    local by = {}
    for _, row in ipairs(L:runs(100)) do by[row.id] = row.status end
    L:close()
    assert.are.equal("succeeded", by[sweep .. "-cluster"])
    assert.are.equal("succeeded", by[sweep .. "-c01"])
    assert.are.equal("succeeded", by[sweep .. "-c02"])
  end)
end)

-- slurm.queue_status's reading of the status script's lines (the Lua side, no cluster):
-- a marker (FAILED or DONE) whose task is still queued or running is not the cell's end yet;
-- a task Slurm ended PREEMPTED or NODE_FAIL (not requeued) is named with that state.
describe("a Slurm sweep's status of a requeued cell", function()
  local function status(lines)
    local S = require("gpurent.platform").of("slurm")
    local inst = {sh = function() return {code = 0, stdout = table.concat(lines, "\n") .. "\n"} end}
    return S.queue_status(inst, {id = "sw-cluster", host = "cluster", paths = {meta = "/m", root = "/r"}})
  end
  local function ends(st)
    local out = {}
    for _, ev in ipairs(st.events) do if ev.kind == "end" then out[#out + 1] = ev end end
    return out
  end
  local CELL = "gs_cell 1\tsw-c01\t1\t100\tFAILED\texit=138 stage=train at=130\tconfigs/long.json fit"
  local ASKED = "gs_requeue 1\trestart=1 at=131 job=2 ckpt=/r/active/sw-c01/out/latest.pth requested"

  it("waits while the task is requeued, says so, and ends it only once Slurm has", function()
    for _, state in ipairs{"RUNNING", "COMPLETING", "PENDING", "REQUEUED"} do
      local st = status{"gs_job 1 7", "gs_task 1|" .. state .. "|None", CELL, ASKED}
      assert.are.same({}, ends(st), state)
      assert.truthy(st.alive, state)
      assert.is_nil(st.done, state)
      local rq = st.events[#st.events]
      assert.are.equal("requeue", rq.kind)
      assert.are.equal("requeued (attempt 2), resuming from /r/active/sw-c01/out/latest.pth", rq.text)
      assert.are.equal("requeue 1 1 1", rq.key)
    end
    -- the restart finished: DONE, after one requeue that ran
    local st = status{"gs_job 1 7", "gs_task 1|COMPLETED|None",
      "gs_cell 1\tsw-c01\t1\t140\tDONE\texit=0 stage=done at=170\tconfigs/long.json fit",
      "gs_requeue 1\trestart=1 at=139 job=2 ckpt=/r/active/sw-c01/out/latest.pth"}
    local e = ends(st)
    assert.are.equal(1, #e)
    assert.truthy(e[1].ok)
    assert.are.equal("requeued (attempt 2), resumed from /r/active/sw-c01/out/latest.pth", e[1].requeued)
    assert.are.same({exit = 0, ok = 1, failed = 0, ran = 1}, {exit = st.done.exit, ok = st.done.ok,
      failed = st.done.failed, ran = st.done.ran})
    -- the requeue failed (scontrol refused) and the task ended: the FAILED marker is the end
    st = status{"gs_job 1 7", "gs_task 1|FAILED|None", CELL, ASKED}
    e = ends(st)
    assert.are.equal(1, #e)
    assert.falsy(e[1].ok)
    assert.are.equal("exit=138 stage=train at=130", e[1].text)
    assert.are.equal(1, st.done.failed)
  end)

  it("counts a DONE cell only once its task left the queue (Slurm may still requeue it)", function()
    local DONE = "gs_cell 1\tsw-c01\t1\t100\tDONE\texit=0 stage=done at=170\tconfigs/long.json fit"
    for _, state in ipairs{"RUNNING", "COMPLETING", "PENDING", "REQUEUED"} do
      local st = status{"gs_job 1 7", "gs_task 1|" .. state .. "|None", DONE}
      assert.are.same({}, ends(st), state)   -- not counted, so not sealed nor booked
      assert.truthy(st.alive, state)
      assert.is_nil(st.done, state)
      assert.is_nil(st.by_index[1].state, state)
    end
    local st = status{"gs_job 1 7", "gs_task 1|COMPLETED|None", DONE}
    local e = ends(st)
    assert.are.equal(1, #e)
    assert.truthy(e[1].ok)
    assert.are.equal("ok", st.by_index[1].state)
    assert.are.same({exit = 0, ok = 1, failed = 0}, {exit = st.done.exit, ok = st.done.ok, failed = st.done.failed})
  end)

  it("names a task Slurm pre-empted or whose node failed, and did not requeue, with its state", function()
    for state, what in pairs{PREEMPTED = "pre-empted by a higher-priority job", NODE_FAIL = "its node failed"} do
      local st = status{"gs_job 1 7", "gs_task 1|" .. state .. "|None",
        "gs_cell 1\tsw-c01\t1\t100\tFAILED\texit=143 stage=train at=130\tconfigs/long.json fit"}
      local e = ends(st)
      assert.are.equal(1, #e, state)
      assert.falsy(e[1].ok)
      assert.are.equal("exit=143 stage=train at=130 (Slurm array task 7_1 " .. state .. ": " .. what ..
        " and not requeued (submitted --no-requeue: the profile's slurm.requeue is off); not resubmitted: " ..
        "resubmit=sw-cluster reruns the failed cells)", e[1].text)
      -- no marker at all (killed before the wrapper could write one)
      st = status{"gs_job 1 7", "gs_task 1|" .. state .. "|None",
        "gs_cell 1\tsw-c01\t1\t100\t-\t\tconfigs/long.json fit", "gs_acct 7_1|" .. state .. "|0:15"}
      e = ends(st)
      assert.are.equal(1, #e, state)
      assert.matches("^exit=143 stage=vanished %(Slurm array task 7_1 " .. state .. ": ", e[1].text)
      assert.are.equal(1, st.done.failed)
      -- killed with its node, the task's exit code is 0:0: no exit of the wrapper's to show
      st = status{"gs_job 1 7", "gs_task 1|" .. state .. "|None",
        "gs_cell 1\tsw-c01\t1\t100\t-\t\tconfigs/long.json fit", "gs_acct 7_1|" .. state .. "|0:0"}
      assert.matches("^exit=%? stage=vanished %(Slurm array task 7_1 " .. state .. ": ", ends(st)[1].text)
    end
  end)
end)

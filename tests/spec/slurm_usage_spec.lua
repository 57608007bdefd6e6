-- slurm_usage_spec.lua: a scheduler's accounting in the ledger (job_usage, gpurent.state.ledger)
-- without a cluster: a run's jobs summed and priced, a pending array range replaced by
-- its tasks when read again, the runs `gpurent cost` asks the cluster about again, and
-- the sacct lines parsed (requeued allocations add up; a pending range is not final).
local ledger = require "gpurent.state.ledger"

describe("job usage in the ledger", function()
  local dir, L
  before_each(function()
    dir = T.tmpdir()
    L = ledger.open(dir .. "/ledger.sqlite")
    L:upsert_instance{name = "cl", profile = "slurm"}
  end)
  after_each(function() L:close(); T.rmtree(dir) end)

  it("sums a sweep's jobs, prices the GPU-seconds, and replaces a pending range with its tasks", function()
    L:start_run{id = "sweep", instance = "cl", at = 100}
    L:record_usage{run_id = "sweep", instance = "cl", replace = true, price_per_gpu_hour = 2, currency = "EUR",
      jobs = {{id = "9_0", state = "COMPLETED", elapsed = 1800, gpu_seconds = 3600, cpu_seconds = 7200, final = true},
              {id = "9_[1-2]", state = "PENDING", elapsed = 0, gpu_seconds = 0, cpu_seconds = 0, final = false}}}
    local u = L:usage("sweep")
    assert.are.same({"9_0", "9_[1-2]"}, u.job_ids)
    assert.is_false(u.final)
    assert.are.equal(2, u.cost)
    assert.are.equal("COMPLETED,PENDING", u.states)
    L:record_usage{run_id = "sweep", instance = "cl", replace = true, price_per_gpu_hour = 2, currency = "EUR",
      jobs = {{id = "9_0", state = "COMPLETED", elapsed = 1800, gpu_seconds = 3600, cpu_seconds = 7200, final = true},
              {id = "9_1", state = "FAILED", elapsed = 900, gpu_seconds = 1800, cpu_seconds = 900, final = true},
              {id = "9_2", state = "COMPLETED", elapsed = 900, gpu_seconds = 1800, cpu_seconds = 900, final = true}}}
    u = L:usage("sweep")
    assert.are.same({"9_0", "9_1", "9_2"}, u.job_ids)
    assert.is_true(u.final)
    assert.are.same({7200, 9000, 4, "EUR"}, {u.gpu_seconds, u.cpu_seconds, u.cost, u.currency})
    local c = L:cost{now = 200}
    assert.are.equal(7200, c.runs[1].usage.gpu_seconds)
  end)

  it("asks again about running runs, jobs not ended, and succeeded runs with nothing recorded", function()
    for _, id in ipairs{"done", "running", "ok-unread", "failed-early", "relaunching"} do L:start_run{id = id, instance = "cl"} end
    -- a run still running whose first job ended: a relaunch may add another
    L:record_usage{run_id = "relaunching", instance = "cl", jobs = {{id = "3", state = "FAILED", elapsed = 5,
      gpu_seconds = 5, cpu_seconds = 5, final = true}}}
    L:end_run("done", "succeeded"); L:end_run("ok-unread", "succeeded"); L:end_run("failed-early", "failed")
    L:record_usage{run_id = "done", instance = "cl", jobs = {{id = "1", state = "COMPLETED", elapsed = 5,
      gpu_seconds = 5, cpu_seconds = 5, final = true}}}
    L:record_usage{run_id = "running", instance = "cl", jobs = {{id = "2", state = "RUNNING", elapsed = 5,
      gpu_seconds = 5, cpu_seconds = 5, final = false}}}
    local ids = {}
    for _, r in ipairs(L:usage_open{"cl"}) do ids[#ids + 1] = r.id end
    table.sort(ids)
    assert.are.same({"ok-unread", "relaunching", "running"}, ids)
    assert.is_nil(L:usage("failed-early"))
    assert.is_nil(L:usage("done").cost)
  end)

  it("counts a sweep's array read before slurmdbd split it into tasks as not final", function()
    -- what the login node answered (remote/slurm_usage.sh): the array 5 still on a row of its own
    local out = "gr_ids 5\ngr_arrays 5\ngr_acct 5|COMPLETED|12|billing=1,cpu=1,gres/gpu=1,node=1\n"
    local S = require("gpurent.platform").of("slurm")
    local acct = S.accounting({sh = function() return {code = 0, stdout = out} end}, {meta = "/m"}, {slurm = {}})
    assert.are.equal("5", acct.jobs[1].id)
    assert.is_false(acct.jobs[1].final)
    -- a plain job's row is final once it ended
    out = "gr_ids 6\ngr_arrays -\ngr_acct 6|COMPLETED|12|billing=1,cpu=1,gres/gpu=1,node=1\n"
    assert.is_true(S.accounting({sh = function() return {code = 0, stdout = out} end}, {meta = "/m"}, {slurm = {}}).jobs[1].final)
  end)
end)

-- slurm_sweep_spec.lua: a sweep on a Slurm cluster is ONE job array
-- (recipes/slurm_sweep.lua, gpurent.platform.slurm.start_queue/queue_status over
-- gpurent.lifecycle.queue), end to end on the Slurm testbed (tests/sim/slurm-sim):
-- three cells, one failing: every cell is an array task in its own directory with its
-- own output and markers, the summary names the failed cell with its exit code and
-- command, the exit is non-zero and the ledger holds the sweep and its cells; a
-- resubmission runs only the failed cell (--array=2) and the sweep then reports all
-- ok and pulls the three cells verified; an empty queue is refused before anything is
-- submitted; cells the scheduler holds are PENDING with its reason, never stalled; a
-- task Slurm ends with no marker (scancel) is a failed cell named with Slurm's state,
-- and a resubmission meanwhile is refused without touching the ledger; the disk-budget
-- gate: a floor above what the cluster has ends each cell FAILED before its trainer,
-- naming the tier, its path and the dimension, and resubmit= with the default floors
-- runs those cells; a floor that is no size is refused before anything. One cluster for
-- the file. Needs root and `make deps`: fails (not skips) without them.
local slurmbed = require "slurmbed"
local cjson = require "cjson"

local sh = slurmbed.sh
local q = T.q

describe("a sweep on a Slurm cluster as one job array", function()
  local c, state, home, code_dir, pulled, queue_file
  setup(function()
    assert(slurmbed.available())
    c = slurmbed.new()
    c:up()
    c:workspace{simcluster = slurmbed.SITE}
    state, home, code_dir, pulled = c.state, c.home, c.dir .. "/code", c.pulled
    sh("cp -r " .. q(T.root .. "/examples/tiny-train/.") .. " " .. q(code_dir))
    -- the cell that fails: it crashes at step 4 until its config is fixed on the cluster
    T.write(code_dir .. "/configs/flaky.json", '{"steps": 10, "step_seconds": 0.05, "crash_at": 4}\n')
    queue_file = c.dir .. "/queue.txt"
    T.write(queue_file, "# three cells, the second one fails\nconfigs/ok.json fit 1\n\nconfigs/flaky.json fit 1\n" ..
      "configs/ok.json eval 1\n")
  end)
  teardown(function() if c then c:teardown() end end)

  local function g(args) return c:gpurent(args) end

  local function sweep_args(o)
    o = o or {}
    return table.concat({"run recipes/slurm_sweep.lua host=cluster profile=simcluster project=" .. (o.project or "sw"),
      "code=" .. q(code_dir), "queue=" .. q(o.queue or queue_file), "parallel=2",
      q("train={python} train.py --config {config} --task {task} --epochs {epochs} --out {out}"),
      q("box_load={python} load_check.py {}"), "interval=0.5 stall=" .. (o.stall or 30)}, " ")
  end

  local function jobs() return (c:ssh("sacct -n -X -P -o JobID | sort")) end

  local function ledger_runs()
    local L = require("gpurent.state.ledger").open(state .. "/ledger.sqlite")
    local rows = L:runs(100)
    L:close()
    return rows
  end

  it("refuses an empty queue before anything is submitted", function()
    local empty = c.dir .. "/empty.txt"
    T.write(empty, "# nothing yet\n\n   \n")
    local before = jobs()
    local code, out, err = g("run recipes/slurm_sweep.lua host=cluster project=nothing profile=simcluster code=" ..
      q(code_dir) .. " queue=" .. q(empty) .. " " .. q("train={python} train.py --out {out}"))
    assert.are.equal(2, code, out .. err)
    assert.truthy(err:find("no cell to run: " .. empty .. " holds 0 cell(s) and start=1", 1, true), err)
    assert.truthy(err:find("nothing was submitted", 1, true), err)
    assert.are.equal(before, jobs())
    assert.are_not.equal(0, select(2, c:ssh("test -e scratch/nothing")), "the box was touched")
    for _, row in ipairs(ledger_runs()) do assert.falsy(row.id:find("^nothing"), "ledger run " .. row.id) end
  end)

  it("reports the cells the scheduler holds as PENDING with its reason, not stalled, and follows them on", function()
    assert.are.equal(0, select(2, c:sim("drain --reason maintenance")))
    finally(function() c:sim("resume") end)   -- a failure here leaves the node usable for the next test
    local two = c.dir .. "/two.txt"
    T.write(two, "configs/ok.json fit 1\nconfigs/ok.json eval 1\n")
    local log = c.dir .. "/pending.out"
    local runner = io.popen("( cd " .. q(T.root) .. " && GPURENT_PROFILE_PATH=" .. q(c.dir .. "/profiles") .. " HOME=" ..
      q(home) .. " GPURENT_STATE_DIR=" .. q(state) .. " GPURENT_PROGRESS=none GPURENT_SSH_CONFIG=" .. q(c.ssh_config) ..
      " timeout -k 5 120 " .. q(T.bin) .. " " .. sweep_args{stall = 2, project = "held", queue = two} ..
      " >" .. q(log) .. " 2>&1; echo rc=$? >>" .. q(log) .. " ) &")
    runner:close()
    -- held for longer than the stall window (2 s): still waiting, with the scheduler's reason
    local seen = c.wait_for(function()
      local text = T.read(log) or ""
      local n = 0
      for _ in text:gmatch("%[watch%] t%+%d+s Slurm array job %d+: 2 cell%(s%) PENDING %(Nodes required[^\n]*, 0 running: " ..
        "waiting for the scheduler, not stalled\n") do n = n + 1 end
      return n >= 6 and text
    end, 60)
    assert.truthy(seen, "no PENDING lines with the scheduler's reason: " .. tostring(T.read(log)))
    assert.falsy(seen:find("STALLED", 1, true), seen)
    assert.falsy(seen:find("%[cell%]"), seen)
    assert.are.equal(0, select(2, c:sim("resume")))
    local done = c.wait_for(function() return (T.read(log) or ""):match("rc=(%d+)") end, 90)
    assert.are.equal("0", done, T.read(log))
    assert.truthy(T.read(log):find(": 2 cell(s) run, 2 ok, 0 failed\n", 1, true), T.read(log))
  end)

  it("counts a cell whose task Slurm ended with no marker (billing cancel JOB_TASK) as failed, naming Slurm's state",
    function()
    local two = c.dir .. "/slow.txt"
    T.write(two, "configs/slow.json fit\nconfigs/ok.json fit 1\n")
    local log = c.dir .. "/gone.out"
    local runner = io.popen("( cd " .. q(T.root) .. " && GPURENT_PROFILE_PATH=" .. q(c.dir .. "/profiles") .. " HOME=" ..
      q(home) .. " GPURENT_STATE_DIR=" .. q(state) .. " GPURENT_PROGRESS=none GPURENT_SSH_CONFIG=" .. q(c.ssh_config) ..
      " timeout -k 5 120 " .. q(T.bin) .. " " .. sweep_args{project = "gone", queue = two} ..
      " >" .. q(log) .. " 2>&1; echo rc=$? >>" .. q(log) .. " ) &")
    runner:close()
    local job = c.wait_for(function()
      local text = T.read(log) or ""
      return text:find("%[cell%] cell 1 %(configs/slow%.json fit%) %-> run") and text:match("as Slurm array job (%d+)")
    end, 60)
    assert.truthy(job, "cell 1 never started: " .. tostring(T.read(log)))
    -- a resubmission while a task of the sweep runs is refused, and changes nothing
    local gone = (T.read(log)):match("%[sweep%] (%S+): 2 cells in")
    local code, o, e = g("run recipes/slurm_sweep.lua host=cluster project=gone profile=simcluster resubmit=" .. gone)
    assert.are.equal(3, code, o .. e)
    assert.truthy(e:find("Slurm array job " .. job .. " still has tasks queued or running", 1, true), e)
    local L = require("gpurent.state.ledger").open(state .. "/ledger.sqlite")
    local status = L:run(gone .. "-cluster").status
    L:close()
    assert.are.equal("running", status)
    -- one cell cancelled by its array task id, behind the cancel_job gate
    code, o, e = g("billing cancel cluster " .. job .. "_1 --approve cluster")
    assert.are.equal(0, code, o .. e)
    assert.truthy(o:find("cluster: job " .. job .. "_1 cancelled", 1, true), o .. e)
    local done = c.wait_for(function() return (T.read(log) or ""):match("rc=(%d+)") end, 60)
    local out = T.read(log)
    assert.are.equal("1", done, out)
    assert.truthy(out:find("\n%[sweep%] cell 1 FAILED exit=%S+ stage=vanished %(Slurm CANCELLED[^\n]*; the wrapper left " ..
      "no marker%) %(configs/slow%.json fit%)"), out)
    assert.truthy(out:find("\n[sweep] cell 2 ok exit=0 stage=done", 1, true), out)
    assert.truthy(out:find(": 2 cell(s) run, 1 ok, 1 failed: 1 cell(s) failed: cell 1 (", 1, true), out)
  end)

  local sweep, queue_run
  it("runs three cells as one array, names the failed cell with its exit code and command, exits non-zero", function()
    local code, out, err = g(sweep_args())
    assert.are.equal(1, code, out .. err)
    sweep = out:match("%[sweep%] (%S+): 3 cells in")
    assert.truthy(sweep, out)
    queue_run = sweep .. "-cluster"
    local job = out:match("as Slurm array job (%d+) %(sbatch %-%-array=1%-3%%2, submission 1%)")
    assert.truthy(job, "not one array of cells 1-3, 2 at once: " .. out)
    -- the summary: each cell, its state, the wrapper's exit code, its command line
    assert.truthy(out:find("\n[sweep] cell 1 ok exit=0 stage=done (configs/ok.json fit 1) run " .. sweep .. "-c01: " ..
      "'python3' train.py --config 'configs/ok.json' --task 'fit' --epochs '1' --out '/root/scratch/sw/active/" .. sweep ..
      "-c01/out'\n", 1, true), out)
    assert.truthy(out:find("\n[sweep] cell 2 FAILED exit=1 stage=train (configs/flaky.json fit 1) run " .. sweep .. "-c02: " ..
      "'python3' train.py --config 'configs/flaky.json'", 1, true), out)
    assert.matches("\n%[sweep%] cell 3 ok exit=0 ", out)
    assert.truthy(out:find("\nQUEUE DONE " .. sweep .. ": 3 cell(s) run, 2 ok, 1 failed: 1 cell(s) failed: cell 2 (" ..
      sweep .. "-c02: exit=1 stage=train", 1, true), out)
    -- one array job, three tasks, each in its cell's own directory with its own output
    local batch = c:ssh("cat scratch/sw/active/" .. queue_run .. "/.gpurent/s1/batch.sh")
    assert.truthy(batch:find("#SBATCH --array=1-3%2\n", 1, true), batch)
    assert.truthy(batch:find("#SBATCH --gres=gpu:1\n", 1, true), batch)
    -- (slurmdbd records a finished task a moment later)
    local acct = c.wait_for(function()
      local o = c:ssh("sacct -n -X -P -j " .. job .. " -o JobID,State,ExitCode | sort")
      return select(2, o:gsub("\n", "")) >= 3 and o
    end, 30)
    assert.are.equal(job .. "_1|COMPLETED|0:0\n" .. job .. "_2|FAILED|1:0\n" .. job .. "_3|COMPLETED|0:0\n", acct)
    -- the sweep's GPU- and CPU-hours: its array's three tasks, as sacct has them (gpurent cost)
    local ccode, cout, cerr = g("cost --json")
    assert.are.equal(0, ccode, cout .. cerr)
    local u
    for _, row in ipairs(cjson.decode(cout).runs) do if row.id == queue_run then u = row.usage end end
    assert.truthy(u, "no usage for the sweep " .. queue_run .. ": " .. cout)
    table.sort(u.jobs)
    assert.are.same({job .. "_1", job .. "_2", job .. "_3"}, u.jobs)
    assert.is_true(u.final, "three tasks of three, all ended, and still not final")
    local gpu = 0
    for secs, gpus in c:ssh("sacct -X -n -P -j " .. job .. " --format=ElapsedRaw,AllocTRES"):gmatch("(%d+)|[^\n]*gres/gpu=(%d+)") do
      gpu = gpu + tonumber(secs) * tonumber(gpus)
    end
    assert.are.equal(gpu, u.gpu_seconds)
    for n = 1, 3 do
      local dir = string.format("scratch/sw/active/%s-c%02d", sweep, n)
      local o = c:ssh(string.format("cat %s/slurm-%s_%d.out && cat %s/.gpurent/a1/jobid && cat %s/train.log", dir, job, n, dir, dir))
      assert.truthy(o:find("Slurm array task " .. job .. "_" .. n .. " (job ", 1, true), o)
      assert.truthy(o:find("attempt 1 of run " .. sweep .. string.format("-c%02d", n), 1, true), o)
    end
    -- the ledger: the sweep's queue run and its three cells, the failed one failed
    local by = {}
    for _, row in ipairs(ledger_runs()) do by[row.id] = row end
    assert.are.equal("failed", by[queue_run].status)
    assert.are.equal("slurm_sweep", by[queue_run].recipe)
    for n, want in ipairs{"succeeded", "failed", "succeeded"} do
      local row = by[string.format("%s-c%02d", sweep, n)]
      assert.truthy(row, "no ledger row for cell " .. n)
      assert.are.equal(want, row.status, "cell " .. n)
      assert.are.equal("slurm_sweep/cell", row.recipe)
      local L = require("gpurent.state.ledger").open(state .. "/ledger.sqlite")
      local p = cjson.decode(L:run(row.id).params_json)
      L:close()
      assert.are.equal(queue_run, p.parent)
      assert.are.equal("cell", p.kind)
    end
  end)

  it("resubmits only the failed cell; the sweep then reports every cell ok and pulls them verified", function()
    assert.truthy(sweep, "needs the first sweep")
    -- the person fixes the failing cell's config on the cluster
    assert.are.equal(0, select(2, c:ssh("cp scratch/sw/active/" .. queue_run .. "/code/configs/ok.json scratch/sw/active/" ..
      queue_run .. "/code/configs/flaky.json")))
    local code, out, err = g("run recipes/slurm_sweep.lua host=cluster project=sw profile=simcluster resubmit=" .. sweep ..
      " interval=0.5 pull=yes local_dir=" .. q(pulled) .. " " ..
      q("load=python3 " .. T.root .. "/examples/tiny-train/load_check.py {}"))
    assert.are.equal(0, code, out .. err)
    local job = out:match("as Slurm array job (%d+) %(sbatch %-%-array=2, submission 2%)")
    assert.truthy(job, "not an array of only cell 2: " .. out)
    -- one task, cell 2's (sacct names an array of one task by its job id alone)
    local acct = c.wait_for(function()
      local o = c:ssh("sacct -n -X -P -j " .. job .. " -o JobID,State,ExitCode")
      return o ~= "" and o
    end, 30)
    assert.matches("^" .. job .. "_?2?|COMPLETED|0:0\n$", acct)
    assert.truthy(c:ssh("cat scratch/sw/active/" .. queue_run .. "/.gpurent/s2/batch.sh"):find("#SBATCH --array=2\n", 1, true))
    -- the cells that succeeded are kept, never run again: still at their first attempt
    assert.are.equal("1\n", c:ssh(string.format("cat scratch/sw/active/%s-c01/.gpurent/current", sweep)))
    assert.are.equal("2\n", c:ssh(string.format("cat scratch/sw/active/%s-c02/.gpurent/current", sweep)))
    assert.matches("\n%[sweep%] cell 2 ok exit=0 stage=done", out)
    assert.truthy(out:find("\nQUEUE DONE " .. sweep .. ": 3 cell(s) run, 3 ok, 0 failed\n", 1, true), out)
    local by = {}
    for _, row in ipairs(ledger_runs()) do by[row.id] = row end
    assert.are.equal("succeeded", by[queue_run].status)
    assert.are.equal("succeeded", by[sweep .. "-c02"].status)
    -- the three cells pulled and verified against the cluster's manifest
    local v = cjson.decode(T.read(pulled .. "/" .. queue_run .. "/PULL_VERIFIED.json"))
    assert.are.equal(15, v.files)
    for n = 1, 3 do
      assert.truthy(T.read(string.format("%s/%s/%s-c%02d/best.pth", pulled, queue_run, sweep, n)), "cell " .. n .. " not pulled")
    end
    -- a sweep whose cells all succeeded has nothing to resubmit: refused, nothing submitted
    code, out, err = g("run recipes/slurm_sweep.lua host=cluster project=sw profile=simcluster resubmit=" .. sweep)
    assert.are.equal(2, code, out .. err)
    assert.truthy(err:find("every cell is ok, nothing to resubmit", 1, true), err)
    assert.are_not.equal(0, select(2, c:ssh("test -e scratch/sw/active/" .. queue_run .. "/.gpurent/s3")))
  end)

  it("gates each cell on the compute node below a floor (FAILED, naming the tier, its path and what is short); " ..
    "resubmit= with the default floors runs them", function()
    local two = c.dir .. "/gated.txt"
    T.write(two, "configs/ok.json fit 1\nconfigs/ok.json eval 1\n")
    -- a floor that is no size: refused before anything reaches the cluster
    local before = jobs()
    local code, out, err = g(sweep_args{project = "gated", queue = two} .. " floor=lots")
    assert.are.equal(2, code, out .. err)
    assert.truthy(err:find("floor=lots is no size", 1, true), err)
    assert.are.equal(before, jobs())
    -- more free inodes than any filesystem of the testbed has: every cell is gated
    code, out, err = g(sweep_args{project = "gated", queue = two} .. " floor_inodes=4000000000000")
    assert.are.equal(1, code, out .. err)
    local gated = out:match("%[sweep%] (%S+): 2 cells in")
    assert.truthy(gated, out)
    local short = "disk gate: tier scratch (/root/scratch) is short of inodes: %d+ free, below the floor of 4000000000000; " ..
      "the trainer was not started"
    for n = 1, 2 do
      -- the watch's line and the summary's both say it
      assert.matches("\n%[cell%] cell " .. n .. " FAILED: run " .. gated:gsub("%p", "%%%0") .. "%-c0" .. n ..
        ": exit=1 stage=gate at=%d+ %(" .. short:gsub("[%(%)%.%-]", "%%%0") .. "%)\n", out)
      assert.matches("\n%[sweep%] cell " .. n .. " FAILED exit=1 stage=gate %(" .. short:gsub("[%(%)%.%-]", "%%%0") .. "%) %(",
        out)
      -- the trainer never ran: the wrapper's first line is not in the cell's log
      local log = c:ssh(string.format("cat scratch/gated/active/%s-c%02d/train.log", gated, n))
      assert.truthy(log:find("[gpurent] disk gate: cell " .. n .. " not run on ", 1, true), log)
      assert.falsy(log:find("attempt 1 of run", 1, true), log)
    end
    assert.truthy(out:find("\nQUEUE DONE " .. gated .. ": ", 1, true), out)
    assert.matches(" 0 ok, 2 failed: 2 cell%(s%) failed: cell 1 %(" .. gated:gsub("%p", "%%%0") .. "%-c01: exit=1 stage=gate " ..
      "at=%d+ %(disk gate: tier scratch %(/root/scratch%) is short of inodes", out)
    -- the watch's diagnosis names the gate, not an unknown exit 1
    assert.truthy(out:find("\n[watch]   cause: the disk-budget gate: a tier the cell writes is below its floor", 1, true), out)
    assert.falsy(out:find("no recognised error", 1, true), out)
    -- resubmit= (default floors) reruns the gated cells as failed ones: they run now
    code, out, err = g("run recipes/slurm_sweep.lua host=cluster project=gated profile=simcluster resubmit=" .. gated ..
      " interval=0.5")
    assert.are.equal(0, code, out .. err)
    assert.truthy(out:find("cell(s) 1, 2 of " .. gated .. "-cluster failed: resubmitting them", 1, true), out)
    assert.truthy(out:find("\nQUEUE DONE " .. gated .. ": 2 cell(s) run, 2 ok, 0 failed\n", 1, true), out)
  end)
end)

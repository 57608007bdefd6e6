-- slurm_acct_spec.lua: the Slurm platform's accounting, stop verb and profiles on the
-- testbed (tests/sim/slurm-sim, with slurmdbd: sacct answers), through the gpurent
-- binary as the person runs it: a run on the shipped profile (its ~ paths made the
-- login node's $HOME at connect); `gpurent cost` showing the GPU- and CPU-hours sacct
-- records for a run's jobs, asked of the cluster by cost itself, and their cost where a
-- site overlay prices a GPU-hour; `gpurent watch RUN` of a run started on that overlay
-- using the overlay; `gpurent billing cancel HOST JOB_ID|RUN_ID` refused without the
-- person's approval (the job still queued), listed by --dry-run, sent with --approve.
-- Needs root and `make deps`: fails (not skips) without them.
local slurmbed = require "slurmbed"
local cjson = require "cjson"

local q = T.q
local function esc(s) return (s:gsub("%p", "%%%0")) end

describe("Slurm accounting, cancel and profiles", function()
  local c, state, home, pulled
  setup(function()
    assert(slurmbed.available())
    c = slurmbed.new()
    c:up()
    c:workspace()
    state, home, pulled = c.state, c.home, c.pulled
    -- a site overlay: its own run root (not the shipped one), two GPUs a job, a price
    T.write(c.profiles .. "/sitecl.yaml", [[
extends: slurm
tiers:
  home: {path: /root}
  scratch: {path: /root/site}
checkpoints:
  live_dir: /root/site/checkpoints/{name}
  durable_dir: /root/site-results/{project}/{name}
  run_root: /root/site/{project}
billing:
  money: {currency: EUR, unit: cent}
slurm:
  gres: gpu:2
  price_per_gpu_hour: 3600
]])
  end)
  teardown(function() if c then c:teardown() end end)

  local function env() return c:env() end
  local function g(args, seconds) return c:gpurent(args, seconds) end

  local function train_args(profile, steps)
    return table.concat({"run recipes/slurm_train.lua host=cluster project=tiny", "profile=" .. profile,
      "code=examples/tiny-train", q("train={python} train.py --out {out} --steps " .. (steps or 12) .. " --step-seconds 0.1"),
      q("smoke=python3 train.py --smoke --out {tmp}"),
      q("load=python3 " .. T.root .. "/examples/tiny-train/load_check.py {}"),
      q("box_load={python} load_check.py {}"), "interval=0.5", "stall=20", "local_dir=" .. q(pulled), "gotchas=no"}, " ")
  end

  -- sacct's own record of jobs (ids, comma-separated): GPU- and CPU-seconds, every allocation summed
  local function sacct(job)
    local out = c:ssh("sacct -X -D -n -P -j " .. job .. " --format=ElapsedRaw,AllocTRES")
    local gpu, cpu = 0, 0
    for secs, tres in out:gmatch("(%d+)|([^\n]*)") do
      gpu = gpu + tonumber(secs) * tonumber(("," .. tres):match(",gres/gpu=(%d+)") or 0)
      cpu = cpu + tonumber(secs) * tonumber(("," .. tres):match(",cpu=(%d+)") or 0)
    end
    return gpu, cpu, out
  end

  local function cost_json()
    local code, out, err = g("cost --json")
    assert.are.equal(0, code, out .. err)
    local doc = cjson.decode(out)
    local by = {}
    for _, r in ipairs(doc.runs) do by[r.id] = r end
    return by, doc, err
  end

  local run1, job1
  it("runs on the shipped profile: its ~ paths are the login node's $HOME, as absolute paths", function()
    local code, out, err = g(train_args("slurm"), 240)
    assert.are.equal(0, code, out .. err)
    run1 = out:match("%[run%] run (%S+):")
    job1 = out:match("under Slurm job (%d+) %(sbatch ")
    assert.truthy(run1 and job1, out)
    assert.truthy(out:find("[connect] ~ is /root on cluster (the login node's $HOME): run root /root/scratch/tiny", 1, true), out)
    local batch = c:ssh("cat scratch/tiny/active/" .. run1 .. "/.gpurent/a1/batch.sh")
    assert.truthy(batch:find("#SBATCH --output=/root/scratch/tiny/active/" .. run1 .. "/train.log\n", 1, true), batch)
    assert.truthy(batch:find("#SBATCH --chdir=/root/scratch/tiny/active/" .. run1 .. "/.gpurent\n", 1, true), batch)
    assert.truthy(out:find("FINISHED: exit 0", 1, true), out)
    assert.truthy(T.read(pulled .. "/" .. run1 .. "/PULL_VERIFIED.json"), "no verified pull")
    -- the checkpoint went to the durable dir under the real home, not a directory named ~
    assert.are.equal(0, select(2, c:ssh("test -s gpurent-results/tiny/" .. run1 .. "/best.pth")))
    assert.are_not.equal(0, select(2, c:ssh("test -e '~'")))
    assert.truthy(out:find("[watch] usage: job " .. job1 .. " COMPLETED: ", 1, true), out)
  end)

  it("gpurent cost asks the cluster for a run's GPU- and CPU-hours (sacct) and shows them, with no price", function()
    assert.truthy(run1, "needs the first run")
    assert.are.equal("COMPLETED", c:wait_state(job1, {COMPLETED = true}, 30))
    -- forget what the watch recorded: cost itself must ask the cluster again
    local code, out, err = T.run("-e " .. q("local L = require('gpurent.state.ledger').open(); " ..
      "L.db:run('DELETE FROM job_usage'); L:close()"), {env = env()})
    assert.are.equal(0, code, out .. err)
    local by = cost_json()
    local u = by[run1].usage
    assert.truthy(u, "no usage for " .. run1)
    assert.are.equal(job1, u.jobs[1])    -- (and a relaunch's job after it, on a machine under load)
    local gpu, cpu, raw = sacct(table.concat(u.jobs, ","))
    assert.is_true(gpu > 0, raw)
    assert.are.equal(gpu, u.gpu_seconds)
    assert.are.equal(cpu, u.cpu_seconds)
    assert.is_true(u.final)
    assert.is_nil(u.cost)
    code, out, err = g("cost")
    assert.are.equal(0, code, out .. err)
    local row = out:match("\n(" .. esc(run1) .. "%s+cluster%s+" .. esc(table.concat(u.jobs, ",")) .. " [^\n]*)")
    assert.truthy(row, out)
    assert.matches("COMPLETED%s+" .. esc(string.format("%.4f", gpu / 3600)) .. "%s+" ..
      esc(string.format("%.4f", cpu / 3600)) .. "%s+no price$", row)
  end)

  local run2, job2
  it("watch RUN of a run started on a site overlay uses the overlay; cost prices its GPU-hours", function()
    local code, out, err = g(train_args("sitecl"), 240)
    assert.are.equal(0, code, out .. err)
    run2 = out:match("%[run%] run (%S+):")
    job2 = out:match("under Slurm job (%d+) %(sbatch ")
    assert.truthy(run2 and job2, out)
    assert.truthy(out:find("/root/site/tiny/active/" .. run2, 1, true), out)
    -- a new shell re-attaches: the ledger names the overlay, so watch looks in its run root
    local ran = out
    code, out, err = g("watch " .. run2 .. " --once")
    assert.are.equal(0, code, out .. err .. "\nthe run:\n" .. ran)
    -- (a machine under load may have relaunched the run: its last job finished it)
    local last = out:match("attempt %d+ FINISHED | job (%d+) COMPLETED")
    assert.truthy(last, out .. "\nthe run:\n" .. ran)
    -- 2 GPUs a job, 3600 EUR a GPU-hour: the cost is the jobs' GPU-seconds, in EUR
    assert.are.equal("COMPLETED", c:wait_state(last, {COMPLETED = true}, 30))
    local by = cost_json()
    local u = by[run2].usage
    assert.are.equal(last, u.jobs[#u.jobs])
    local gpu, cpu, raw = sacct(table.concat(u.jobs, ","))
    assert.is_true(gpu > 0 and gpu == 2 * cpu, raw)
    assert.are.equal(gpu, u.gpu_seconds)
    assert.are.equal(string.format("%d.000", gpu), u.cost)
    assert.are.equal("EUR", u.currency)
    code, out = g("cost")
    assert.truthy(out:find("\n" .. esc(run2) .. "%s+cluster%s+slurm_train%s+succeeded%s[^\n]*%s%-%s+" .. gpu .. "%.00 EUR\n"), out)
    -- the first run (shipped profile, no price) is still unpriced beside it
    if run1 then assert.truthy(out:find("\n" .. esc(run1) .. "%s+cluster%s+slurm_train%s+succeeded%s[^\n]*%s%-%s+no price\n"), out) end
  end)

  it("billing cancel JOB_ID is refused without approval (the job stays), listed by --dry-run, sent with --approve", function()
    local id = c:sbatch("-o stopme.out --wrap 'sleep 300'")
    assert.are.equal("RUNNING", c:wait_state(id, {RUNNING = true}, 30))
    local code, out, err = g("billing cancel cluster " .. id)
    assert.are.equal(3, code, out .. err)
    assert.truthy(err:find("gate: cancel_job cluster: refused", 1, true), out .. err)
    assert.are.equal("RUNNING", c:job_state(id), "a refused cancel must send nothing")
    code, out, err = g("billing cancel cluster " .. id .. " --dry-run")
    assert.are.equal(0, code, out .. err)
    assert.truthy(out:find("job " .. id .. " (wrap) on cluster: RUNNING\n", 1, true), out)
    assert.truthy(out:find("dry run: would cancel job " .. id .. " on cluster (the gate would refuse now: see above); nothing sent",
      1, true), out)
    assert.are.equal("RUNNING", c:job_state(id), "a dry run must send nothing")
    code, out, err = g("billing cancel cluster " .. id .. " --approve cluster")
    assert.are.equal(0, code, out .. err)
    assert.truthy(out:find("cluster: job " .. id .. " cancelled", 1, true), out)
    assert.are.equal("CANCELLED", c:wait_state(id, {CANCELLED = true}, 30))
    code, out, err = g("billing cancel cluster " .. id .. " --approve cluster")
    assert.are.equal(0, code, out .. err)
    assert.truthy(out:find("already ended, nothing to cancel", 1, true), out)
  end)

  it("billing cancel RUN_ID cancels the run's current job; its watcher stops (no relaunch) and records its usage", function()
    local log = c.dir .. "/long.out"
    local runner = io.popen("( cd " .. q(T.root) .. " && " .. env() .. " timeout -k 5 120 " .. q(T.bin) .. " " ..
      train_args("sitecl", 2000) .. " >" .. q(log) .. " 2>&1; echo rc=$? >>" .. q(log) .. " ) &")
    runner:close()
    local seen = c.wait_for(function()
      local text = T.read(log) or ""
      return text:match("attempt 1 RUNNING | job %d+ RUNNING") and text
    end, 60)
    assert.truthy(seen, "the long run never ran: " .. tostring(T.read(log)))
    local run3, job3 = seen:match("%[run%] run (%S+):"), seen:match("under Slurm job (%d+) %(sbatch ")
    local code, out, err = g("billing cancel cluster " .. run3)
    assert.are.equal(3, code, out .. err)
    assert.are.equal("RUNNING", c:job_state(job3), "a refused cancel must send nothing")
    code, out, err = g("billing cancel cluster " .. run3 .. " --approve cluster")
    assert.are.equal(0, code, out .. err)
    assert.truthy(out:find("job " .. job3 .. " of run " .. run3 .. " on cluster: RUNNING\n", 1, true), out)
    assert.are.equal("CANCELLED", c:wait_state(job3, {CANCELLED = true}, 30))
    local rc = c.wait_for(function() return (T.read(log) or ""):match("rc=(%d+)") end, 60)
    assert.are_not.equal("0", rc, T.read(log))
    -- a cancel is the person's decision: the watcher stops, it never relaunches the run
    assert.truthy(T.read(log):find("[watch]   class cancelled -> remedy stop", 1, true), T.read(log))
    assert.falsy(T.read(log):find("relaunched the identical command", 1, true), T.read(log))
    assert.truthy(T.read(log):find("[watch] usage: job " .. job3 .. " CANCELLED: ", 1, true), T.read(log))
    local by = cost_json()
    assert.are.same({job3}, by[run3].usage.jobs)
    assert.are.equal("CANCELLED", by[run3].usage.states)
    assert.are.equal(select(1, sacct(job3)), by[run3].usage.gpu_seconds)
  end)
end)

-- What sacct's rows of a sweep mean before slurmdbd has them all: no cluster needed.
describe("Slurm accounting of a job array, read", function()
  local slurm = require "gpurent.platform.slurm"
  local TRES = "|billing=1,cpu=1,gres/gpu=1,mem=100M,node=1\n"

  it("keeps a sweep's figures open while sacct lists fewer of an array's tasks than were submitted", function()
    -- seen in CI: sacct had only the array's last task (5_3) when the sweep ended, and the
    -- figures were kept as final: `gpurent cost` never asked again and showed one task
    local out = "gr_ids 5\ngr_arrays 5\ngr_expect 5 3\ngr_acct 5_3|COMPLETED|10" .. TRES
    local a = slurm.read_accounting(out)
    assert.equal(1, #a.jobs)
    assert.is_false(a.jobs[1].final)
    a = slurm.read_accounting(out .. "gr_acct 5_1|COMPLETED|9" .. TRES .. "gr_acct 5_2|FAILED|8" .. TRES)
    assert.equal(3, #a.jobs)
    for _, j in ipairs(a.jobs) do assert.is_true(j.final, j.id) end
  end)

  it("counts each submission's tasks under its own array id (a resubmission of one cell)", function()
    local out = "gr_ids 5,9\ngr_arrays 5,9\ngr_expect 5 2\ngr_expect 9 1\n" ..
      "gr_acct 5_1|COMPLETED|9" .. TRES .. "gr_acct 5_2|FAILED|8" .. TRES .. "gr_acct 9_2|COMPLETED|7" .. TRES
    for _, j in ipairs(slurm.read_accounting(out).jobs) do assert.is_true(j.final, j.id) end
    local open = slurm.read_accounting(out:gsub("gr_expect 9 1", "gr_expect 9 2"))
    for _, j in ipairs(open.jobs) do assert.equal(j.id:sub(1, 1) ~= "9", j.final, j.id) end
  end)
end)

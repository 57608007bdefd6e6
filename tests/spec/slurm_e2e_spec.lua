-- slurm_e2e_spec.lua: the Slurm platform (profiles/slurm.yaml, gpurent.platform.slurm)
-- end to end on the Slurm testbed (tests/sim/slurm-sim): the login node added with
-- `gpurent host add --profile slurm`, the tiny trainer run through recipes/slurm_train.lua
-- as a batch job (sbatch with the profile's #SBATCH lines, the same wrapper and
-- markers), watched to DONE, sealed and pulled with a verified PULL_VERIFIED.json; a
-- job the scheduler holds is reported PENDING, not stalled; and the stop verb (scancel)
-- refused without the person's approval, sent with it. Needs root and `make deps`:
-- fails (not skips) without them.
local slurmbed = require "slurmbed"
local cjson = require "cjson"
local hash = require "gpurent.util.hash"

local q = T.q

describe("the Slurm platform end to end", function()
  local c, state, home, pulled
  setup(function()
    assert(slurmbed.available())
    c = slurmbed.new()
    c:up()
    c:workspace{simcluster = slurmbed.SITE}
    state, home, pulled = c.state, c.home, c.pulled
  end)
  teardown(function() if c then c:teardown() end end)

  -- gpurent as the person runs it: this cluster's ssh_config, a private HOME and ledger.
  local function g(args, o)
    o = o or {}
    if not o.own_ssh_config then return c:gpurent(args, o.timeout or 240) end
    -- the person's own ~/.ssh/config instead of the testbed's
    return T.run(args, {env = c:env() .. " env -u GPURENT_SSH_CONFIG timeout -k 5 " .. tostring(o.timeout or 240),
      cwd = T.root})
  end

  local function train_args(o)
    o = o or {}
    return table.concat({"run recipes/slurm_train.lua host=" .. (o.host or "cluster"), "project=tiny",
      "profile=" .. (o.profile or "simcluster"),
      "code=examples/tiny-train", q("train={python} train.py --out {out} --steps 12 --step-seconds 0.1"),
      q("smoke=python3 train.py --smoke --out {tmp}"),
      q("load=python3 " .. T.root .. "/examples/tiny-train/load_check.py {}"),
      q("box_load={python} load_check.py {}"), "interval=0.5", "stall=" .. (o.stall or 20),
      "local_dir=" .. q(pulled), "gotchas=no", o.more or ""}, " ")
  end

  it("adds the login node with the slurm profile from its ssh command", function()
    local block = T.read(c.ssh_config)
    local ip, port = block:match("HostName (%S+)%s+Port (%d+)")
    local key = block:match("IdentityFile (%S+)")
    local code, out, err = g("host add cl " .. q("ssh -p " .. port .. " root@" .. ip) .. " --profile slurm --identity " ..
      q(key), {own_ssh_config = true})
    assert.are.equal(0, code, out .. err)
    assert.truthy(out:find("added cl -> root@" .. ip .. ":" .. port, 1, true), out)
    code, out, err = g("exec cl -- sinfo -h -o %P", {own_ssh_config = true})
    assert.are.equal(0, code, out .. err)
    assert.are.equal("gpu*\n", out)
  end)

  local run_id
  it("runs the tiny trainer as a batch job, watches it to DONE, seals and pulls with PULL_VERIFIED.json", function()
    local code, out, err = g(train_args())
    assert.are.equal(0, code, out .. err)
    run_id = out:match("%[run%] run (%S+):")
    assert.truthy(run_id, out)
    local job = out:match("under Slurm job (%d+) %(sbatch ")
    assert.truthy(job, "the launch did not go through sbatch: " .. out)
    assert.truthy(out:find("job " .. job .. " RUNNING", 1, true), "watch did not read the job's state: " .. out)
    assert.truthy(out:find("FINISHED: exit 0", 1, true), out)
    -- the batch script carries the profile's request, the job ran on the compute node
    local meta = "scratch/tiny/active/" .. run_id .. "/.gpurent"
    local batch = c:ssh("cat " .. meta .. "/a1/batch.sh")
    for _, line in ipairs{"#SBATCH --gres=gpu:1\n", "#SBATCH --time=1:00:00\n", "#SBATCH --requeue\n",
                          "#SBATCH --signal=B:USR1@120\n", "#SBATCH --open-mode=append\n",
                          "#SBATCH --job-name=gr-" .. run_id .. "\n"} do
      assert.truthy(batch:find(line, 1, true), "no " .. line .. " in:\n" .. batch)
    end
    assert.are.equal(job .. "\n", c:ssh("cat " .. meta .. "/a1/jobid"))
    assert.matches("^exit=0 stage=done", c:ssh("cat " .. meta .. "/a1/DONE"))
    local log = c:ssh("cat scratch/tiny/active/" .. run_id .. "/train.log")
    assert.matches("%[gpurent%] attempt 1 of run " .. run_id:gsub("%p", "%%%0") .. " started %S+ on node1\n", log)
    assert.are.equal("COMPLETED", c:wait_state(job, {COMPLETED = true, FAILED = true}, 30))
    -- best.pth synced to the durable tier (home) by the wrapper
    local _, rc = c:ssh("test -s gpurent-results/tiny/" .. run_id .. "/best.pth")
    assert.are.equal(0, rc, "best.pth not synced to home")
    -- the pull is verified against the remote manifest
    local dir = pulled .. "/" .. run_id
    local v = cjson.decode(T.read(dir .. "/PULL_VERIFIED.json"))
    assert.are.equal(run_id, v.run_id)
    assert.are.equal(hash.sha256(T.read(dir .. "/PULL_MANIFEST.json")), v.manifest_sha256)
    assert.are.equal(5, v.files)
    assert.truthy(out:find("no meter on cluster (a Slurm cluster)", 1, true), out)
  end)

  it("reports a job the scheduler holds as PENDING, not stalled, and watches it on when it starts", function()
    assert.are.equal(0, select(2, c:sim("drain --reason maintenance")))
    finally(function() c:sim("resume") end)   -- a failure here leaves the node usable for the next test
    local log = c.dir .. "/pending.out"
    local runner = io.popen("( " .. "cd " .. q(T.root) .. " && GPURENT_PROFILE_PATH=" .. q(c.dir .. "/profiles") .. " HOME=" .. q(home) .. " GPURENT_STATE_DIR=" .. q(state) ..
      " GPURENT_PROGRESS=none GPURENT_SSH_CONFIG=" .. q(c.ssh_config) .. " timeout -k 5 240 " .. q(T.bin) .. " " ..
      train_args{stall = 3} .. " >" .. q(log) .. " 2>&1; echo rc=$? >>" .. q(log) .. " ) &")
    runner:close()
    -- pending for longer than the stall window (3 s) is still pending
    local seen = c.wait_for(function()
      local text = T.read(log) or ""
      local n = 0
      for _ in text:gmatch("%[watch%] t%+%d+s attempt 1 PENDING | job %d+ PENDING %(Nodes required") do n = n + 1 end
      return n >= 8 and text
    end, 60)
    assert.truthy(seen, "no PENDING watch verdicts with the scheduler's reason: " .. tostring(T.read(log)))
    assert.falsy(seen:find("attempt 1 RUNNING", 1, true), seen)
    assert.falsy(seen:find("STALLED", 1, true), seen)
    assert.are.equal(0, select(2, c:sim("resume")))
    local done = c.wait_for(function() return (T.read(log) or ""):match("rc=(%d+)") end, 120)
    assert.are.equal("0", done, T.read(log))
    assert.truthy(T.read(log):find("FINISHED: exit 0", 1, true))
  end)

  it("refuses scancel of a run's job without approval, sends it with --approve", function()
    local id = c:sbatch("-o stopme.out --wrap 'sleep 300'")
    assert.are.equal("RUNNING", c:wait_state(id, {RUNNING = true}, 30))
    local script = c.dir .. "/stop.lua"
    T.write(script, string.format([[
local P = require("gpurent.platform").of("slurm")
local r = P.stop{host = "cluster", job = %q}
print("status " .. r.status)
]], id))
    local code, out, err = g("run " .. q(script))
    assert.are.equal(3, code, out .. err)
    assert.truthy((out .. err):find("gate: cancel_job cluster: refused", 1, true), out .. err)
    assert.are.equal("RUNNING", c:job_state(id), "a refused stop must send nothing")
    code, out, err = g("--approve cluster run " .. q(script))
    assert.are.equal(0, code, out .. err)
    assert.truthy(out:find("status cancelled", 1, true), out)
    assert.are.equal("CANCELLED", c:wait_state(id, {CANCELLED = true}, 30))
  end)
end)

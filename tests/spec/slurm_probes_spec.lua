-- slurm_probes_spec.lua: the Slurm platform's gotcha probes (lua/gpurent/gotchas/slurm.lua)
-- through `gpurent check` against the testbed (tests/sim/slurm-sim): on a healthy
-- cluster the quota of home and scratch (bytes and inodes), the purge policy the site
-- overlay states, the partition, the fair-share and a GPU seen inside an allocation;
-- then the partition's troubles found by name: a drained node (and the GPU probe
-- inconclusive, not failed, while its allocation pends), a partition set DOWN, and
-- a time limit over the partition's. Needs root and `make deps`: fails (not skips).
local slurmbed = require "slurmbed"
local cjson = require "cjson"


describe("the Slurm gotcha probes", function()
  local c
  setup(function()
    assert(slurmbed.available())
    c = slurmbed.new()
    c:up()
    c:workspace{simcluster = slurmbed.SITE .. "slurm:\n  partition: gpu\n  scratch_purge_days: 30\n  probe_wait_seconds: 5\n"}
  end)
  teardown(function() if c then c:teardown() end end)

  local IDS = "S-QUOTA,S-PURGE,S-PARTITION,S-FAIRSHARE,S-GPU-ALLOC"

  -- gpurent check as a person runs it; the results by id
  local function check(only)
    local code, out, err = c:gpurent("check cluster --profile simcluster --json --only " .. (only or IDS), 180)
    local ok, doc = pcall(cjson.decode, out)
    assert(ok, "no JSON from gpurent check: " .. out .. err)
    local by = {}
    for _, x in ipairs(doc.results or doc) do by[x.id] = x end
    return code, by, out .. err
  end

  it("are the slurm profile's catalog entries", function()
    local p = require("gpurent.config.profile").load("slurm")
    local ids = {}
    for _, e in ipairs(require("gpurent.gotchas").for_profile(p)) do ids[#ids + 1] = e.id end
    for id in IDS:gmatch("[^,]+") do
      assert.truthy(table.concat(ids, " "):find(id, 1, true), id .. " not run for the slurm profile: " .. table.concat(ids, " "))
    end
  end)

  it("read quota, purge policy, partition, fair-share and an allocation's GPU on a healthy cluster", function()
    local code, by, all = check()
    assert.are.equal(0, code, all)
    local quota = by["S-QUOTA"]
    assert.are.equal("ok", quota.status, all)
    assert.matches("home /root: %S+ %S+ of %S+ %S+ bytes %(%d+%%%), %d+ of %d+ inodes %(%d+%%%)", quota.evidence)
    assert.truthy(quota.evidence:find("scratch /root/scratch (not created yet; measured at /root)", 1, true), quota.evidence)
    assert.are.equal("warn", by["S-PURGE"].status)
    assert.truthy(by["S-PURGE"].evidence:find("purges files untouched for 30 days", 1, true), by["S-PURGE"].evidence)
    assert.are.equal("ok", by["S-PARTITION"].status, all)
    assert.are.equal("partition gpu: up, time limit infinite, GRES gpu:2, nodes 1 idle", by["S-PARTITION"].evidence)
    assert.are.equal("ok", by["S-FAIRSHARE"].status, all)
    assert.matches("^account root user root: fair%-share [%d.]+", by["S-FAIRSHARE"].evidence)
    local gpu = by["S-GPU-ALLOC"]
    assert.are.equal("ok", gpu.status, all)
    assert.truthy(gpu.evidence:find("an allocation on node1 with --gres=gpu:1 sees 1 GPU(s) (NVIDIA A100-SXM4-80GB; " ..
      "CUDA_VISIBLE_DEVICES=0)", 1, true), gpu.evidence)
  end)

  it("leave the login node's own GPU probes n/a: the GPUs are in an allocation", function()
    local code, by, all = check("U-NOGPU,U-XID,U-CUDA-MISMATCH")
    assert.are.equal(0, code, all)
    for _, id in ipairs{"U-NOGPU", "U-XID", "U-CUDA-MISMATCH"} do
      assert.are.equal("n/a", by[id].status, all)
      assert.truthy(by[id].evidence:find("S-GPU-ALLOC looks inside an allocation", 1, true), all)
    end
  end)

  it("find a drained partition; the GPU probe is inconclusive while its allocation pends", function()
    assert.are.equal(0, select(2, c:sim("drain --reason maintenance")))
    finally(function() c:sim("resume") end)
    local code, by, all = check("S-PARTITION,S-GPU-ALLOC")
    assert.are.equal(1, code, all)
    assert.are.equal("fail", by["S-PARTITION"].status)
    assert.truthy(by["S-PARTITION"].evidence:find("nodes 1 drained (maintenance); no node can take a job", 1, true),
      by["S-PARTITION"].evidence)
    assert.are.equal("n/a", by["S-GPU-ALLOC"].status, all)
    assert.matches("^inconclusive: the allocation .* did not start within 5 s %(slurm%.probe_wait_seconds%)", by["S-GPU-ALLOC"].evidence)
  end)

  it("find a partition set DOWN and a time limit over the partition's", function()
    assert.are.equal(0, select(2, c:sim("partition DOWN")))
    finally(function() c:sim("partition UP") end)
    local code, by, all = check("S-PARTITION")
    assert.are.equal(1, code, all)
    assert.truthy(by["S-PARTITION"].evidence:find("the partition is down: jobs stay PENDING (PartitionDown)", 1, true), all)
    assert.are.equal(0, select(2, c:sim("partition UP")))
    local _, rc = c:ssh("scontrol update PartitionName=gpu MaxTime=30")
    assert.are.equal(0, rc)
    code, by, all = check("S-PARTITION")
    assert.are.equal(1, code, all)
    assert.truthy(by["S-PARTITION"].evidence:find("slurm.time 1:00:00 is over the partition's limit 30:00 " ..
      "(PartitionTimeLimit)", 1, true), all)
  end)
end)

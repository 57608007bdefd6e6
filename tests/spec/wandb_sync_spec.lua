-- wandb_sync_spec.lua: `wandb sync` recovery for offline runs (seed AD1) on the
-- simulated AutoDL, with gpurent.lifecycle.download.wandb_sync. The W&B cloud is not
-- reachable here: the testbed's image carries a stand-in `wandb` (tests/sim/image/wandb)
-- that plays a SIMULATED cloud on the box - it hangs without the proxy, wants the key,
-- fails a run's next N syncs when told to (the flaky link) and logs what it received.
-- Two offline runs: one sync fails once and succeeds on the retry; a second call of
-- the helper syncs nothing (both runs marked); a run that fails every try is reported
-- failed, left unmarked, and synced by a later call.
local download = require "gpurent.lifecycle.download"
local simbox = require "simbox"

local ok_sim, why = simbox.available()
local desc = ok_sim and describe or function(name) describe(name, function() pending(why) end) end

local RUN = "/root/autodl-tmp/wq/active/r1"
local A = RUN .. "/out/wandb/offline-run-20261130_101010-aaaa1111"
local B = RUN .. "/out/wandb/offline-run-20261130_101512-bbbb2222"
local CLOUD = "/root/.sim-wandb-cloud"

desc("wandb sync recovery on the testbed", function()
  local box, inst
  setup(function()
    box = simbox.new()
    inst = box:up("w1", "--region wA --data-size 32M --fs-size 16M")
    local r = inst:sh(table.concat({
      "mkdir -p " .. A .. "/files " .. B .. "/files " .. RUN .. "/out/wandb/run-20261130_090000-online01",
      "echo offline > " .. A .. "/run-aaaa1111.wandb", "echo offline > " .. B .. "/run-bbbb2222.wandb",
      "printf 'sim-key-0123' > /root/.wandb_key && chmod 600 /root/.wandb_key",
      "mkdir -p " .. CLOUD .. " && echo 'offline-run-20261130_101512-bbbb2222 1' > " .. CLOUD .. "/fail"}, " && "))
    assert(r.code == 0, r.stderr)
  end)
  teardown(function() if box then box:down() end end)

  local function cloud(file)
    return inst:sh("cat " .. CLOUD .. "/" .. file .. " 2>/dev/null").stdout
  end

  it("syncs both offline runs through the proxy, retrying the flaky one; a second call syncs nothing", function()
    local got = download.wandb_sync(inst, inst.profile, {dir = RUN, tries = 3, backoff = 0, timeout = 20,
      cred_file = "/root/.wandb_key"})
    assert.are.equal(2, got.synced, require("gpurent.util.json").encode(got))
    assert.are.equal(0, got.failed)
    assert.are.equal(A, got.runs[1].dir)
    assert.are.equal("ok", got.runs[1].status)
    assert.are.equal(1, got.runs[1].attempts)
    assert.are.equal(B, got.runs[2].dir)
    assert.are.equal("ok", got.runs[2].status)
    assert.are.equal(2, got.runs[2].attempts)
    assert.truthy(got.runs[2].failures[1]:find("attempt 1 exit 1 .*502"), got.runs[2].failures[1])
    -- what the simulated cloud received: each run once; the online run dir is no offline run
    local synced = cloud("synced.log")
    assert.are.equal("synced " .. A .. " aaaa1111\nsynced " .. B .. " bbbb2222\n", synced)
    local attempts = select(2, cloud("attempts.log"):gsub("\n", ""))
    assert.are.equal(3, attempts)
    -- the second call: both marked, nothing sent to the cloud
    got = download.wandb_sync(inst, inst.profile, {dir = RUN, tries = 3, backoff = 0, timeout = 20,
      cred_file = "/root/.wandb_key"})
    assert.are.equal(0, got.synced)
    assert.are.equal(2, got.skipped)
    assert.are.equal(synced, cloud("synced.log"))
    assert.are.equal(attempts, select(2, cloud("attempts.log"):gsub("\n", "")))
  end)

  it("reports a run that fails every try, leaves it unmarked, and a later call syncs it", function()
    local C = RUN .. "/out/wandb/offline-run-20261130_110000-cccc3333"
    assert.are.equal(0, inst:sh("mkdir -p " .. C .. " && echo offline > " .. C .. "/run-cccc3333.wandb && " ..
      "echo 'offline-run-20261130_110000-cccc3333 5' >> " .. CLOUD .. "/fail").code)
    local got = download.wandb_sync(inst, inst.profile, {dir = RUN, tries = 2, backoff = 0, timeout = 20,
      cred_file = "/root/.wandb_key"})
    assert.are.equal(0, got.synced)
    assert.are.equal(1, got.failed)
    assert.are.equal(2, got.skipped)
    assert.are.equal(C, got.runs[3].dir)
    assert.are.equal("failed", got.runs[3].status)
    assert.are.equal(2, #got.runs[3].failures)
    assert.are.equal(1, inst:sh("test -e " .. C .. "/" .. download.WANDB_MARK).code)
    -- the link recovers: the next call syncs only that run
    assert.are.equal(0, inst:sh("sed -i '/cccc3333/d' " .. CLOUD .. "/fail").code)
    got = download.wandb_sync(inst, inst.profile, {dir = RUN, tries = 2, backoff = 0, timeout = 20,
      cred_file = "/root/.wandb_key"})
    assert.are.equal(1, got.synced)
    assert.are.equal(C, got.runs[3].dir)
    assert.truthy(cloud("synced.log"):find("synced " .. C .. " cccc3333\n", 1, true))
  end)

  it("without the proxy hook the stand-in cloud is unreachable: each try is cut by the timeout", function()
    local D = RUN .. "/out/wandb/offline-run-20261130_120000-dddd4444"
    assert.are.equal(0, inst:sh("mkdir -p " .. D .. " && echo offline > " .. D .. "/run-dddd4444.wandb").code)
    local p = {network = {}}           -- a profile with no proxy hook
    local got = download.wandb_sync(inst, p, {dir = RUN, tries = 1, backoff = 0, timeout = 2,
      cred_file = "/root/.wandb_key"})
    assert.are.equal(1, got.failed)
    assert.truthy(got.runs[4].failures[1]:find("exit 124 timed out after 2s", 1, true), got.runs[4].failures[1])
    -- with the profile's hook it goes through
    got = download.wandb_sync(inst, inst.profile, {dir = RUN, tries = 1, backoff = 0, timeout = 20,
      cred_file = "/root/.wandb_key"})
    assert.are.equal(1, got.synced)
  end)
end)

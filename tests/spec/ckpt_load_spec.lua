-- ckpt_load_spec.lua: the checkpoint load check on the box (seed: a checkpoint that
-- does not load is never synced as durable, sealed, or listed in a manifest), on the
-- simulated AutoDL: the default torch check refused before launch on a box without
-- torch; a best.pth that does not load never reaches the durable tier; a capsule
-- checkpoint that does not load is quarantined at close, never sealed; and with no
-- local load= the pull takes the box's load check as the evidence.
local testbed = require "testbed"

local ok_tb, why = testbed.available()

describe("checkpoint load check on the box", function()
  if not ok_tb then pending("testbed unavailable: " .. why); return end
  local tb, pulled
  local root = "/root/autodl-tmp/tiny"
  setup(function()
    tb = testbed.new()
    pulled = tb.dir .. "/pulled"
    tb:up("k1", "--region westDC2 --data-size 256M --fs-size 64M --fs-inodes 4000")
  end)
  teardown(function() if tb then tb:down() end end)

  local function run_id(out) return out:match("%[run%] run (%S+):") end

  it("refuses before launch when no box_load= is given and the box's python has no torch", function()
    local code, out, err = tb:gpurent(testbed.train_args("k1", {local_dir = pulled, box_load = false}))
    assert.are.equal(3, code, out .. err)
    local id = run_id(out)
    assert.truthy(err:find("no box_load= was given", 1, true), err)
    assert.truthy(err:find("needs torch in /root/miniconda3/bin/python on k1, which has none", 1, true), err)
    assert.truthy(err:find("No module named 'torch'", 1, true), err)
    assert.truthy(err:find("nothing was launched", 1, true), err)
    -- nothing was pushed or started for it
    local o, rc = tb:exec("k1", "test -e " .. root .. "/active/" .. id)
    assert.are_not.equal(0, rc, "the run was launched: " .. o)
  end)

  it("never syncs a best.pth that does not load to the durable tier, nor seals it", function()
    local code, out, err = tb:gpurent(testbed.train_args("k1", {local_dir = pulled,
      extra = "&& printf 'not a checkpoint' > {out}/best.pth"}))
    assert.are_not.equal(0, code, out .. err)
    local id = run_id(out)
    assert.truthy((out .. err):find("does not load", 1, true), out .. err)
    local o, rc = tb:exec("k1", "cat " .. root .. "/active/" .. id .. "/.gpurent/a1/FAILED && grep 'load check FAILED' " ..
      root .. "/active/" .. id .. "/train.log && ! test -e /root/autodl-fs/final_ckpts/" .. id .. "/best.pth && ! test -e " ..
      root .. "/export/" .. id)
    assert.are.equal(0, rc, o)
    assert.truthy(o:match("^exit=0 stage=load%-check"), o)
    assert.truthy(o:find("best.pth does not load", 1, true), o)
    assert.falsy(testbed.read(pulled .. "/" .. id .. "/PULL_MANIFEST.json"))
  end)

  it("quarantines at close a capsule checkpoint that does not load: never sealed, no manifest", function()
    -- extra.pt is not in the profile's sync list: only close's check sees it
    local code, out, err = tb:gpurent(testbed.train_args("k1", {local_dir = pulled,
      extra = "&& printf 'garbage' > {out}/extra.pt",
      more = "expected=run.json,train.csv,best.pth,best_metrics.json,extra.pt"}))
    assert.are_not.equal(0, code, out .. err)
    local id = run_id(out)
    assert.truthy(err:find("moved to " .. root .. "/quarantine/" .. id .. "--1", 1, true), err)
    local o, rc = tb:exec("k1", "cat " .. root .. "/quarantine/" .. id .. "--1/REASON && ! test -e " .. root .. "/export/" ..
      id .. " && ! test -e " .. root .. "/export/.partial/" .. id .. " && ! test -e /root/autodl-fs/tiny/results/" .. id)
    assert.are.equal(0, rc, o)
    assert.truthy(o:find("does not load: extra.pt (exit 1)", 1, true), o)
    assert.falsy(o:find("best.pth", 1, true), o)
    assert.falsy(testbed.read(pulled .. "/" .. id .. "/PULL_MANIFEST.json"))
  end)

  it("with no local load=, verifies the pull by the box's load check of the same bytes", function()
    local code, out, err = tb:gpurent(testbed.train_args("k1", {local_dir = pulled, load = false}))
    assert.are.equal(0, code, out .. err)
    local id = run_id(out)
    assert.truthy(out:find("[close] load check on the box passed: best.pth", 1, true), out)
    assert.truthy(out:find("one the box's load check passed before the seal", 1, true), out)
    assert.truthy(testbed.read(pulled .. "/" .. id .. "/PULL_VERIFIED.json"))
  end)

  it("with no local load=, a later `watch --finish` of a sealed run verifies by the box's load check kept in the ledger",
    function()
    -- the pull fails here (its local dir is a file), after the seal and the box's load check
    local blocked = T.write(tb.dir .. "/blocked", "a file where the pull's directory goes\n")
    local code, out, err = tb:gpurent(testbed.train_args("k1", {local_dir = blocked, load = false}))
    assert.are_not.equal(0, code, out .. err)
    local id = run_id(out)
    assert.truthy(out:find("[close] load check on the box passed: best.pth", 1, true), out)
    os.remove(blocked)
    -- another process: the export is already sealed, the load check is not run again
    code, out, err = tb:gpurent("watch " .. id .. " --finish")
    assert.are.equal(0, code, out .. err)
    assert.truthy(out:find("is already sealed", 1, true), out)
    assert.truthy(out:find("one the box's load check passed before the seal", 1, true), out)
    assert.truthy(testbed.read(blocked .. "/" .. id .. "/PULL_VERIFIED.json"))
  end)
end)

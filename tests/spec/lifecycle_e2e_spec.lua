-- lifecycle_e2e_spec.lua: `gpurent run recipes/autodl_train.lua` end to end on the
-- simulated AutoDL (tests/sim): the happy path (sealed export, PULL_VERIFIED.json that
-- matches, no power-off or release in the API journal), the nohup fallback without
-- tmux, a pull whose roster names a missing file, and the teardown gate (refused
-- without approval; exactly one power_off after PULL_VERIFIED with --approve).
local testbed = require "testbed"
local cjson = require "cjson"
local hash = require "gpurent.util.hash"
local json = require "gpurent.util.json"

local ok_tb, why = testbed.available()

describe("lifecycle end to end", function()
  if not ok_tb then pending("testbed unavailable: " .. why); return end
  local tb, pulled
  setup(function()
    tb = testbed.new()
    pulled = tb.dir .. "/pulled"
    tb:up("a1", "--region westDC2 --data-size 256M --fs-size 64M --fs-inodes 4000")
    tb:up("a2", "--region westDC2 --data-size 256M --no-tmux")
  end)
  teardown(function() if tb then tb:down() end end)

  local function run_id(out) return out:match("%[run%] run (%S+):") end

  local happy_id
  it("runs every phase, seals the export, pulls and verifies, never powers off", function()
    local code, out, err = tb:gpurent(testbed.train_args("a1", {local_dir = pulled, gotchas = true}))
    assert.are.equal(0, code, out .. err)
    happy_id = run_id(out)
    assert.truthy(happy_id)
    for _, phase in ipairs({"connect", "setup", "audit", "environment", "prepare", "install", "launch", "watch", "close", "pull", "teardown"}) do
      assert.truthy(out:find("[" .. phase .. "]", 1, true), "no output from phase " .. phase)
    end
    assert.truthy(out:find("first contact with this autodl host", 1, true))
    assert.truthy(out:find("smoke passed", 1, true))
    assert.truthy(out:find("under tmux (session gr-" .. happy_id, 1, true))
    assert.truthy(out:find("FINISHED: exit 0", 1, true))
    -- the export is sealed on the box, nothing left in .partial, best synced to durable
    local root = "/root/autodl-tmp/tiny"
    local o, rc = tb:exec("a1", "test -f " .. root .. "/export/" .. happy_id .. "/best.pth && ! test -e " .. root ..
      "/export/.partial/" .. happy_id .. " && ! test -e " .. root .. "/export/" .. happy_id .. "/latest.pth" ..
      " && test -s /root/autodl-fs/final_ckpts/" .. happy_id .. "/best.pth && cat " .. root .. "/active/" .. happy_id ..
      "/.gpurent/a1/DONE")
    assert.are.equal(0, rc, o)
    assert.truthy(o:match("^exit=0 stage=done"))
    -- PULL_VERIFIED.json matches the pulled manifest, which is the remote one
    local dir = pulled .. "/" .. happy_id
    local v = cjson.decode(testbed.read(dir .. "/PULL_VERIFIED.json"))
    local mtext = testbed.read(dir .. "/PULL_MANIFEST.json")
    assert.are.equal("remote-gpu-trainer/PULL-VERIFIED/v1", v.schema)
    assert.are.equal(happy_id, v.run_id)
    assert.are.equal(hash.sha256(mtext), v.manifest_sha256)
    local m = cjson.decode(mtext)
    assert.are.equal("remote-gpu-trainer/PULL/v1", m.schema)
    assert.are.same({happy_id}, m.top_level_dirs)
    assert.are.equal(5, m.totals.files)
    assert.are.equal(5, v.files)
    local remote = tb:exec("a1", "cat /root/autodl-fs/tiny/results/" .. happy_id .. "/PULL_MANIFEST.json")
    assert.are.equal(mtext, remote)
    -- field for field what manifest.build writes for the same tree, so either tool verifies it
    local rebuilt = require("gpurent.lifecycle.manifest").build(dir, {happy_id}, {run_id = happy_id, write = false,
      created_at_utc = m.created_at_utc})
    assert.are.equal(mtext, json.encode_stable(rebuilt))
    -- `gpurent verify DIR` agrees
    local vc, vout, verr = tb:gpurent("verify " .. T.q(dir) .. " --load-cmd " ..
      T.q("python3 " .. T.root .. "/examples/tiny-train/load_check.py {}"))
    assert.are.equal(0, vc, vout .. verr)
    -- the API journal: no power-off, no release
    assert.are.equal(0, #tb:api_calls("power_off"))
    assert.are.equal(0, #tb:api_calls("release"))
    -- the ledger: the run succeeded with every phase ok
    local L = require("gpurent.state.ledger").open(tb.state .. "/ledger.sqlite")
    local row = L:run(happy_id)
    local phases = {}
    for _, e in ipairs(L:run_history(happy_id)) do if e.kind == "phase" then phases[#phases + 1] = e.name .. "=" .. e.outcome end end
    L:close()
    assert.are.equal("succeeded", row.status)
    assert.are.same({"connect=ok", "setup=ok", "audit=ok", "environment=ok", "prepare=ok", "install=ok", "launch=ok", "watch=ok",
      "close=ok", "pull=ok", "teardown=skipped"}, phases)
    -- read top-down, the phases come in the order they ran
    local order = {}
    for _, phase in ipairs({"connect", "setup", "audit", "environment", "prepare", "launch"}) do
      order[#order + 1] = out:find("[" .. phase .. "]", 1, true)
    end
    for i = 2, #order do assert.truthy(order[i - 1] < order[i], "phase output out of order: " .. out) end
  end)

  it("shows the first-contact notice once per host", function()
    local code, out, err = tb:gpurent("run recipes/audit.lua host=a1 project=tiny gotchas=no")
    assert.are.equal(0, code, out .. err)
    assert.falsy(out:find("first contact with this", 1, true))
    assert.truthy(out:find("first-contact notice already shown for a1", 1, true))
  end)

  it("fails the pull when the expected roster names a missing file; no PULL_VERIFIED.json", function()
    assert.truthy(happy_id, "needs the happy path's run")
    local dir2 = tb.dir .. "/pulled2"
    local code, out, err = tb:gpurent("run recipes/pull.lua host=a1 project=tiny run=" .. happy_id ..
      " local_dir=" .. T.q(dir2) .. " expected=run.json,best.pth,best_metrics.json,missing.pth " ..
      T.q("load=python3 " .. T.root .. "/examples/tiny-train/load_check.py {}"))
    assert.are_not.equal(0, code)
    assert.truthy((out .. err):find("missing.pth", 1, true), out .. err)
    assert.falsy(testbed.read(dir2 .. "/" .. happy_id .. "/PULL_VERIFIED.json"))
    assert.falsy(testbed.read(dir2 .. "/" .. happy_id .. "/PULL_MANIFEST.json"))
  end)

  it("refuses the launch beyond the spend budget: nothing pushed, nothing started (exit 3)", function()
    -- a1 has billed at the simulated price since it booted: far beyond a budget of 0.0001 yuan
    local code, out, err = tb:gpurent(testbed.train_args("a1", {project = "broke", more = "budget=0.0001"}))
    assert.are.equal(3, code, out .. err)
    assert.truthy(err:find("budget exceeded for a1: ", 1, true), err)
    assert.truthy(err:find("launch refused", 1, true), err)
    assert.falsy(out:find("[launch] pushed", 1, true), out)
    local o = tb:exec("a1", "ls /root/autodl-tmp/broke/active 2>/dev/null | wc -l")
    assert.are.equal("0", o:match("%d+"), o)
  end)

  it("refuses to go on when the audit's checkpoint budget fails", function()
    local code, out, err = tb:gpurent("run recipes/audit.lua host=a1 project=tiny gotchas=no ckpt_size=1G")
    assert.are.equal(3, code, out .. err)
    assert.truthy(out:find("checkpoint budget: FAIL", 1, true), out)
    assert.truthy(err:find("the checkpoint budget fails on a1", 1, true), err)
  end)

  it("stops before anything remote when the local smoke command fails", function()
    local args = testbed.train_args("a1", {local_dir = pulled}):gsub("%-%-smoke %-%-out {tmp}", "--smoke --crash-at 1 --out {tmp}")
    local code, out, err = tb:gpurent(args)
    assert.are.equal(3, code, out .. err)
    local id = run_id(out)
    assert.truthy(out:find("RuntimeError: crash requested at step 1", 1, true), out)
    assert.truthy(err:find("the local smoke command failed", 1, true), err)
    assert.falsy(out:find("[launch]", 1, true))
    local _, rc = tb:exec("a1", "test -e /root/autodl-tmp/tiny/active/" .. id)
    assert.are_not.equal(0, rc, "something was launched")
  end)

  it("quarantines a capsule that fails validation and never seals it", function()
    local code, out, err = tb:gpurent(testbed.train_args("a1", {local_dir = pulled,
      more = "expected=run.json,best.pth,best_metrics.json,nothere.json"}))
    assert.are_not.equal(0, code)
    local id = run_id(out)
    assert.truthy(err:find("failed validation; moved to /root/autodl-tmp/tiny/quarantine/" .. id .. "--1", 1, true), err)
    local o, rc = tb:exec("a1", "cat /root/autodl-tmp/tiny/quarantine/" .. id .. "--1/REASON && ! test -e /root/autodl-tmp/tiny/export/" ..
      id .. " && ! test -e /root/autodl-tmp/tiny/export/.partial/" .. id .. " && test -f /root/autodl-tmp/tiny/quarantine/" ..
      id .. "--1/best.pth")
    assert.are.equal(0, rc, o)
    assert.truthy(o:find("missing: nothere.json", 1, true), o)
  end)

  it("falls back to nohup when tmux is absent, with the same result; secrets travel over stdin only", function()
    local _, rc = tb:exec("a2", "command -v tmux")
    assert.are_not.equal(0, rc)
    local secret_value = "s3cr3t-" .. tostring(os.time())
    local code, out, err = tb:gpurent(testbed.train_args("a2", {local_dir = pulled, more = "secrets=GR_TEST_TOKEN"}),
      {env = "GR_TEST_TOKEN=" .. secret_value})
    assert.are.equal(0, code, out .. err)
    assert.truthy(out:find("secrets GR_TEST_TOKEN pushed over stdin to /root/.wandb_key", 1, true), out)
    assert.falsy((out .. err):find(secret_value, 1, true), "the secret was printed")
    local cred = tb:exec("a2", "stat -c %a /root/.wandb_key && cat /root/.wandb_key")
    assert.truthy(cred:match("^600\n"), cred)
    assert.truthy(cred:find("export GR_TEST_TOKEN='" .. secret_value .. "'", 1, true), cred)
    local _, in_ledger = testbed.sh("grep -rqF " .. T.q(secret_value) .. " " .. T.q(tb.state))
    assert.are_not.equal(0, in_ledger, "the secret reached the ledger or state dir")
    local id = run_id(out)
    assert.truthy(out:find("under nohup + setsid (detached from this SSH session)", 1, true), out)
    -- a nohup run has no tmux session: nothing it prints says tmux
    assert.falsy((out .. err):find("tmux", 1, true), out .. err)
    assert.truthy(out:find("FINISHED: exit 0", 1, true))
    assert.truthy(testbed.read(pulled .. "/" .. id .. "/PULL_VERIFIED.json"))
    local o = tb:exec("a2", "cat /root/autodl-tmp/tiny/active/" .. id .. "/.gpurent/a1/mode")
    assert.are.equal("nohup", o:match("%S+"))
  end)

  it("a failure keeps its reason: a checkpoint that does not load is named, not cut to 'verify DIR:'", function()
    -- on a2: its sealed, never-pulled export must not stand in the way of a1's release below
    local args = testbed.train_args("a2", {local_dir = pulled}):gsub(T.q("load=python3 " .. T.root ..
      "/examples/tiny-train/load_check.py {}"):gsub("%p", "%%%0"), T.q("load=false {}"))
    local code, out, err = tb:gpurent(args)
    assert.are_not.equal(0, code, out .. err)
    local id = run_id(out)
    local failed = out:match("%[run%] run " .. id:gsub("%p", "%%%0") .. " FAILED: ([^\n]*\n[^\n]*)")
    assert.truthy(failed, out)
    assert.truthy(failed:find("verify ", 1, true) and failed:find("best.pth", 1, true), failed)
    local L = require("gpurent.state.ledger").open(tb.state .. "/ledger.sqlite")
    local detail
    for _, e in ipairs(L:run_history(id)) do if e.kind == "phase" and e.name == "pull" then detail = e.detail end end
    L:close()
    assert.truthy(detail and detail:find("best.pth", 1, true), tostring(detail))
  end)

  it("Ctrl-C after the launch detaches: the training keeps running, the ledger says detached, watch re-attaches", function()
    local h = tb:spawn(testbed.train_args("a1", {local_dir = pulled, steps = 40, step_seconds = 0.2}))
    local id = h:wait_for("%[run%] run (%S+):", 20)
    assert.truthy(h:wait_for("%[watch%] t%+%d+s attempt 1 RUNNING", 60), h:output())
    os.execute("kill -INT " .. h.pid)
    assert.are.equal(130, h:wait(30), h:output())
    local out = h:output()
    assert.truthy(out:find("run " .. id .. " detached: the training keeps running on a1; re-attach from any shell with `gpurent watch "
      .. id .. "`", 1, true), out)
    assert.falsy(out:find("FAILED", 1, true), out)
    local o, rc = tb:exec("a1", "tmux has-session -t '=gr-" .. id .. "'")
    assert.are.equal(0, rc, "the training stopped with gpurent: " .. o)
    local L = require("gpurent.state.ledger").open(tb.state .. "/ledger.sqlite")
    local status = L:run(id).status
    L:close()
    assert.are.equal("detached", status)
    local code, wout, werr = tb:gpurent("watch " .. id .. " --interval 0.3 --finish")
    assert.are.equal(0, code, wout .. werr)
    assert.truthy(testbed.read(pulled .. "/" .. id .. "/PULL_VERIFIED.json"))
  end)

  it("Ctrl-C before the launch is an interruption: nothing runs on the box", function()
    local args = testbed.train_args("a1", {local_dir = pulled}):gsub(T.q("smoke=python3 train.py --smoke --out {tmp}"):gsub("%p", "%%%0"),
      T.q("smoke=sleep 5 && python3 train.py --smoke --out {tmp}"))
    local h = tb:spawn(args)
    local id = h:wait_for("%[run%] run (%S+):", 20)
    assert.truthy(h:wait_for("%[prepare%] local CPU smoke", 60), h:output())
    os.execute("kill -INT " .. h.pid)
    assert.are.equal(130, h:wait(30), h:output())
    local out = h:output()
    assert.truthy(out:find("run " .. id .. " interrupted during prepare, before the job was launched", 1, true), out)
    local L = require("gpurent.state.ledger").open(tb.state .. "/ledger.sqlite")
    local status = L:run(id).status
    L:close()
    assert.are.equal("interrupted", status)
    local _, rc = tb:exec("a1", "test -e /root/autodl-tmp/tiny/active/" .. id .. "/.gpurent/current")
    assert.are_not.equal(0, rc, "something was launched")
  end)

  it("refuses teardown without approval; with --approve sends exactly one power_off after PULL_VERIFIED", function()
    local code, out, err = tb:gpurent(testbed.train_args("a1", {local_dir = pulled, more = "teardown=yes"}))
    assert.are.equal(3, code, out .. err)
    assert.truthy((out .. err):find("gate: power_off a1: refused", 1, true), out .. err)
    assert.truthy(testbed.read(pulled .. "/" .. run_id(out) .. "/PULL_VERIFIED.json"))
    assert.are.equal(0, #tb:api_calls("power_off"))
    -- the results are verified: the run succeeded, with the refusal and the reminder
    assert.truthy(out:find("[run] run " .. run_id(out) .. " succeeded: verified results in ", 1, true), out)
    assert.truthy(out:find("; teardown refused: ", 1, true), out)
    assert.truthy(out:find("[teardown] refused: the meter is still ON for a1", 1, true), out)
    assert.falsy((out .. err):find("FAILED", 1, true), out .. err)
    local L = require("gpurent.state.ledger").open(tb.state .. "/ledger.sqlite")
    local refused_status = L:run(run_id(out)).status
    L:close()
    assert.are.equal("succeeded", refused_status)
    code, out, err = tb:gpurent(testbed.train_args("a1", {local_dir = pulled, more = "teardown=yes --approve a1"}))
    assert.are.equal(0, code, out .. err)
    assert.truthy((out .. err):find("gate: power_off a1: allowed (approval: flag)", 1, true), out .. err)
    -- over the phase's SSH session, before the power-off: the inventory a release needs
    assert.truthy(out:find("[teardown] inventory of a1 (" .. tb.uuids.a1 .. ") taken ", 1, true), out)
    assert.truthy(require("lfs").attributes(tb.state .. "/inventories/" .. tb.uuids.a1 .. ".json", "size"))
    local offs = tb:api_calls("power_off")
    assert.are.equal(1, #offs)
    assert.are.equal("Success", offs[1].code)
    assert.are.equal(tb.uuids.a1, offs[1].body.instance_uuid)
    local vpath = pulled .. "/" .. run_id(out) .. "/PULL_VERIFIED.json"
    local mtime = require("lfs").attributes(vpath, "modification")
    assert.truthy(offs[1].t >= mtime, "power_off before PULL_VERIFIED.json")
    assert.are.equal(0, #tb:api_calls("release"))
  end)

  it("after the teardown, a release still proves the whole disk: the ledger's pulls cover their files, nothing else", function()
    -- no --pulled: the runs' verified pulls come from the ledger
    local code, out, err = tb:gpurent("billing release a1 --approve a1")
    assert.are.equal(3, code, out .. err)
    assert.truthy(err:find("verified pulls matching one: [^\n]*" .. happy_id:gsub("%-", "%%-")), err)
    assert.truthy(err:find("/root/autodl%-tmp/tiny/active/[^\n]+/train%.log"), err)    -- logs die with the box
    assert.falsy(err:find("/root/autodl-tmp/tiny/export/" .. happy_id .. "/best.pth", 1, true), err)
    assert.are.equal(0, #tb:api_calls("release"))
    code, out, err = tb:gpurent("billing release a1 --approve a1 --discard 'tiny/active/**' --discard 'tiny/quarantine/**'")
    assert.are.equal(0, code, out .. err)
    assert.truthy(out:find("discard 'tiny/active/%*%*': %d+ files"), out)
    assert.truthy(out:find("\n  %d[^\n]+  /root/autodl%-tmp/tiny/active/[^\n]+/code/train%.py\n"), out)
    assert.are.equal(1, #tb:api_calls("release"))
  end)
end)

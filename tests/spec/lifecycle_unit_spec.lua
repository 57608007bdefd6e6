-- lifecycle_unit_spec.lua: the lifecycle's pure decisions, without a box: how a
-- probe's facts are classified (finished / dead / stalled / running, fast finish,
-- buffering), the log triage table and its fixed remedies, the vanished-process
-- causes, queue parsing, the console connection string, the wrapper's completion
-- chain, the capsule roster rules and the train-command placeholders.
local monitor = require "gpurent.lifecycle.monitor"
local run = require "gpurent.lifecycle.run"
local detach = require "gpurent.lifecycle.detach"
local close = require "gpurent.lifecycle.phases.close"
local launch = require "gpurent.lifecycle.phases.launch"

local function facts(t)
  local f = {attempt = 1, now = 1000, started = 900, boot_now = 5, boot0 = 5, oom0 = 0, mem = {oom_kill = 0},
             tail = {}, log_mtime = 999, artifact_mtime = 999}
  for k, v in pairs(t) do f[k] = v end
  f.alive = f.session == true or f.proc == true
  return f
end

local function fresh_run()
  return run.new{host = "h", project = "p", id = "p-1", record = false}
end

describe("monitor.classify", function()
  it("finished needs no session, no process and the wrapper's exit-0 marker", function()
    local v = monitor.classify(facts{session = false, proc = false, done = {exit = 0, at = 990}})
    assert.are.equal("finished", v.state)
    assert.are.equal(90, v.elapsed)
    -- alive with a marker is not finished yet (the wrapper is exiting)
    assert.are.equal("running", monitor.classify(facts{session = true, done = {exit = 0, at = 999}}).state)
  end)
  it("a log line saying 'finished' is no evidence: no marker means dead", function()
    local v = monitor.classify(facts{session = false, proc = false, last_line = "training finished: 20 steps"})
    assert.are.equal("dead", v.state)
  end)
  it("stalled: alive but the newest log line and artifact are older than the window", function()
    local v = monitor.classify(facts{session = true, proc = true, log_mtime = 900, artifact_mtime = 920}, {stall_seconds = 60})
    assert.are.equal("stalled", v.state)
    assert.are.equal(80, v.quiet_for)
    assert.are.equal("running", monitor.classify(facts{proc = true, log_mtime = 990}, {stall_seconds = 60}).state)
  end)
  it("a frozen log with advancing checkpoints is buffering, not a stall", function()
    local v = monitor.classify(facts{proc = true, log_mtime = 800, artifact_mtime = 998}, {stall_seconds = 60})
    assert.are.equal("running", v.state)
    assert.truthy(v.note:find("buffered", 1, true))
  end)
  it("flags a fast finish under half the expected time", function()
    local v = monitor.classify(facts{done = {exit = 0, at = 930}}, {expected_seconds = 100})
    assert.is_true(v.fast_finish)
    assert.is_nil(monitor.classify(facts{done = {exit = 0, at = 960}}, {expected_seconds = 100}).fast_finish)
  end)
  it("not launched when the box has no attempt", function()
    assert.are.equal("not_launched", monitor.classify(facts{attempt = 0}).state)
  end)
end)

describe("monitor.triage", function()
  local function t(tail, extra)
    local f = facts(extra or {})
    f.tail = tail
    return monitor.triage(f)
  end
  it("maps each log signature to its class and fixed remedy", function()
    assert.are.same({"disk_full", "prune"}, {t({"OSError: [Errno 28] No space left on device"}, {failed = {exit = 1}}).class,
      t({"iostream error"}, {failed = {exit = 1}}).remedy})
    local c = t({"torch.OutOfMemoryError: CUDA out of memory. Tried to allocate"}, {failed = {exit = 1}})
    assert.are.same({"cuda_oom", "stop"}, {c.class, c.remedy})
    c = t({"Traceback (most recent call last):", "KeyError: 'lr'"}, {failed = {exit = 1}})
    assert.are.same({"code", "stop"}, {c.class, c.remedy})
    assert.are.equal("KeyError: 'lr'", c.evidence)
  end)
  it("exit 137 is a cgroup OOM only when oom_kill grew; else a kill, relaunched", function()
    local c = t({"Killed"}, {failed = {exit = 137}, mem = {oom_kill = 1}, oom0 = 0})
    assert.are.same({"oom", "stop"}, {c.class, c.remedy})
    c = t({"step 5/10"}, {failed = {exit = 137}, mem = {oom_kill = 0}, oom0 = 0})
    assert.are.same({"probabilistic", "relaunch"}, {c.class, c.remedy})
  end)
  it("a durable-sync failure after exit 0 stops, whatever the log says", function()
    local c = t({"training finished"}, {failed = {exit = 0, stage = "durable-sync", text = "exit=0 stage=durable-sync"}})
    assert.are.same({"durable_sync", "stop"}, {c.class, c.remedy})
  end)
  it("a cell the disk gate held back is named so and stops (the trainer never ran), not an unknown exit 1", function()
    local line = "[gpurent] disk gate: cell 2 not run on node1: tier scratch (/s) is short of inodes: 5 free, below the floor of 100"
    local c = t({line}, {failed = {exit = 1, stage = "gate", text = "exit=1 stage=gate at=1 (disk gate: ...)"}})
    assert.are.same({"disk_gate", "stop"}, {c.class, c.remedy})
    assert.are.equal(line, c.evidence)
    assert.truthy(c.cause:find("disk-budget gate", 1, true), c.cause)
  end)
  it("enumerates reboot, OOM, hang-up and manual kill for a vanished job", function()
    local c = t({}, {boot_now = 7, boot0 = 5})
    assert.are.equal("probabilistic", c.class)
    assert.truthy(c.cause:find("reboot", 1, true))
    local names = {}
    for _, x in ipairs(c.causes) do names[#names + 1] = x.cause end
    assert.are.same({"reboot", "cgroup OOM kill", "SSH hang-up", "manual kill"}, names)
    c = t({}, {mem = {oom_kill = 3}, oom0 = 2})
    assert.are.same({"oom", "stop"}, {c.class, c.remedy})
    c = t({})
    assert.truthy(c.cause:find("manual kill", 1, true))
  end)
end)

describe("run.parse_queue", function()
  it("skips blanks and comments without counting them", function()
    local cells = run.parse_queue("# head\n\na fit 3\n  # x\nb fit\r\n\nc other 1\n")
    assert.are.equal(3, #cells)
    assert.are.same({1, "a", "fit", 3}, {cells[1].index, cells[1].config, cells[1].task, cells[1].epochs})
    assert.are.same({2, "b", nil}, {cells[2].index, cells[2].config, cells[2].epochs})
    assert.are.equal(3, cells[3].index)
  end)
  it("refuses a malformed line with its line number", function()
    local ok, err = pcall(run.parse_queue, "a fit\nonlyone\n")
    assert.is_false(ok)
    assert.truthy(tostring(err.msg):find("line 2", 1, true))
  end)
end)

describe("the platform's login-string parser (gpurent host add)", function()
  local autodl = require("gpurent.platform").of("autodl")
  it("reads the console's string", function()
    assert.are.same({user = "root", host = "connect.westDC2.seetacloud.com", port = 12345},
      autodl.parse_login("ssh -p 12345 root@connect.westDC2.seetacloud.com"))
    assert.are.same({user = "root", host = "h.example", port = 2200},
      autodl.parse_login("ssh root@h.example -p 2200"))
    assert.are.same({user = "me", host = "h.example", port = 22},
      require("gpurent.platform").of("generic-ssh").parse_login("ssh me@h.example"))
  end)
  it("refuses anything else, quoting the platform's own example", function()
    local ok, err = pcall(autodl.parse_login, "scp -P 1 a b")
    assert.is_false(ok)
    assert.truthy(tostring(err):find(autodl.login_example, 1, true), tostring(err))
    assert.is_false(pcall(autodl.parse_login, "ssh -p 99999 root@x"))
  end)
end)

describe("the wrapper", function()
  it("marks DONE only after the command exited 0 and the durable copy re-hashed", function()
    local r = fresh_run()
    local w = detach.wrapper(r, {command = "python train.py", sync = {"best.pth"}, scratch = {"latest.pth"},
      hook = "source /etc/network_turbo 2>/dev/null || true", version = 3})
    assert.truthy(w:find("VERSION='3'; RUN_ID='p-1'", 1, true))
    assert.truthy(w:find("export PYTHONUNBUFFERED=1", 1, true))
    assert.truthy(w:find('if sync_durable && prune_scratch && mark DONE 0 "done"', 1, true))
    assert.truthy(w:find("mark FAILED \"$rc\" train", 1, true))
    assert.truthy(w:find("mark FAILED 0 durable-sync", 1, true))
    assert.truthy(w:find('[ "$(sha256sum < "$src")" = "$(sha256sum < "$dst/$f")" ]', 1, true))
    local hook = w:find("source /etc/network_turbo", 1, true)
    assert.truthy(hook and hook < w:find("python train.py", 1, true))
    assert.truthy(w:find("/root/autodl-fs/final_ckpts/p-1", 1, true))
  end)
end)

describe("capsule roster and placeholders", function()
  it("keeps scratch, temp files and caches out of an export", function()
    local r = fresh_run()
    assert.is_true(pcall(close.check_roster, r, close.DEFAULT_ROSTER))
    for _, bad in ipairs({"latest.pth", "x/latest.pth", "a.tmp", "../x", "/abs", "cache/y"}) do
      assert.is_false(pcall(close.check_roster, r, {"best.pth", bad}), bad)
    end
    assert.is_false(pcall(close.check_roster, r, {}))
  end)
  it("fills {python} {out} {run_id} and leaves shell braces alone", function()
    local r = fresh_run()
    assert.are.equal("'/opt/py/bin/python' t.py --out '/root/autodl-tmp/p/active/p-1/out' --id p-1 ${HOME}",
      launch.expand(r, "{python} t.py --out {out} --id {run_id} ${HOME}", "/opt/py/bin/python"))
  end)
  it("names run paths from the profile, never literals", function()
    local r = fresh_run()
    assert.are.equal("/root/autodl-tmp/p", r.paths.root)
    assert.are.equal("/root/autodl-tmp/p/export/.partial/p-1", r.paths.partial)
    assert.are.equal("/root/autodl-fs/p/results", r.paths.results)
    assert.are.equal("gr-p-1", r.session)
  end)
end)

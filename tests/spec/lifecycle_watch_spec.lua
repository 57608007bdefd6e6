-- lifecycle_watch_spec.lua: the watcher against real interruptions on the simulated
-- AutoDL: the SSH connection cut mid-watch (the job runs on, watch re-attaches),
-- a trainer that does its work then hangs (stalled, not running, not finished),
-- gpurent itself SIGKILLed mid-watch (`gpurent watch RUN` from a new shell picks the
-- run up from the ledger), and the training process killed mid-run (relaunch
-- resumes from the latest checkpoint: the step count continues).
local testbed = require "testbed"

local ok_tb, why = testbed.available()

describe("lifecycle watch", function()
  if not ok_tb then pending("testbed unavailable: " .. why); return end
  local tb, pulled
  setup(function()
    tb = testbed.new()
    pulled = tb.dir .. "/pulled"
    tb:up("w1", "--region westDC2 --data-size 256M")
    tb:up("w2", "--region westDC2 --data-size 48M")
  end)
  teardown(function() if tb then tb:down() end end)

  local function active(id) return "/root/autodl-tmp/tiny/active/" .. id end

  it("survives the SSH connection being killed during watch: the job keeps running, watch re-attaches", function()
    local h = tb:spawn(testbed.train_args("w1", {local_dir = pulled, steps = 25, step_seconds = 0.2}))
    local id = h:wait_for("%[run%] run (%S+):", 20)
    assert.truthy(h:wait_for("%[watch%] t%+%d+s attempt 1 RUNNING", 60), h:output())
    -- cut every SSH connection of the instance (its sshd's per-connection processes)
    local killed, rc = tb:exec("w1", "for p in $(ps -eo pid=,ppid=,comm= | awk '$3 == \"sshd\" && $2 != 1 {print $1}'); " ..
      "do kill -9 $p && echo killed $p; done")
    assert.are.equal(0, rc, killed)
    assert.truthy(killed:find("killed %d+"), "no SSH connection was open to kill: " .. killed)
    local code = h:wait(60)
    local out = h:output()
    assert.are.equal(0, code, out)
    assert.truthy(out:find("re-attached", 1, true), out)
    assert.truthy(out:find("attempt 1 FINISHED", 1, true), out)
    assert.falsy(out:find("relaunched", 1, true), "the job must not be relaunched: it never stopped")
    assert.truthy(testbed.read(pulled .. "/" .. id .. "/PULL_VERIFIED.json"))
  end)

  it("reports a job that finished its work but hangs as STALLED within the stall window", function()
    local t0 = os.time()
    local code, out, err = tb:gpurent(testbed.train_args("w1", {local_dir = pulled, steps = 4, step_seconds = 0.05,
      extra = "--hang-at-end", stall = 2, interval = 0.5}))
    assert.are_not.equal(0, code, out)
    local id = out:match("%[run%] run (%S+):")
    local quiet = tonumber(out:match("STALLED: alive but nothing written for (%d+)s"))
    assert.truthy(quiet, out .. err)
    assert.truthy(quiet >= 2 and quiet <= 4, "stalled after " .. tostring(quiet) .. "s for a 2 s window")
    assert.truthy(out:find("not running, not finished", 1, true))
    assert.falsy(out:find("FINISHED", 1, true))
    assert.truthy(os.time() - t0 < 20)
    -- the job is still there (gpurent never kills a live job on its own), without a marker
    local o, rc = tb:exec("w1", "tmux has-session -t '=gr-" .. id .. "' && ! test -e " .. active(id) .. "/.gpurent/a1/DONE")
    assert.are.equal(0, rc, o)
    -- the ledger says the run failed, and the watch phase ended "stalled"
    local L = require("gpurent.state.ledger").open(tb.state .. "/ledger.sqlite")
    local detail
    for _, e in ipairs(L:run_history(id)) do if e.kind == "phase" and e.name == "watch" then detail = e.detail end end
    L:close()
    assert.are.equal("stalled", detail)
  end)

  it("picks the run up from the ledger with `gpurent watch RUN` after gpurent was killed mid-watch", function()
    local h = tb:spawn(testbed.train_args("w1", {local_dir = pulled, steps = 20, step_seconds = 0.2}))
    local id = h:wait_for("%[run%] run (%S+):", 20)
    assert.truthy(h:wait_for("%[watch%] t%+%d+s attempt 1 RUNNING", 60), h:output())
    h:kill()
    assert.are.equal(137, h:wait(10))
    local o, rc = tb:exec("w1", "tmux has-session -t '=gr-" .. id .. "'")
    assert.are.equal(0, rc, "the job died with gpurent: " .. o)
    local code, out, err = tb:gpurent("watch " .. id .. " --interval 0.3 --finish")
    assert.are.equal(0, code, out .. err)
    -- --finish: sealed and pulled with the roster and load command recorded in the ledger
    assert.truthy(out:find("[close] sealed", 1, true), out)
    assert.truthy(testbed.read(pulled .. "/" .. id .. "/PULL_VERIFIED.json"))
    local L = require("gpurent.state.ledger").open(tb.state .. "/ledger.sqlite")
    local status = L:run(id).status
    L:close()
    assert.are.equal("succeeded", status)
    assert.truthy(out:find("re-attaching to " .. id .. " on w1", 1, true), out)
    assert.truthy(out:find("attempt 1 FINISHED", 1, true), out)
    assert.truthy(out:find("FINISHED: exit 0", 1, true))
  end)

  it("relaunches a killed job, which resumes from its latest checkpoint (the step count continues)", function()
    local h = tb:spawn(testbed.train_args("w1", {local_dir = pulled, steps = 24, step_seconds = 0.15,
      more = "max_relaunches=1"}))
    local id = h:wait_for("%[run%] run (%S+):", 20)
    assert.truthy(h:wait_for("%[watch%] t%+%d+s attempt 1 RUNNING", 60), h:output())
    -- kill the training process by its exact PID (the wrapper's descendant running train.py)
    local script = "w=$(cat " .. active(id) .. "/.gpurent/a1/pid); " ..
      "for i in 1 2 3 4 5 6 7 8 9 10; do step=$(grep -c . " .. active(id) .. "/out/train.csv); [ $step -ge 8 ] && break; sleep 0.2; done; " ..
      "for c in $(ps -o pid= --ppid $w) $(for x in $(ps -o pid= --ppid $w); do ps -o pid= --ppid $x; done); do " ..
      "if tr '\\0' ' ' < /proc/$c/cmdline | grep -q 'train.py'; then kill -9 $c && echo killed $c; break; fi; done"
    local killed, rc = tb:exec("w1", script)
    assert.are.equal(0, rc, killed)
    assert.truthy(killed:find("killed %d+"), killed)
    local code = h:wait(60)
    local out = h:output()
    assert.are.equal(0, code, out)
    assert.truthy(out:find("killed by SIGKILL (exit 137) without a cgroup OOM", 1, true), out)
    assert.truthy(out:find("relaunched the identical command as attempt 2", 1, true), out)
    assert.truthy(out:find("attempt 2 FINISHED", 1, true), out)
    local log = tb:exec("w1", "cat " .. active(id) .. "/train.log")
    local resumed = tonumber(log:match("resumed from step (%d+)"))
    assert.truthy(resumed and resumed >= 2, log)
    local next_step = tonumber(log:match("resumed from step %d+\n[^\n]-step (%d+)/24"))
    assert.are.equal(resumed + 1, next_step)
    -- the identical wrapper, not a rewritten one
    local ls = tb:exec("w1", "ls " .. active(id) .. "/.gpurent/")
    assert.truthy(ls:find("run-v1.sh", 1, true) and not ls:find("run-v2.sh", 1, true), ls)
    local metrics = tb:exec("w1", "cat /root/autodl-tmp/tiny/export/" .. id .. "/test/final/metrics.json")
    assert.truthy(metrics:find('"steps": 24', 1, true), metrics)
  end)

  it("triages a save that hits a full data disk as disk_full: prune scratch, keep best, else ask to expand", function()
    local code, out, err = tb:gpurent(testbed.train_args("w2", {local_dir = pulled, steps = 4, step_seconds = 0.05,
      extra = "--fill-disk", more = "ckpt_size=1M"}))
    assert.are_not.equal(0, code, out)
    assert.truthy(out:find("DEAD: disk full during save", 1, true), out .. err)
    assert.truthy(out:find("No space left on device", 1, true), out)
    assert.truthy(out:find("class disk_full -> remedy prune", 1, true), out)
    -- the full tier and dimension are named; expanding is proposed for that tier only
    assert.truthy(out:find("DEAD: disk full during save: the data tier (/root/autodl-tmp) bytes (df -B1)", 1, true), out)
    assert.truthy(out:find("still full: the data tier (/root/autodl-tmp) bytes", 1, true), out)
    assert.truthy(out:find("ASK the person: free bytes on /root/autodl-tmp", 1, true), out)
    assert.truthy(out:find("or expand the data tier", 1, true), out)
    assert.falsy(out:find("expand the fs tier", 1, true), out)
    assert.falsy(out:find("relaunched", 1, true), "a full disk is never blind-relaunched")
    local id = out:match("%[run%] run (%S+):")
    local o, rc = tb:exec("w2", "test -f /root/autodl-tmp/tiny/active/" .. id .. "/out/best.pth")
    assert.are.equal(0, rc, "best.pth must be kept: " .. o)
  end)
end)

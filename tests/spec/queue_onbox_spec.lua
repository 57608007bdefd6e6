-- queue_onbox_spec.lua: the sweep queue runs ON the box (recipes/autodl_sweep.lua,
-- gpurent.lifecycle.queue, lua/gpurent/remote/run_queue.sh) on the simulated AutoDL:
-- it keeps running when the gpurent that launched it is SIGKILLed and `gpurent watch
-- QUEUE_RUN --finish` picks it up, seals and pulls its cells; Ctrl-C detaches (the
-- queue finishes on the box); a queue killed on the box is reported with the
-- start=N that resumes it; a failing cell is
-- recorded on the box and the next one runs, ending QUEUE DONE non-zero; start=N
-- resumes; two boxes of one region claim disjoint cells of one queue on the region
-- FS; the per-cell disk gate refuses a cell on inodes, naming the tier.
local testbed = require "testbed"

local ok_tb, why = testbed.available()

describe("on-box sweep queue", function()
  if not ok_tb then pending("testbed unavailable: " .. why); return end
  local tb
  setup(function()
    tb = testbed.new()
    tb:up("q1", "--region westDC2 --data-size 256M")
    tb:up("q2", "--region westDC2 --data-size 256M")
    tb:up("g1", "--region northDC1 --data-size 256M --fs-size 64M --fs-inodes 300")
  end)
  teardown(function() if tb then tb:down() end end)

  local TRAIN = T.q("train={python} train.py --config {config} --task {task} --epochs {epochs} --out {out}")
  local function sweep_args(hosts, project, queue_file, extra)
    return "run recipes/autodl_sweep.lua host=" .. hosts .. " project=" .. project .. " code=examples/tiny-train queue=" ..
      T.q(queue_file) .. " " .. TRAIN .. " interval=0.3 stall=20 " .. T.q("box_load={python} load_check.py {}") .. " " ..
      (extra or "")
  end
  local function ledger_status(id)
    local L = require("gpurent.state.ledger").open(tb.state .. "/ledger.sqlite")
    local row = L:run(id)
    L:close()
    return row and row.status
  end
  local function meta(project, id) return "/root/autodl-tmp/" .. project .. "/active/" .. id .. "/.gpurent" end

  it("keeps running when the launching gpurent is SIGKILLed; gpurent watch --finish picks it up", function()
    -- cells of ~1.5 s: the laptop is gone long before the last one starts
    local qf = T.write(tb.dir .. "/k.txt", "# three cells\n\nconfigs/ok.json fit 6\nconfigs/ok.json other 6\nconfigs/ok.json fit 7\n")
    local pulled = tb.dir .. "/pulled-k"
    local h = tb:spawn(sweep_args("q1", "kq", qf, "pull=yes local_dir=" .. T.q(pulled) .. " " ..
      T.q("load=python3 " .. T.root .. "/examples/tiny-train/load_check.py {}")))
    assert.truthy(h:wait_for("cell 1 %([^\n]*%) %-> run %S+ on q1", 90), h:output())
    h:kill()
    local before = h:output()
    assert.falsy(before:find("cell 3 (", 1, true), before)
    local sweep = before:match("%[sweep%] (%S+):")
    local qrun = sweep .. "-q1"
    -- the queue goes on without any gpurent: its last cell ends on the box
    local done
    done = tb:exec("q1", "for i in $(seq 120); do grep -q 'QUEUE DONE' " .. meta("kq", qrun) ..
      "/QDONE 2>/dev/null && break; sleep 0.5; done; cat " .. meta("kq", qrun) .. "/QDONE")
    assert.truthy(done:find("3 cell(s) run, 3 ok, 0 failed", 1, true), done)
    assert.are.equal("running", ledger_status(qrun))
    -- a new shell: per-cell state from the box, then finish (seal + pull + verify)
    local code, out, err = tb:gpurent("watch " .. qrun .. " --once")
    assert.are.equal(0, code, out .. err)
    assert.truthy(out:find("cell 3 (configs/ok.json fit 7): DONE", 1, true), out)
    code, out, err = tb:gpurent("watch " .. qrun .. " --finish --interval 0.3")
    assert.are.equal(0, code, out .. err)
    for n = 1, 3 do assert.truthy(out:find(string.format("cell %d: run %s%%-c0%d DONE", n, sweep:gsub("%p", "%%%0"), n)), out) end
    assert.truthy(out:find("[pull] VERIFIED", 1, true), out)
    for n = 1, 3 do
      local id = string.format("%s-c%02d", sweep, n)
      assert.truthy(testbed.read(pulled .. "/" .. qrun .. "/" .. id .. "/best.pth"), id)
      assert.are.equal("succeeded", ledger_status(id))
    end
    assert.are.equal("succeeded", ledger_status(qrun))
  end)

  it("Ctrl-C detaches: the sweep says how to re-attach and the queue finishes on the box", function()
    local qf = T.write(tb.dir .. "/c.txt", "configs/ok.json fit 6\nconfigs/ok.json other 6\n")
    local h = tb:spawn(sweep_args("q1", "cq", qf))
    assert.truthy(h:wait_for("cell 1 %([^\n]*%) %-> run %S+ on q1", 90), h:output())
    os.execute("kill -INT " .. h.pid)
    local code = h:wait(60)
    local out = h:output()
    assert.are.equal(130, code, out)
    local qrun = out:match("%[sweep%] (%S+):") .. "-q1"
    assert.truthy(out:find("keeps running on the box; re-attach with `gpurent watch " .. qrun .. "`", 1, true), out)
    assert.are.equal("detached", ledger_status(qrun))
    local done = tb:exec("q1", "for i in $(seq 120); do grep -q 'QUEUE DONE' " .. meta("cq", qrun) ..
      "/QDONE 2>/dev/null && break; sleep 0.5; done; cat " .. meta("cq", qrun) .. "/QDONE")
    assert.truthy(done:find("2 cell(s) run, 2 ok, 0 failed", 1, true), done)
  end)

  it("Ctrl-C of a sweep over two boxes detaches both queues, naming each re-attach command", function()
    local qf = T.write(tb.dir .. "/c2.txt", "configs/ok.json fit 6\nconfigs/ok.json other 6\nconfigs/ok.json fit 5\n")
    local h = tb:spawn(sweep_args("q1,q2", "cq2", qf))
    assert.truthy(h:wait_for("%[q1%] %[queue%] queue %S+ runs on q1", 90), h:output())
    assert.truthy(h:wait_for("%[q2%] %[queue%] queue %S+ runs on q2", 90), h:output())
    os.execute("kill -INT " .. h.pid)
    local code = h:wait(60)
    local out = h:output()
    assert.are.equal(130, code, out)
    local sweep = out:match("%[sweep%] (%S+):")
    for _, host in ipairs({"q1", "q2"}) do
      assert.truthy(out:find("`gpurent watch " .. sweep .. "-" .. host .. "`", 1, true), out)
      assert.are.equal("detached", ledger_status(sweep .. "-" .. host))
    end
  end)

  it("records a failing cell and runs the next, ending QUEUE DONE non-zero; start=3 runs only cell 3", function()
    local qf = T.write(tb.dir .. "/f.txt", "# ablation\n\nconfigs/ok.json fit 2\n   # not a cell\nconfigs/crash.json fit\n\nconfigs/ok.json other 1\n")
    local code, out, err = tb:gpurent(sweep_args("q1", "fq", qf))
    assert.are_not.equal(0, code, out .. err)
    local done = out:match("\nQUEUE DONE [^\n]*")
    assert.truthy(done, out .. err)
    assert.truthy(done:find("3 cell(s) run, 2 ok, 1 failed: cell 2 (", 1, true), done)
    assert.truthy(out:find("class code -> remedy stop", 1, true), out)
    local qrun = done:match("QUEUE DONE (%S+):") .. "-q1"
    -- on the box: cell 2 failed, cell 3 started after it, QUEUE DONE exit 1
    local events = tb:exec("q1", "cat " .. meta("fq", qrun) .. "/cells.log")
    local fail_at = events:find("end 2 %S+ failed")
    local start3 = events:find("start 3 ")
    assert.truthy(fail_at and start3 and start3 > fail_at, events)
    local qdone = tb:exec("q1", "cat " .. meta("fq", qrun) .. "/QDONE")
    assert.truthy(qdone:find("^exit=1 ") and qdone:find("QUEUE DONE", 1, true), qdone)
    assert.are.equal("failed", ledger_status(qrun))
    -- start=3: only cell 3 waits in the box's queue
    code, out, err = tb:gpurent(sweep_args("q1", "fq", qf, "start=3"))
    assert.are.equal(0, code, out .. err)
    assert.truthy(out:find("running 1 (from cell 3)", 1, true), out)
    -- the sweep's boxes go through the install phase (AD9) before the queue starts
    local p_install, p_queue = out:find("[install] no requirements.txt in the code", 1, true),
      out:find("[queue] created the queue", 1, true)
    assert.truthy(p_install and p_install < p_queue, out)
    qrun = out:match("\nQUEUE DONE (%S+): 1 cell%(s%) run, 1 ok, 0 failed") .. "-q1"
    events = tb:exec("q1", "cat " .. meta("fq", qrun) .. "/cells.log")
    assert.truthy(events:find("^start 3 "), events)
    assert.falsy(events:find("start [12] "), events)
  end)

  it("a queue killed on the box is reported gone, with the start=N that resumes it", function()
    local qf = T.write(tb.dir .. "/d.txt", "configs/ok.json fit 6\nconfigs/ok.json other 6\nconfigs/ok.json fit 5\n")
    local h = tb:spawn(sweep_args("q1", "dq", qf))
    assert.truthy(h:wait_for("cell 2 %([^\n]*%) %-> run %S+ on q1", 90), h:output())
    local qrun = h:output():match("%[sweep%] (%S+):") .. "-q1"
    local o, rc = tb:exec("q1", "kill -9 $(cat " .. meta("dq", qrun) .. "/queue.pid)")
    assert.are.equal(0, rc, o)
    local code = h:wait(60)
    local out = h:output()
    assert.are_not.equal(0, code, out)
    assert.truthy(out:find("queue " .. qrun .. " on q1 is gone without QUEUE DONE (cell 2 started and not ended, " ..
      "1 cell(s) still pending): the box rebooted or the queue was killed; run the rest with start=2", 1, true), out)
    assert.truthy(out:find("\nQUEUE DONE %S+: 2 cell%(s%) run, 1 ok, 0 failed; 1 cell%(s%) not run; 1 host%(s%) failed"), out)
  end)

  it("two boxes of one region claim disjoint cells of one queue on the region FS", function()
    local qf = T.write(tb.dir .. "/two.txt", "configs/ok.json fit 6\nconfigs/ok.json other 6\nconfigs/ok.json fit 5\nconfigs/ok.json other 5\n")
    local code, out, err = tb:gpurent(sweep_args("q1,q2", "tq", qf))
    assert.are.equal(0, code, out .. err)
    local sweep = out:match("\nQUEUE DONE (%S+): 4 cell%(s%) run, 4 ok, 0 failed")
    assert.truthy(sweep, out)
    local claimed = {}
    for _, host in ipairs({"q1", "q2"}) do
      local ls = tb:exec("q2", "ls /root/autodl-fs/tq/queues/" .. sweep .. "/claimed/" .. host)
      claimed[host] = {}
      for n in ls:gmatch("cell%.(%d+)") do claimed[host][#claimed[host] + 1] = tonumber(n) end
      assert.truthy(#claimed[host] >= 1, host .. " claimed no cell: " .. out)
    end
    local seen = {}
    for _, host in ipairs({"q1", "q2"}) do
      for _, n in ipairs(claimed[host]) do
        assert.falsy(seen[n], "cell " .. n .. " claimed twice")
        seen[n] = host
        assert.truthy(out:find("[" .. host .. "] [cell] cell " .. n .. " (", 1, true), out)
      end
    end
    for n = 1, 4 do assert.truthy(seen[n], "cell " .. n .. " not claimed") end
    assert.are.equal("0", (tb:exec("q1", "ls /root/autodl-fs/tq/queues/" .. sweep .. "/pending | wc -l"):match("%d+")))
  end)

  it("the disk gate refuses a cell on inodes, naming the tier", function()
    -- leave 20 free inodes on the region FS (the floor is 50)
    local o, rc = tb:exec("g1", "mkdir -p /root/autodl-fs/other && i=0; while [ $(df -P -i /root/autodl-fs | awk 'NR==2{print $4}') -gt 20 ]; " ..
      "do touch /root/autodl-fs/other/f$i; i=$((i+1)); done; df -P -i /root/autodl-fs | tail -n 1")
    assert.are.equal(0, rc, o)
    local qf = T.write(tb.dir .. "/g.txt", "configs/ok.json fit 1\nconfigs/ok.json other 1\n")
    local code, out, err = tb:gpurent(sweep_args("g1", "gq", qf, "floor_inodes=50"))
    assert.are_not.equal(0, code, out .. err)
    assert.truthy(out:find("DISK GATE on g1: cell 1 not run: tier fs %(/root/autodl%-fs%) is short of inodes: %d+ free, " ..
      "below the floor of 50"), out)
    local done = out:match("\nQUEUE DONE [^\n]*")
    assert.truthy(done and done:find("0 cell(s) run, 0 ok, 0 failed; 2 cell(s) not run", 1, true), out)
    assert.truthy(err:find("no cell ran", 1, true), err)
    local qrun = done:match("QUEUE DONE (%S+):") .. "-g1"
    local log = tb:exec("g1", "cat /root/autodl-tmp/gq/active/" .. qrun .. "/train.log")
    assert.truthy(log:find("GATE: cell 1 not run: tier fs (/root/autodl-fs) is short of inodes", 1, true), log)
    tb:exec("g1", "rm -rf /root/autodl-fs/other")
  end)
end)

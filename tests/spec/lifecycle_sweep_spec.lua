-- lifecycle_sweep_spec.lua: recipes/autodl_sweep.lua on the simulated AutoDL. Queue
-- semantics (LIFECYCLE.md): comments and blanks not counted, a failing cell named in
-- QUEUE DONE with a non-zero exit, start=N resuming from cell N only; and a cell
-- whose training exits 0 but whose durable sync hits the region FS inode cap is
-- failed, not succeeded.
local testbed = require "testbed"

local ok_tb, why = testbed.available()

describe("lifecycle sweep", function()
  if not ok_tb then pending("testbed unavailable: " .. why); return end
  local tb, queue
  setup(function()
    tb = testbed.new()
    tb:up("s1", "--region westDC2 --data-size 256M")
    tb:up("s2", "--region westDC2 --data-size 256M")
    tb:up("i1", "--region northDC1 --data-size 256M --fs-size 64M --fs-inodes 400")
    queue = T.write(tb.dir .. "/queue.txt",
      "# ablation: config task [epochs]\n\nconfigs/ok.json fit 2\n   # a comment, not a cell\nconfigs/crash.json fit\n\nconfigs/ok.json other 1\n")
  end)
  teardown(function() if tb then tb:down() end end)

  local function sweep_args(hosts, extra)
    return "run recipes/autodl_sweep.lua host=" .. hosts .. " project=sw code=examples/tiny-train queue=" .. T.q(queue) ..
      " " .. T.q("train={python} train.py --config {config} --task {task} --epochs {epochs} --out {out}") ..
      " interval=0.3 stall=20 " .. T.q("box_load={python} load_check.py {}") .. " " .. (extra or "")
  end

  it("names the failing cell in QUEUE DONE and exits non-zero; start=3 runs only cell 3", function()
    local code, out, err = tb:gpurent(sweep_args("s1,s2", "pull=yes local_dir=" .. T.q(tb.dir .. "/pulled") ..
      " " .. T.q("load=python3 " .. T.root .. "/examples/tiny-train/load_check.py {}")))
    assert.are_not.equal(0, code)
    assert.truthy(out:find("3 cells in", 1, true), out)
    local done = out:match("\nQUEUE DONE [^\n]*")
    assert.truthy(done, out .. err)
    assert.truthy(done:find("3 cell(s) run, 2 ok, 1 failed", 1, true), done)
    assert.truthy(done:find("cell 2 (", 1, true), done)
    assert.falsy(done:find("cell 1 (", 1, true) or done:find("cell 3 (", 1, true), done)
    -- both hosts took cells from the one queue
    assert.truthy(out:find("%-> run %S+ on s1") and out:find("%-> run %S+ on s2"), out)
    assert.truthy(out:find("class code -> remedy stop", 1, true))
    -- the ok cells were pulled and verified per host
    assert.truthy(select(2, out:gsub("%[pull%] VERIFIED", "")) >= 1, out)
    code, out, err = tb:gpurent(sweep_args("s1", "start=3"))
    assert.are.equal(0, code, out .. err)
    assert.truthy(out:find("running 1 (from cell 3)", 1, true), out)
    assert.truthy(out:find("cell 3 (configs/ok.json other 1)", 1, true), out)
    assert.falsy(out:find("cell 1 (", 1, true) or out:find("cell 2 (", 1, true), out)
    assert.truthy(out:find("QUEUE DONE %S+: 1 cell%(s%) run, 1 ok, 0 failed"), out)
  end)

  it("a failed host is not a cell, its ledger entry is ended, and every line of several hosts names its host", function()
    -- a host whose sshd refuses: it fails at connect, the other host runs every cell
    local cfg = tb.dir .. "/ssh_config"
    T.write(cfg, T.read(cfg) .. "\nHost deadbox\n  HostName 127.0.0.1\n  Port 1\n  User root\n")
    local q2 = T.write(tb.dir .. "/two.txt", "configs/ok.json fit 1\nconfigs/ok.json other 1\n")
    local code, out, err = tb:gpurent((sweep_args("s1,deadbox", ""):gsub(T.q(queue):gsub("%p", "%%%0"), T.q(q2))))
    assert.are_not.equal(0, code, out .. err)
    local done = out:match("\nQUEUE DONE [^\n]*")
    assert.truthy(done, out .. err)
    assert.truthy(done:find("2 cell(s) run, 2 ok, 0 failed; 1 host(s) failed: host deadbox: ", 1, true), done)
    -- no unlabelled line from a host's runs: each says which host it is about
    for line in out:gmatch("[^\n]+") do
      if line:match("^%[(%a+)%]") and not line:match("^%[sweep%]") then
        assert.truthy(line:match("^%[s1%] ") or line:match("^%[deadbox%] "), "unlabelled: " .. line)
      end
    end
    assert.truthy(out:find("\n%[s1%] %[cell%] cell %d: run %S+ DONE on the box"), out)
    assert.truthy(out:find("\n%[deadbox%] %[run%] run %S+ FAILED: cannot reach deadbox"), out)
    local sweep = done:match("QUEUE DONE (%S+):")
    local L = require("gpurent.state.ledger").open(tb.state .. "/ledger.sqlite")
    local status = L:run(sweep .. "-deadbox").status
    L:close()
    assert.are.equal("failed", status)
  end)

  it("a sweep of zero cells is a failure", function()
    local code, out, err = tb:gpurent(sweep_args("s1", "start=9"))
    assert.are.equal(2, code, out .. err)
    assert.truthy(err:find("no cell to run: [^\n]* holds 3 cell%(s%) and start=9"), err)
  end)

  it("fails a cell whose training exited 0 when the durable sync hits the inode cap", function()
    T.write(tb.dir .. "/one.txt", "configs/slow.json fit\n")
    local args = "run recipes/autodl_sweep.lua host=i1 project=ic code=examples/tiny-train queue=" .. T.q(tb.dir .. "/one.txt") ..
      " " .. T.q("train={python} train.py --config {config} --task {task} --epochs {epochs} --out {out}") ..
      " interval=0.3 stall=20 floor_inodes=10 " .. T.q("box_load={python} load_check.py {}")
    local h = tb:spawn(args)
    assert.truthy(h:wait_for("%[watch%] t%+%d+s cell 1 attempt 1 RUNNING", 60), h:output())
    -- another user of the region FS eats every inode while the cell trains
    local o, rc = tb:exec("i1", "mkdir -p /root/autodl-fs/other && i=0; while touch /root/autodl-fs/other/f$i 2>/dev/null; " ..
      "do i=$((i+1)); done; df -i /root/autodl-fs | tail -n 1")
    assert.are.equal(0, rc, o)
    assert.truthy(o:find("100%%"), o)
    local code = h:wait(60)
    local out = h:output()
    assert.are_not.equal(0, code, out)
    assert.truthy(out:find("FAILED exit 0 at durable%-sync"), out)
    assert.truthy(out:find("class durable_sync -> remedy stop", 1, true), out)
    -- the triage names the tier and the dimension that filled, and advises on that one only
    assert.truthy(out:find("durable tier failed: the fs tier (/root/autodl-fs) inodes (df -i): 400/400 used", 1, true), out)
    assert.truthy(out:find("full: the fs tier's inodes -> free inodes on /root/autodl-fs", 1, true), out)
    assert.falsy(out:find("expand", 1, true), out)
    assert.truthy(out:find("QUEUE DONE %S+: 1 cell%(s%) run, 0 ok, 1 failed: cell 1"), out)
    local id = out:match("%-> run (%S+) on i1")
    local log = tb:exec("i1", "cat /root/autodl-tmp/ic/active/" .. id .. "/train.log")
    assert.truthy(log:find("training finished", 1, true), log)
    assert.truthy(log:find("durable sync FAILED", 1, true), log)
    assert.truthy(log:find("df -i /root/autodl-fs", 1, true), log)
    local L = require("gpurent.state.ledger").open(tb.state .. "/ledger.sqlite")
    local status = L:run(id).status
    L:close()
    assert.are.equal("failed", status)
  end)
end)

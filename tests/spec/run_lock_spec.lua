-- run_lock_spec: one process at a time finishes a run (issue 15). Two `gpurent watch
-- RUN --finish` started at once on the simulated AutoDL: exactly one seals and pulls,
-- the other stops naming the holder's host and PID (or, if it came late, finds the
-- run already finished and says so); no false "sha256 differs", no quarantine.
local testbed = require "testbed"

local ok_tb, why = testbed.available()

local function hostname()
  local f = assert(io.open("/proc/sys/kernel/hostname"))
  local h = f:read("l")
  f:close()
  return h
end

describe("finishing a run", function()
  if not ok_tb then pending("testbed unavailable: " .. why); return end
  local tb, pulled
  setup(function()
    tb = testbed.new()
    pulled = tb.dir .. "/pulled"
    tb:up("f1", "--region westDC2 --data-size 256M")
  end)
  teardown(function() if tb then tb:down() end end)

  local function active(id) return "/root/autodl-tmp/tiny/active/" .. id end

  -- A run whose gpurent was SIGKILLed mid-watch and whose job then finished on the box.
  local function orphaned_finished_run()
    local h = tb:spawn(testbed.train_args("f1", {local_dir = pulled, steps = 8, step_seconds = 0.2}))
    local id = h:wait_for("%[run%] run (%S+):", 20)
    assert.truthy(id, h:output())
    assert.truthy(h:wait_for("%[watch%] t%+%d+s attempt 1 RUNNING", 60), h:output())
    h:kill()
    assert.are.equal(137, h:wait(10))
    local o, rc = tb:exec("f1", "for i in $(seq 1 200); do [ -f " .. active(id) ..
      "/.gpurent/a1/DONE ] && exit 0; sleep 0.1; done; exit 1")
    assert.are.equal(0, rc, "the job did not finish on the box: " .. o)
    return id
  end

  it("two `watch RUN --finish` at once: one seals and pulls, the other names the holder", function()
    local id = orphaned_finished_run()
    local a = tb:spawn("watch " .. id .. " --interval 0.3 --finish")
    local b = tb:spawn("watch " .. id .. " --interval 0.3 --finish")
    local ca, cb = a:wait(180), b:wait(180)
    local oa, ob = a:output(), b:output()
    local both = oa .. "\n----\n" .. ob
    assert.truthy(ca and cb, "a finisher did not exit within 180 s:\n" .. both)
    -- exactly one sealed the export
    local sealed_a, sealed_b = oa:find("[close] sealed", 1, true) ~= nil, ob:find("[close] sealed", 1, true) ~= nil
    assert.are_not.equal(sealed_a, sealed_b, "exactly one finisher must seal:\n" .. both)
    local winner, loser, wout, lout, lcode = a, b, oa, ob, cb
    if sealed_b then winner, loser, wout, lout, lcode = b, a, ob, oa, ca end
    assert.are.equal(0, winner == a and ca or cb, both)
    assert.truthy(wout:find("VERIFIED", 1, true), wout)
    -- the other one: stopped at the lock naming the holder, or came after and said so
    local named = lout:find(("host %s, PID %d"):format(hostname(), winner.pid), 1, true)
    local late = lout:find("already finished", 1, true)
    assert.truthy(named or late, "the second finisher neither named the holder nor found the run finished:\n" .. lout)
    if named then assert.are.equal(3, lcode, lout) else assert.are.equal(0, lcode, lout) end
    -- nothing false, nothing quarantined, the result verified, the run succeeded
    assert.falsy(both:find("sha256 differs", 1, true), both)
    assert.falsy(both:find("quarantine", 1, true), both)
    local q, rc = tb:exec("f1", "ls /root/autodl-tmp/tiny/quarantine/ 2>/dev/null | grep -F -- " .. T.q(id))
    assert.are_not.equal(0, rc, "quarantined: " .. q)
    assert.truthy(testbed.read(pulled .. "/" .. id .. "/PULL_VERIFIED.json"))
    local L = require("gpurent.state.ledger").open(tb.state .. "/ledger.sqlite")
    local status = L:run(id).status
    L:close()
    assert.are.equal("succeeded", status)
  end)

  local function ledger_status(id)
    local L = require("gpurent.state.ledger").open(tb.state .. "/ledger.sqlite")
    local status = L:run(id).status
    L:close()
    return status
  end

  -- The owner line gpurent.lock writes (its format), for a holder we make up.
  local function owner_line(o)
    return ("gpurent-lock host=%s pid=%s start=%s boot=%s nonce=%s since=%d"):format(o.host, o.pid, o.start,
      o.boot, "feedfacefeedface", os.time() - 60)
  end

  local function boot_id()
    local f = assert(io.open("/proc/sys/kernel/random/boot_id"))
    local b = f:read("l")
    f:close()
    return b
  end

  it("a finish lock held from another machine is refused naming its holder; removed as told, the run finishes", function()
    local id = orphaned_finished_run()
    local lockp = active(id) .. "/.gpurent/finish.lock"
    local o, rc = tb:exec("f1", "ln -s " .. T.q(owner_line{host = "laptop-elsewhere", pid = 4242, start = 77,
      boot = "0000"}) .. " " .. lockp)
    assert.are.equal(0, rc, o)
    local code, out, err = tb:gpurent("watch " .. id .. " --interval 0.3 --finish")
    assert.are.equal(3, code, out .. err)
    assert.truthy(err:find("run " .. id .. " is being finished by another gpurent (host laptop-elsewhere, PID 4242", 1, true), err)
    assert.truthy(err:find("rm -- '" .. lockp .. "'", 1, true), err)
    assert.falsy(out:find("[close]", 1, true), out)
    assert.are.equal("running", ledger_status(id))      -- the refusal does not mark the run failed
    -- as the message says: remove the lock, run it again
    o, rc = tb:exec("f1", "rm -- " .. lockp)
    assert.are.equal(0, rc, o)
    code, out, err = tb:gpurent("watch " .. id .. " --interval 0.3 --finish")
    assert.are.equal(0, code, out .. err)
    assert.truthy(out:find("[close] sealed", 1, true), out)
    assert.are.equal("succeeded", ledger_status(id))
    o, rc = tb:exec("f1", "test ! -e " .. lockp .. " && test ! -L " .. lockp)
    assert.are.equal(0, rc, "the finish lock was left on the box")
  end)

  it("locks left by a finisher that died on this machine are taken over", function()
    local id = orphaned_finished_run()
    -- a PID that has exited: the holder is gone
    local p = io.popen("sh -c 'echo $$'")
    local dead = p:read("l")
    p:close()
    local line = owner_line{host = hostname(), pid = dead, start = 1, boot = boot_id()}
    local lockp = active(id) .. "/.gpurent/finish.lock"
    local o, rc = tb:exec("f1", "ln -s " .. T.q(line) .. " " .. lockp)
    assert.are.equal(0, rc, o)
    os.execute("mkdir -p " .. T.q(tb.state .. "/locks"))
    T.write(tb.state .. "/locks/" .. id .. ".finish", line .. "\n")   -- its local lock file, unlocked
    local code, out, err = tb:gpurent("watch " .. id .. " --interval 0.3 --finish")
    assert.are.equal(0, code, out .. err)
    assert.truthy(out:find("took over the finish lock of run " .. id .. " left by host " .. hostname() ..
      ", PID " .. dead, 1, true), out)
    assert.truthy(out:find("[close] sealed", 1, true), out)
    assert.are.equal("succeeded", ledger_status(id))
  end)

  it("a finisher that comes after the run was finished says so and does not redo it", function()
    local id = orphaned_finished_run()
    local code, out, err = tb:gpurent("watch " .. id .. " --interval 0.3 --finish")
    assert.are.equal(0, code, out .. err)
    code, out, err = tb:gpurent("watch " .. id .. " --interval 0.3 --finish")
    assert.are.equal(0, code, out .. err)
    assert.truthy(out:find("run " .. id .. " was already finished by another gpurent", 1, true), out)
    assert.falsy(out:find("[pull]", 1, true), out)
  end)
end)

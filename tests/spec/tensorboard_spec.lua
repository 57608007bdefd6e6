-- tensorboard_spec.lua: `gpurent tensorboard HOST [--restart]` on the simulated AutoDL
-- (seed AD7): the pinned TensorBoard (the testbed's stand-in keeps a deleted run
-- listed until the server restarts, as the real one does) lists a stale run; the
-- restart stops that exact process, starts the same command line again, and the
-- stale run is gone while the live one stays.
local testbed = require "testbed"

local ok_tb, why = testbed.available()

local function free_port()
  local p = io.popen("/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind((\"127.0.0.1\", 0)); " ..
    "print(s.getsockname()[1])'")
  local port = tonumber(p:read("a"):match("%d+"))
  p:close()
  return port
end

describe("gpurent tensorboard", function()
  if not ok_tb then pending("testbed unavailable: " .. why); return end
  local tb, port
  setup(function()
    tb = testbed.new()
    port = free_port()
    tb:up("t1", "--region westDC2 --data-size 32M --tensorboard-port " .. port .. " --tensorboard-reload 0.2")
  end)
  teardown(function() if tb then tb:down() end end)

  local function cmd(extra)
    return "tensorboard t1 --profile autodl --port " .. port .. (extra or "")
  end

  it("--restart evicts a deleted run the pinned TensorBoard still lists; the live run stays", function()
    local o, rc = tb:exec("t1", "mkdir -p /root/tf-logs/keep /root/tf-logs/gone && : > /root/tf-logs/keep/events.out.tfevents.1 " ..
      "&& : > /root/tf-logs/gone/events.out.tfevents.1 && sleep 1 && rm -rf /root/tf-logs/gone && sleep 0.5")
    assert.are.equal(0, rc, o)
    local code, out, err = tb:gpurent(cmd())
    assert.are.equal(0, code, out .. err)
    assert.truthy(out:find("lists 2 run(s): gone, keep", 1, true), out)   -- stale: deleted, still listed
    code, out, err = tb:gpurent(cmd(" --restart"))
    assert.are.equal(0, code, out .. err)
    local old, new = out:match("pid (%d+) stopped; restarted as pid (%d+)")
    assert.truthy(old and new and old ~= new, out)
    assert.truthy(out:find("runs before: gone, keep", 1, true), out)
    assert.truthy(out:find("runs after:  keep\n", 1, true), out)
    assert.truthy(out:find("evicted (stale: deleted or renamed since loaded): gone", 1, true), out)
    code, out, err = tb:gpurent(cmd())
    assert.are.equal(0, code, out .. err)
    assert.truthy(out:find("lists 1 run(s): keep", 1, true), out)
    -- the old process is gone; the new one serves the same logdir and port
    o = tb:exec("t1", "kill -0 " .. old .. " 2>/dev/null && echo alive || echo gone; tr '\\0' ' ' < /proc/" .. new .. "/cmdline")
    assert.truthy(o:match("^gone\n"), o)
    assert.truthy(o:find("--logdir /root/tf-logs --port " .. port, 1, true), o)
  end)

  it("says so when no TensorBoard serves the pinned logdir on the port", function()
    local code, out, err = tb:gpurent("tensorboard t1 --profile autodl --port " .. free_port() .. " --restart")
    assert.are.equal(1, code, out .. err)
    assert.truthy(err:find("no tensorboard process serving /root/tf-logs on port", 1, true), err)
  end)
end)

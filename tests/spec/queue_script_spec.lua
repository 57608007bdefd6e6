-- queue_script_spec.lua: the on-box queue loop (lua/gpurent/remote/run_queue.sh) run
-- locally under dash and bash, with stand-in cell wrappers that write the same
-- DONE/FAILED markers as run_wrapper.sh: cells run in number order (cell.10 after
-- cell.9), a failed cell is recorded and the next one runs, QUEUE DONE exits 1; the
-- gate refuses on bytes naming the tier; two queues on one queue directory claim
-- disjoint cells that together are all of them.
local remote = require "gpurent.remote"
local q = T.q

-- a stand-in for run_wrapper.sh: sleeps, then DONE, or FAILED when the cell's id ends in -bad
local WRAPPER = [[#!/bin/bash
D="$(dirname "$0")/a$1"; mkdir -p "$D"; sleep 0.1
case "$0" in *-bad/*) printf 'exit=1 stage=train at=1\n' > "$D/FAILED"; exit 1 ;; esac
printf 'exit=0 stage=done at=1\n' > "$D/DONE"
]]

local function setup_box(ids)
  local dir = T.tmpdir()
  local qdir = dir .. "/queue"
  os.execute("mkdir -p " .. q(qdir .. "/pending"))
  for n, id in pairs(ids) do
    T.write(qdir .. "/pending/cell." .. n, id .. "\n")
    os.execute("mkdir -p " .. q(dir .. "/active/" .. id .. "/.gpurent"))
    T.write(dir .. "/active/" .. id .. "/.gpurent/run-v1.sh", WRAPPER)
  end
  return dir, qdir
end

local function script(dir, qdir, host, o)
  o = o or {}
  os.execute("mkdir -p " .. q(dir .. "/" .. host))
  return T.write(dir .. "/" .. host .. "/queue.sh", remote.script("run_queue", {RUN_ID = "sw-" .. host, HOST = host,
    META = dir .. "/" .. host, LOG = dir .. "/" .. host .. "/queue.log", QDIR = qdir, ACTIVE = dir .. "/active",
    SHARED = o.shared and 1 or 0, GATE = o.gate or ("data\t1\t1\t" .. dir)}))
end

local function events(dir, host) return T.read(dir .. "/" .. host .. "/cells.log") or "" end

for _, shell in ipairs({"dash", "bash"}) do
  describe("run_queue.sh under " .. shell, function()
    it("runs cells in number order, records a failed one and goes on, ends QUEUE DONE exit 1", function()
      local ids = {}
      for n = 1, 10 do ids[n] = "c" .. n .. (n == 2 and "-bad" or "") end
      local dir, qdir = setup_box(ids)
      local _, _, code = os.execute(shell .. " " .. q(script(dir, qdir, "h1")) .. " >/dev/null 2>&1")
      assert.are.equal(1, code)
      local ev = events(dir, "h1")
      local order = {}
      for n in ev:gmatch("start (%d+) ") do order[#order + 1] = tonumber(n) end
      assert.are.same({1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, order)
      assert.truthy(ev:find("end 2 c2-bad failed exit=1 stage=train", 1, true), ev)
      local done = T.read(dir .. "/h1/QDONE")
      assert.truthy(done:find("^exit=1 ran=10 ok=9 failed=1"), done)
      assert.truthy(done:find("QUEUE DONE sw-h1 on h1: 10 cell(s) run, 9 ok, 1 failed: cell 2 (c2-bad: exit=1", 1, true), done)
      T.rmtree(dir)
    end)

    it("refuses at the gate on bytes, naming the tier, and runs nothing", function()
      local dir, qdir = setup_box({"c1", "c2"})
      local gate = "data\t" .. string.format("%d", 1 << 60) .. "\t1\t" .. dir
      local _, _, code = os.execute(shell .. " " .. q(script(dir, qdir, "h1", {gate = gate})) .. " >/dev/null 2>&1")
      assert.are.equal(1, code)
      assert.truthy(events(dir, "h1"):find("^gate 1 tier data %(" .. dir:gsub("%p", "%%%0") .. "%) is short of bytes: %d+ free"),
        events(dir, "h1"))
      assert.truthy(T.read(dir .. "/h1/queue.log"):find("GATE: cell 1 not run: tier data", 1, true))
      assert.truthy(T.read(qdir .. "/pending/cell.1") and T.read(qdir .. "/pending/cell.2"), "a refused cell stays pending")
      T.rmtree(dir)
    end)

    it("two queues on one queue directory claim disjoint cells, all of them", function()
      local ids = {}
      for n = 1, 12 do ids[n] = "c" .. n end
      local dir, qdir = setup_box(ids)
      local a, b = script(dir, qdir, "h1", {shared = true}), script(dir, qdir, "h2", {shared = true})
      local _, _, code = os.execute(shell .. " " .. q(a) .. " >/dev/null 2>&1 & " .. shell .. " " .. q(b) ..
        " >/dev/null 2>&1 & wait")
      assert.are.equal(0, code)
      local seen, count = {}, 0
      for _, host in ipairs({"h1", "h2"}) do
        for n in events(dir, host):gmatch("start (%d+) ") do
          assert.falsy(seen[n], "cell " .. n .. " ran on " .. tostring(seen[n]) .. " and " .. host)
          seen[n], count = host, count + 1
        end
      end
      assert.are.equal(12, count)
      T.rmtree(dir)
    end)
  end)
end

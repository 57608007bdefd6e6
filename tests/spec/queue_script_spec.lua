-- queue_script_spec.lua: the on-box queue loop (lua/gpurent/remote/run_queue.sh) run
-- locally under dash and bash, with stand-in cell wrappers that write the same
-- DONE/FAILED markers as run_wrapper.sh: cells run in number order (cell.10 after
-- cell.9), a failed cell is recorded and the next one runs, QUEUE DONE exits 1; the
-- gate refuses on bytes naming the tier; two queues on one queue directory claim
-- disjoint cells that together are all of them; the budget handed over at launch, and
-- a live autostop watchdog's budget, stop the queue before the next cell (the cells
-- left recorded as not started, QUEUE DONE exit 3).
local remote = require "gpurent.remote"
local q = T.q

-- a stand-in for run_wrapper.sh: sleeps, then DONE, or FAILED when the cell's id ends in -bad
local WRAPPER = [[#!/bin/bash
D="$(dirname "$0")/a$1"; mkdir -p "$D"; sleep 0.1
case "$0" in *-slow/*) sleep 1.2 ;; *-long/*) sleep 4.2 ;; esac
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
    SHARED = o.shared and 1 or 0, GATE = o.gate or ("data\t1\t1\t" .. dir), BUDGET_MILLI = o.budget or 0,
    SPENT_MILLI = o.spent or 0, SPENT_AT = o.spent_at or 0, PRICE_MILLI = o.price or 0}))
end

-- HOME is the box's: the autostop watchdog's state dir is $HOME/.gpurent/autostop
local function run(shell, dir, path)
  local _, _, code = os.execute("HOME=" .. q(dir) .. " " .. shell .. " " .. q(path) .. " >/dev/null 2>&1")
  return code
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

    it("stops before the next cell once the budget handed at launch is spent: not started (budget), exit 3", function()
      local dir, qdir = setup_box({"c1-long", "c2-long", "c3-long"})
      -- 6 of 10 yuan spent at start, at 3600 yuan/h (1 yuan/s): cell 1 (4.3 s) spends the rest.
      -- The clock has 1-s steps and a loaded machine starts the script late, so cell 1 may
      -- start up to 3 s after spent_at and still be inside the budget
      local code = run(shell, dir, script(dir, qdir, "h1", {budget = 10000, spent = 6000, spent_at = os.time(),
        price = 3600000}))
      assert.are.equal(3, code)
      local ev = events(dir, "h1")
      assert.truthy(ev:find("^start 1 c1%-long"), ev)
      assert.falsy(ev:find("start 2 ", 1, true), ev)
      assert.truthy(ev:find("\nbudget 2 the budget is spent: 1%d%.%d%d of 10%.00 yuan at 3600%.00 yuan/h"), ev)
      assert.truthy(ev:find("notrun 2 budget\nnotrun 3 budget", 1, true), ev)
      assert.falsy(ev:find("failed", 1, true), ev)
      local done = T.read(dir .. "/h1/QDONE")
      assert.truthy(done:find("^exit=3 ran=1 ok=1 failed=0"), done)
      assert.truthy(done:find("stopped by the budget before cell 2: the budget is spent", 1, true), done)
      assert.truthy(done:find("not started (budget): cell(s) 2, 3", 1, true), done)
      assert.truthy(T.read(qdir .. "/pending/cell.2") and T.read(qdir .. "/pending/cell.3"), "start=N resumes them")
      T.rmtree(dir)
    end)

    it("respects a live autostop watchdog's spent budget, and ignores a dead one's config", function()
      local dir, qdir = setup_box({"c1", "c2"})
      local st = dir .. "/.gpurent/autostop"
      os.execute("mkdir -p " .. q(st))
      -- the watchdog's config as autostop.arm writes it: 2 of 1 yuan spent at arming
      T.write(st .. "/config", "BUDGET_MILLI='1000'\nSPENT_MILLI='2000'\nPRICE_MILLI='500'\nARMED_AT=" .. os.time() .. "\n")
      T.write(st .. "/autostop-0123456789abcdef.sh", "sleep 60\n")
      -- no live watchdog: its left-over config does not stop the queue
      assert.are.equal(0, run(shell, dir, script(dir, qdir, "h0")))
      assert.truthy(events(dir, "h0"):find("start 2 ", 1, true), events(dir, "h0"))
      local dir2, qdir2 = setup_box({"c1", "c2"})
      os.execute("mkdir -p " .. q(dir2 .. "/.gpurent") .. " && cp -r " .. q(st) .. " " .. q(dir2 .. "/.gpurent/"))
      local st2 = dir2 .. "/.gpurent/autostop"
      local p = io.popen("sh " .. q(st2 .. "/autostop-0123456789abcdef.sh") .. " >/dev/null 2>&1 & " ..
        "sleep 0.2; echo \"$! $(sed 's/.*) //' /proc/$!/stat | cut -d' ' -f20)\"")
      local pidline = p:read("a"):match("[^\n]+")
      p:close()
      T.write(st2 .. "/pid", pidline .. "\n")
      local code = run(shell, dir2, script(dir2, qdir2, "h1"))
      os.execute("kill " .. pidline:match("^%d+"))
      assert.are.equal(3, code)
      local ev = events(dir2, "h1")
      assert.falsy(ev:find("start ", 1, true), ev)
      assert.truthy(ev:find("budget 1 the autostop watchdog's budget is spent: 2.00 of 1.00 yuan", 1, true), ev)
      assert.truthy(ev:find("notrun 1 budget\nnotrun 2 budget", 1, true), ev)
      T.rmtree(dir); T.rmtree(dir2)
    end)
  end)
end

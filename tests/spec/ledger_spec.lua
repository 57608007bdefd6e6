-- ledger_spec: the run ledger as a user relies on it: a real SQLite file in the state
-- directory (GPURENT_STATE_DIR), WAL mode, versioned schema; the binding's errors name
-- the path and the operation; several gpurent processes writing at once lose nothing;
-- a gpurent killed with SIGKILL in the middle of a transaction leaves a database that
-- opens, passes PRAGMA integrity_check and holds only committed data; and `gpurent
-- status`, `history` and `cost` report a run recorded through the ledger API.
-- (The run is recorded through the API, not by a lifecycle on the testbed: the
-- lifecycle and billing code that will write these rows land in later issues.)
local ledger = require "gpurent.state.ledger"
local sqlite = require("gpurent.core").sqlite

local function pids_file_wait(path, pred, seconds)
  local deadline = os.time() + seconds
  repeat
    local s = T.read(path)
    if s and pred(s) then return s end
    os.execute("sleep 0.05")
  until os.time() > deadline
  return T.read(path)
end

describe("sqlite binding", function()
  local dir
  before_each(function() dir = T.tmpdir() end)
  after_each(function() T.rmtree(dir) end)

  it("binds by position and by name, returns typed rows, and NULL as an absent key", function()
    local db = sqlite.open(dir .. "/t.db")
    db:exec("CREATE TABLE t (a INTEGER, b TEXT, c REAL, d BLOB)")
    local changes, rowid = db:run("INSERT INTO t VALUES (?, ?, ?, ?)", 7, "x\0y", 1.5, nil)
    assert.are.same({1, 1}, {changes, rowid})
    db:run("INSERT INTO t VALUES (:a, :b, :c, :d)", {a = 8, b = "z", c = 2})
    local rows = db:query("SELECT * FROM t ORDER BY a")
    assert.are.equal(2, #rows)
    assert.are.equal("x\0y", rows[1].b)
    assert.are.equal("integer", math.type(rows[1].a))
    assert.are.equal("float", math.type(rows[2].c))
    assert.is_nil(rows[1].d)
    local st = db:prepare("SELECT a FROM t WHERE a >= ? ORDER BY a")
    st:bind(8)
    assert.are.equal(8, st:step().a)
    assert.is_nil(st:step())
    st:bind(0)
    assert.are.equal(7, st:step().a)
    st:finalize()
    db:close()
  end)

  it("raises errors that name the operation, the database path and the SQL", function()
    local db = sqlite.open(dir .. "/t.db")
    db:exec("CREATE TABLE t (a INTEGER NOT NULL)")
    local ok, err = pcall(db.query, db, "SELECT * FROM missing")
    assert.is_false(ok)
    assert.matches("sqlite prepare " .. dir .. "/t.db: no such table: missing", err, 1, true)
    ok, err = pcall(db.run, db, "INSERT INTO t VALUES (?)", nil)
    assert.matches("sqlite step " .. dir .. "/t.db: NOT NULL constraint failed: t.a", err, 1, true)
    assert.matches("in: INSERT INTO t VALUES (?)", err, 1, true)
    ok, err = pcall(db.run, db, "INSERT INTO t VALUES (:a)", {a = 1, b = 2})
    assert.matches("no parameter :b", err, 1, true)
    ok, err = pcall(db.run, db, "INSERT INTO t VALUES (?)", 1, 2)
    assert.matches("2 parameters given, the statement takes 1", err, 1, true)
    ok, err = pcall(db.exec, db, "CREATE TABLE t (a)")
    assert.matches("sqlite exec " .. dir .. "/t.db: table t already exists", err, 1, true)
    ok, err = pcall(sqlite.open, dir .. "/no/such/dir/x.db")
    assert.matches("sqlite open " .. dir .. "/no/such/dir/x.db: unable to open database file", err, 1, true)
    db:close()
    ok, err = pcall(db.query, db, "SELECT 1")
    assert.matches("database " .. dir .. "/t.db is closed", err, 1, true)
  end)

  it("rolls a transaction back when its function fails and re-raises the same error object", function()
    local db = sqlite.open(dir .. "/t.db")
    db:exec("CREATE TABLE t (a INTEGER)")
    local obj = setmetatable({exit = 3}, {})
    local ok, err = pcall(db.transaction, db, function()
      db:run("INSERT INTO t VALUES (1)")
      error(obj)
    end)
    assert.is_false(ok)
    assert.are.equal(obj, err)
    assert.is_true(db:autocommit())
    assert.are.equal(0, db:query("SELECT count(*) AS n FROM t")[1].n)
    assert.are.same({"a", "b"}, {db:transaction(function() db:run("INSERT INTO t VALUES (2)"); return "a", "b" end)})
    assert.are.equal(1, db:query("SELECT count(*) AS n FROM t")[1].n)
    db:close()
  end)
end)

describe("ledger", function()
  local dir, env
  before_each(function()
    dir = T.tmpdir()
    env = "TZ=UTC GPURENT_STATE_DIR=" .. T.q(dir .. "/state")
  end)
  after_each(function() T.rmtree(dir) end)

  local function open() return ledger.open(dir .. "/state/ledger.sqlite") end

  it("lives in GPURENT_STATE_DIR, else XDG_STATE_HOME/gpurent, else ~/.local/state/gpurent", function()
    local code, out = T.run("-e " .. T.q("print(require('gpurent.state.ledger').default_path())"),
      {env = "GPURENT_STATE_DIR=/x/s XDG_STATE_HOME=/x/xdg HOME=/x/h"})
    assert.are.equal(0, code)
    assert.are.equal("/x/s/ledger.sqlite\n", out)
    code, out = T.run("-e " .. T.q("print(require('gpurent.state.ledger').default_path())"),
      {env = "GPURENT_STATE_DIR= XDG_STATE_HOME=/x/xdg HOME=/x/h"})
    assert.are.equal("/x/xdg/gpurent/ledger.sqlite\n", out)
    code, out = T.run("-e " .. T.q("print(require('gpurent.state.ledger').default_path())"),
      {env = "GPURENT_STATE_DIR= XDG_STATE_HOME= HOME=/x/h"})
    assert.are.equal("/x/h/.local/state/gpurent/ledger.sqlite\n", out)
  end)

  it("creates the schema at the latest version in WAL mode, and refuses a newer schema", function()
    local L = open()
    assert.are.equal(#ledger.MIGRATIONS, L:schema_version())
    assert.are.equal("wal", L.db:query("PRAGMA journal_mode")[1].journal_mode)
    local tables = {}
    for _, r in ipairs(L.db:query("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")) do
      tables[#tables + 1] = r.name
    end
    assert.are.same({"billing_events", "clock_reminders", "danger_clocks", "gate_decisions", "instances", "job_usage",
      "manifests", "notifications", "phases", "runs", "schema_version", "transfers"}, tables)
    L.db:run("INSERT INTO schema_version VALUES (999, 'from the future', 0)")
    L:close()
    local ok, err = pcall(open)
    assert.is_false(ok)
    assert.matches("schema version 999, newer than this gpurent knows", err, 1, true)
  end)

  it("applies only the pending migrations, in order, once", function()
    local L = open()
    L:close()
    table.insert(ledger.MIGRATIONS, {version = #ledger.MIGRATIONS + 1, description = "test: add a column",
      sql = "ALTER TABLE runs ADD COLUMN note TEXT"})
    local ok, err = pcall(function()
      L = open()
      assert.are.equal(#ledger.MIGRATIONS, L:schema_version())
      L:close()
      L = open() -- a second open must not re-apply (ALTER TABLE would fail)
      local versions = L.db:query("SELECT version FROM schema_version ORDER BY version")
      assert.are.equal(#ledger.MIGRATIONS, #versions)
      L:close()
    end)
    table.remove(ledger.MIGRATIONS)
    assert(ok, err)
  end)

  it("keeps a billing call and the instance state it leaves in one transaction", function()
    local L = open()
    L:upsert_instance{name = "a1", profile = "autodl", price_per_hour = 2, currency = "CNY", at = 100}
    local ok, err = pcall(L.record_billing, L, {instance = "a1", action = "power_on", outcome = "ok",
      meter = "bogus", power_state = "running", at = 200})
    assert.is_false(ok)
    assert.matches("CHECK constraint failed", err, 1, true)
    local inst = L.db:query("SELECT * FROM instances")[1]
    assert.are.equal("unknown", inst.power_state)
    assert.are.equal(0, L.db:query("SELECT count(*) AS n FROM billing_events")[1].n)
    ok, err = pcall(L.record_billing, L, {instance = "nope", action = "power_on", outcome = "ok"})
    assert.matches("unknown instance nope", err, 1, true)
    L:close()
  end)

  it("computes cost from metered intervals: per instance, per run, and since a date", function()
    local L = open()
    L:upsert_instance{name = "a1", profile = "autodl", price_per_hour = 3.6, currency = "CNY", at = 0}
    L:record_billing{instance = "a1", action = "power_on", outcome = "ok", meter = "on", at = 1000}
    local r = L:start_run{instance = "a1", recipe = "train.lua", at = 1000}
    L:end_run(r, "succeeded", 1000 + 1800)
    L:record_billing{instance = "a1", action = "power_off", outcome = "ok", meter = "off", at = 1000 + 3600}
    L:record_billing{instance = "a1", action = "power_on", outcome = "ok", meter = "on", price_per_hour = 7.2, at = 10000}
    L:record_billing{instance = "a1", action = "power_off", outcome = "ok", meter = "off", at = 10000 + 900}
    local c = L:cost{now = 20000}
    assert.are.equal(5.4, c.instances[1].cost) -- the first hour at the old price

    assert.are.equal(3600 + 900, c.instances[1].metered_seconds)
    assert.are.equal(1.8, c.runs[1].cost)
    assert.are.same({CNY = 5.4}, c.totals)
    c = L:cost{since = 10000, now = 20000}
    assert.are.equal(1.8, c.instances[1].cost)
    assert.are.equal(0, #c.runs) -- the run ended before `since`
    L:close()
  end)

  it("is written safely by several gpurent processes at once", function()
    local L = open()
    L:upsert_instance{name = "a1", profile = "autodl", at = 0}
    L:close()
    local script = T.write(dir .. "/writer.lua", [[
      local ledger = require "gpurent.state.ledger"
      local L = ledger.open()
      -- start together: report ready, wait (bounded) for the go file
      assert(io.open(params.dir .. "/ready-" .. params.tag, "w")):close()
      for _ = 1, 1000 do
        local go = io.open(params.dir .. "/go")
        if go then go:close(); break end
        gpurent.sleep(0.01)
      end
      for i = 1, tonumber(params.n) do
        local run = L:start_run{id = params.tag .. "-" .. i, instance = "a1", recipe = "w.lua"}
        L:transaction(function()
          for _, name in ipairs({"audit", "launch", "watch"}) do L:end_phase(L:start_phase(run, name), "ok") end
          gpurent.sleep(0.003) -- hold the write lock a moment: the others must wait for it
        end)
        L:record_billing{instance = "a1", action = "status", outcome = "ok", request_id = params.tag .. i}
        L:end_run(run, "succeeded")
        gpurent.sleep(0.002) -- between writes, like a real run doing other work
      end
      L:close()
    ]])
    local n, writers = 60, 3
    local cmds = {}
    for w = 1, writers do
      cmds[#cmds + 1] = string.format("(%s %s run %s tag=w%d n=%d dir=%s >%s/out%d 2>&1; echo $? >%s/rc%d) &",
        env, T.q(T.bin), T.q(script), w, n, T.q(dir), T.q(dir), w, T.q(dir), w)
    end
    os.execute(table.concat(cmds, " ") .. string.format(
      " for i in $(seq 200); do [ $(ls %s | grep -c '^ready-') = %d ] && break; sleep 0.05; done; touch %s/go; wait",
      T.q(dir), writers, T.q(dir)))
    for w = 1, writers do
      assert.are.equal("0\n", T.read(dir .. "/rc" .. w), T.read(dir .. "/out" .. w))
    end
    L = open()
    local db = L.db
    assert.are.equal("ok", db:query("PRAGMA integrity_check")[1].integrity_check)
    assert.are.equal(n * writers, db:query("SELECT count(*) AS n FROM runs WHERE status = 'succeeded'")[1].n)
    assert.are.equal(n * writers * 3, db:query("SELECT count(*) AS n FROM phases WHERE outcome = 'ok'")[1].n)
    assert.are.equal(n * writers, db:query("SELECT count(DISTINCT request_id) AS n FROM billing_events")[1].n)
    -- the writers really overlapped: one after another would switch writers - 1 times
    -- (on a loaded machine a helper's full run saw 3 switches: more than that is not
    -- the ledger's to promise, the scheduler's)
    local switches, last = 0, nil
    for _, r in ipairs(db:query("SELECT pid FROM runs ORDER BY rowid")) do
      if last and r.pid ~= last then switches = switches + 1 end
      last = r.pid
    end
    assert.is_true(switches >= writers, "writers ran one after another (" .. switches .. " switches)")
    L:close()
  end)

  -- A child that commits some work, then dies by SIGKILL while a transaction is open.
  local KILLED = [[
    local ledger = require "gpurent.state.ledger"
    local L = ledger.open()
    L:upsert_instance{name = "a1", profile = "autodl"}
    if params.mode == "open" then
      local run = L:start_run{id = "committed", instance = "a1"}
      L:end_phase(L:start_phase(run, "audit"), "ok")
      L:transaction(function()
        L:start_run{id = "uncommitted", instance = "a1"}
        for i = 1, 20000 do L:start_phase("uncommitted", "p" .. i) end -- spills pages into the WAL
        local f = assert(io.open(params.marker, "w")); f:write("in transaction\n"); f:close()
        gpurent.sleep(60)
      end)
    else -- "busy": commit 500-phase batches as fast as possible, report each
      for i = 1, 100000 do
        L:transaction(function()
          local run = L:start_run{id = "batch" .. i, instance = "a1"}
          for p = 1, 500 do L:start_phase(run, "p" .. p) end
        end)
        local f = assert(io.open(params.marker, "w")); f:write(i, "\n"); f:close()
      end
    end
  ]]

  local function run_and_kill(mode, ready)
    local script = T.write(dir .. "/killed.lua", KILLED)
    local marker, pidfile = dir .. "/marker", dir .. "/pid"
    os.execute(string.format("%s sh -c 'echo $$ >%s; exec %s run %s mode=%s marker=%s' >%s/killed.out 2>&1 &",
      env, T.q(pidfile), T.q(T.bin), T.q(script), mode, T.q(marker), T.q(dir)))
    local pid = tonumber(pids_file_wait(pidfile, function(s) return s:match("%d+\n") end, 10))
    assert.is_not_nil(pid, "child did not start")
    local seen = pids_file_wait(marker, ready, 30)
    local alive = os.execute("kill -0 " .. pid .. " 2>/dev/null")
    assert.is_true(alive and ready(seen or ""), "child not ready: " .. tostring(T.read(dir .. "/killed.out")))
    assert.is_true(os.execute("kill -9 " .. pid))
    -- wait (bounded) until the exact process is gone
    for _ = 1, 200 do
      if not os.execute("kill -0 " .. pid .. " 2>/dev/null") then break end
      os.execute("sleep 0.05")
    end
    assert.is_falsy(os.execute("kill -0 " .. pid .. " 2>/dev/null"))
  end

  it("holds only committed data after a gpurent is killed with SIGKILL inside a transaction", function()
    run_and_kill("open", function(s) return s == "in transaction\n" end)
    assert.is_true(T.read(dir .. "/state/ledger.sqlite-wal") ~= nil, "the WAL file is there")
    local L = open()
    local db = L.db
    assert.are.equal("ok", db:query("PRAGMA integrity_check")[1].integrity_check)
    assert.are.same({{id = "committed"}}, db:query("SELECT id FROM runs"))
    assert.are.equal(1, db:query("SELECT count(*) AS n FROM phases")[1].n)
    -- and the dead writer's lock is gone: a new write goes through at once
    L:start_run{id = "after", instance = "a1"}
    L:close()
    local code, out = T.run("history", {env = env})
    assert.are.equal(0, code)
    assert.matches("committed", out, 1, true)
    assert.is_nil(out:find("uncommitted", 1, true))
  end)

  it("holds only whole transactions after a gpurent is killed with SIGKILL while committing in a loop", function()
    run_and_kill("busy", function(s) return (tonumber(s:match("%d+")) or 0) >= 5 end)
    local L = open()
    local db = L.db
    assert.are.equal("ok", db:query("PRAGMA integrity_check")[1].integrity_check)
    local runs = db:query("SELECT r.id, count(p.id) AS n FROM runs r LEFT JOIN phases p ON p.run_id = r.id GROUP BY r.id")
    assert.is_true(#runs >= 5)
    for _, r in ipairs(runs) do assert.are.equal(500, r.n, r.id .. " has a partial set of phases") end
    L:close()
  end)

  describe("status, history and cost commands", function()
    local run_id, now
    before_each(function()
      now = os.time()
      local L = open()
      L:upsert_instance{name = "a1", profile = "autodl", provider_id = "uuid-1", price_per_hour = 1.8,
        currency = "CNY", at = now - 7200}
      L:upsert_instance{name = "b2", profile = "generic-ssh", at = now - 7200}
      L:record_billing{instance = "a1", action = "power_on", outcome = "ok", meter = "on",
        power_state = "running", at = now - 7200}
      run_id = L:start_run{instance = "a1", recipe = "autodl_train.lua", params = {epochs = 3}, at = now - 3600}
      L:end_phase(L:start_phase(run_id, "audit", now - 3600), "ok", nil, now - 3590)
      L:record_transfer{run_id = run_id, instance = "a1", direction = "put", local_path = "code.tar",
        remote_path = "/root/autodl-tmp/p/code.tar", bytes = 1234, outcome = "ok", started_at = now - 3585, at = now - 3580}
      L:record_gate{run_id = run_id, instance = "a1", gate = "free_space", action = "launch", decision = "allow",
        reason = "12 GiB free", at = now - 3579}
      L:start_phase(run_id, "launch", now - 3578)
      L:set_danger_clock{instance = "a1", name = "release_after_stop", deadline = now + 15 * 86400,
        note = "AutoDL releases a powered-off instance after 15 days"}
      local done = L:start_run{id = "old-run", instance = "a1", recipe = "audit.lua", at = now - 7000}
      L:end_run(done, "failed", now - 6900)
      L:close()
    end)

    it("status shows instance, profile, power, meter, accrued cost, danger clock, run and phase", function()
      local code, out, err = T.run("status", {env = env})
      assert.are.equal(0, code, err)
      local header, a1, b2 = out:match("^([^\n]*)\n([^\n]*)\n([^\n]*)\n$")
      assert.matches("INSTANCE%s+PROFILE%s+POWER%s+METER%s+ACCRUED%s+DANGER CLOCKS%s+RUN%s+PHASE", header)
      -- two hours metered at 1.80/h (plus the seconds this test took)
      assert.matches("^a1%s+autodl%s+running%s+on%s+3%.6%d CNY%s+release_after_stop in 1[45]d%d%dh%s+"
        .. run_id:gsub("%-", "%%-") .. "%s+launch %(running 59m%d%ds%)$", a1)
      assert.matches("^b2%s+generic%-ssh%s+unknown%s+unknown%s+0%.00%s+%-%s+%-%s+%-$", b2)
    end)

    it("status shows a box once when an ssh alias is linked to its instance (host add --uuid)", function()
      local L = open()
      L:upsert_instance{name = "autodl-p-1", profile = "autodl", provider_id = "uuid-1", at = now - 100}
      L:close()
      local code, out, err = T.run("status", {env = env})
      assert.are.equal(0, code, err)
      local lines = {}
      for line in out:gmatch("[^\n]+") do lines[#lines + 1] = line end
      assert.are.equal(3, #lines, out)               -- header, the linked box, b2
      assert.matches("^a1 %(autodl%-p%-1%)%s+autodl%s+running%s+on%s+3%.6%d CNY", lines[2])
      code, out = T.run("status --json", {env = env})
      assert.are.equal(0, code)
      local s = require("gpurent.util.json").decode(out)
      assert.are.same({"a1", "autodl-p-1"}, s.instances[1].names)
    end)

    it("status --json gives the same facts to a program", function()
      local code, out = T.run("status --json", {env = env})
      assert.are.equal(0, code)
      local s = require("gpurent.util.json").decode(out)
      assert.are.equal(dir .. "/state/ledger.sqlite", s.ledger)
      local a1 = s.instances[1]
      assert.are.equal("a1", a1.name)
      assert.are.equal(run_id, a1.run.id)
      assert.are.equal("launch", a1.phase.name)
      assert.are.equal("release_after_stop", a1.danger_clocks[1].name)
      assert.matches("^%d+%.%d%d%d$", a1.accrued_cost)          -- money: an exact decimal string
      assert.is_true(tonumber(a1.accrued_cost) >= 3.6 and tonumber(a1.accrued_cost) < 3.7)
      assert.are.equal(require("gpurent.util.json").null, s.instances[2].run)
    end)

    it("history lists runs newest first, and --run shows one run's events in order", function()
      local code, out = T.run("history", {env = env})
      assert.are.equal(0, code)
      local first, second = out:match("^RUN[^\n]*\n([^\n]*)\n([^\n]*)\n$")
      assert.matches("^" .. run_id:gsub("%-", "%%-") .. "%s+a1%s+autodl_train.lua%s+running", first)
      assert.matches("^old%-run%s+a1%s+audit.lua%s+failed%s+%S+ %S+%s+1m40s$", second)
      code, out = T.run("history --run " .. T.q(run_id), {env = env})
      assert.are.equal(0, code)
      local lines = {}
      for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
      assert.matches("^run " .. run_id:gsub("%-", "%%-") .. " on a1, recipe autodl_train.lua: running", lines[1])
      assert.matches("phase%s+audit ok after 10s$", lines[3])
      assert.matches("transfer%s+put code.tar %-> /root/autodl%-tmp/p/code.tar %(1234 bytes, ok%)$", lines[4])
      assert.matches("gate%s+free_space gate allow launch: 12 GiB free$", lines[5])
      assert.matches("phase%s+launch started %(not ended%)$", lines[6])
      code, _, err = T.run("history --run nope", {env = env})
      assert.are.equal(2, code)
      assert.matches("no run nope in the ledger", err, 1, true)
    end)

    it("cost reports per instance and per run, and --since leaves out what came before", function()
      local code, out = T.run("cost", {env = env})
      assert.are.equal(0, code)
      assert.matches("\na1%s+2h00m%s+3%.6%d CNY\n", out)
      assert.matches("\nold%-run%s+a1%s+audit.lua%s+failed%s+%S+ %S+%s+1m40s%s+0%.05 CNY\n", out)
      assert.matches("\ntotal: 3%.6%d CNY\n", out)
      local since = os.date("!%Y-%m-%d %H:%M:%S", now - 1800)
      code, out = T.run("cost --json --since " .. T.q(since), {env = env})
      assert.are.equal(0, code)
      local c = require("gpurent.util.json").decode(out)
      assert.are.equal(1, #c.runs) -- old-run ended before --since
      assert.are.equal(run_id, c.runs[1].id)
      local cost = tonumber(c.instances[1].cost)
      assert.is_true(cost >= 0.9 and cost < 0.95, tostring(c.instances[1].cost))
      code, _, err = T.run("cost --since yesterday", {env = env})
      assert.are.equal(2, code)
      assert.matches('cannot read date "yesterday"', err, 1, true)
    end)

    it("say that nothing is recorded when there is no ledger, without creating one", function()
      local e = "TZ=UTC GPURENT_STATE_DIR=" .. T.q(dir .. "/empty")
      for _, cmd in ipairs({"status", "history", "cost"}) do
        local code, out = T.run(cmd, {env = e})
        assert.are.equal(0, code)
        assert.matches("nothing recorded yet (no ledger at " .. dir .. "/empty/ledger.sqlite)", out, 1, true)
      end
      assert.is_nil(T.read(dir .. "/empty/ledger.sqlite"))
    end)
  end)
end)

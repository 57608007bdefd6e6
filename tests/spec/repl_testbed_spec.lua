-- repl_testbed_spec: `gpurent repl HOST` on a simulated AutoDL box (tests/sim: a real
-- sshd, the real API over loopback, a real ledger), typed into through tmux. Every
-- helper :help lists works with a profile resolved for the host (or --profile); the
-- helpers print once; help/exit/quit do what they say; Tab completes remote paths
-- over SFTP; the prompt's meter is the API's (or "meter ?", never a false 0.00).
local testbed = require "testbed"
local tty = require "tty"

local ok_tb, why = testbed.available()

describe("gpurent repl on a testbed box", function()
  if not ok_tb then pending("testbed unavailable: " .. tostring(why)); return end
  local tb, term

  setup(function()
    tb = testbed.new()
    tb:up("rb1", "--region westDC2 --data-size 256M")
  end)
  teardown(function() if tb then tb:down() end end)
  after_each(function() if term then term:close(); term = nil end end)

  local function repl(args, extra_env)
    term = tty.start(T.q(T.bin) .. " repl " .. args, {env = tb:env(extra_env)})
    term:wait_for("\nrb1[^\n]*>", 20)
    return term
  end

  -- Type a line and wait for the prompt to come back after it (bounded).
  local function run_line(line, seconds)
    local before = term:count("\nrb1")
    term:line(line)
    local deadline = os.time() + (seconds or 30)
    while term:count("\nrb1") <= before and os.time() <= deadline do os.execute("sleep 0.1") end
    return term:screen()
  end

  it("check() and :check run the profile's probes, with --profile and with the profile resolved", function()
    repl("rb1 --profile autodl")
    local screen = run_line("check()", 120)
    assert.is_nil(screen:find("no profile", 1, true), screen)
    assert.matches("\nAD4%s+ok%s+/root/autodl%-fs", screen)
    assert.matches("\nU%-OOM%s+ok", screen)
    term:close()
    repl("rb1")
    -- resolved without --profile: from the API's instance, or from the ledger's row the
    -- first session's listing wrote (every listed instance enters the ledger's meter)
    term:wait_for("profile autodl: ", 5, true)
    screen = run_line(":check", 120)
    assert.is_nil(screen:find("no profile", 1, true), screen)
    assert.matches("\nAD6%s+warn%s+python3 is absent", screen)
    assert.matches("fix: train with the profile's interpreter", screen, 1, true)
  end)

  it("gotchas() lists the profile's gotchas, not module internals", function()
    repl("rb1")
    local screen = run_line("gotchas()")
    assert.matches("ID%s+SEVERITY%s+TITLE", screen)
    assert.matches("\nAD4%s+high%s+inodes near the cap", screen)
    assert.is_nil(screen:find("run_one", 1, true), screen)
    assert.is_nil(screen:find("function:", 1, true), screen)
  end)

  it("df() prints the tiers once", function()
    repl("rb1")
    local screen = run_line("df()")
    assert.matches("TIER%s+PATH%s+SIZE", screen)
    assert.matches("\ndata%s+/root/autodl%-tmp%s+", screen)
    assert.are.equal(1, term:count("/root/autodl-fs"), screen)
    -- assigned, the reading stays available and prints in full on request
    screen = run_line("r = df(); print(r.tiers.data.bytes_total > 0)")
    assert.matches("\ntrue\n", screen)
  end)

  it("meter() and the prompt read the AutoDL API for the instance matched to the host", function()
    repl("rb1")
    local screen = term:wait_for("rb1 %[%d+%.%d%d CNY meter on%]>", 10)
    screen = run_line("meter()")
    assert.is_nil(screen:find("not available", 1, true), screen)
    assert.matches("rb1 %(pro%-[%w]+%): running, meter on, 1%.98 CNY/h, accrued %d+%.%d%d CNY %(AutoDL API%)", screen)
  end)

  it("the prompt says 'meter ?' where it cannot know, never a false 0.00", function()
    -- the ledger knows the box (a run connected to it) but has no billing record,
    -- and no token reaches the API
    local ledger = require "gpurent.state.ledger"
    -- a ledger of its own: the earlier tests' listings recorded rb1's provider stretch
    local function fresh() for _, x in ipairs({"", "-wal", "-shm"}) do os.remove(tb.state .. "/ledger.sqlite" .. x) end end
    fresh()
    finally(fresh)
    local L = ledger.open(tb.state .. "/ledger.sqlite")
    L:upsert_instance{name = "rb1", profile = "autodl"}
    L:close()
    term = tty.start(T.q(T.bin) .. " repl rb1", {env = tb:env("AUTODL_TOKEN=")})
    local screen = term:wait_for("rb1 [meter ?]>", 20, true)
    assert.is_nil(screen:find("0.00", 1, true), screen)
    screen = run_line("meter()")
    assert.matches("meter of rb1 unknown: no AutoDL token", screen, 1, true)
  end)

  it("help prints the helpers; exit and quit leave", function()
    repl("rb1")
    local screen = run_line("help")
    assert.matches("df%(%)%s+the profile's storage tiers", screen)
    assert.is_nil(screen:find("\nnil\n", 1, true), screen)
    for _, word in ipairs({"exit", "quit"}) do
      term:line(word)
      local deadline = os.time() + 10
      while term:alive() and os.time() <= deadline do os.execute("sleep 0.1") end
      assert.is_false(term:alive(), word .. " did not leave the REPL")
      term:close()
      if word == "exit" then repl("rb1") end
    end
    term = nil
  end)

  it("Tab completes remote paths inside sh and put/get strings, over SFTP", function()
    tb:exec("rb1", "mkdir -p /root/autodl-tmp/checkpoints-unique && touch /root/autodl-tmp/weights-unique.bin")
    repl("rb1")
    term:type('sh "ls /root/autodl-tmp/checkp')
    term:keys("Tab")
    term:wait_for('sh "ls /root/autodl-tmp/checkpoints-unique/', 10, true)
    term:keys("C-u")
    term:type('get("/root/autodl-tmp/wei')
    term:keys("Tab")
    term:wait_for('get("/root/autodl-tmp/weights-unique.bin', 10, true)
    term:keys("C-u")
    term:type("!ls ~/autodl-tmp/che")
    term:keys("Tab")
    term:wait_for("!ls ~/autodl-tmp/checkpoints-unique/", 10, true)
  end)

  it("power_off() goes through the gate: the name typed approves it, and the prompt shows the meter off", function()
    repl("rb1")
    term:line("power_off()")
    term:wait_for("Type the instance name (rb1) to approve", 30, true)
    term:line("rb1")
    local screen = term:wait_for("rb1 [meter off]>", 120, true)
    assert.matches("gate: power_off rb1: allowed (approval: tty)", screen, 1, true)
    assert.matches("rb1: shutdown (meter off", screen, 1, true)
    assert.is_nil(screen:find("decision = {", 1, true), "the result was printed twice:\n" .. screen)
  end)
end)

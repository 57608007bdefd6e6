-- repl_remote_spec: `gpurent repl HOST` against a real sshd, driven through tmux:
-- !cmd streams, Ctrl-C of a remote `sleep 61` returns within a second with the
-- session alive and the remote process gone, and a killed connection is reported
-- and re-established on the next command.
local sshd = require "sshd"
local tty = require "tty"

describe("gpurent repl HOST", function()
  local fx, term, state
  setup(function()
    fx = sshd.start{addrs = 1}
  end)
  teardown(function() if fx then fx:stop() end end)
  before_each(function()
    state = T.tmpdir()
    term = tty.start(T.q(T.bin) .. " repl " .. fx.aliases[1],
      {env = "GPURENT_STATE_DIR=" .. T.q(state) .. " GPURENT_SSH_CONFIG=" .. T.q(fx.config)})
    term:wait_for(fx.aliases[1] .. " [meter manual]>", 10, true)  -- generic-ssh: billed by hand
  end)
  after_each(function()
    term:close()
    T.rmtree(state)
  end)

  it("shows the accrued cost and the meter from the ledger in the prompt", function()
    term:close()
    local ledger = require "gpurent.state.ledger"
    local L = ledger.open(state .. "/ledger.sqlite")
    L:upsert_instance{name = fx.aliases[1], profile = "autodl", price_per_hour = 2.5, currency = "CNY"}
    L:record_billing{instance = fx.aliases[1], action = "power_on", outcome = "ok", meter = "on",
                     power_state = "running", at = os.time() - 3600}
    L:close()
    term = tty.start(T.q(T.bin) .. " repl " .. fx.aliases[1],
      {env = "GPURENT_STATE_DIR=" .. T.q(state) .. " GPURENT_SSH_CONFIG=" .. T.q(fx.config)})
    term:wait_for(fx.aliases[1] .. " [2.50 CNY meter on]>", 10, true)
  end)

  it("binds inst and streams !cmd output line by line", function()
    term:line("=inst:sh('echo via-inst').stdout")
    term:wait_for('"via-inst\\n"', 5, true)
    term:line("!for i in 1 2 3; do echo tick$i; sleep 1; done")
    term:wait_for("tick1", 5, true)
    assert.is_nil(term:screen():find("tick3", 1, true), "output was not streamed")
    term:wait_for("tick3", 6, true)
    assert.is_nil(term:screen():find("gpurent-pid", 1, true))
  end)

  it("Ctrl-C stops a remote sleep 60 within a second and keeps the session", function()
    term:line("!sleep 61; echo never")
    os.execute("sleep 0.5")
    local t0 = require("gpurent.core").sys.now()
    term:keys("C-c")
    term:wait_for("[interrupted", 3, true)
    assert.is_true(require("gpurent.core").sys.now() - t0 < 1.5)
    -- the typed line must not contain the awaited text: the screen echoes it
    term:line("!echo after; echo \"left:$(pgrep -c -f '^sleep 61$')\"")
    term:wait_for("left:%d", 5)
    assert.truthy(term:screen():find("left:0", 1, true), "the remote sleep survived Ctrl-C:\n" .. term:screen())
    assert.is_nil(term:screen():find("\nnever\n", 1, true))
    assert.is_nil(term:screen():find("re-established", 1, true), "the session should have survived")
  end)

  it("reports a killed connection and re-establishes it on the next command", function()
    term:line("!echo first")
    term:wait_for("first", 5, true)
    assert.is_true(fx:kill_connections() > 0)
    term:line("!echo second")
    term:wait_for("lost", 10, true)
    term:line("!echo third")
    term:wait_for("\nthird", 10, true)
    assert.is_true(term:alive())
  end)
end)

-- startup_spec: what every command does first (due reminders of the release clocks,
-- held pushes) costs one stat when nothing is due: the ledger is not loaded, so
-- start-up stays under its targets (make bench prints them). Work left in the ledger
-- (an open clock, a held push) leaves a marker beside it; the command that finds
-- nothing left clears it.
local ledger = require "gpurent.state.ledger"
local lfs = require "lfs"

describe("start-up", function()
  local dir, env, recipe
  before_each(function()
    dir = T.tmpdir()
    env = "GPURENT_STATE_DIR=" .. T.q(dir)
    recipe = T.write(dir .. "/probe.lua", 'print(package.loaded["gpurent.state.ledger"] ~= nil)\n')
  end)
  after_each(function() T.rmtree(dir) end)

  local function loaded()
    local code, out, err = T.run("run " .. T.q(recipe), {env = env})
    assert.are.equal(0, code, err)
    return out == "true\n"
  end

  it("does not load the ledger when nothing is due, even with a ledger present", function()
    assert.is_false(loaded())
    local L = ledger.open(dir .. "/ledger.sqlite")
    L:upsert_instance{name = "b1", profile = "autodl"}
    L:close()
    assert.is_false(loaded())
  end)

  it("an open clock marks work for the next command, which keeps the marker while the clock is open", function()
    local L = ledger.open(dir .. "/ledger.sqlite")
    L:upsert_instance{name = "b1", profile = "autodl"}
    L:open_clock{instance = "b1", name = "auto_release", started_at = os.time(), deadline = os.time() + 86400 * 15}
    L:close()
    assert.truthy(lfs.attributes(dir .. "/ledger.sqlite.pending"), "no marker after a clock opened")
    assert.is_true(loaded())
    assert.truthy(lfs.attributes(dir .. "/ledger.sqlite.pending"), "the marker went while the clock is open")
    L = ledger.open(dir .. "/ledger.sqlite")
    L.db:run("UPDATE danger_clocks SET cleared_at = ?", os.time())
    L:close()
    assert.is_true(loaded())                 -- finds nothing left and clears the marker
    assert.is_nil(lfs.attributes(dir .. "/ledger.sqlite.pending"))
    assert.is_false(loaded())
  end)
end)

-- billing_power_spec.lua: power verbs against a booted testbed instance
-- (tests/sim/autodl-sim: a real sshd in its own namespaces, the API driving its
-- power). power-off needs approval, is polled until settled, and is recorded;
-- power-on is polled until running. Needs root (the testbed does).
local json = require "gpurent.util.json"

local SIM = T.root .. "/tests/sim/autodl-sim"

local function sh(cmd)
  local p = io.popen(cmd .. " 2>&1")
  local out = p:read("a")
  local ok, _, code = p:close()
  return out, ok and 0 or code
end

local is_root = sh("id -u"):match("^0%s*$") ~= nil

describe("billing power verbs on a testbed instance", function()
  if not is_root then
    pending("needs root (the testbed boots namespaces and tmpfs)")
    return
  end
  local dir, env, token, outputs = nil, nil, nil, {}

  local function sim(args)
    return sh("GPURENT_SIM_DIR=" .. T.q(dir) .. " " .. T.q(SIM) .. " " .. args)
  end

  local function journal(part)
    local out = {}
    for line in (T.read(dir .. "/journal.jsonl") or ""):gmatch("[^\n]+") do
      local e = json.decode(line)
      if not e.admin and e.path:find(part, 1, true) then out[#out + 1] = e end
    end
    return out
  end

  local function run(args)
    local code, out, err = T.run("-w " .. T.q(T.bin) .. " " .. args, {bin = "setsid", env = env})
    outputs[#outputs + 1] = out .. err
    return code, out, err
  end

  setup(function()
    dir = sh("mktemp -d /tmp/gpurent-sim.XXXXXX"):gsub("%s+$", "")
    local out, code = sim("up pw1")
    assert(code == 0, out)
    token = T.read(dir .. "/api.token"):gsub("%s+$", "")
    env = string.format("AUTODL_TOKEN=%s GPURENT_AUTODL_BASE_URL=%s GPURENT_STATE_DIR=%s HOME=%s",
      T.q(token), T.q((T.read(dir .. "/api.url"):gsub("%s+$", ""))), T.q(dir .. "/state"), T.q(dir))
  end)
  teardown(function()
    local all = table.concat(outputs, "\n") .. (T.read(dir .. "/journal.jsonl") or "")
    sim("down --all")     -- stops exactly the processes the testbed recorded
    T.rmtree(dir)
    assert.is_nil(all:find(token, 1, true), "the token leaked")
  end)

  it("refuses power-off without approval (exit 3, no call)", function()
    local code, _, err = run("billing power-off pw1")
    assert.are.equal(3, code)
    assert.matches("gate: power_off pw1: refused", err, 1, true)
    assert.are.equal(0, #journal("/power_off"))
  end)

  it("powers off with --approve and polls status until it settles", function()
    local code, out, err = run("billing power-off pw1 --approve pw1")
    assert.are.equal(0, code, err)
    assert.matches("pw1: shutdown", out, 1, true)
    assert.matches("allowed (approval: flag)", err, 1, true)
    local offs, polls = journal("/power_off"), journal("/instance/pro/status")
    assert.are.equal(1, #offs)
    assert.is_true(#polls >= 2, "status polled until settled")
    assert.is_true(polls[#polls].t > offs[1].t)
    local listing = sim("list")
    assert.matches("pw1%s+%S+%s+%S+%s+%S+%s+shutdown", listing)
    -- the sshd is really gone: the port is closed
    local info = json.decode(sim("info pw1"))
    assert.is_false(info.running)
    -- recorded: meter off
    local L = require("gpurent.state.ledger").open(dir .. "/state/ledger.sqlite")
    local ev = L.db:query("SELECT action, outcome, meter, power_state FROM billing_events ORDER BY id")
    L:close()
    assert.are.same({action = "power_off", outcome = "ok", meter = "off", power_state = "shutdown"}, ev[#ev])
  end)

  it("powers on and polls until running", function()
    local code, out, err = run("billing power-on pw1")
    assert.are.equal(0, code, err)
    assert.matches("pw1: running", out, 1, true)
    assert.is_true(json.decode(sim("info pw1")).running)
  end)

  it("powers off from inside the box without a token (the in-instance verb)", function()
    local autodl = require "gpurent.platform.autodl.api"
    local inst = require("gpurent.transport.instance").connect("pw1", {config = dir .. "/ssh_config"})
    assert.is_true(autodl.in_instance_power_off(inst))
    pcall(inst.close, inst)
    local t = require "gpurent_test"
    t.setenv("AUTODL_TOKEN", token)
    t.setenv("GPURENT_AUTODL_BASE_URL", (T.read(dir .. "/api.url"):gsub("%s+$", "")))
    local ok, st = pcall(function()
      local c = autodl.client{out = {write = function() end}}
      return c:wait_status(json.decode(sim("info pw1")).uuid, "shutdown", {deadline = 20})
    end)
    require("autodl_api").unuse()
    assert(ok, st)
    assert.are.equal("shutdown", st)
    assert.is_false(json.decode(sim("info pw1")).running)
  end)
end)

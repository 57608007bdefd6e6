-- billing_meter_spec.lua: budgets (warn, then refuse billable actions) and idle
-- detection. GPU readings come from the testbed's real nvidia-smi script
-- (tests/sim/image/nvidia-smi) run against a state file; notifications go to the
-- terminal, a real ledger file and the testbed API's WeChat route.
local api = require "autodl_api"
local autodl = require "gpurent.platform.autodl.api"
local billing = require "gpurent.billing"

describe("budgets", function()
  local srv
  setup(function()
    srv = api.start{}
    srv:register{uuid = "pro-b1", name = "bud1", price = 2}
    srv:admin("/__sim/set-state", {instance_uuid = "pro-b1", status = "shutdown"})
    -- the ledger saw one hour metered at 2 yuan/h
    local L = require("gpurent.state.ledger").open(srv.state .. "/ledger.sqlite")
    local t = os.time()
    L:upsert_instance{name = "bud1", profile = "autodl", provider_id = "pro-b1"}
    L:record_billing{instance = "bud1", action = "power_on", outcome = "ok", meter = "on", price_per_hour = 2, at = t - 7200}
    L:record_billing{instance = "bud1", action = "power_off", outcome = "ok", meter = "off", at = t - 3600}
    L:close()
  end)
  teardown(function() srv:stop() end)

  it("refuses power-on once the budget is spent (exit 3, nothing sent)", function()
    local code, out, err = T.run("billing budget bud1 1.5", {env = srv:env()})
    assert.are.equal(0, code, err)
    assert.matches("budget for bud1: 1.5 yuan (warn at 80%)", out, 1, true)
    code, out, err = T.run("billing power-on bud1 --no-wait", {env = srv:env()})
    assert.are.equal(3, code)
    assert.matches("budget exceeded for bud1: 2.00 of 1.50 yuan", err, 1, true)
    assert.are.equal(0, #srv:journal("/power_on"))
    code, out = T.run("billing status bud1", {env = srv:env()})
    assert.matches("budget exceeded: 2.00 of 1.50 yuan (133%)", out, 1, true)
  end)

  it("warns past the warn fraction and still powers on", function()
    T.run("billing budget bud1 2.4", {env = srv:env()})
    local code, _, err = T.run("billing power-on bud1 --no-wait", {env = srv:env()})
    assert.are.equal(0, code, err)
    assert.matches("warning: bud1 has spent 2.00 of 2.40 yuan", err, 1, true)
    assert.are.equal(1, #srv:journal("/power_on", 1))
  end)

  it("budget_state boundaries", function()
    assert.are.equal("none", (billing.budget_state(5, nil)))
    assert.are.equal("ok", (billing.budget_state(0.79, {yuan = 1, warn = 0.8})))
    assert.are.equal("warn", (billing.budget_state(0.8, {yuan = 1, warn = 0.8})))
    assert.are.equal("exceeded", (billing.budget_state(1, {yuan = 1, warn = 0.8})))
  end)
end)

describe("idle detection", function()
  local srv, gpu, clock
  local SMI = T.root .. "/tests/sim/image/nvidia-smi"

  local function read_util()
    local p = io.popen("SIM_GPU_DIR=" .. T.q(gpu) .. " bash " .. T.q(SMI)
      .. " --query-gpu=utilization.gpu --format=csv,noheader,nounits 2>&1")
    local out = p:read("a")
    p:close()
    return out
  end

  local function set_gpu(state) T.write(gpu .. "/state", state) end

  setup(function()
    srv = api.start{}
    gpu = T.tmpdir()
    T.write(gpu .. "/config", "count=2\n")
  end)
  teardown(function() api.unuse(); srv:stop(); T.rmtree(gpu) end)

  local function patrol(job)
    clock = 1000
    local notes, out = {}, {write = function() end}
    srv:use()
    local c = autodl.client{state_dir = srv.dir .. "/wc", out = out}
    local p = billing.idle_patrol{read_util = read_util, job_alive = job, idle_seconds = 600,
      now = function() return clock end,
      notify = function(msg)
        notes[#notes + 1] = msg
        billing.notify{instance = "idle1", message = msg, push = function(m) return c:wechat(m) end, ledger_path = srv.state .. "/ledger.sqlite",
                       out = {write = function(_, ...) notes.terminal = (notes.terminal or "") .. table.concat({...}) end}}
      end}
    return p, notes
  end

  it("parses nvidia-smi readings and refuses garbage", function()
    set_gpu("gpu 0 util=97\ngpu 1 util=3\n")
    assert.are.same({97, 3}, billing.parse_gpu_util(read_util()))
    set_gpu("fail Unable to determine the device handle for GPU0000:01:00.0: Unknown Error\n")
    local v, why = billing.parse_gpu_util(read_util())
    assert.is_nil(v)
    assert.matches("unreadable", why)
    assert.is_nil((billing.parse_gpu_util("")))
    assert.is_nil((billing.parse_gpu_util("[N/A]\n")))
  end)

  it("notifies once after the idle window: terminal, ledger and WeChat", function()
    set_gpu("gpu 0 util=0\ngpu 1 util=2\n")
    local p, notes = patrol(function() return false end)
    assert.is_true(p.tick().idle)
    clock = clock + 599
    assert.is_nil(p.tick().notified)              -- not before the window
    assert.are.equal(0, #notes)
    clock = clock + 1
    assert.is_true(p.tick().notified)
    clock = clock + 60
    assert.is_nil(p.tick().notified)              -- once, not every tick
    assert.are.equal(1, #notes)
    assert.matches("idle1: idle for 0h 10m", notes.terminal, 1, true)
    local L = require("gpurent.state.ledger").open(srv.state .. "/ledger.sqlite")
    local rows = L.db:query("SELECT kind, message FROM notifications")
    L:close()
    assert.are.equal(1, #rows)
    assert.matches("idle for 0h 10m", rows[1].message, 1, true)
    local wc = T.read(srv.dir .. "/wechat.jsonl")
    assert.matches('"title": "gpurent: idle1"', wc, 1, true)
  end)

  it("a busy GPU, a live job or an unreadable signal resets the window", function()
    set_gpu("gpu 0 util=0\n")
    local alive = false
    local p, notes = patrol(function() return alive end)
    p.tick()
    clock = clock + 500
    set_gpu("gpu 0 util=0\ngpu 1 util=55\n")
    assert.is_false(p.tick().idle)
    set_gpu("gpu 0 util=0\n")
    p.tick(); clock = clock + 500
    alive = true
    assert.is_false(p.tick().idle)
    alive = false
    p.tick(); clock = clock + 500
    set_gpu("fail GPU is lost\n")
    local st = p.tick()
    assert.is_false(st.idle)
    assert.matches("unreadable", st.why)
    set_gpu("gpu 0 util=0\n")
    p.tick(); clock = clock + 500
    local p2 = p.tick()
    assert.is_nil(p2.notified)
    assert.are.equal(0, #notes)
    -- a job_alive that raises also counts as activity
    local p3 = patrol(function() error("ssh timed out") end)
    assert.is_false(p3.tick().idle)
  end)
end)

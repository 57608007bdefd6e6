-- billing_api_spec.lua: the AutoDL developer API client (gpurent.platform.autodl.api over
-- runtime/http.c) against the testbed's real HTTP server (tests/sim/autodl-api):
-- figures, every error path, stock retries, WeChat limits, --dry-run, and the token
-- never showing up in any output, error, ledger or journal.
local api = require "autodl_api"
local autodl = require "gpurent.platform.autodl.api"
local billing = require "gpurent.billing"
local http = require "gpurent.util.http"
local sched = require "gpurent.transport.sched"

describe("AutoDL API client", function()
  local srv, c, out
  local outputs = {}

  local function capture()
    local buf = {}
    return {write = function(_, ...) for _, s in ipairs({...}) do buf[#buf + 1] = tostring(s) end end,
            text = function() return table.concat(buf) end}
  end

  -- the token and base URL reach C through the environment (srv:use); opts.token and
  -- opts.base_url here switch them for one client, then switch back
  local function client(opts)
    opts = opts or {}
    out = capture()
    local o = {out = out, state_dir = srv.dir .. "/client-state",
               sleep = function(s) require("gpurent.core").sys.sleep(math.min(s, 0.05)) end}
    for k, v in pairs(opts) do if k ~= "token" and k ~= "base_url" then o[k] = v end end
    local c = autodl.client(o)
    if opts.token or opts.base_url then
      local env = require "gpurent_test"
      local call = c.call
      c.call = function(...)
        env.setenv("AUTODL_TOKEN", opts.token or srv.token)
        env.setenv("GPURENT_AUTODL_BASE_URL", opts.base_url or srv.url)
        local r = table.pack(pcall(call, ...))
        srv:use()
        if not r[1] then error(r[2], 0) end
        return table.unpack(r, 2, r.n)
      end
    end
    return c
  end

  local function err_of(fn, ...)
    local ok, e = pcall(fn, ...)
    assert.is_false(ok, "expected an error")
    outputs[#outputs + 1] = tostring(e)
    return e
  end

  setup(function()
    srv = api.start{}
    srv:use()
    srv:register{uuid = "pro-u1", name = "box1", price = 2.5}
    srv:register{uuid = "pro-off", name = "parked", status = "running"}
    srv:admin("/__sim/set-state", {instance_uuid = "pro-off", status = "shutdown"})  -- sets stopped_at
  end)
  teardown(function()
    -- the token appears nowhere: outputs, error messages, the API journal
    local all = table.concat(outputs, "\n") .. (T.read(srv.dir .. "/journal.jsonl") or "")
    assert.is_nil(all:find(srv.token, 1, true), "the token leaked")
    api.unuse()
    srv:stop()
  end)
  before_each(function() srv:admin("/__sim/faults", {clear = true}) end)

  it("reads the balance in yuan from thousandths", function()
    srv:admin("/__sim/wallet", {assets = 12345, accumulate = 6789, voucher_balance = 500})
    local b = client():balance()
    assert.are.equal(12.345, b.assets)
    assert.are.equal(6.789, b.accumulate)
    assert.are.equal(0.5, b.voucher_balance)
    local e = srv:journal("/wallet/balance", 1)
    assert.are.equal("ok", e[#e].auth)          -- the raw token, no "Bearer"
  end)

  it("lists instances, finds by name or uuid, reads status and the SSH endpoint", function()
    local c1 = client()
    local it = c1:find("box1")
    assert.are.equal("pro-u1", it.uuid)
    assert.are.equal(2.5, billing.price_per_hour(it))
    assert.are.equal("box1", c1:find("pro-u1").name)
    assert.are.equal("running", c1:status("pro-u1"))
    local snap = c1:snapshot("pro-u1")
    assert.are.same({host = "127.0.0.1", port = 2222, user = "root"}, snap.ssh)
    outputs[#outputs + 1] = tostring(err_of(c1.find, c1, "nope"))
  end)

  it("costs a running stretch at price x time and shows the danger clocks", function()
    local now = os.time()
    local item = {status = "running", payg_price = 2500,
                  started_at = {time = os.date("!%Y-%m-%dT%H:%M:%SZ", now - 5400), valid = true}}
    assert.is_true(math.abs(billing.accrued(item, now) - 3.75) < 1e-9)
    local off = {status = "shutdown", stopped_at = {time = os.date("!%Y-%m-%dT%H:%M:%S+00:00", now - 14 * 86400), valid = true}}
    local clocks = billing.danger_clocks(off, {now = now})
    assert.are.equal("auto_release", clocks[1].name)
    assert.are.equal(86400, clocks[1].seconds_left)
    assert.are.equal("storage_trickle", clocks[2].name)
    local low = billing.danger_clocks(item, {now = now, balance = 5, burn_per_hour = 2.5})
    assert.are.equal("low_balance", low[1].name)
    assert.are.equal(7200, low[1].seconds_left)
  end)

  it("billing status prints balance, price, budget and danger clocks from the API", function()
    srv:admin("/__sim/wallet", {assets = 5000})
    local code, stdout, stderr = T.run("billing status", {env = srv:env()})
    outputs[#outputs + 1] = stdout .. stderr
    assert.are.equal(0, code, stderr)
    assert.matches("balance 5.00 yuan", stdout, 1, true)
    assert.matches("box1 (pro-u1): running, 2.50 yuan/h", stdout, 1, true)
    assert.matches("parked (pro-off): shutdown", stdout, 1, true)
    assert.matches("auto%-release in 1[45]d %d+h %(15 days after power%-off%)", stdout)
    assert.matches("balance 5.00 yuan lasts 2h 0m at 2.50 yuan/h", stdout, 1, true)
    code, stdout = T.run("billing status box1 --json", {env = srv:env()})
    local j = require("gpurent.util.json").decode(stdout)
    assert.are.equal(1, #j.instances)
    assert.are.equal("2.500", j.instances[1].price_per_hour)   -- money: an exact decimal string
  end)

  it("a wrong token is a clear error with code, HTTP status and request_id", function()
    local e = err_of(client{token = "wrong-token"}.balance, client{token = "wrong-token"})
    assert.is_true(autodl.is_error(e))
    assert.are.equal("AuthorizeFailed", e.code)
    assert.are.equal(401, e.status)
    assert.matches("^%x+$", e.request_id)
    assert.matches("POST " .. srv.url .. "/api/v1/dev/wallet/balance", tostring(e), 1, true)
    assert.is_nil(tostring(e):find("wrong-token", 1, true))
  end)

  it("no token at all: the CLI says where to put one (exit 2)", function()
    local code, _, stderr = T.run("billing status", {env = "env -u AUTODL_TOKEN GPURENT_AUTODL_BASE_URL=" .. srv.url
      .. " HOME=" .. srv.dir})
    assert.are.equal(2, code)
    assert.matches("AUTODL_TOKEN", stderr)
  end)

  it("a non-Success envelope carries code, msg and request_id", function()
    local c1 = client()
    local e = err_of(c1.status, c1, "pro-missing")
    assert.are.equal("RecordNotFoundError", e.code)
    assert.are.equal("未查询到相关实例", e.api_msg)
    assert.are.equal("provider", e.kind)
    assert.is_string(e.request_id)
    local j = srv:journal("/instance/pro/status", 2)
    assert.are.equal(e.request_id, j[#j].request_id)
  end)

  it("a timeout names method and URL and is not retried", function()
    srv:admin("/__sim/faults", {delay_count = 1, delay_seconds = 3, match = "wallet"})
    local c1 = client{timeout = 0.5}
    local t0 = require("gpurent.core").sys.now()
    local e = err_of(c1.balance, c1)
    assert.is_true(require("gpurent.core").sys.now() - t0 < 2.5)
    assert.are.equal("transport", e.kind)
    assert.are.equal("timeout", e.failure)
    assert.are.equal("Timeout", e.code)
    assert.matches("POST " .. srv.url .. "/api/v1/dev/wallet/balance", tostring(e), 1, true)
  end)

  it("malformed JSON and an HTML 502 are clear errors", function()
    srv:admin("/__sim/faults", {malformed = 1, match = "wallet"})
    local c1 = client()
    local e = err_of(c1.balance, c1)
    assert.are.equal("MalformedResponse", e.code)
    srv:admin("/__sim/faults", {http_5xx = 1, match = "wallet"})
    e = err_of(c1.balance, c1)
    assert.are.equal("HTTP502", e.code)
    assert.are.equal(502, e.status)
  end)

  it("a refused connection is a transport error naming the URL", function()
    local c1 = client{base_url = "http://127.0.0.1:9"}
    local e = err_of(c1.balance, c1)
    assert.are.equal("transport", e.kind)
    assert.are.equal("transport", e.failure)
    assert.matches("http://127.0.0.1:9/api/v1/dev/wallet/balance", tostring(e), 1, true)
  end)

  it("power_on retries with backoff while stock is out, then succeeds", function()
    srv:admin("/__sim/faults", {out_of_stock = 2})
    local c1 = client()
    c1:power_on("pro-off", {retries = 3, backoff = 0.01, wait = false})
    local j = srv:journal("/power_on", 3)
    assert.are.equal(3, #j)
    assert.are.same({"GpuStockNotEnough", "GpuStockNotEnough", "Success"}, {j[1].code, j[2].code, j[3].code})
    assert.matches("retry 1/3", out.text(), 1, true)
    assert.matches("retry 2/3", out.text(), 1, true)
  end)

  it("power_on gives up after the bounded retries", function()
    srv:admin("/__sim/set-state", {instance_uuid = "pro-off", status = "shutdown"})
    srv:admin("/__sim/faults", {out_of_stock = 5})
    local before = #srv:journal("/power_on")
    local c1 = client()
    local e = err_of(c1.power_on, c1, "pro-off", {retries = 2, backoff = 0.01, wait = false})
    assert.are.equal("GpuStockNotEnough", e.code)
    assert.are.equal(before + 3, #srv:journal("/power_on", before + 3))
  end)

  it("--dry-run prints the exact call with the token as *** and sends nothing", function()
    local before = #srv:journal("/power_on")
    local c1 = client{dry_run = true}
    c1:power_on("pro-off", {})
    assert.are.equal(before, #srv:journal("/power_on"))
    local text = out.text()
    assert.matches("POST " .. srv.url .. "/api/v1/dev/instance/pro/power_on", text, 1, true)
    assert.matches("Authorization: ***", text, 1, true)
    assert.matches('"instance_uuid":"pro-off"', text, 1, true)
    outputs[#outputs + 1] = text
  end)

  -- the limits are counted before sending by gpurent.notify, in the ledger (clock_notify_spec)
  it("WeChat: the API's refusal of a 6th message in a minute comes back as false, why", function()
    local c1 = client()
    for i = 1, 5 do assert.is_true((c1:wechat{title = "t" .. i, content = "c"})) end
    local ok, why = c1:wechat{title = "t6"}
    assert.is_false(ok)
    assert.matches("TooManyRequests", why)
    assert.are.equal(6, #srv:journal("/wechat/message/send", 6))
  end)

  it("steps without blocking inside a scheduler task", function()
    srv:admin("/__sim/faults", {delay_count = 1, delay_seconds = 0.6, match = "wallet"})
    local ticks = 0
    local t1 = sched.spawn(function() return client():balance() end)
    local t2 = sched.spawn(function()
      for _ = 1, 10 do ticks = ticks + 1; sched.sleep(0.03) end
    end)
    sched.join({t1, t2})
    assert.is_true(t1.ok, tostring(t1.results[1]))
    assert.are.equal(10, ticks)      -- the other task ran while the request waited
  end)

  it("http.request returns status, headers and body (from a server that is no provider API)", function()
    local other = api.start{}
    local ok, r = pcall(http.request, {method = "GET", url = other.url .. "/__sim/health"})
    other:stop()
    assert(ok, r)
    assert.are.equal(200, r.status)
    assert.matches("application/json", r.headers["content-type"])
    assert.matches('"ok": true', r.body, 1, true)
  end)

  it("http.request refuses the provider's API host: the raw primitive cannot carry a token there", function()
    local before = #srv:journal()
    local ok, e = pcall(http.request, {method = "POST", url = srv.url .. "/api/v1/dev/wallet/balance",
      headers = {Authorization = srv.token}, body = "{}"})
    assert.is_false(ok)
    assert.are.equal(3, e.exit)
    assert.matches("is a provider API", tostring(e), 1, true)
    assert.are.equal(before, #srv:journal())
  end)
end)

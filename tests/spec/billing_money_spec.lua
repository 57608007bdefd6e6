-- billing_money_spec.lua: money that matches the bill (issue 18), against the testbed's
-- real AutoDL API server (tests/sim/autodl-api) and the real gpurent binary: cost and
-- status from the provider's own state and price (instances started on the console
-- included), reconciled against the wallet's accumulated spend; the one budget gate;
-- `billing create` waiting for stock.
local api = require "autodl_api"
local billing = require "gpurent.billing"
local json = require "gpurent.util.json"

local function admin_ok(srv, route, body)
  local env = srv:admin(route, body)
  assert.are.equal("Success", env.code, json.encode(env))
  return env.data
end

describe("cost that matches the bill", function()
  local srv
  setup(function()
    srv = api.start{}
    -- started on the console an hour ago at 2 yuan/h: gpurent sent nothing
    admin_ok(srv, "/__sim/register", {instance_uuid = "pro-c1", name = "con1", region = "westDC2",
      host = "127.0.0.1", port = 2222, status = "running", price_per_hour = 2, started_ago = 3600})
    -- a whole stretch run elsewhere: half an hour at 4 yuan/h, then powered off
    admin_ok(srv, "/__sim/register", {instance_uuid = "pro-c2", name = "con2", region = "westDC2",
      host = "127.0.0.1", port = 2223, status = "running", price_per_hour = 4, started_ago = 1800})
    admin_ok(srv, "/__sim/set-state", {instance_uuid = "pro-c2", status = "shutdown"})
  end)
  teardown(function() srv:stop() end)

  it("counts an instance started on the console at the provider's price and times", function()
    local code, out, err = T.run("cost", {env = srv:env()})
    assert.are.equal(0, code, err)
    assert.matches("con1%s+1h00m%s+2%.00 CNY", out)
    assert.matches("con2%s+30m0%ds%s+2%.00 CNY", out)
    -- the ledger beside the wallet: the difference is printed, here nothing
    assert.matches("wallet: spent to date 4.00 yuan (the provider's); ledger 4.00; difference +0.00", out, 1, true)
    code, out, err = T.run("cost --json", {env = srv:env()})
    assert.are.equal(0, code, err)
    local doc = json.decode(out)
    assert.is_true(doc.provider.refreshed)
    assert.are.equal("4.000", doc.provider.wallet_accumulate)
    -- a second refresh adds nothing twice
    code, out = T.run("cost", {env = srv:env()})
    assert.matches("con2%s+30m0%ds%s+2%.00 CNY", out)
  end)

  it("shows the difference when the wallet spent what the ledger never saw", function()
    local w = admin_ok(srv, "/__sim/wallet", {})
    admin_ok(srv, "/__sim/wallet", {accumulate = w.accumulate + 1500})
    local code, out, err = T.run("cost", {env = srv:env()})
    assert.are.equal(0, code, err)
    assert.matches("difference %+1%.50 %(not in the ledger", out)
  end)

  it("says the ledger was not refreshed when there is no token", function()
    local code, out, err = T.run("cost", {env = "GPURENT_STATE_DIR=" .. T.q(srv.state) .. " HOME=" .. T.q(srv.dir)
      .. " AUTODL_TOKEN= AUTODL_TOKEN_FILE="})
    assert.are.equal(0, code, err)
    assert.matches("provider: not asked %(.*token", out)
  end)

  it("status shows the provider's power state for a linked alias", function()
    local env = srv:env("GPURENT_HOSTS_FILE=" .. T.q(srv.dir .. "/hosts_config"))
    local code, out, err = T.run("host add box1 --uuid pro-c1 --no-contact", {env = env})
    assert.are.equal(0, code, err .. out)
    code, out, err = T.run("status", {env = env})
    assert.are.equal(0, code, err)
    assert.matches("box1[^\n]*running%s+on", out)
    assert.matches("con2[^\n]*stopped%s+off", out)
    admin_ok(srv, "/__sim/set-state", {instance_uuid = "pro-c1", status = "shutdown"})
    code, out = T.run("status --json", {env = env})
    local doc = json.decode(out)
    local seen
    for _, r in ipairs(doc.instances) do
      for _, n in ipairs(r.names) do if n == "box1" then seen = r end end
    end
    assert.is_truthy(seen, out)
    assert.are.equal("stopped", seen.power_state)
  end)

  it("an instance started on the console enters the ledger at the first command that lists it", function()
    -- ten minutes at 6 yuan/h, started outside gpurent; nothing has refreshed the ledger since
    admin_ok(srv, "/__sim/register", {instance_uuid = "pro-c3", name = "con3", region = "westDC2",
      host = "127.0.0.1", port = 2225, status = "running", price_per_hour = 6, started_ago = 600})
    local no_token = "GPURENT_STATE_DIR=" .. T.q(srv.state) .. " HOME=" .. T.q(srv.dir) .. " AUTODL_TOKEN= AUTODL_TOKEN_FILE="
    local code, out, err = T.run("cost", {env = no_token})
    assert.are.equal(0, code, err)
    assert.falsy(out:find("con3", 1, true), out)
    -- any command that lists the account's instances (here a one-line recipe; the billing
    -- verbs, status and the launch's gate list them too)
    code, out, err = T.run([[-e 'local c = require("gpurent.platform").of(require("gpurent.config.profile").load("autodl")).client()
      print(#c:instances() .. " listed")']], {env = srv:env()})
    assert.are.equal(0, code, err)
    assert.matches("%d+ listed", out)
    -- then even a ledger-only cost (no token, no refresh) counts it from the provider's start
    code, out, err = T.run("cost", {env = no_token})
    assert.are.equal(0, code, err)
    assert.matches("provider: not asked", out)
    assert.matches("con3%s+10m0%ds%s+1%.00 CNY", out)
    code, out, err = T.run("status", {env = no_token})
    assert.are.equal(0, code, err)
    assert.matches("con3[^\n]*running%s+on", out)
  end)

  it("bills a no-GPU start at its own price when the seed gives one", function()
    admin_ok(srv, "/__sim/register", {instance_uuid = "pro-n1", name = "nogpu1", region = "westDC2",
      host = "127.0.0.1", port = 2224, status = "shutdown", price_per_hour = 3, no_gpu_price_per_hour = 0.1})
    admin_ok(srv, "/__sim/set-state", {instance_uuid = "pro-n1", status = "running", mode = "non_gpu", started_ago = 36000})
    local code, out, err = T.run("cost", {env = srv:env()})
    assert.are.equal(0, code, err)
    assert.matches("nogpu1%s+10h00m%s+1%.00 CNY", out)
  end)
end)

describe("the budget gate", function()
  local srv, ledger_path
  setup(function()
    srv = api.start{}
    ledger_path = srv.dir .. "/gate-ledger.sqlite"
    -- a box at 830% of its budget: 8.3 h at 2 yuan/h on the alias's linked instance
    local L = require("gpurent.state.ledger").open(ledger_path)
    local t = os.time()
    L:upsert_instance{name = "gpu-box", profile = "autodl", provider_id = "pro-g1"}
    L:upsert_instance{name = "g1", profile = "autodl", provider_id = "pro-g1"}
    L:record_billing{instance = "g1", action = "status", outcome = "ok", meter = "on", price_per_hour = 2,
      at = t - 8 * 3600 - 1080}
    L:record_billing{instance = "g1", action = "status", outcome = "ok", meter = "off", at = t}
    L:close()
  end)
  teardown(function() srv:stop() end)

  local function gate(o)
    o.ledger_path, o.refresh = ledger_path, false
    return pcall(billing.budget_gate, o)
  end

  it("refuses a launch or a sweep cell beyond the budget (exit 3, naming spent and budget)", function()
    for _, action in ipairs({"launch", "sweep cell 2"}) do
      local ok, err = gate{instance = "gpu-box", action = action, budgets = {["gpu-box"] = {yuan = 2, warn = 0.8}}}
      assert.is_false(ok)
      assert.are.equal(3, require("gpurent.util.errors").exit_code(err))
      assert.matches("budget exceeded for gpu-box: 16.60 of 2.00 yuan (830%)", err.msg, 1, true)
      assert.matches(action .. " refused", err.msg, 1, true)
    end
    -- the budget set on the provider's name or uuid gates the alias too
    assert.is_false((gate{instance = "gpu-box", action = "launch", budgets = {g1 = {yuan = 2}}}))
    assert.is_false((gate{instance = "gpu-box", action = "launch", budgets = {["pro-g1"] = {yuan = 2}}}))
    -- the account's budget gates every box
    local ok, err = gate{instance = "other", action = "launch", budgets = {[billing.ACCOUNT] = {yuan = 10}}}
    assert.is_false(ok)
    assert.matches("account budget exceeded: spent 16.60 of 10.00 yuan", err.msg, 1, true)
    -- under budget: allowed, with its state
    assert.are.equal("ok", select(2, gate{instance = "gpu-box", action = "launch", budgets = {g1 = {yuan = 100}}}))
    assert.are.equal("none", select(2, gate{instance = "gpu-box", action = "launch", budgets = {}}))
  end)

  it("refuses power-on of a box whose console stretch spent its budget (nothing sent)", function()
    admin_ok(srv, "/__sim/register", {instance_uuid = "pro-s1", name = "spent1", region = "westDC2",
      host = "127.0.0.1", port = 2225, status = "running", price_per_hour = 2, started_ago = 8 * 3600 + 1080})
    admin_ok(srv, "/__sim/set-state", {instance_uuid = "pro-s1", status = "shutdown"})
    local code, out, err = T.run("billing budget spent1 2", {env = srv:env()})
    assert.are.equal(0, code, err)
    code, out, err = T.run("billing power-on spent1 --no-wait", {env = srv:env()})
    assert.are.equal(3, code, out .. err)
    assert.matches("budget exceeded for spent1: 16.60 of 2.00 yuan (830%); power_on refused", err, 1, true)
    assert.are.equal(0, #srv:journal("/power_on"))
  end)
end)

describe("billing create (refusals without a server)", function()
  it("refuses on a platform without an API, and create's options on other verbs (exit 2)", function()
    local env = "GPURENT_STATE_DIR=" .. T.q(T.tmpdir()) .. " AUTODL_TOKEN= AUTODL_TOKEN_FILE="
    local code, _, err = T.run("billing create x1 --gpu-spec s --image i --approve x1 --profile generic-ssh", {env = env})
    assert.are.equal(2, code, err)
    assert.matches("no API to create instances with", err, 1, true)
    code, _, err = T.run("billing power-on x1 --gpu-spec s", {env = env})
    assert.are.equal(2, code, err)
    assert.matches("--gpu-spec belongs to gpurent billing create", err, 1, true)
  end)
end)

describe("billing create", function()
  local testbed = require "testbed"
  local tb, url
  local SPEC = "sim-nvidia-geforce-rtx-4090"

  local function admin(route, body)
    local p = io.popen(string.format("curl -sS --noproxy '*' -m 10 -X POST -H 'Content-Type: application/json' -d %s %s",
      T.q(json.encode(body)), T.q(url .. route)))
    local out = p:read("a")
    p:close()
    local env = json.decode(out)
    assert.are.equal("Success", env.code, out)
    return env.data
  end
  local function creates() return #tb:api_calls("/pro/create") end

  setup(function()
    local ok, why = testbed.available()
    if not ok then return pending(why) end
    tb = testbed.new()
    local out, rc = tb:sim("api-up --settle-delay 0.2")
    assert(rc == 0, out)
    url = testbed.read(tb.dir .. "/api.url"):match("%S+")
  end)
  teardown(function() if tb then tb:down() end end)

  local base = "billing create new1 --gpu-spec " .. SPEC .. " --image base-image-sim"

  it("refuses without --approve NAME and sends nothing (exit 3)", function()
    local code, out, err = tb:gpurent(base)
    assert.are.equal(3, code, out .. err)
    assert.matches("create new1 starts a meter: pass --approve new1", err, 1, true)
    code, _, err = tb:gpurent(base .. " --approve other")
    assert.are.equal(3, code, err)
    assert.are.equal(0, creates())
  end)

  it("refuses beyond the account's budget before anything is sent (exit 3)", function()
    admin("/__sim/register", {instance_uuid = "pro-old", name = "old1", region = "westDC2", host = "127.0.0.1",
      port = 2299, status = "running", price_per_hour = 2, started_ago = 3600})
    admin("/__sim/set-state", {instance_uuid = "pro-old", status = "shutdown"})
    local code, _, err = tb:gpurent("billing budget --account 1.5")
    assert.are.equal(0, code, err)
    code, _, err = tb:gpurent(base .. " --approve new1")
    assert.are.equal(3, code, err)
    assert.matches("account budget exceeded: spent 2.00 of 1.50 yuan", err, 1, true)
    assert.are.equal(0, creates())
    code, _, err = tb:gpurent("billing budget --account 100")
    assert.are.equal(0, code, err)
  end)

  it("gives up out of stock after its bound in count, printed", function()
    admin("/__sim/stock", {data_center = "westDC2", gpu_spec_uuid = SPEC, count = 0})
    local code, out, err = tb:gpurent(base .. " --approve new1 --stock-attempts 3 --stock-backoff 1s --stock-wait 1m")
    assert.are.equal(1, code, out .. err)
    assert.matches("attempt 1/3, next in 1s (gives up after 3 attempts or 60s)", out, 1, true)
    assert.matches("no stock for " .. SPEC .. " in any data centre after 3 attempt(s)", err, 1, true)
    assert.are.equal(3, creates())
    admin("/__sim/stock", {clear = true})
  end)

  it("waits for stock, takes the first data centre that has it, and registers the alias in one step", function()
    admin("/__sim/stock", {data_center = "westDC2", gpu_spec_uuid = SPEC, count = 0})
    admin("/__sim/stock", {data_center = "beijingDC1", gpu_spec_uuid = SPEC, count = 1})
    admin("/__sim/faults", {out_of_stock = 1})
    local before = creates()
    -- the person's own ssh setup: ~/.ssh/config (which create's Include joins), the sim's key
    local code, out, err = tb:gpurent(base .. " --approve new1 --data-center westDC2,beijingDC1 --stock-backoff 1s"
      .. " --identity " .. T.q(tb.dir .. "/client/id_ed25519"), {own_ssh_config = true})
    assert.are.equal(0, code, out .. err)
    assert.matches("out of stock for " .. SPEC .. " in westDC2, beijingDC1", out, 1, true)
    assert.matches("new1: created pro%-%S+ %(beijingDC1%) after 2 attempt%(s%); running", out)
    assert.are.equal(2, creates() - before)
    local body = tb:api_calls("/pro/create")[creates()].body
    assert.are.same({"westDC2", "beijingDC1"}, body.data_center_list)
    assert.are.equal("new1", body.instance_name)
    -- the alias answers over ssh, and billing knows it by the alias
    local hosts = testbed.read(tb.home .. "/.ssh/gpurent_config")
    assert.matches("Host new1", hosts, 1, true)
    assert.matches("host key of new1: ssh%-ed25519 SHA256:%S+ %(recorded in", out)
    code, out, err = tb:gpurent("exec new1 -- echo hello-from-new1", {own_ssh_config = true})
    assert.are.equal(0, code, out .. err)
    assert.matches("hello-from-new1", out, 1, true)
    code, out, err = tb:gpurent("billing status new1")
    assert.are.equal(0, code, err)
    assert.matches(": running, 1.98 yuan/h", out, 1, true)
  end)
end)

describe("the watchdog's budget", function()
  local simbox = require "simbox"
  local ok_sim, why = simbox.available()
  if not ok_sim then pending("testbed unavailable: " .. tostring(why)); return end
  local run = require "gpurent.lifecycle.run"
  local detach = require "gpurent.lifecycle.detach"
  local profile = require "gpurent.config.profile"
  local core = require "gpurent.core"
  local box, env, r

  setup(function()
    box = simbox.new()
    -- 36 yuan/h: a hundredth of a yuan a second
    box:up("mb1", "--price-per-hour 36")
    local token = T.read(box.dir .. "/api.token"):match("%S+")
    local url = T.read(box.dir .. "/api.url"):match("%S+")
    env = box:env() .. " GPURENT_STATE_DIR=" .. T.q(box.dir .. "/state") .. " HOME=" .. T.q(box.dir)
      .. " AUTODL_TOKEN=" .. T.q(token) .. " GPURENT_AUTODL_BASE_URL=" .. T.q(url)
    -- a training job that keeps writing checkpoints and never ends by itself
    local inst = box.insts.mb1
    local p = inst.profile
    r = {id = "proj-money", host = "mb1", session = run.session_name("proj-money"), paths = run.paths(p, "proj", "proj-money")}
    inst:sh("mkdir -p " .. T.q(r.paths.code) .. " " .. T.q(r.paths.out), {check = true})
    local wo = {command = 'i=0; while :; do i=$((i+1)); echo "weights $i" > "$GPURENT_OUT/ep$i.pth"; sleep 1; done',
      sync = {"best.pth"}, scratch = {}, durable_dir = r.paths.durable_ckpt, durable_tier = profile.durable_tier(p).path}
    local script = detach.install(inst, r, function(v) wo.version = v; return detach.wrapper(r, wo) end)
    detach.start(inst, r, {script = script})
    -- the person's push token on the box (gpurent never copies it there)
    assert.are.equal(0, (box:exec("mb1", "mkdir -p /root/.gpurent/autostop && printf %s " .. T.q(token)
      .. " > /root/.gpurent/autostop/push.token")))
  end)
  teardown(function() if box then box:down() end end)

  it("warns at the threshold, then syncs the running job's newest checkpoint and parks the box", function()
    local code, out, err = T.run("billing autostop mb1 --budget 0.15 --budget-warn 50 --interval 1s", {env = env})
    assert.are.equal(0, code, out .. err)
    assert.matches("the spend reaches 0%.15 yuan %(now %d%.%d%d at 36%.00 yuan/h; warning at 50%%%)", out)
    -- what the watchdog reckons is shown by --status (its readings), before it parks the box
    local st_out
    for _ = 1, 20 do
      local c2, o2 = T.run("billing autostop mb1 --status", {env = env})
      st_out = o2
      if c2 == 0 and o2:find("budget: spent", 1, true) then break end
      core.sys.sleep(0.25)
    end
    assert.matches("budget: spent 0%.%d%d of 0%.15 yuan %(%d+%%%) at 36%.00/h", st_out)
    local deadline, st = core.sys.now() + 60, nil
    repeat
      core.sys.sleep(0.5)
      local _, info = pcall(box.info, box, "mb1")
      st = type(info) == "table" and info.status or st
    until st == "shutdown" or core.sys.now() > deadline
    assert.are.equal("shutdown", st)
    local d = box.dir .. "/instances/mb1/root/.gpurent/autostop/"
    local log = T.read(d .. "watchdog.log")
    local warn_at = log:find("BUDGET WARNING: spent 0.0", 1, true) or log:find("BUDGET WARNING: spent 0.1", 1, true)
    local sync_at = log:find("budget sync: ", 1, true)
    local off_at = log:find("POWER OFF (budget)", 1, true)
    assert.is_truthy(warn_at, log)
    assert.is_truthy(sync_at and off_at and warn_at < sync_at and sync_at < off_at, log)
    assert.matches("push sent %(budget warning%)", log)
    local last = T.read(d .. "last-stop")
    assert.matches("reason=budget", last, 1, true)
    -- the durable copy is the newest checkpoint the job had written, byte for byte
    local synced = log:match("budget sync: (%S+) %-> (%S+) %(%d+ bytes, sha256 verified%)")
    local src, dst = log:match("budget sync: (%S+) %-> (%S+) ")
    assert.is_truthy(synced, log)
    local function host(pth)
      if pth:find("^/root/autodl%-fs/") then return box.dir .. "/regions/westDC2/" .. pth:sub(#"/root/autodl-fs/" + 1) end
      return box.dir .. "/instances/mb1/data/" .. pth:sub(#"/root/autodl-tmp/" + 1)
    end
    assert.matches("^" .. r.paths.durable_ckpt:gsub("%p", "%%%0"), dst)
    assert.are.equal(T.read(host(src)), T.read(host(dst)))
    local n = tonumber(src:match("ep(%d+)%.pth$"))
    -- the newest at sync time: only what the job wrote in the seconds the power-off took is newer
    local newest = n
    while T.read(host((src:gsub("ep%d+", "ep" .. (newest + 1))))) do newest = newest + 1 end
    assert.is_true(n >= 2 and newest - n <= 3, "synced ep" .. n .. ", newest ep" .. newest)
    -- the push reached the platform's channel
    local wechat = T.read(box.dir .. "/wechat.jsonl") or ""
    assert.matches('"title": "gpurent: budget warning"', wechat, 1, true)
    assert.matches('"title": "gpurent: budget spent"', wechat, 1, true)
  end)
end)

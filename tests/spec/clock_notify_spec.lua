-- clock_notify_spec: the 15-day release clock of a powered-off box and the one
-- notification path (issue 18), on the testbed: the real AutoDL API server
-- (tests/sim/autodl-api, its WeChat route journal wechat.jsonl), the real binary, a
-- real SQLite ledger. Days pass through the simulator's /__sim/advance (the account
-- lives N seconds at once: stop times move back, a box off for 15 days is released),
-- and, where the ledger keeps the count (the WeChat limits), by writing the ledger's
-- times back by as much. Nothing sleeps.
local api = require "autodl_api"
local cjson = require "cjson"
local testbed = require "testbed"
local tty = require "tty"

local DAY = 86400

local function start()
  local srv = api.start{settle_delay = 0.05}
  return srv
end

local function g(srv, args)
  return T.run(args, {env = srv:env()})
end

local function wechat(srv)
  local list = {}
  for line in (T.read(srv.dir .. "/wechat.jsonl") or ""):gmatch("[^\n]+") do list[#list + 1] = cjson.decode(line) end
  return list
end

local function advance(srv, seconds)
  local env = srv:admin("/__sim/advance", {seconds = seconds})
  assert(env.code == "Success", cjson.encode(env))
end

-- The ledger's own record of time (its clocks, the pushes it counted), moved back as
-- the sim's was: together, `seconds` passed for the account and for gpurent.
local function ledger_back(srv, seconds)
  local L = require("gpurent.state.ledger").open(srv.state .. "/ledger.sqlite")
  L.db:run("UPDATE notifications SET at = at - ?, pushed_at = pushed_at - ?", seconds, seconds)
  L.db:run("UPDATE danger_clocks SET started_at = started_at - ?, deadline = deadline - ?, set_at = set_at - ?",
    seconds, seconds, seconds)
  L:close()
end

local function days_pass(srv, seconds)
  advance(srv, seconds)
  ledger_back(srv, seconds)
end

local function power_off_on_console(srv, uuid)
  local env = srv:admin("/__sim/set-state", {instance_uuid = uuid, status = "shutdown"})
  assert(env.code == "Success", cjson.encode(env))
end

describe("the release clock of a powered-off box", function()
  local srv
  before_each(function() srv = start() end)
  after_each(function() srv:stop() end)

  it("a console power-off shows in gpurent status as days left, counted from the provider's stop time", function()
    srv:register{uuid = "pro-b1", name = "b1"}
    local code, out, err = g(srv, "billing status")
    assert.are.equal(0, code, err)
    power_off_on_console(srv, "pro-b1")
    advance(srv, 3 * DAY + 3600)           -- powered off 3 days ago, seen only now
    code, out, err = g(srv, "billing status")
    assert.are.equal(0, code, err)
    code, out, err = g(srv, "status")
    assert.are.equal(0, code, err)
    assert.matches("\nb1 [^\n]*b1 off 3d: AutoDL releases it in 12d", out)
    code, out = g(srv, "status --json")
    local row = cjson.decode(out).instances[1]
    assert.are.equal("auto_release", row.danger_clocks[1].name)
    assert.is_true(math.abs(row.danger_clocks[1].seconds_left - (12 * DAY - 3600)) < 120, out)
  end)

  it("reminds at days 10, 13 and 14, each once, on the terminal and by WeChat", function()
    srv:register{uuid = "pro-b1", name = "b1"}
    power_off_on_console(srv, "pro-b1")
    local _, _, err = g(srv, "billing status")
    assert.is_nil(err:find("powered off (关机) for", 1, true), err)
    local seen = {}
    for _, step in ipairs{{9, nil}, {1, 10}, {2, nil}, {1, 13}, {1, 14}} do
      advance(srv, step[1] * DAY)
      local code, _, e1 = g(srv, "billing status")        -- sees the provider's stop time
      assert.are.equal(0, code, e1)
      local _, _, e2 = g(srv, "status")                    -- the next command: nothing twice
      local both = e1 .. e2
      if step[2] then
        assert.matches("b1 has been powered off %(关机%) for " .. step[2] .. " days", both)
        local _, n = both:gsub("has been powered off", "")
        assert.are.equal(1, n, both)
        seen[#seen + 1] = step[2]
      else
        assert.is_nil(both:find("has been powered off", 1, true), both)
      end
    end
    assert.are.same({10, 13, 14}, seen)
    local msgs = wechat(srv)
    assert.are.equal(3, #msgs, cjson.encode(msgs))
    assert.matches("for 10 days.*in 5 days", msgs[1].content)
    assert.matches("for 13 days.*in 2 days", msgs[2].content)
    assert.matches("for 14 days.*in 1 day,", msgs[3].content)
    assert.matches("only /root/autodl%-fs survives", msgs[3].content)
  end)

  it("reminds on the next gpurent command from the ledger alone (its clock start written back)", function()
    srv:register{uuid = "pro-b1", name = "b1"}
    power_off_on_console(srv, "pro-b1")
    assert.are.equal(0, (g(srv, "billing status")))
    local L = require("gpurent.state.ledger").open(srv.state .. "/ledger.sqlite")
    L.db:run("UPDATE danger_clocks SET started_at = started_at - ?, deadline = deadline - ?", 13 * DAY, 13 * DAY)
    L:close()
    local code, _, err = g(srv, "history")                 -- a command that never asks the API
    assert.are.equal(0, code, err)
    assert.matches("b1 has been powered off %(关机%) for 13 days", err)
    assert.are.equal(1, #wechat(srv))
    _, _, err = g(srv, "history")
    assert.is_nil(err:find("has been powered off", 1, true), err)
  end)

  it("a box gone after 15 days off is explained as the auto-release, not 'no instance'", function()
    srv:register{uuid = "pro-b1", name = "b1"}
    power_off_on_console(srv, "pro-b1")
    assert.are.equal(0, (g(srv, "billing status")))
    days_pass(srv, 14 * DAY)
    assert.are.equal(0, (g(srv, "billing status")))        -- seen on day 14 (the reminder)
    days_pass(srv, DAY + 60)                               -- the simulator releases it
    local code, out, err = g(srv, "billing status b1")
    assert.are_not.equal(0, code)
    local day = os.date("!%Y-%m-%d", os.time() - 15 * DAY - 60)
    assert.matches("b1 was powered off on " .. day .. ", 15 days ago: AutoDL released it with its data disk",
      err, 1, true)
    assert.is_nil(err:find("no instance b1", 1, true), err)
    code, out, err = g(srv, "billing status")              -- the whole list: the ledger learns it
    assert.are.equal(0, code, err)
    code, out = g(srv, "status")
    assert.matches("\nb1 +autodl +released", out)
    assert.is_nil(out:find("releases it in", 1, true), out)
    local _, _, again = g(srv, "billing status")
    assert.is_nil(again:find("released it", 1, true), again)           -- told once
    local msgs = wechat(srv)
    assert.are.equal(2, #msgs)                             -- the day-14 reminder, the release
    assert.matches("AutoDL released it with its data disk", msgs[2].content, 1, true)
  end)
end)

describe("the release clock's rules", function()
  it("come from the profile; a reminder day the box does not live to see is refused, naming the key", function()
    local clock = require "gpurent.billing.clock"
    local r = clock.rules(require("gpurent.config.profile").load("autodl"))
    assert.are.same({days = 15, remind_days = {10, 13, 14}, survivor = "/root/autodl-fs"}, r)
    assert.is_nil(clock.rules(require("gpurent.config.profile").load("generic-ssh")))
    local ok, e = pcall(clock.rules, {platform = "x", billing = {auto_release = {after_days = 15, remind_days = {10, 15}}}})
    assert.is_false(ok)
    assert.matches("billing.auto_release.remind_days: day 15 is not before after_days 15", tostring(e), 1, true)
  end)
end)

describe("notifications within the platform's limits", function()
  local srv
  before_each(function() srv = start() end)
  after_each(function() srv:stop() end)

  local function send(n, from)
    local chunk = string.format("for i = %d, %d do require('gpurent.notify').send{kind = 'test', message = 'note ' .. i} end",
      from, from + n - 1)
    return g(srv, "-e " .. T.q(chunk))
  end

  local function pushes(srv_)
    local L = require("gpurent.state.ledger").open(srv_.state .. "/ledger.sqlite")
    local rows = L.db:query("SELECT message, push FROM notifications WHERE kind = 'test' ORDER BY id")
    L:close()
    return rows
  end

  it("6 in a minute: 5 sent, the 6th held, said, and sent in one summary when the window allows", function()
    local code, _, err = send(6, 1)
    assert.are.equal(0, code, err)
    assert.are.equal(5, #wechat(srv))
    assert.matches("gpurent: note 6\ngpurent: WeChat limit (5 a minute reached): this message is held", err, 1, true)
    assert.are.equal("held", pushes(srv)[6].push)
    _, _, err = g(srv, "status")                           -- inside the minute: still held
    assert.are.equal(5, #wechat(srv))
    advance(srv, 61); ledger_back(srv, 61)
    code, _, err = g(srv, "status")                        -- any next command flushes
    assert.are.equal(0, code, err)
    assert.matches("WeChat: sent a summary of 1 held notification", err, 1, true)
    local msgs = wechat(srv)
    assert.are.equal(6, #msgs)
    assert.matches("1 notification %(held by the rate limit%)", msgs[6].title)
    assert.matches("note 6", msgs[6].content, 1, true)
    assert.are.equal("summarized", pushes(srv)[6].push)
    g(srv, "status")
    assert.are.equal(6, #wechat(srv))                      -- sent once
  end)

  it("51 in a day: 50 sent, the 51st held past the minute, sent in a summary the next day", function()
    for round = 0, 9 do
      local code, _, err = send(5, round * 5 + 1)
      assert.are.equal(0, code, err)
      assert.is_nil(err:find("held", 1, true), err)
      advance(srv, 61); ledger_back(srv, 61)
    end
    assert.are.equal(50, #wechat(srv))
    local _, _, err = send(1, 51)
    assert.matches("WeChat limit (50 a day reached): this message is held", err, 1, true)
    advance(srv, 120); ledger_back(srv, 120)
    g(srv, "status")
    assert.are.equal(50, #wechat(srv))                     -- the day is not over
    advance(srv, DAY); ledger_back(srv, DAY)
    _, _, err = g(srv, "status")
    assert.matches("sent a summary of 1 held notification", err, 1, true)
    local msgs = wechat(srv)
    assert.are.equal(51, #msgs)
    assert.matches("note 51", msgs[51].content, 1, true)
    -- nothing silently dropped: every message is sent or summarised
    for _, r in ipairs(pushes(srv)) do assert.is_true(r.push == "sent" or r.push == "summarized", r.message) end
  end)
end)

describe("the release clock at a peer's connect and in the REPL prompt", function()
  local ok_tb, why = testbed.available()
  if not ok_tb then pending("testbed unavailable: " .. tostring(why)); return end
  local tb, term

  setup(function()
    tb = testbed.new()
    tb:up("a2", "--region westDC2 --data-size 256M")
  end)
  teardown(function() if tb then tb:down() end end)
  after_each(function() if term then term:close(); term = nil end end)

  local function admin(route, body)
    body = body or {}
    local url = testbed.read(tb.dir .. "/api.url"):match("%S+")
    local out = testbed.sh(string.format("curl -sS --noproxy '*' -m 10 -X POST -H 'Content-Type: application/json' -d %s %s",
      T.q(cjson.encode(body)), T.q(url .. route)))
    assert.matches('"Success"', out)
  end

  it("warns once at a connect to a same-region peer and names the clock in the prompt", function()
    for _, b in ipairs{{"b1", "westDC2"}, {"c1", "beijingDC1"}} do   -- powered off on the console
      admin("/__sim/register", {instance_uuid = "pro-" .. b[1], name = b[1], region = b[2], host = "127.0.0.1", port = 1})
      admin("/__sim/set-state", {instance_uuid = "pro-" .. b[1], status = "shutdown"})
    end
    local L = require("gpurent.state.ledger").open(tb.state .. "/ledger.sqlite")
    L:upsert_instance{name = "a2", profile = "autodl"}     -- the ledger knows a2 (a run connected to it)
    L:close()
    admin("/__sim/wallet", {assets = 10 ^ 9})              -- a2 runs 4 days without arrears
    admin("/__sim/advance", {seconds = 4 * DAY + 60})
    local code, out, err = tb:gpurent("billing status")
    assert.are.equal(0, code, out .. err)
    code, out, err = tb:gpurent("exec a2 -- true")
    assert.are.equal(0, code, out .. err)
    assert.matches("gpurent: warning: a powered-off peer of a2 in its region: b1 off 4d: AutoDL releases it in 11d\n",
      err, 1, true)
    assert.is_nil(err:find("c1", 1, true), err)          -- another region's box is no peer
    term = tty.start(T.q(T.bin) .. " repl a2", {env = tb:env()})
    term:wait_for("a2 %[[^\n]*meter on | b1 off 4d: AutoDL releases it in 11d%]>", 30)
    term:close()
    term = tty.start(T.q(T.bin) .. " repl --local", {env = tb:env()})
    local screen = term:wait_for("local %[[^\n]*%]>", 30)
    assert.matches("b1 off 4d: AutoDL releases it in 11d", screen, 1, true)
    assert.matches("c1 off 4d: AutoDL releases it in 11d", screen, 1, true)
  end)
end)

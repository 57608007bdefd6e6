-- check_spec: `gpurent check` as a user runs it, against simulated AutoDL instances:
-- the table and JSON outputs, exit 1 on a failing probe and 0 otherwise, --only,
-- --fix, --peer, usage errors, and the first-contact notice shown once per host.
local json = require "gpurent.util.json"
local simbox = require "simbox"

describe("gpurent check (no host needed)", function()
  it("refuses bad usage with exit 2", function()
    local code, _, err = T.run("check")
    assert.are.equal(2, code)
    assert.matches("exactly one HOST", err)
    code, _, err = T.run("check somehost --profile autodl --only AD99")
    assert.are.equal(2, code)
    assert.matches("unknown gotcha id AD99", err)
  end)

  it("an invalid profile stops before connecting, naming file:line and key", function()
    local dir = T.tmpdir()
    local f = T.write(dir .. "/bad.yaml", "extends: autodl\nnetwork:\n  proxy: on\n")
    local code, _, err = T.run("check somehost --profile " .. T.q(f))
    T.rmtree(dir)
    assert.are.equal(1, code)
    assert.matches("bad%.yaml:3:3: network%.proxy: unknown key", err)
  end)

  it("checks the local machine with the local profile", function()
    local state = T.tmpdir()
    local code, out = T.run("check local --json --only U-CRLF,U-WANDB-OFFLINE", {env = "GPURENT_STATE_DIR=" .. T.q(state)})
    T.rmtree(state)
    local doc = json.decode(out, "check")
    assert.are.equal("local", doc.profile)
    assert.are.equal(2, #doc.results)
    assert.is_false(doc.first_contact)          -- the local profile has nothing to surface
    assert.are.equal(doc.worst == "fail" and 1 or 0, code)
  end)
end)

local ok_sim, why = simbox.available()
local desc = ok_sim and describe or function(name) describe(name, function() pending(why) end) end

desc("gpurent check on the testbed", function()
  local box, state
  local function check(args)
    return T.run("check " .. args, {env = box:env() .. " GPURENT_STATE_DIR=" .. T.q(state)})
  end

  setup(function()
    box = simbox.new()
    state = T.tmpdir()
    box:up("h1", "--region cA --data-size 32M --fs-size 16M --fs-inodes 200")
    box:up("h2", "--region cA")
    box:up("h3", "--region cB --no-turbo --data-size 16M --fs-size 8M")
  end)
  teardown(function()
    if box then box:down() end
    T.rmtree(state)
  end)

  it("prints the first-contact notice once per host, then only the table", function()
    local code, out = check("h1 --profile autodl --only AD4,AD7")
    assert.are.equal(0, code, out)
    assert.matches("First contact with h1 %(autodl%)", out)
    assert.matches("AD%-DANGER: 关机 auto%-releases the box after 15 days", out)
    assert.matches("设置SSH免密登录", out)
    assert.matches("\nAD4%s+ok%s+/root/autodl%-fs: df %-i", out)
    assert.is_truthy(T.read(state .. "/contacted.json"):find("autodl h1", 1, true))
    code, out = check("h1 --profile autodl --only AD4")
    assert.are.equal(0, code)
    assert.is_nil(out:find("First contact", 1, true))
    assert.matches("^ID%s+STATUS%s+EVIDENCE\nAD4 ", out)
  end)

  it("runs every probe of the profile, reports JSON, and exits 1 when one fails", function()
    local code, out = check("h3 --profile autodl --json")
    local doc = json.decode(out, "check --json")
    assert.are.equal("h3", doc.host)
    assert.are.equal(23, #doc.results)
    local by = {}
    for _, r in ipairs(doc.results) do
      by[r.id] = r
      assert.is_truthy(({ok = 1, warn = 1, fail = 1, ["n/a"] = 1})[r.status], r.id)
      assert.is_true(#r.evidence > 0 and #r.fix > 0, r.id)
    end
    assert.are.equal("fail", by.AD1.status)           -- --no-turbo
    assert.are.equal("fail", doc.worst)
    assert.are.equal(1, code)
    assert.is_true(doc.first_contact)
    assert.are.equal("AD-DANGER", doc.notice.danger_clocks[1].id)
  end)

  it("exits 0 when nothing fails, even with warnings and n/a", function()
    local code, out = check("h1 --profile autodl --only AD1,AD3,AD6")
    assert.are.equal(0, code, out)
    assert.matches("AD1%s+warn", out)
    assert.matches("AD3%s+n/a%s+needs a second instance", out)
    assert.matches("fix: source /etc/network_turbo", out)
  end)

  it("--peer feeds the cross-region probe", function()
    local code, out = check("h1 --profile autodl --only AD3 --peer h2")
    assert.are.equal(0, code, out)
    assert.matches("AD3%s+ok%s+.*visible from instance h2", out)
    code, out = check("h1 --profile autodl --only AD3 --peer h3 --json")
    assert.are.equal(1, code)
    assert.are.equal("fail", json.decode(out, "check").results[1].status)
  end)

  it("--fix applies the safe fix and re-probes", function()
    local code, out = check("h2 --profile autodl --only AD1,AD2 --fix --json")
    assert.are.equal(0, code, out)
    local doc = json.decode(out, "check")
    for _, r in ipairs(doc.results) do
      assert.are.equal("ok", r.status, r.id .. ": " .. r.evidence)
      assert.are.equal("warn", r.before)
      assert.matches("appended to ~/%.bashrc", r.fixed)
    end
    code, out = check("h2 --profile autodl --only AD1")
    assert.matches("AD1%s+ok", out)
  end)

  it("an unreachable host is an error naming it, not a table of ok", function()
    local code, out, err = check("nosuchhost --profile autodl --only AD4")
    assert.are.equal(1, code)
    assert.is_nil(out:find("ok", 1, true))
    assert.matches("nosuchhost", err)
  end)
end)

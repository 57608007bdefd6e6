-- platform_spec: the platform seam (gpurent.platform, issue 20). A profile's
-- `platform:` picks the module; a profile without one gets the generic platform, which
-- has no API and no meter-stop verb and says so (a refusal in teardown, a usage error
-- elsewhere); host patterns pick a profile; power-off irreversibility has one definition.
local platform = require "gpurent.platform"
local profile = require "gpurent.config.profile"
local errors = require "gpurent.util.errors"

describe("gpurent.platform", function()
  it("returns the profile's platform module, and the generic one for a profile without one", function()
    local A = platform.of(profile.load("autodl"))
    assert.are.equal("autodl", A.name)
    assert.are.equal(A, platform.of("autodl"))
    for _, name in ipairs({"generic-ssh", "local"}) do
      assert.are.equal("generic", platform.of(profile.load(name)).name, name)
    end
    assert.are.equal("generic", platform.of({platform = "no-such-provider"}).name)
    assert.are.equal("generic", platform.of(nil).name)
    assert.are.same({"autodl", "slurm"}, platform.names())
  end)

  it("every platform provides the whole interface", function()
    for _, P in ipairs({platform.of("generic-ssh"), platform.of("autodl"), platform.of("slurm")}) do
      for _, f in ipairs({"client", "require_client", "stop", "parse_login", "notify", "in_instance_power_off"}) do
        assert.are.equal("function", type(P[f]), P.name .. "." .. f)
      end
      for _, f in ipairs({"unreachable", "teardown_reminder"}) do
        assert.are.equal("function", type(P.hints[f]), P.name .. ".hints." .. f)
      end
      assert.are.equal("string", type(P.hints.no_token), P.name)
      assert.are.equal("string", type(P.login_example), P.name)
      assert.are.equal("table", type(P.verbs), P.name)
    end
  end)

  it("the generic platform has no meter-stop: a refusal where teardown asks, else a usage error", function()
    local G = platform.of("generic-ssh")
    assert.is_nil((G.client()))
    local ok, e = pcall(G.stop, {verb = "power_off", ref = "box9", without_client = "refusal", context = "teardown: "})
    assert.is_false(ok)
    assert.are.equal(3, errors.exit_code(e))
    assert.matches("^teardown: this platform has no billing API", errors.message(e))
    ok, e = pcall(G.stop, {verb = "power_off", ref = "box9"})
    assert.is_false(ok)
    assert.are.equal(2, errors.exit_code(e))
    assert.is_false((G.notify{title = "t", name = "n", content = "c"}))
  end)

  it("the hints are the platform's: AutoDL's name its console string, the generic ones none", function()
    local A, G = platform.of("autodl"), platform.of("generic-ssh")
    assert.truthy(A.hints.unreachable("box9"):find(A.login_example, 1, true))
    assert.truthy(A.hints.teardown_reminder("box9", "pro-1"):find("gpurent billing power-off pro-1 --ssh box9", 1, true))
    assert.truthy(A.hints.teardown_reminder("box9"):find("gpurent billing power-off box9 --approve box9 (", 1, true))
    assert.is_nil(G.hints.unreachable("box9"):lower():find("autodl", 1, true))
  end)

  it("picks a profile by its alias or host pattern", function()
    assert.are.equal("autodl", (platform.profile_for_host("autodl-proj-1", nil)))
    assert.are.equal("autodl", (platform.profile_for_host("box", "connect.westDC2.seetacloud.com")))
    assert.is_nil(platform.profile_for_host("box", "h.example"))
  end)

  it("power-off irreversibility has one definition", function()
    assert.is_false(platform.power_off_irreversible(profile.load("autodl")))
    assert.is_true(platform.power_off_irreversible({billing = {meter_stop = {irreversible = true}}}))
    assert.is_true(platform.power_off_irreversible({billing = {verbs = {power_off = {reversible = false}}}}))
    assert.is_false(platform.power_off_irreversible({}))
  end)

  it("the default profile is named by profiles/schema.yaml", function()
    assert.are.equal("autodl", profile.default_name())
  end)
end)

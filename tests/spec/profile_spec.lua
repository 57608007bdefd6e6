-- profile_spec: the shipped profiles load and read plainly in Lua; the schema turns
-- unknown keys, missing keys and wrong types into errors naming file:line:col and
-- the key path; team overlays deep-merge and can delete keys.
local profile = require "gpurent.config.profile"

local function load_err(name, opts)
  local ok, err = pcall(profile.load, name, opts)
  assert.is_false(ok, "expected " .. tostring(name) .. " to be refused")
  return tostring(err)
end

describe("shipped profiles", function()
  it("autodl encodes the seed's facts as plain Lua values", function()
    local p = profile.load("autodl")
    assert.are.equal("ssh-rental", p.kind)
    assert.are.equal("关机", p.facts.meter_stop_verb)
    assert.is_false(p.facts.meter_stop_irreversible)
    assert.is_nil(p.facts.spot_grace)              -- YAML ~ reads as nil
    assert.are.equal(200000, p.facts.inode_cap)
    -- the three tiers and the survival matrix
    assert.are.equal("/", p.tiers.system.path)
    assert.are.equal("/root/autodl-tmp", p.tiers.data.path)
    assert.are.equal("/root/autodl-fs", p.tiers.fs.path)
    assert.is_true(p.tiers.data.survives.power_off)
    assert.is_false(p.tiers.data.survives.release)
    assert.is_true(p.tiers.fs.survives.release)
    assert.is_false(p.tiers.system.survives.release)
    assert.is_true(p.tiers.fs.region_locked)
    assert.are.equal(200000, p.tiers.fs.inode_cap)
    assert.is_nil(p.tiers.data.inode_cap)
    assert.are.equal("fs", profile.durable_tier(p).name)
    assert.are.equal("/root/autodl-tmp/checkpoints/x", profile.expand(p.checkpoints.live_dir, {name = "x"}))
    -- network and TB pin
    assert.are.equal("https://hf-mirror.com", p.network.hf_endpoint)
    assert.are.equal("/root/tf-logs", p.network.tensorboard.logdir)
    assert.are.equal(6007, p.network.tensorboard.port)
    assert.are.equal("modelscope.cn", p.network.no_proxy_trap.missing)
    -- the script overrides, exactly
    local o = p.overrides
    assert.are.same({"/root/autodl-tmp", "/root/autodl-fs", "source /etc/network_turbo 2>/dev/null || true",
      "/root/.wandb_key", "latest.pth", "/root/autodl-tmp/huggingface_cache", "https://hf-mirror.com", "tmux",
      "/root/miniconda3/bin/python", "/root/tf-logs"},
      {o.DATA_DIR, o.DURABLE_DIR, o.PROXY_HOOK, o.CRED_FILE, o.SCRATCH, o.HF_HOME, o.HF_ENDPOINT, o.DETACH, o.PY, o.TB_LOGDIR})
    assert.are.equal("nohup", p.detach.fallback)
    assert.is_true(#p.surface.danger_clocks >= 1)
  end)

  it("autodl puts the billing facts where the billing code reads them", function()
    local b = profile.load("autodl").billing
    assert.are.equal("https://api.autodl.com", b.api.base_url)
    local want = {balance = {"POST", "/api/v1/dev/wallet/balance"},
      instance_list = {"POST", "/api/v1/dev/instance/pro/list"},
      instance_status = {"GET", "/api/v1/dev/instance/pro/status"},
      instance_snapshot = {"GET", "/api/v1/dev/instance/pro/snapshot"},
      power_on = {"POST", "/api/v1/dev/instance/pro/power_on"},
      power_off = {"POST", "/api/v1/dev/instance/pro/power_off"},
      release = {"POST", "/api/v1/dev/instance/pro/release"},
      wechat = {"POST", "/api/v1/wechat/message/send"}}
    for name, mp in pairs(want) do
      local e = b.api.endpoints[name]
      assert.are.same(mp, {e.method, e.path}, name)
    end
    assert.are.equal("https://www.autodl.com", b.api.endpoints.wechat.base_url)
    assert.are.equal("关机", b.meter_stop.verb)
    assert.are.equal("power_off", b.meter_stop.api_verb)
    assert.are.equal("shutdown", b.meter_stop.in_instance_verb)
    assert.are.equal(15, b.auto_release.after_days)
    assert.are.equal(1000, b.money.per_yuan)
    assert.is_false(b.verbs.release.preserves.data)
    assert.is_true(b.verbs.release.preserves.fs)
    assert.is_true(b.verbs.release.needs_approval)
    assert.are.equal("power_off", b.arrears.forces)
  end)

  it("generic-ssh has a manual meter and no durable tier; local has no SSH and no meter", function()
    local g = profile.load("generic-ssh")
    assert.are.equal("manual", g.billing.meter)
    assert.is_nil(g.checkpoints.durable_tier)
    assert.is_nil(profile.durable_tier(g))
    local l = profile.load("local")
    assert.are.equal("local", l.connect.transport)
    assert.are.equal("none", l.billing.meter)
  end)
end)

describe("schema errors", function()
  local dir
  before_each(function() dir = T.tmpdir() end)
  after_each(function() T.rmtree(dir) end)

  it("an unknown key names file, line, column and key path", function()
    local f = T.write(dir .. "/team.yaml", "extends: autodl\ntiers:\n  data:\n    colour: red\n")
    local err = load_err(f)
    assert.matches(f:gsub("%p", "%%%0") .. ":4:5: tiers%.data%.colour: unknown key", err)
  end)

  it("a wrong type names the key and what was expected", function()
    local f = T.write(dir .. "/team.yaml", "extends: autodl\nfacts:\n  inode_cap: lots\n")
    assert.matches("team%.yaml:3:3: facts%.inode_cap: expected integer, got string \"lots\"", load_err(f))
  end)

  it("a missing required key names the file and line of the map that lacks it", function()
    local text = T.read(T.root .. "/profiles/autodl.yaml")
    local cut = text:gsub("\n  detach_primitive: tmux[^\n]*", "", 1)
    assert.are_not.equal(text, cut)
    -- a copy outside the installed profiles may not carry the provider API block
    -- (PROVIDER_KEYS_CONFIG_ONLY): leave it out, the point here is the missing key
    local kept, skipping = {}, false
    for l in (cut .. "\n"):gmatch("([^\n]*)\n") do
      -- the block ends at the next line indented as little as "api:" itself
      if l == "  api:" then skipping = true
      elseif skipping and l:match("^ ?%S") or (skipping and l:match("^  [^%s#]")) then skipping = false end
      if not skipping then kept[#kept + 1] = l end
    end
    cut = table.concat(kept, "\n")
    local f = T.write(dir .. "/autodl.yaml", cut)
    local line
    local n = 0
    for l in (cut .. "\n"):gmatch("([^\n]*)\n") do n = n + 1; if l == "facts:" then line = n end end
    assert.matches("autodl%.yaml:" .. line .. ":1: facts%.detach_primitive: missing required key", load_err(f))
  end)

  it("reports every problem at once, sorted by line", function()
    local f = T.write(dir .. "/team.yaml",
      "extends: autodl\nkind: spaceship\nbilling:\n  auto_release:\n    after_days: 0\ncheckpoints:\n  live_tier: nvme\n")
    local err = load_err(f)
    assert.matches("team%.yaml:2:1: kind: string \"spaceship\" is not one of", err)
    assert.matches("team%.yaml:5:5: billing%.auto_release%.after_days: 0 is below the minimum 1", err)
    assert.matches("team%.yaml:7:3: checkpoints%.live_tier: names no tier: nvme", err)
    assert.matches("3 problems", err)
  end)

  it("null where a value is required is an error", function()
    local f = T.write(dir .. "/team.yaml", "extends: autodl\ntiers:\n  fs:\n    path: ~\n")
    assert.matches("team%.yaml:4:5: tiers%.fs%.path: must not be null", load_err(f))
  end)

  it("a YAML syntax error names file:line:col", function()
    local f = T.write(dir .. "/bad.yaml", "platform: x\nkind: [unclosed\n")
    assert.matches("bad%.yaml:%d+:%d+:", load_err(f))
  end)

  it("a broken schema is itself reported with its file and line", function()
    local s = T.write(dir .. "/schema.yaml", "root:\n  type: map\n  keys:\n    platform: {type: strng}\n")
    local ok, err = pcall(profile.load, "autodl", {schema = s})
    assert.is_false(ok)
    assert.matches("schema%.yaml:4:%d+: schema root%.platform: unknown type strng", tostring(err))
  end)
end)

describe("overlays", function()
  local dir
  before_each(function() dir = T.tmpdir() end)
  after_each(function() T.rmtree(dir) end)

  it("deep-merge over the shipped profile: changed keys win, siblings stay", function()
    local f = T.write(dir .. "/team.yaml", "extends: autodl\ntiers:\n  data:\n    size: 200 GB\n" ..
      "storage:\n  thresholds: {inodes_warn_pct: 80}\n")
    local p = profile.load(f)
    assert.are.equal("200 GB", p.tiers.data.size)
    assert.are.equal("/root/autodl-tmp", p.tiers.data.path)
    assert.are.equal(80, p.storage.thresholds.inodes_warn_pct)
    assert.are.equal(99, p.storage.thresholds.inodes_fail_pct)
    assert.are.same({T.root .. "/profiles/autodl.yaml", f}, profile.source(p).files)
  end)

  it("_delete removes keys of the layer below; deleting a required one is an error", function()
    local f = T.write(dir .. "/team.yaml", "extends: autodl\nbilling:\n  _delete: [api]\n")
    local p = profile.load(f)
    assert.is_nil(p.billing.api)
    assert.are.equal("关机", p.billing.meter_stop.verb)
    local g = T.write(dir .. "/team2.yaml", "extends: autodl\nbilling:\n  _delete: [meter]\n")
    assert.matches("team2%.yaml:2:1: billing%.meter: missing required key", load_err(g))
  end)

  it("lists replace rather than append; opts.overlays apply in order", function()
    local a = T.write(dir .. "/a.yaml", "gotchas: [AD4]\n")
    local b = T.write(dir .. "/b.yaml", "tiers:\n  fs:\n    inode_cap: 150000\n")
    local p = profile.load("autodl", {overlays = {a, b}})
    assert.are.same({"AD4"}, p.gotchas)
    assert.are.equal(150000, p.tiers.fs.inode_cap)
  end)

  it("a team tier added on generic-ssh becomes the durable tier", function()
    local f = T.write(dir .. "/lab.yaml", [[
extends: generic-ssh
tiers:
  nas:
    path: /mnt/nas
    speed: NFS
    size: ~
    inode_cap: ~
    scope: configured
    region_locked: false
    survives: {power_off: true, release: true}
checkpoints:
  durable_tier: nas
  durable_dir: /mnt/nas/final/{name}
]])
    local p = profile.load(f)
    assert.are.equal("/mnt/nas", profile.durable_tier(p).path)
  end)

  it("profiles are found by name on GPURENT_PROFILE_PATH-style search dirs, and cycles are refused", function()
    T.write(dir .. "/mine.yaml", "extends: autodl\ndescription: ours\n")
    assert.are.equal("ours", profile.load("mine", {search = {dir, T.root .. "/profiles"}}).description)
    T.write(dir .. "/x.yaml", "extends: y\n")
    T.write(dir .. "/y.yaml", "extends: x\n")
    assert.matches("overlay cycle", load_err("x", {search = {dir}}))
    assert.matches("profile nosuch not found", load_err("nosuch", {search = {dir}}))
  end)
end)

-- issue 15: nested aliases must not make profile.load walk an exponentially
-- expanded document. The load runs in a child gpurent under `timeout` so a
-- regression shows as a failed test, not a hung suite.
describe("aliases in profiles", function()
  local dir
  before_each(function() dir = T.tmpdir() end)
  after_each(function() T.rmtree(dir) end)

  -- profile.load(path) in a child gpurent, killed after `limit` seconds.
  local function load_in_child(path, limit)
    local code = "local ok, e = pcall(require('gpurent.config.profile').load, " .. string.format("%q", path) ..
      "); io.stderr:write(ok and 'LOADED' or tostring(e)); os.exit(ok and 0 or 1)"
    return T.run("-e " .. T.q(code), {env = "timeout -s KILL " .. limit})
  end

  it("a nine-level nested-alias profile fails fast with the cap error at file:line:col", function()
    local lines = {"# nine levels of nine aliases: 9^9 scalars once expanded", "extends: local",
                   "description: laughs", "gotchas:", "  - &l0 [x, x, x, x, x, x, x, x, x]"}
    for i = 1, 8 do
      lines[#lines + 1] = ("  - &l%d [%s]"):format(i, ("*l" .. (i - 1) .. ", "):rep(9):sub(1, -3))
    end
    local text = table.concat(lines, "\n") .. "\n"
    assert.is_true(#text < 1000, "the profile is small: " .. #text .. " bytes")
    local f = T.write(dir .. "/laughs.yaml", text)
    local code, _, err = load_in_child(f, 10)   -- a hang guard, not a speed claim
    assert.are_not.equal(137, code, "profile.load still running after 10 s (killed)")
    assert.are.equal(1, code)
    assert.matches(f:gsub("%p", "%%%0") .. ":11:10: alias %*l5 takes the document past 1000000 nodes", err)
  end)

  it("a profile with moderate aliasing loads and reads as if written out", function()
    local f = T.write(dir .. "/shared.yaml", [[
extends: local
tiers:
  system: &tier
    path: /
    speed: local
    size: ~
    inode_cap: ~
    scope: host
    region_locked: false
    survives: &both {power_off: true, release: true}
  data:
    <<: *tier
    path: "~"
  scratch:
    <<: *tier
    path: /scratch
    survives: {<<: *both, release: false}
]])
    local code, _, err = load_in_child(f, 30)
    assert.are.equal(0, code, err)
    local p = profile.load(f)
    assert.are.equal("~", p.tiers.data.path)
    assert.are.equal("host", p.tiers.data.scope)
    assert.is_true(p.tiers.data.survives.release)
    assert.is_false(p.tiers.scratch.survives.release)
    assert.is_true(p.tiers.scratch.survives.power_off)
  end)
end)

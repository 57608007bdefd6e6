-- storage_spec: storage primitives against the simulated AutoDL testbed (real sshd,
-- real tmpfs byte/inode caps, real cgroup v1): readings match the caps the instance
-- was booted with, hogs follow the HF-cache symlink, free_gate refuses with exit 3,
-- checked_sync proves its copy and fails loudly on the inode cap.
local storage = require "gpurent.lifecycle.storage"
local profile = require "gpurent.config.profile"
local simbox = require "simbox"

describe("storage budgets (pure)", function()
  it("parse sizes and render them", function()
    assert.are.equal(10 * 1024 ^ 3, storage.parse_size("10G"))
    assert.are.equal(512 * 1024 ^ 2, storage.parse_size("512MiB"))
    assert.are.equal(42, storage.parse_size(42))
    assert.has_error(function() storage.parse_size("ten gigs") end)
    assert.are.equal("1.5 GiB", storage.human(1.5 * 1024 ^ 3))
  end)

  it("checkpoint budget compares size x count + scratch with free bytes", function()
    local t = {name = "data", path = "/root/autodl-tmp", bytes_free = 10 * 1024 ^ 3}
    local v = storage.checkpoint_budget(t, {ckpt_bytes = "2G", count = 3, scratch_bytes = "1G"})
    assert.are.equal("ok", v.status); assert.are.equal(7 * 1024 ^ 3, v.need)
    v = storage.checkpoint_budget(t, {ckpt_bytes = "2G", count = 4, scratch_bytes = "1G"})
    assert.are.equal("warn", v.status)               -- 9 of 10 GiB: no headroom
    v = storage.checkpoint_budget(t, {ckpt_bytes = "2G", count = 5, scratch_bytes = "1G"})
    assert.are.equal("fail", v.status); assert.are.equal(-1024 ^ 3, v.headroom)
    assert.matches("11%.0 GiB; 10%.0 GiB free on /root/autodl%-tmp", v.text)
    assert.are.equal("n/a", storage.checkpoint_budget({path = "/x"}, {ckpt_bytes = 1}).status)
  end)

  it("inode budget compares files to write with free inodes", function()
    local t = {name = "fs", path = "/root/autodl-fs", inodes_free = 1000, inodes_used = 199000, inodes_total = 200000}
    assert.are.equal("ok", storage.inode_budget(t, {files = 100}).status)
    local v = storage.inode_budget(t, {files = 5000})
    assert.are.equal("fail", v.status)
    assert.matches("df %-i: 199000/200000", v.text)
    assert.are.equal("n/a", storage.inode_budget({path = "/x"}, {files = 1}).status)
  end)
end)

local ok_sim, why = simbox.available()
local desc = ok_sim and describe or function(name) describe(name, function() pending(why) end) end

desc("storage on the testbed", function()
  local box, inst
  setup(function()
    box = simbox.new()
    inst = box:up("st1", "--region stA --data-size 32M --fs-size 16M --fs-inodes 300 --mem 3G --cpus 1.5")
  end)
  teardown(function() if box then box:down() end end)

  it("measure reads every tier's bytes and inodes, cgroup memory and CPU in one round trip", function()
    local calls = 0
    local counting = setmetatable({sh = function(_, ...) calls = calls + 1; return inst:sh(...) end,
      profile = inst.profile}, {__tostring = function() return tostring(inst) end})
    local r = storage.measure(counting)
    assert.are.equal(1, calls)
    local d, f = r.tiers.data, r.tiers.fs
    assert.are.equal(32 * 1024 ^ 2, d.bytes_total)
    assert.are.equal("/root/autodl-tmp", d.mount)
    assert.are.equal(16 * 1024 ^ 2, f.bytes_total)
    assert.are.equal(300, f.inodes_total)
    assert.is_true(f.inodes_used >= 1 and f.inodes_free == 300 - f.inodes_used)
    assert.is_truthy(r.tiers.system.bytes_total)
    assert.are.equal(3 * 1024 ^ 3, r.mem.limit)
    assert.is_true(r.mem.usage > 0 and r.mem.peak >= r.mem.usage)
    assert.are.equal(0, r.mem.oom_kill)
    assert.are.equal(1.5, r.cpu.quota_cpus)
  end)

  it("hogs follow the HF cache symlink onto the data disk", function()
    assert.are.equal(0, inst:sh("mkdir -p ~/.cache/huggingface/hub/models--org--big/blobs && " ..
      "head -c 6000000 /dev/zero > ~/.cache/huggingface/hub/models--org--big/blobs/b1 && " ..
      "mkdir -p /root/autodl-tmp/runs && head -c 100000 /dev/zero > /root/autodl-tmp/runs/log").code)
    local hogs = storage.hogs(inst, {top = 5})
    local hf
    for _, h in ipairs(hogs) do if h.path == "/root/.cache/huggingface/hub/models--org--big" then hf = h end end
    assert.is_truthy(hf, "the models-- dir behind the symlink is listed")
    assert.are.equal("data", hf.tier)
    assert.is_true(hf.via_symlink)
    assert.is_true(hf.bytes >= 6000000)
    assert.are.equal("/root/autodl-tmp/huggingface_cache/hub/models--org--big", hf.real)
    assert.is_true(hogs[1].bytes >= hogs[#hogs].bytes)
    inst:sh("rm -rf /root/autodl-tmp/huggingface_cache/hub/models--org--big /root/autodl-tmp/runs")
  end)

  it("free_gate passes above the floor and refuses (exit 3) below it", function()
    local t = storage.free_gate(inst, "data", {min_bytes = "1M", min_inodes = 10})
    assert.is_true(t.bytes_free >= 1024 ^ 2)
    local ok, err = pcall(storage.free_gate, inst, "data", {min_bytes = "1G"})
    assert.is_false(ok)
    assert.are.equal(3, err.exit)
    assert.are.equal("free_gate", err.code)   -- a sweep tells it from other refusals by the code
    assert.matches("below the floor of 1%.0 GiB", tostring(err))
    ok, err = pcall(storage.free_gate, inst, "fs", {min_inodes = 100000})
    assert.are.equal(3, err.exit)
    assert.matches("df %-i", tostring(err))
  end)

  it("free_gate checks bytes and inodes of every tier the step writes to, naming the one that filled", function()
    -- fill the fs tier's inode table (300) while its bytes stay nearly free
    inst:sh("mkdir -p /root/autodl-fs/many && i=0; while touch /root/autodl-fs/many/f$i 2>/dev/null; do i=$((i+1)); done",
      {timeout = 120})
    local ok, err = pcall(storage.free_gate, inst, {"data", "fs"}, {floors = {data = {min_bytes = "1M"}}})
    inst:sh("rm -rf /root/autodl-fs/many", {timeout = 120})
    assert.is_false(ok)
    assert.are.equal(3, err.exit)
    local text = tostring(err)
    assert.matches("st1 %(root@[^)]*%):/root/autodl%-fs %(fs tier%) is full in inodes", text)
    assert.matches("the fs tier %(/root/autodl%-fs%) inodes %(df %-i%): 300/300 used %(100%.0%%%), 0 free", text)
    assert.matches("free inodes on /root/autodl%-fs", text)
    assert.is_nil(text:find("expand", 1, true), "proposes expanding while the full one is an inode table: " .. text)
    assert.is_nil(text:find("data tier", 1, true), "names the data tier, which is fine: " .. text)
    assert.is_truthy(storage.free_gate(inst, {"data", "fs"}, {floors = {data = {min_bytes = "1M"}}}).all.fs)
    -- the data tier's bytes below the floor: expanding is proposed for it (expandable), not for fs
    ok, err = pcall(storage.free_gate, inst, {"data", "fs"}, {floors = {data = {min_bytes = "1G"}}})
    assert.is_false(ok)
    text = tostring(err)
    assert.matches("%(data tier%) has .* free, below the floor of 1%.0 GiB", text)
    assert.matches("or expand the data tier", text)
    assert.is_nil(text:find("fs tier", 1, true), text)
  end)

  it("free_gate refusal is the process exit code 3 of a recipe", function()
    local dir = T.tmpdir()
    local script = T.write(dir .. "/gate.lua", [[
local storage = require "gpurent.lifecycle.storage"
local inst = gpurent.connect("st1")
inst.profile = require("gpurent.config.profile").load("autodl")
storage.free_gate(inst, "data", {min_bytes = "100G"})
print("NOT REACHED")
]])
    local code, out, err = T.run("run " .. T.q(script), {env = box:env()})
    T.rmtree(dir)
    assert.are.equal(3, code)
    assert.matches("free gate", err)
    assert.is_nil(out:find("NOT REACHED", 1, true))
  end)

  it("checked_sync copies, proves size and SHA-256, and only then prints its line", function()
    assert.are.equal(0, inst:sh("mkdir -p /root/autodl-tmp/checkpoints/exp1 && " ..
      "head -c 1234567 /dev/urandom > /root/autodl-tmp/checkpoints/exp1/best.pth").code)
    local said = {}
    local r = storage.checked_sync(inst, "/root/autodl-tmp/checkpoints/exp1/best.pth", "fs",
      {dir = "/root/autodl-fs/final_ckpts/exp1", say = function(l) said[#said + 1] = l end})
    assert.are.equal("/root/autodl-fs/final_ckpts/exp1/best.pth", r.dst)
    assert.are.equal(1234567, r.bytes)
    local remote = inst:sh("sha256sum < /root/autodl-fs/final_ckpts/exp1/best.pth").stdout:match("%x+")
    assert.are.equal(remote, r.sha256)
    assert.are.equal(1, #said)
    assert.matches("^synced .* %(1234567 bytes, sha256 " .. r.sha256 .. ", verified%)$", said[1])
    assert.are.equal(1, inst:sh("test -e /root/autodl-fs/final_ckpts/exp1/best.pth.part").code)
  end)

  it("checked_sync fails loudly on the inode cap, naming df -i, and prints no success line", function()
    -- exhaust the region FS inode table (a real tmpfs nr_inodes cap)
    inst:sh("mkdir -p /root/autodl-fs/vis && cd /root/autodl-fs/vis && i=0; " ..
      "while [ $i -lt 400 ]; do : > f$i 2>/dev/null || break; i=$((i+1)); done")
    local t = storage.measure(inst, {tiers = {"fs"}}).tiers.fs
    assert.are.equal(0, t.inodes_free)
    assert.is_true(t.bytes_pct < 50, "bytes look fine while inodes are gone")
    local said = {}
    local ok, err = pcall(storage.checked_sync, inst, "/root/autodl-tmp/checkpoints/exp1/best.pth", "fs",
      {dir = "/root/autodl-fs/final_ckpts/exp2", say = function(l) said[#said + 1] = l end})
    assert.is_false(ok)
    err = tostring(err)
    assert.matches("No space left on device", err)
    assert.matches("df %-i /root/autodl%-fs: 300/300 inodes used", err)
    assert.matches("inode cap", err)
    assert.are.equal(0, #said)
    inst:sh("rm -rf /root/autodl-fs/vis")
  end)

  it("checked_sync fails on a full disk (bytes) and on a missing source", function()
    local ok, err = pcall(storage.checked_sync, inst, "/root/autodl-tmp/nope.pth", "fs", {quiet = true})
    assert.is_false(ok)
    assert.matches("src%-missing", tostring(err))
    inst:sh("head -c 20000000 /dev/zero > /root/autodl-tmp/big.bin")
    ok, err = pcall(storage.checked_sync, inst, "/root/autodl-tmp/big.bin", "fs", {quiet = true})
    assert.is_false(ok)
    assert.matches("No space left on device", tostring(err))
    assert.matches("df %-i", tostring(err))
    assert.are.equal(1, inst:sh("test -e /root/autodl-fs/big.bin.part").code, "no partial copy left")
    inst:sh("rm -f /root/autodl-tmp/big.bin")
  end)

  it("tier paths of generic profiles expand ~ on the box", function()
    local r = storage.measure(inst, {profile = profile.load("generic-ssh"), tiers = {"data"}})
    assert.is_true(r.tiers.data.exists)
    assert.is_truthy(r.tiers.data.bytes_total)
  end)
end)

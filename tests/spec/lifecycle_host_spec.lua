-- lifecycle_host_spec.lua: phase -1 on the simulated AutoDL: `gpurent host add` from the
-- console's connection string (and from the API snapshot with --uuid) into a file of
-- gpurent's own that ~/.ssh/config Includes, first contact (host key recorded, a public
-- key installed like ssh-copy-id, so later connections are key-based), `set-port` for
-- a re-created instance.
local testbed = require "testbed"

local ok_tb, why = testbed.available()

describe("gpurent host", function()
  if not ok_tb then pending("testbed unavailable: " .. why); return end
  local tb, port, ip
  setup(function()
    tb = testbed.new()
    local out = tb:up("h1", "--region westDC2")
    ip, port = out:match("HostName (%S+)%s+Port (%d+)")
  end)
  teardown(function() if tb then tb:down() end end)

  -- no GPURENT_SSH_CONFIG: gpurent reads $HOME/.ssh/config (which Includes ours) like ssh does
  local function g(args) return tb:gpurent(args, {own_ssh_config = true}) end

  it("adds a host from the console string, installs a key on first contact, and connects with it", function()
    local newkey = tb.home .. "/.ssh/id_new"
    assert.are.equal(0, select(2, testbed.sh("ssh-keygen -q -t ed25519 -N '' -C new -f " .. T.q(newkey))))
    local code, out, err = g("host add box " .. T.q("ssh -p " .. port .. " root@" .. ip) ..
      " --identity " .. T.q(tb.dir .. "/client/id_ed25519") .. " --install-key " .. T.q(newkey .. ".pub"))
    assert.are.equal(0, code, out .. err)
    assert.truthy(out:find("added box -> root@" .. ip .. ":" .. port, 1, true), out)
    assert.truthy(out:find("Include added to ~/.ssh/config", 1, true), out)
    assert.truthy(out:find("host key of box: ssh%-ed25519 SHA256:"), out)
    assert.truthy(out:find("public key " .. newkey .. ".pub: added", 1, true), out)
    assert.truthy(out:find("first contact with this autodl host", 1, true), out)
    local cfg = testbed.read(tb.home .. "/.ssh/gpurent_config")
    assert.truthy(cfg:find("Host box\n  HostName " .. ip .. "\n  Port " .. port, 1, true), cfg)
    assert.truthy(cfg:find("ServerAliveInterval 30", 1, true))
    assert.truthy(testbed.read(tb.home .. "/.ssh/config"):find("Include " .. tb.home .. "/.ssh/gpurent_config", 1, true))
    local authorized = tb:exec("h1", "cat /root/.ssh/authorized_keys")
    assert.truthy(authorized:find(testbed.read(newkey .. ".pub"):match("ssh%-ed25519 %S+"), 1, true))
    -- installing twice is a no-op; then the new key alone reaches the box
    code, out = g("host add box " .. T.q("ssh -p " .. port .. " root@" .. ip) .. " --identity " .. T.q(newkey) ..
      " --install-key " .. T.q(newkey .. ".pub"))
    assert.are.equal(0, code, out)
    assert.truthy(out:find("updated box", 1, true))
    assert.truthy(out:find(": present in ~/.ssh/authorized_keys", 1, true), out)
    assert.truthy(out:find("already known", 1, true), out)
    code, out, err = g("run recipes/audit.lua host=box project=p gotchas=no")
    assert.are.equal(0, code, out .. err)
  end)

  it("follows a re-created instance's port with set-port", function()
    local code, out = g("host set-port box 1")
    assert.are.equal(0, code, out)
    assert.truthy(out:find("box: port " .. port .. " -> 1", 1, true), out)
    local err
    code, out, err = g("run recipes/audit.lua host=box project=p gotchas=no")
    assert.are_not.equal(0, code)
    assert.truthy((out .. err):find("gpurent host set%-port box PORT"), out .. err)
    code = g("host set-port box " .. port)
    assert.are.equal(0, code)
    code, out = g("run recipes/audit.lua host=box project=p gotchas=no")
    assert.are.equal(0, code, out)
  end)

  it("adds a host from the API snapshot with --uuid", function()
    local code, out, err = g("host add viaapi --uuid " .. tb.uuids.h1 .. " --identity " ..
      T.q(tb.dir .. "/client/id_ed25519"))
    assert.are.equal(0, code, out .. err)
    assert.truthy(out:find("added viaapi -> root@" .. ip .. ":" .. port, 1, true), out)
    assert.truthy(#tb:api_calls("snapshot") >= 1)
    -- one name per box: the alias finds the instance in billing, as its API name does
    assert.truthy(out:find("viaapi is linked to instance " .. tb.uuids.h1, 1, true), out)
    code, out, err = g("billing status viaapi --json")
    assert.are.equal(0, code, out .. err)
    assert.are.equal(tb.uuids.h1, require("gpurent.util.json").decode(out).instances[1].uuid)
  end)

  it("refuses a string that is not an ssh command", function()
    local code, _, err = g("host add x " .. T.q("telnet box 22"))
    assert.are.equal(2, code)
    assert.truthy(err:find("not an ssh command line", 1, true), err)
  end)
end)

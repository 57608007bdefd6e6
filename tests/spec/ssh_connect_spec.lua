-- ssh_connect_spec: gpurent.connect against a real OpenSSH sshd on loopback:
-- ssh_config aliases, OpenSSH host key rules, auth methods and their errors.
local sshd = require "sshd"
local sshconfig = require "gpurent.transport.sshconfig"

local function read(p) local f = assert(io.open(p)); local s = f:read("a"); f:close(); return s end
local function write(p, s) local f = assert(io.open(p, "w")); f:write(s); f:close() end

describe("ssh_config resolution", function()
  local dir
  before_each(function() dir = T.tmpdir() end)
  after_each(function() T.rmtree(dir) end)

  it("applies Host patterns, negation, first value wins, IdentityFile accumulates, Include", function()
    write(dir .. "/inc.conf", "Host autodl-*\n  Port 4444\n  IdentityFile ~/k_inc\n")
    write(dir .. "/config", table.concat({
      "Include " .. dir .. "/inc.conf",
      "Host autodl-proj-? !autodl-proj-9",
      "  HostName region.example.com",
      "  User alice",
      "  Port 5555",
      "  IdentityFile=\"/keys/a b\"",
      "  ServerAliveInterval 7",
      "Host *",
      "  User nobody",
      "  IdentityFile /keys/c",
      "  StrictHostKeyChecking accept-new",
    }, "\n"))
    local c = sshconfig.resolve("autodl-proj-1", {config = dir .. "/config"})
    assert.equal("region.example.com", c.hostname)
    assert.equal(4444, c.port)                    -- the Include came first
    assert.equal("alice", c.user)
    assert.same({os.getenv("HOME") .. "/k_inc", "/keys/a b", "/keys/c"}, c.identityfiles)
    assert.equal(7, c.serveraliveinterval)
    assert.equal("accept-new", c.stricthostkeychecking)
    local neg = sshconfig.resolve("autodl-proj-9", {config = dir .. "/config"})
    assert.equal("autodl-proj-9", neg.hostname)   -- negated: the HostName block does not apply
    assert.equal("nobody", neg.user)
    local t = sshconfig.resolve("bob@10.1.2.3:2200", {config = dir .. "/config"})
    assert.same({"bob", "10.1.2.3", 2200}, {t.user, t.hostname, t.port})
  end)
end)

describe("gpurent.connect", function()
  local fx
  setup(function() fx = sshd.start{addrs = 3, hash_known_hosts = true, password = "pw-Secr3t"} end)
  teardown(function() if fx then fx:stop() end end)

  it("connects to an ssh_config alias with key auth and hashed known_hosts entries", function()
    assert.matches("^|1|", read(fx.known_hosts))
    local inst = fx:connect(1)
    assert.equal("publickey", inst.conn.auth)
    assert.equal("ok\n", inst:sh("echo ok").stdout)
    inst:close()
  end)

  it("connects to user@host:port with settings from a Host pattern", function()
    local cfg = fx.dir .. "/pattern_config"
    write(cfg, "Host 127.0.0.*\n  IdentityFile " .. fx.key .. "\n  UserKnownHostsFile " .. fx.known_hosts .. "\n")
    local inst = gpurent.connect("root@" .. fx.addrs[2] .. ":" .. fx.port, {config = cfg})
    assert.equal("root\n", inst:sh("id -un").stdout)
    inst:close()
  end)

  it("refuses a changed host key with both fingerprints and the known_hosts file:line (exit 3)", function()
    local kh = fx.dir .. "/kh_changed"
    local other = fx.dir .. "/other_host"
    os.execute("ssh-keygen -q -t ed25519 -N '' -f " .. other .. " </dev/null >/dev/null")
    local otherpub = read(other .. ".pub"):match("^(%S+ %S+)")
    write(kh, "# comment\n[" .. fx.addrs[1] .. "]:" .. fx.port .. " " .. otherpub .. "\n")
    local cfg = fx.dir .. "/changed_config"
    write(cfg, read(fx.config):gsub(fx.known_hosts:gsub("%p", "%%%0"), kh))
    local ok, err = pcall(gpurent.connect, "h1", {config = cfg})
    assert.is_false(ok)
    assert.is_true(gpurent.is_refusal(err))
    assert.equal(3, err.exit)
    local msg = tostring(err)
    assert.matches("CHANGED", msg)
    assert.matches(kh:gsub("%p", "%%%0") .. ":2", msg)
    local function fp(pubfile)
      local p = io.popen("ssh-keygen -l -f " .. pubfile)
      local s = p:read("a"); p:close()
      return s:match("(SHA256:%S+)")
    end
    assert.truthy(msg:find(fp(other .. ".pub"), 1, true))              -- the known (old) key
    assert.truthy(msg:find(fp(fx.dir .. "/host_ed25519.pub"), 1, true)) -- the offered key
    -- and the CLI exit code of a recipe that hits it is 3
    local recipe = fx.dir .. "/changed.lua"
    write(recipe, "gpurent.connect('h1', {config = " .. string.format("%q", cfg) .. "})\n")
    local code, _, stderr = T.run("run " .. T.q(recipe))
    assert.equal(3, code)
    assert.matches("CHANGED", stderr)
  end)

  it("refuses an unknown host unless accept_new_host, then records it", function()
    local kh = fx.dir .. "/kh_empty"
    local cfg = fx.dir .. "/unknown_config"
    write(cfg, read(fx.config):gsub(fx.known_hosts:gsub("%p", "%%%0"), kh))
    local ok, err = pcall(gpurent.connect, "h3", {config = cfg})
    assert.is_false(ok)
    assert.equal(3, err.exit)
    assert.matches("not known", tostring(err))
    assert.matches("accept_new_host option", tostring(err))   -- a flag only where the command has one
    local _, cerr = pcall(gpurent.connect, "h3", {config = cfg, accept_flag = "--accept-new-host"})
    assert.matches("rerun with %-%-accept%-new%-host", tostring(cerr))
    local inst = gpurent.connect("h3", {config = cfg, accept_new_host = true})
    inst:close()
    assert.matches("%[" .. fx.addrs[3]:gsub("%.", "%%.") .. "%]:" .. fx.port .. " ssh%-ed25519 ", read(kh))
    inst = gpurent.connect("h3", {config = cfg})   -- now known: no flag needed
    assert.equal("ok\n", inst:sh("echo ok").stdout)
    inst:close()
  end)

  it("a recipe's run:connect keeps an unknown host key a refusal (exit 3), not a 'cannot reach'", function()
    local kh = fx.dir .. "/kh_empty_run"
    local cfg = fx.dir .. "/unknown_run_config"
    write(cfg, read(fx.config):gsub(fx.known_hosts:gsub("%p", "%%%0"), kh))
    local script = fx.dir .. "/connect_run.lua"
    write(script, 'local r = require("gpurent.lifecycle.run").new{host = "h3", project = "p", recipe = "t", record = false}\n' ..
      'r:connect{config = ' .. string.format("%q", cfg) .. '}\n')
    local code, _, err = T.run("run " .. T.q(script), {env = "GPURENT_STATE_DIR=" .. T.q(fx.dir .. "/state")})
    assert.are.equal(3, code, err)
    assert.matches("not known", err)
    assert.is_nil(err:find("cannot reach", 1, true))
  end)

  it("StrictHostKeyChecking accept-new in ssh_config records a new host", function()
    local kh = fx.dir .. "/kh_acceptnew"
    local cfg = fx.dir .. "/acceptnew_config"
    write(cfg, read(fx.config):gsub(fx.known_hosts:gsub("%p", "%%%0"), kh) ..
      "Host *\n  StrictHostKeyChecking accept-new\n")
    gpurent.connect("h2", {config = cfg}):close()
    assert.matches("ssh%-ed25519", read(kh))
  end)

  it("a wrong key fails once, naming host, user and the methods tried", function()
    local wrong = sshd.keygen(fx.dir, "ed25519", "id_wrong")
    local cfg = fx.dir .. "/wrong_config"
    write(cfg, read(fx.config):gsub(fx.key:gsub("%p", "%%%0"), wrong))
    local t0 = gpurent.now()
    local ok, err = pcall(gpurent.connect, "h1", {config = cfg})
    assert.is_false(ok)
    local msg = tostring(err)
    assert.matches("authentication failed for user root", msg)
    assert.matches(fx.addrs[1]:gsub("%.", "%%.") .. ":" .. fx.port, msg)
    assert.matches("id_wrong", msg)
    assert.matches("password %(no TTY", msg)
    assert.is_true(gpurent.now() - t0 < 5)
  end)

  it("authenticates with a password given as a secret, and refuses a plain string", function()
    local cfg = fx.dir .. "/pw_config"
    write(cfg, read(fx.config):gsub("IdentityFile [^\n]+", "IdentityFile /nonexistent/key"))
    local inst = gpurent.connect("h1", {config = cfg, password = gpurent.secret("pw-Secr3t")})
    assert.equal("password", inst.conn.auth)
    inst:close()
    local ok, err = pcall(gpurent.connect, "h1", {config = cfg, password = "pw-Secr3t"})
    assert.is_false(ok)
    assert.matches("gpurent.secret", tostring(err))
    assert.is_nil(tostring(err):find("pw-Secr3t", 1, true))
  end)

  it("uses ecdsa keys, and an encrypted key with its passphrase", function()
    for _, t in ipairs({"ecdsa"}) do
      local k = sshd.keygen(fx.dir, t, "id_" .. t)
      os.execute("cat " .. k .. ".pub >> " .. fx.home .. "/.ssh/authorized_keys")
      local cfg = fx.dir .. "/" .. t .. "_config"
      write(cfg, read(fx.config):gsub(fx.key:gsub("%p", "%%%0"), k))
      local inst = gpurent.connect("h1", {config = cfg})
      assert.equal("publickey", inst.conn.auth)
      inst:close()
    end
    local enc = sshd.keygen(fx.dir, "ed25519", "id_enc", "hunter2-pass")
    os.execute("cat " .. enc .. ".pub >> " .. fx.home .. "/.ssh/authorized_keys")
    local cfg = fx.dir .. "/enc_config"
    write(cfg, read(fx.config):gsub(fx.key:gsub("%p", "%%%0"), enc))
    local inst = gpurent.connect("h1", {config = cfg, passphrase = gpurent.secret("hunter2-pass")})
    assert.equal("publickey", inst.conn.auth)
    inst:close()
    local ok, err = pcall(gpurent.connect, "h1", {config = cfg})   -- no TTY, no passphrase
    assert.is_false(ok)
    assert.matches("encrypted; no TTY", tostring(err))
  end)

  -- OpenSSH 9.2 (this sshd) refuses SHA-1 RSA signatures, the only kind libssh2
  -- 1.10 makes itself: these pass only through runtime/rsasha2.c.
  local function rsa_config(name, key)
    os.execute("cat " .. key .. ".pub >> " .. fx.home .. "/.ssh/authorized_keys")
    local cfg = fx.dir .. "/" .. name .. "_config"
    write(cfg, read(fx.config):gsub(fx.key:gsub("%p", "%%%0"), key))
    return cfg
  end

  it("authenticates RSA keys with rsa-sha2-256: OpenSSH format, and PEM with a passphrase", function()
    assert.matches("OpenSSH_9", (io.popen("ssh -V 2>&1"):read("a")))
    local plain = sshd.keygen(fx.dir, "rsa", "id_rsa_plain")
    local inst = gpurent.connect("h1", {config = rsa_config("rsa_plain", plain)})
    assert.equal("publickey", inst.conn.auth)
    assert.equal("rsa\n", inst:sh("echo rsa").stdout)
    inst:close()
    local pem = fx.dir .. "/id_rsa_pem"
    assert.is_true(os.execute("ssh-keygen -q -t rsa -b 2048 -m PEM -N rsa-Pass -C t -f " .. pem .. " </dev/null >/dev/null"))
    local cfg = rsa_config("rsa_pem", pem)
    inst = gpurent.connect("h1", {config = cfg, passphrase = gpurent.secret("rsa-Pass")})
    assert.equal("publickey", inst.conn.auth)
    inst:close()
    local ok, err = pcall(gpurent.connect, "h1", {config = cfg, passphrase = gpurent.secret("wrong")})
    assert.is_false(ok)
    assert.matches("id_rsa_pem: cannot read the key %(wrong passphrase%?%)", tostring(err))
  end)

  it("a passphrase-protected OpenSSH-format RSA key is refused with the way out", function()
    local k = sshd.keygen(fx.dir, "rsa", "id_rsa_enc", "rsa-Pass")
    local ok, err = pcall(gpurent.connect, "h1", {config = rsa_config("rsa_enc", k), passphrase = gpurent.secret("rsa-Pass")})
    assert.is_false(ok)
    assert.matches("id_rsa_enc", tostring(err))
    assert.matches("ssh%-add", tostring(err))
    assert.matches("refuses SHA%-1 signatures", tostring(err))
  end)

  it("signs rsa-sha2-256 with an RSA key held by ssh-agent", function()
    local dir = T.tmpdir()
    local sock = dir .. "/agent.sock"
    local p = io.popen("ssh-agent -a " .. T.q(sock) .. " -s")
    local agent_pid = tonumber(p:read("a"):match("SSH_AGENT_PID=(%d+)"))
    p:close()
    assert.truthy(agent_pid)
    local ok, err = pcall(function()
      local k = sshd.keygen(dir, "rsa", "id_rsa_agent")
      os.execute("cat " .. k .. ".pub >> " .. fx.home .. "/.ssh/authorized_keys")
      assert.is_true(os.execute("SSH_AUTH_SOCK=" .. T.q(sock) .. " ssh-add -q " .. T.q(k) .. " 2>/dev/null"))
      os.remove(k)                                      -- only the agent holds it now
      local cfg = dir .. "/agent_config"
      write(cfg, read(fx.config):gsub("IdentitiesOnly yes", "IdentitiesOnly no"))
      local code, out, stderr = T.run("-e " .. T.q(string.format(
        [[local i = gpurent.connect("h1", {config = %q}); io.write(i.conn.auth, " ", i:sh("echo via-agent").stdout)]], cfg)),
        {env = "SSH_AUTH_SOCK=" .. T.q(sock)})
      assert.equal(0, code, stderr)
      assert.equal("agent via-agent\n", out)
    end)
    os.execute("kill " .. agent_pid)                   -- the exact agent this test started
    T.rmtree(dir)
    assert(ok, err)
  end)

  it("times out connecting to a host that accepts TCP but never speaks SSH", function()
    local slow = sshd.start{addrs = 1, first_addr = 40}
    slow:pause()
    local t0 = gpurent.now()
    local ok, err = pcall(slow.connect, slow, 1, {connect_timeout = 1})
    local took = gpurent.now() - t0
    slow:stop()
    assert.is_false(ok)
    assert.matches("timed out", tostring(err))
    assert.is_true(took >= 0.9 and took < 3, "took " .. took)
  end)
end)

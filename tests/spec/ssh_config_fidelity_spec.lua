-- ssh_config_fidelity_spec: gpurent connects the way `ssh` would, against real sshd
-- daemons on loopback: ProxyJump through a jump daemon (host keys of both hops
-- checked), an unreachable jump fails without going direct (the target daemon's log
-- shows no connection), ProxyCommand, Match blocks, IdentityAgent / IdentitiesOnly,
-- HashKnownHosts, StrictHostKeyChecking yes / no / accept-new / ask (on a terminal
-- and off one), keywords gpurent cannot honour refused with file:line, and the
-- effective configuration compared with `ssh -G` for a corpus of configs.
local sshd = require "sshd"
local tty = require "tty"
local sshconfig = require "gpurent.transport.sshconfig"

local function read(p) local f = assert(io.open(p)); local s = f:read("a"); f:close(); return s end
local function write(p, s) local f = assert(io.open(p, "w")); f:write(s); f:close(); return p end
local function esc(s) return (s:gsub("%p", "%%%0")) end

local function count(text, plain)
  local n, i = 0, 1
  while true do
    local a, b = text:find(plain, i, true)
    if not a then return n end
    n, i = n + 1, b + 1
  end
end

local function fingerprint(pubfile)
  local p = io.popen("ssh-keygen -l -f " .. T.q(pubfile))
  local s = p:read("a")
  p:close()
  return s:match("(SHA256:%S+)")
end

-- One Host block for fixture fx, address 1, under alias name.
local function block(name, fx, lines)
  return table.concat({
    "Host " .. name, "  HostName " .. fx.addrs[1], "  Port " .. fx.port, "  User root",
    "  IdentityFile " .. fx.key, "  IdentitiesOnly yes", "  GlobalKnownHostsFile none",
    table.concat(lines or {}, "\n"), ""}, "\n")
end

local function kh_line(fx) return "[" .. fx.addrs[1] .. "]:" .. fx.port .. " " .. fx.host_pub .. "\n" end

describe("ProxyJump and ProxyCommand", function()
  local jump, target, dir
  setup(function()
    jump = sshd.start{addrs = 1, first_addr = 70}
    target = sshd.start{addrs = 1, first_addr = 71, log_level = "VERBOSE"}
    dir = T.tmpdir()
  end)
  teardown(function()
    if jump then jump:stop() end
    if target then target:stop() end
    T.rmtree(dir)
  end)

  local function target_connections() return count(read(target.dir .. "/sshd.log"), "Connection from ") end

  -- A config where "via" reaches the target through ProxyJump JUMP (or ProxyCommand).
  local function config(name, kh, target_lines)
    write(dir .. "/" .. name .. "_kh", kh)
    local khl = "  UserKnownHostsFile " .. dir .. "/" .. name .. "_kh"
    return write(dir .. "/" .. name, block("jump", jump, {khl}) .. block("via", target, {khl, table.unpack(target_lines)}))
  end

  it("runs the session over the jump host, which serves the connection", function()
    local cfg = config("pj", kh_line(jump) .. kh_line(target), {"  ProxyJump jump"})
    local inst = gpurent.connect("via", {config = cfg})
    assert.equal("publickey", inst.conn.auth)
    assert.equal("via-jump\n", inst:sh("echo via-jump").stdout)
    assert.equal(1, #jump:conn_trees())        -- the jump daemon is serving our connection
    inst:close()
  end)

  it("checks the host key of every hop: an unknown jump key or target key is refused", function()
    local cfg = config("pj_nojumpkey", kh_line(target), {"  ProxyJump jump"})
    local ok, err = pcall(gpurent.connect, "via", {config = cfg})
    assert.is_false(ok)
    assert.matches("ProxyJump jump", tostring(err))
    assert.matches("Host key verification failed", tostring(err))   -- the jump's ssh said so
    cfg = config("pj_notargetkey", kh_line(jump), {"  ProxyJump jump"})
    ok, err = pcall(gpurent.connect, "via", {config = cfg})
    assert.is_false(ok)
    assert.is_true(gpurent.is_refusal(err))
    assert.matches("host key for %[" .. esc(target.addrs[1]) .. "%]:" .. target.port .. " is not known", tostring(err))
  end)

  it("an unreachable jump fails, naming it, and never connects directly", function()
    local before = target_connections()
    local cfg = config("pj_bad", kh_line(jump) .. kh_line(target), {"  ProxyJump nosuchjump.invalid"})
    local ok, err = pcall(gpurent.connect, "via", {config = cfg, connect_timeout = 10})
    assert.is_false(ok)
    assert.matches("nosuchjump%.invalid", tostring(err))
    -- a jump that resolves but where nothing listens
    cfg = config("pj_closed", kh_line(jump) .. kh_line(target), {"  ProxyJump root@127.0.0.72:1"})
    ok, err = pcall(gpurent.connect, "via", {config = cfg, connect_timeout = 10})
    assert.is_false(ok)
    assert.matches("Connection refused", tostring(err))
    -- and the CLI: the command does not run
    local code, out = T.run("-e " .. T.q("print(gpurent.connect('via'):sh('echo RAN').stdout)"),
      {env = "GPURENT_SSH_CONFIG=" .. T.q(cfg)})
    assert.equal(1, code)
    assert.is_nil(out:find("RAN", 1, true))
    assert.equal(before, target_connections())  -- the target daemon saw no connection at all
  end)

  it("a chain of two jumps (ProxyJump a,b)", function()
    local cfg = config("pj_chain", kh_line(jump) .. kh_line(target), {"  ProxyJump jump,jump"})
    local inst = gpurent.connect("via", {config = cfg})
    assert.equal("chain\n", inst:sh("echo chain").stdout)
    assert.equal(2, #jump:conn_trees())        -- one connection per hop
    inst:close()
  end)

  it("ProxyCommand: the session runs over the command's stdio, tokens expanded", function()
    local log = dir .. "/pc.log"
    local cfg = config("pc", kh_line(jump) .. kh_line(target),
      {"  ProxyCommand sh -c 'echo %h %p %r %n >" .. log .. "; exec ssh -F " .. dir .. "/pc -W %h:%p jump'"})
    local inst = gpurent.connect("via", {config = cfg})
    assert.equal("pc\n", inst:sh("echo pc").stdout)
    assert.equal(target.addrs[1] .. " " .. target.port .. " root via\n", read(log))
    assert.equal(1, #jump:conn_trees())
    inst:close()
    local before = target_connections()
    cfg = config("pc_fail", kh_line(target), {"  ProxyCommand sh -c 'echo proxy-broke >&2; exit 7'"})
    local ok, err = pcall(gpurent.connect, "via", {config = cfg})
    assert.is_false(ok)
    assert.matches("exited with status 7", tostring(err))
    assert.matches("proxy%-broke", tostring(err))
    assert.equal(before, target_connections())
  end)
end)

describe("identities as OpenSSH chooses them", function()
  local fx, dir, agent_pid, sock
  setup(function()
    fx = sshd.start{addrs = 1, first_addr = 73}
    dir = T.tmpdir()
    sock = dir .. "/agent.sock"
    local p = io.popen("ssh-agent -a " .. T.q(sock) .. " -s")
    agent_pid = tonumber(p:read("a"):match("SSH_AGENT_PID=(%d+)"))
    p:close()
    -- a key the server takes that only the agent holds
    local k = sshd.keygen(dir, "ed25519", "id_agent_only")
    os.execute("cat " .. k .. ".pub >> " .. fx.home .. "/.ssh/authorized_keys")
    assert.is_true(os.execute("SSH_AUTH_SOCK=" .. T.q(sock) .. " ssh-add -q " .. T.q(k) .. " 2>/dev/null"))
    os.remove(k)
  end)
  teardown(function()
    if agent_pid then os.execute("kill " .. agent_pid) end   -- the exact agent we started
    if fx then fx:stop() end
    T.rmtree(dir)
  end)

  local function cfgfile(name, lines)
    return write(dir .. "/" .. name, table.concat({
      "Host h", "  HostName " .. fx.addrs[1], "  Port " .. fx.port, "  User root",
      "  UserKnownHostsFile " .. fx.known_hosts, "  GlobalKnownHostsFile none",
      table.concat(lines, "\n"), ""}, "\n"))
  end

  local function connect_child(cfg, env)
    return T.run("-e " .. T.q(string.format(
      [[local i = gpurent.connect("h", {config = %q}); io.write(i.conn.auth, " ", i:sh("echo in").stdout)]], cfg)),
      {env = env or ""})
  end

  it("an ed25519 CertificateFile (libssh2 1.10 mislabels its signature) is refused, naming file:line", function()
    local ca = sshd.keygen(dir, "ed25519", "ca")
    local user = sshd.keygen(dir, "ed25519", "id_certified")
    assert.is_true(os.execute(string.format("ssh-keygen -q -s %s -I gpurent-test -n root %s >/dev/null 2>&1",
      T.q(ca), T.q(user .. ".pub"))))
    local cfg = write(dir .. "/withcert", table.concat({"Host c", "  HostName " .. fx.addrs[1], "  Port " .. fx.port,
      "  IdentityFile " .. user, "  CertificateFile " .. user .. "-cert.pub", ""}, "\n"))
    local ok, err = pcall(gpurent.connect, "c", {config = cfg})
    assert.is_false(ok)
    assert.matches("CertificateFile gpurent cannot use %(" .. esc(cfg) .. ":5%)", tostring(err))
    assert.matches("certificatefile " .. esc(user) .. "%-cert%.pub: an ed25519 certificate: libssh2 1%.10", tostring(err))
    assert.matches("only with ECDSA", tostring(err))                  -- what does work (ssh_cert_spec)
  end)

  it("uses a key set only inside a Match host block", function()
    local cfg = cfgfile("match", {"  IdentitiesOnly yes", "  IdentityFile /nonexistent/key",
      "Match host " .. fx.addrs[1] .. " user root", "  IdentityFile " .. fx.key})
    local inst = gpurent.connect("h", {config = cfg})
    assert.equal("publickey", inst.conn.auth)
    inst:close()
  end)

  it("IdentityAgent none: the agent is not used; a socket path is used instead of SSH_AUTH_SOCK", function()
    local code, out, err = connect_child(cfgfile("agent_ok", {"  IdentityFile /nonexistent/key"}),
      "SSH_AUTH_SOCK=" .. T.q(sock))
    assert.equal(0, code, err)
    assert.equal("agent in\n", out)                        -- control: the agent's key works
    code, out, err = connect_child(cfgfile("agent_none", {"  IdentityFile /nonexistent/key", "  IdentityAgent none"}),
      "SSH_AUTH_SOCK=" .. T.q(sock))
    assert.equal(1, code)
    assert.matches("authentication failed", err)
    assert.matches("IdentityAgent none", err)
    code, out, err = connect_child(cfgfile("agent_path", {"  IdentityFile /nonexistent/key", "  IdentityAgent " .. sock}),
      "SSH_AUTH_SOCK=")
    assert.equal(0, code, err)
    assert.equal("agent in\n", out)
  end)

  it("IdentitiesOnly yes: the agent signs only for configured keys", function()
    local code, _, err = connect_child(cfgfile("only_other", {"  IdentityFile /nonexistent/key", "  IdentitiesOnly yes"}),
      "SSH_AUTH_SOCK=" .. T.q(sock))
    assert.equal(1, code)
    assert.matches("IdentitiesOnly", err)
    -- the agent's key configured by its public half (private file gone): the agent signs
    local pubonly = dir .. "/id_agent_only"
    local out
    code, out, err = connect_child(cfgfile("only_mine", {"  IdentityFile " .. pubonly, "  IdentitiesOnly yes"}),
      "SSH_AUTH_SOCK=" .. T.q(sock))
    assert.equal(0, code, err)
    assert.equal("agent in\n", out)
  end)
end)

describe("known_hosts as OpenSSH keeps it", function()
  local fx, dir
  setup(function() fx = sshd.start{addrs = 1, first_addr = 74}; dir = T.tmpdir() end)
  teardown(function() if fx then fx:stop() end; T.rmtree(dir) end)

  local function cfgfile(name, lines, kh_text)
    local kh = dir .. "/" .. name .. "_kh"
    if kh_text then write(kh, kh_text) else os.remove(kh) end
    return write(dir .. "/" .. name, block("h", fx, {"  UserKnownHostsFile " .. kh, table.unpack(lines)})), kh
  end

  it("HashKnownHosts yes: the new entry is hashed, and OpenSSH finds it", function()
    local cfg, kh = cfgfile("hash", {"  HashKnownHosts yes", "  StrictHostKeyChecking accept-new"})
    gpurent.connect("h", {config = cfg}):close()
    local text = read(kh)
    assert.matches("^|1|[%w+/=]+|[%w+/=]+ ssh%-ed25519 ", text)
    assert.is_nil(text:find(fx.addrs[1], 1, true))
    local p = io.popen("ssh-keygen -F " .. T.q("[" .. fx.addrs[1] .. "]:" .. fx.port) .. " -f " .. T.q(kh))
    assert.matches("Host %[" .. esc(fx.addrs[1]) .. "%]:" .. fx.port .. " found", p:read("a"))
    p:close()
    gpurent.connect("h", {config = cfg}):close()            -- and gpurent reads it back
    assert.equal(text, read(kh))
  end)

  it("StrictHostKeyChecking yes refuses an unknown key even with accept_new_host off; no records it", function()
    local cfg, kh = cfgfile("strict_yes", {"  StrictHostKeyChecking yes"})
    local ok, err = pcall(gpurent.connect, "h", {config = cfg})
    assert.is_false(ok)
    assert.is_true(gpurent.is_refusal(err))
    assert.matches("StrictHostKeyChecking yes", tostring(err))
    assert.is_nil(io.open(kh))
    cfg, kh = cfgfile("strict_no", {"  StrictHostKeyChecking no"})
    gpurent.connect("h", {config = cfg}):close()
    assert.matches("ssh%-ed25519", read(kh))
    -- a changed key stays refused under `no` (OpenSSH would connect with password auth off)
    local other = dir .. "/other_host"
    os.execute("ssh-keygen -q -t ed25519 -N '' -f " .. other .. " </dev/null >/dev/null")
    cfg = cfgfile("strict_no_changed", {"  StrictHostKeyChecking no"},
      "[" .. fx.addrs[1] .. "]:" .. fx.port .. " " .. read(other .. ".pub"):match("^(%S+ %S+)") .. "\n")
    ok, err = pcall(gpurent.connect, "h", {config = cfg})
    assert.is_false(ok)
    assert.matches("CHANGED", tostring(err))
  end)

  it("ask off a terminal: refused, and the hint printed works as printed", function()
    local cfg, kh = cfgfile("ask_off", {})
    local ok, err = pcall(gpurent.connect, "h", {config = cfg})
    assert.is_false(ok)
    local msg = tostring(err)
    assert.matches("no terminal to ask on", msg)
    assert.truthy(msg:find(fingerprint(fx.dir .. "/host_ed25519.pub"), 1, true))
    local cmd = msg:match("`(ssh [^`]+)`")
    assert.truthy(cmd, msg)
    assert.is_true(os.execute(cmd .. " </dev/null >/dev/null 2>&1"), cmd)   -- OpenSSH records it
    gpurent.connect("h", {config = cfg}):close()                           -- now known
    assert.matches("ssh%-ed25519", read(kh))
  end)

  it("gpurent check names --accept-new-host, and takes it", function()
    local cfg, kh = cfgfile("ask_check", {})
    local code, _, err = T.run("check h --profile generic-ssh --only U-OOM --ssh-config " .. T.q(cfg))
    assert.equal(3, code, err)
    assert.matches("rerun with %-%-accept%-new%-host", err)
    code, _, err = T.run("check h --profile generic-ssh --only U-OOM --accept-new-host --ssh-config " .. T.q(cfg))
    assert.is_true(code == 0 or code == 1, "exit " .. tostring(code) .. ": " .. err)
    assert.matches("ssh%-ed25519", read(kh))
  end)

  it("ask on a terminal: shows type and SHA256 fingerprint, records on yes, refuses on no", function()
    local cfg, kh = cfgfile("ask_tty", {})
    local chunk = string.format([[local ok, e = pcall(gpurent.connect, "h", {config = %q})
print(ok and "CONNECTED" or ("FAILED " .. tostring(e)))]], cfg)
    local term = tty.start(T.bin .. " -e " .. T.q(chunk) .. "; sleep 30")
    local ok, e = pcall(function()
      local screen = term:wait_for("(yes/no/[fingerprint])?", 10, true)
      assert.truthy(screen:find("ED25519 key fingerprint is " .. fingerprint(fx.dir .. "/host_ed25519.pub"), 1, true), screen)
      term:line("yes")
      term:wait_for("CONNECTED", 10, true)
    end)
    term:close()
    assert(ok, e)
    assert.matches("ssh%-ed25519", read(kh))
    cfg, kh = cfgfile("ask_tty_no", {})
    chunk = chunk:gsub("ask_tty", "ask_tty_no")
    term = tty.start(T.bin .. " -e " .. T.q(chunk) .. "; sleep 30")
    ok, e = pcall(function()
      term:wait_for("(yes/no/[fingerprint])?", 10, true)
      term:line("no")
      term:wait_for("FAILED.-not accepted", 10)
    end)
    term:close()
    assert(ok, e)
    assert.is_nil(io.open(kh))
  end)
end)

describe("the effective configuration is ssh -G's", function()
  local dir
  setup(function() dir = T.tmpdir() end)
  teardown(function() T.rmtree(dir) end)

  -- ssh -G, parsed here independently of gpurent
  local function ssh_G(cfg, target)
    local p = io.popen("ssh -G -T -F " .. T.q(cfg) .. " " .. T.q(target) .. " 2>/dev/null </dev/null")
    local t = {identityfile = {}, certificatefile = {}}
    for line in p:read("a"):gmatch("[^\n]+") do
      local k, v = line:match("^(%S+) (.*)$")
      if k == "identityfile" or k == "certificatefile" then table.insert(t[k], v) elseif k then t[k] = v end
    end
    p:close()
    return t
  end

  local function expand(p, c)
    return (p:gsub("^~", os.getenv("HOME")):gsub("%%h", c.hostname):gsub("%%r", c.user):gsub("%%p", c.port))
  end

  local function compare(cfg, target)
    local g, c = ssh_G(cfg, target), sshconfig.resolve(target, {config = cfg})
    assert.equal(g.hostname, c.hostname)
    assert.equal(g.user, c.user)
    assert.equal(tonumber(g.port), c.port)
    local ids = {}
    for _, p in ipairs(g.identityfile) do ids[#ids + 1] = expand(p, g) end
    assert.same(ids, c.identityfiles)
    local certs = {}
    for _, p in ipairs(g.certificatefile) do certs[#certs + 1] = expand(p, g) end
    assert.same(certs, c.certificatefiles)
    assert.equal(g.proxyjump, c.proxyjump)
    assert.equal(g.proxycommand, c.proxycommand)
    assert.equal(g.stricthostkeychecking, c.stricthostkeychecking)
    assert.equal(g.hashknownhosts == "yes", c.hashknownhosts)
    assert.equal(g.identitiesonly == "yes", c.identitiesonly)
    assert.equal(g.userknownhostsfile, table.concat(c.knownhostsfiles, " "))
    return c
  end

  it("Match, Include, ProxyJump, CertificateFile, Match exec", function()
    write(dir .. "/inc.conf", "Host autodl-*\n  Port 4444\n  IdentityFile ~/k_inc\n")
    local cfg = write(dir .. "/corpus", table.concat({
      "Include " .. dir .. "/inc.conf",
      "Host autodl-proj-? !autodl-proj-9",
      "  HostName region.example.com",
      "  User alice",
      "  Port 5555",
      "  IdentityFile=\"/keys/a b\"",
      "  ProxyJump bob@bastion:2222,gw",
      "  HashKnownHosts yes",
      "Match host region.example.com user alice",
      "  IdentityFile /keys/%h-%r",
      "  UserKnownHostsFile /kh/%h",
      "Match exec \"test -e " .. dir .. "/flag\"",
      "  User flagged",
      "Host pc",
      "  ProxyCommand nc %h %p",
      "  StrictHostKeyChecking accept-new",
      "Host *",
      "  User nobody",
      "  IdentityFile /keys/c",
      "  IdentitiesOnly yes",
    }, "\n"))
    local c = compare(cfg, "autodl-proj-1")
    assert.equal(4444, c.port)                                    -- the Include came first
    assert.equal("bob@bastion:2222,gw", c.proxyjump)
    assert.same({os.getenv("HOME") .. "/k_inc", "/keys/a b", "/keys/region.example.com-alice", "/keys/c"}, c.identityfiles)
    compare(cfg, "autodl-proj-9")
    compare(cfg, "pc")
    compare(cfg, "ssh://bob@10.1.2.3:2200")
    write(dir .. "/flag", "")
    assert.equal("flagged", compare(cfg, "pc").user)              -- Match exec, evaluated by ssh
    -- CertificateFile from an Include, in a Match block: gpurent takes what ssh -G shows
    write(dir .. "/inc.conf", "Host autodl-*\n  Port 4444\nMatch originalhost autodl-proj-1\n  CertificateFile ~/k_inc-cert.pub\n")
    local g = ssh_G(cfg, "autodl-proj-1")
    assert.same({"~/k_inc-cert.pub"}, g.certificatefile)
    assert.same({os.getenv("HOME") .. "/k_inc-cert.pub"}, compare(cfg, "autodl-proj-1").certificatefiles)
    -- and refuses one it cannot sign with (ed25519: ssh_cert_spec), naming where it was set
    write(dir .. "/k_ed-cert.pub", "ssh-ed25519-cert-v01@openssh.com AAAA k\n")
    write(dir .. "/inc.conf", "Host autodl-*\n  Port 4444\nMatch originalhost autodl-proj-1\n  CertificateFile " ..
      dir .. "/k_ed-cert.pub\n")
    local ok, err = pcall(sshconfig.resolve, "autodl-proj-1", {config = cfg})
    assert.is_false(ok)
    assert.matches("CertificateFile gpurent cannot use %(" .. esc(dir) .. "/inc%.conf:4%)", tostring(err))
    assert.matches("certificatefile " .. esc(dir) .. "/k_ed%-cert%.pub: an ed25519 certificate", tostring(err))
    assert.is_true((pcall(sshconfig.resolve, "autodl-proj-9", {config = cfg})))   -- the Match does not apply there
  end)

  it("CanonicalizeHostname: the canonical name and the blocks that match it", function()
    -- a private /etc/hosts in a mount namespace: box.corp.test resolves, nothing else changes
    write(dir .. "/hosts", "127.0.0.1 localhost\n127.0.0.60 box.corp.test box.corp.test.\n")
    local cfg = write(dir .. "/canon", "CanonicalizeHostname yes\nCanonicalDomains corp.test\n" ..
      "Host box.corp.test\n  User canon\n  Port 2201\n")
    local chunk = string.format([[local c = require("gpurent.transport.sshconfig").resolve("box", {config = %q})
io.write(c.hostname, " ", c.user, " ", c.port)]], cfg)
    local function ns(cmd)
      local p = io.popen("unshare -m --propagation private sh -c " .. T.q("mount --bind " .. T.q(dir .. "/hosts") ..
        " /etc/hosts && " .. cmd) .. " 2>&1")
      local s = p:read("a")
      p:close()
      return s
    end
    local g = ns("ssh -G -T -F " .. T.q(cfg) .. " box")
    local mine = ns(T.q(T.bin) .. " -e " .. T.q(chunk))
    assert.matches("hostname box%.corp%.test\n", g)
    assert.equal(g:match("\nhostname (%S+)") .. " " .. g:match("\nuser (%S+)") .. " " .. g:match("\nport (%S+)"), mine)
    assert.equal("box.corp.test canon 2201", mine)
  end)

  it("refuses a keyword it cannot honour, naming it and its file:line; irrelevant ones pass", function()
    local cfg = write(dir .. "/bind", "Host h\n  HostName 127.0.0.1\n  ForwardX11 yes\n  BindAddress 127.0.0.5\n")
    local ok, err = pcall(sshconfig.resolve, "h", {config = cfg})
    assert.is_false(ok)
    assert.matches("bindaddress 127%.0%.0%.5 %(" .. esc(cfg) .. ":4%)", tostring(err))
    assert.is_nil(tostring(err):find("forwardx11", 1, true))
    local ok2, c = pcall(sshconfig.resolve, "h", {config = write(dir .. "/x11", "Host h\n  ForwardX11 yes\n")})
    assert.is_true(ok2, c)
    -- every keyword ssh -G prints is classified
    local p = io.popen("ssh -G -T -F /dev/null x 2>/dev/null")
    for line in p:read("a"):gmatch("[^\n]+") do
      local k = line:match("^(%S+)"):lower()
      assert.truthy(sshconfig.KEYWORDS[k], "unclassified ssh -G keyword " .. k)
    end
    p:close()
  end)
end)

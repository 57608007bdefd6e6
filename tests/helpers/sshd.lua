-- tests/helpers/sshd.lua: a real OpenSSH sshd on loopback for tests and benches.
--
--   local fx = sshd.start{addrs = 3, tmpfs = "4m", password = "pw", hash_known_hosts = true,
--                         sshd_options = "RekeyLimit 1M",  -- extra sshd_config lines
--                         shell = "/bin/bash"}             -- root's login shell (default /bin/sh)
--   fx.port, fx.addrs ({"127.0.0.2", ...}), fx.aliases ({"h1", ...}), fx.config (ssh_config),
--   fx.known_hosts, fx.key (client private key), fx.home (root's home inside the daemon),
--   fx.small (a tmpfs of the given size inside the daemon), fx.pid
--   fx:connect(i [, opts]) -> gpurent instance to alias i
--   fx:conn_trees() -> {{pid...}, ...} the processes serving each connection; fx:kill_connections()
--   fx:stop()
--
-- The daemon runs in its own mount namespace (`unshare -m`): a tmpfs on /run for
-- its privilege-separation dir, a private /etc/passwd whose root has the fixture's
-- home and /bin/sh (or o.shell) as shell (and a private /etc/shadow when password= is given),
-- and the optional small tmpfs. The host's /etc, /root and /run are untouched.
-- One daemon listens on up to 16 addresses (OpenSSH's limit) on one ephemeral port.
local lfs = require "lfs"
local core = require "gpurent.core"

local sshd = {}
local Fx = {}
Fx.__index = Fx

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function sh(cmd)
  local ok, _, code = os.execute(cmd)
  return ok, code
end

local function must(cmd)
  local ok, code = sh(cmd)
  if not ok then error("sshd fixture: command failed (" .. tostring(code) .. "): " .. cmd, 2) end
end

local function write(path, text, mode)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  if mode then must("chmod " .. mode .. " " .. q(path)) end
end

local function read(path)
  local f = io.open(path, "r")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function alive(pid)
  local st = read("/proc/" .. pid .. "/stat")
  return st ~= nil and not st:match("^%d+ %b() Z")
end

-- Does something accept TCP connections on addr:port?
local function accepts(addr, port)
  local ok, fd = pcall(core.ssh.tcp_connect, addr, port)
  if not ok then return false end
  local r = core.sched.wait_fd(fd, 2, 0.2)
  local good = r ~= 0 and core.ssh.connect_result(fd)
  core.ssh.close_fd(fd)
  return good and true or false
end
sshd.accepts = accepts

local keygen_cache = {}
-- A client key of the given type (generated once per process, copied per fixture).
-- ECDSA keys are written as PEM: libssh2 1.10 leaks a BIGNUM (56 bytes) on every
-- auth with an OpenSSH-format ECDSA key, which would fail `make asan`.
local function keygen(dir, ktype, name, passphrase)
  local path = dir .. "/" .. name
  must(string.format("ssh-keygen -q -t %s %s -N %s -C gpurent-test -f %s </dev/null >/dev/null",
    ktype, ktype == "ecdsa" and "-m PEM" or "", q(passphrase or ""), q(path)))
  return path
end
sshd.keygen = keygen
local _ = keygen_cache

function sshd.start(o)
  o = o or {}
  local n = o.addrs or 1
  if n > 16 then error("sshd fixture: at most 16 addresses per daemon", 2) end
  local first = o.first_addr or 1
  local dir = os.tmpname()
  os.remove(dir)
  assert(lfs.mkdir(dir))
  local fx = setmetatable({dir = dir, home = dir .. "/home", addrs = {}, aliases = {}}, Fx)
  assert(lfs.mkdir(fx.home))
  assert(lfs.mkdir(fx.home .. "/.ssh"))
  must("chmod 700 " .. q(fx.home))
  for i = 1, n do fx.addrs[i] = "127.0.0." .. (first + i - 1); fx.aliases[i] = (o.alias_prefix or "h") .. i end
  -- keys
  must(string.format("ssh-keygen -q -t ed25519 -N '' -f %s </dev/null >/dev/null", q(dir .. "/host_ed25519")))
  fx.key = keygen(dir, o.key_type or "ed25519", "id_client")
  local auth = read(fx.key .. ".pub")
  for _, extra in ipairs(o.extra_keys or {}) do auth = auth .. read(extra .. ".pub") end
  write(fx.home .. "/.ssh/authorized_keys", auth, "600")
  fx.host_pub = read(dir .. "/host_ed25519.pub"):match("^(%S+ %S+)")
  -- private passwd/shadow for the daemon's namespace
  local passwd = read("/etc/passwd"):gsub("\nroot:[^\n]*", "")
  passwd = passwd:gsub("^root:[^\n]*\n", "")
  write(dir .. "/passwd", "root:x:0:0:root:" .. fx.home .. ":" .. (o.shell or "/bin/sh") .. "\n" .. passwd, "644")
  local shadow_mount = ""
  if o.password then
    local p = io.popen("openssl passwd -6 -stdin <<'EOF'\n" .. o.password .. "\nEOF")
    local hash = p:read("l")
    p:close()
    local shadow = (read("/etc/shadow") or ""):gsub("\nroot:[^\n]*", ""):gsub("^root:[^\n]*\n", "")
    write(dir .. "/shadow", "root:" .. hash .. ":19000:0:99999:7:::\n" .. shadow, "600")
    shadow_mount = "mount --bind " .. q(dir .. "/shadow") .. " /etc/shadow && "
  end
  local small_mount = ""
  if o.tmpfs then
    fx.small = dir .. "/small"
    assert(lfs.mkdir(fx.small))
    small_mount = string.format("mount -t tmpfs -o size=%s tmpfs %s && ", o.tmpfs, q(fx.small))
  end
  for attempt = 1, 6 do
    fx.port = 20000 + math.random(0, 39999)
    local listen = {}
    for _, a in ipairs(fx.addrs) do listen[#listen + 1] = "ListenAddress " .. a .. ":" .. fx.port end
    write(dir .. "/sshd_config", table.concat({
      "Port " .. fx.port, table.concat(listen, "\n"),
      "HostKey " .. dir .. "/host_ed25519",
      "PidFile " .. dir .. "/sshd.pid",
      "AuthorizedKeysFile " .. fx.home .. "/.ssh/authorized_keys",
      "StrictModes no", "UsePAM no", "PermitRootLogin yes",
      "PasswordAuthentication " .. (o.password and "yes" or "no"),
      "KbdInteractiveAuthentication no", "UseDNS no", "PrintMotd no",
      "Subsystem sftp internal-sftp",
      "MaxStartups 200:30:400", "MaxSessions 100", "MaxAuthTries 10",
      "LogLevel " .. (o.log_level or "ERROR"), o.sshd_options or "", "",
    }, "\n"))
    local script = "mount -t tmpfs tmpfs /run && mkdir -p /run/sshd && chmod 755 /run/sshd && " ..
      "mount --bind " .. q(dir .. "/passwd") .. " /etc/passwd && " .. shadow_mount .. small_mount ..
      "exec /usr/sbin/sshd -D -e -f " .. q(dir .. "/sshd_config")
    local p = io.popen(string.format("unshare -m --propagation private sh -c %s >%s 2>&1 </dev/null & echo $!",
      q(script), q(dir .. "/sshd.log")))
    fx.pid = tonumber(p:read("l"))
    p:close()
    local up = false
    for _ = 1, 100 do
      if not alive(fx.pid) then break end
      if accepts(fx.addrs[#fx.addrs], fx.port) then up = true; break end
      core.sys.sleep(0.05)
    end
    if up then break end
    if alive(fx.pid) then sh("kill " .. fx.pid) end
    fx.pid = nil
    if attempt == 6 then error("sshd fixture: sshd did not start: " .. (read(dir .. "/sshd.log") or ""), 2) end
  end
  -- client side: ssh_config + known_hosts
  fx.known_hosts = dir .. "/known_hosts"
  local kh, cfg = {}, {}
  for i, a in ipairs(fx.addrs) do
    kh[#kh + 1] = "[" .. a .. "]:" .. fx.port .. " " .. fx.host_pub
    cfg[#cfg + 1] = table.concat({
      "Host " .. fx.aliases[i], "  HostName " .. a, "  Port " .. fx.port, "  User root",
      "  IdentityFile " .. fx.key, "  IdentitiesOnly yes",
      "  UserKnownHostsFile " .. fx.known_hosts,
      "  GlobalKnownHostsFile none",
      o.ssh_options and ("  " .. o.ssh_options) or "",
    }, "\n")
  end
  write(fx.known_hosts, table.concat(kh, "\n") .. "\n", "644")
  if o.hash_known_hosts then must("ssh-keygen -q -H -f " .. q(fx.known_hosts) .. " >/dev/null 2>&1") end
  fx.config = dir .. "/ssh_config"
  write(fx.config, table.concat(cfg, "\n\n") .. "\n", "644")
  return fx
end

function Fx:connect(i, opts)
  opts = opts or {}
  opts.config = opts.config or self.config
  return gpurent.connect(self.aliases[i or 1], opts)
end

-- The environment for a child `ssh` / `gpurent` using this fixture.
function Fx:env()
  return "GPURENT_SSH_CONFIG=" .. q(self.config)
end

local function children_of(pid)
  local out = {}
  for name in lfs.dir("/proc") do
    if name:match("^%d+$") then
      local st = read("/proc/" .. name .. "/stat")
      local ppid = st and st:match("^%d+ %b() %S+ (%d+)")
      if ppid and tonumber(ppid) == pid then out[#out + 1] = tonumber(name) end
    end
  end
  return out
end

-- The process trees serving connections: {{pid, pid...}, ...}, one per connection.
function Fx:conn_trees()
  local trees = {}
  for _, c in ipairs(children_of(self.pid)) do
    local tree, queue = {}, {c}
    while #queue > 0 do
      local p = table.remove(queue, 1)
      tree[#tree + 1] = p
      for _, k in ipairs(children_of(p)) do queue[#queue + 1] = k end
    end
    trees[#trees + 1] = tree
  end
  return trees
end

-- Kill the processes of every connection being served (exact PIDs, SIGKILL).
function Fx:kill_connections()
  local n = 0
  for _, tree in ipairs(self:conn_trees()) do
    for i = #tree, 1, -1 do sh("kill -KILL " .. tree[i] .. " 2>/dev/null"); n = n + 1 end
  end
  return n
end

function Fx:pause() sh("kill -STOP " .. self.pid) end
function Fx:resume() sh("kill -CONT " .. self.pid) end

function Fx:stop()
  if self.pid and alive(self.pid) then
    self:resume()
    self:kill_connections()
    sh("kill " .. self.pid)
    for _ = 1, 100 do
      if not alive(self.pid) then break end
      core.sys.sleep(0.02)
    end
    if alive(self.pid) then sh("kill -KILL " .. self.pid) end
  end
  self.pid = nil
  if self.dir and self.dir:match("^/tmp/") then os.execute("rm -rf " .. q(self.dir)) end
end

return sshd

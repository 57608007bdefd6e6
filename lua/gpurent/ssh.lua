-- gpurent.ssh: connections. Opens a session for a resolved ssh_config entry with
-- OpenSSH's host key rules and auth order, and drives the C steps of runtime/ssh.c
-- and sftp.c: a step that would block is retried after sched.wait on the
-- session's socket, so the same code is blocking in the main coroutine and
-- concurrent inside gpurent.parallel.
--
--   ssh.connect(cfg, opts) -> conn      cfg from sshconfig.resolve; opts:
--       accept_new_host, connect_timeout, password (secret), passphrase (secret)
--   ssh.run(conn, deadline, op, step, ...) -> the step's results; raises on deadline
--   ssh.wait(conn, dirs, deadline) -> ready bits (0 on deadline); sends keepalives
--   ssh.error(kind, conn, msg, fields) -> raises a gpurent.ssh error object
-- Error kinds: "timeout", "connection", "auth", "command" (check=true), "transfer",
-- "interrupted" (Ctrl-C during a command), "output" (the capture cap, a to= file).
local core = require "gpurent.core"
local sched = require "gpurent.sched"
local errors = require "gpurent.errors"
local knownhosts = require "gpurent.knownhosts"
local secret = require "gpurent.secret"

local cssh, now = core.ssh, core.sys.now
local ssh = {}

local SshError = {__name = "gpurent.ssh.error"}
SshError.__index = SshError
SshError.__tostring = function(e) return e.msg end
ssh.Error = SshError

function ssh.error(kind, conn, msg, fields)
  local e = fields or {}
  e.kind, e.host, e.msg = kind, conn and conn.label, (conn and conn.label .. ": " or "") .. msg
  error(setmetatable(e, SshError), 0)
end

function ssh.is_error(e, kind)
  return getmetatable(e) == SshError and (kind == nil or e.kind == kind)
end

-- A lost connection: the C layer marked the session dead, or said so in the message.
function ssh.is_connection_loss(conn, e)
  if ssh.is_error(e, "connection") then return true end
  return conn ~= nil and conn.sess ~= nil and not conn.sess:alive()
end

local function send_keepalive(conn)
  local ok, err = pcall(conn.sess.keepalive_send, conn.sess)
  if not ok then ssh.error("connection", conn, tostring(err)) end
end

-- Wait for the socket; while waiting longer than ServerAliveInterval with no
-- traffic, send keepalives and give up after ServerAliveCountMax unanswered.
function ssh.wait(conn, dirs, deadline)
  local ka = conn.keepalive
  while true do
    local wake = deadline
    if ka and (not wake or now() + ka < wake) then wake = now() + ka end
    local r = sched.wait(conn.fd, dirs | 1, wake)
    if r ~= 0 then conn.missed = 0; return r end
    if deadline and now() >= deadline then return 0 end
    conn.missed = conn.missed + 1
    if conn.missed > conn.alive_max then
      conn.sess:mark_dead()
      ssh.error("connection", conn, string.format("no answer to %d keepalives (ServerAliveInterval %d): connection lost",
        conn.alive_max, ka))
    end
    send_keepalive(conn)
  end
end

-- Drive a step to completion.
function ssh.run(conn, deadline, op, step, ...)
  while true do
    local r, a, b, c = step(...)
    if r ~= false then return r, a, b, c end
    if ssh.wait(conn, a, deadline) == 0 then
      ssh.error("timeout", conn, op .. " timed out", {op = op})
    end
  end
end

-- Host key algorithms to offer: those already recorded for the host first (as
-- OpenSSH does), so a host with an ed25519 key on file is not asked for RSA.
local algs_for = {
  ["ssh-ed25519"] = {"ssh-ed25519"},
  ["ecdsa-sha2-nistp256"] = {"ecdsa-sha2-nistp256"},
  ["ecdsa-sha2-nistp384"] = {"ecdsa-sha2-nistp384"},
  ["ecdsa-sha2-nistp521"] = {"ecdsa-sha2-nistp521"},
  ["ssh-rsa"] = {"rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"},
}
local default_order = {"ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa"}

-- libssh2 1.10 has neither AES-GCM nor chacha20-poly1305; AES-CTR with a SHA-2
-- HMAC is the fastest safe pair it has (AES-NI; SHA-NI on recent CPUs).
local CIPHERS = os.getenv("GPURENT_SSH_CIPHERS") or "aes128-ctr,aes256-ctr,aes192-ctr"
local MACS = os.getenv("GPURENT_SSH_MACS") or "hmac-sha2-256,hmac-sha2-512,hmac-sha1"

local function hostkey_prefs(known)
  local out, seen = {}, {}
  local function add(t) for _, a in ipairs(algs_for[t] or {}) do if not seen[a] then seen[a] = true; out[#out + 1] = a end end end
  for _, t in ipairs(known) do add(t) end
  for _, t in ipairs(default_order) do add(t) end
  return table.concat(out, ",")
end

local function all_known_files(cfg)
  local files = {}
  for _, f in ipairs(cfg.knownhostsfiles) do files[#files + 1] = f end
  for _, f in ipairs(cfg.globalknownhostsfiles or {}) do files[#files + 1] = f end
  return files
end

local function refuse(conn, msg)
  conn.sess:close("host key refused")
  errors.refuse(msg, 0)
end

local function check_hostkey(conn, opts)
  local cfg = conn.cfg
  local blob, ktype = conn.sess:hostkey()
  local fp = knownhosts.fingerprint(blob)
  local name = knownhosts.name(cfg.hostname, cfg.port)
  local r = knownhosts.lookup(all_known_files(cfg), cfg.hostname, cfg.port, ktype, blob)
  conn.hostkey = {type = ktype, fingerprint = fp}
  if r.status == "ok" then return end
  if r.status == "revoked" then
    refuse(conn, string.format("%s: the host key for %s (%s %s) is REVOKED in %s:%d; refusing to connect",
      conn.label, name, ktype, fp, r.file, r.line))
  end
  if r.status == "changed" then
    refuse(conn, string.format(
      "%s: REMOTE HOST KEY CHANGED for %s: refusing to connect.\n" ..
      "  known:   %s %s  (%s:%d)\n  offered: %s %s\n" ..
      "Someone could be intercepting the connection, or the host was reinstalled. If you know why the key\n" ..
      "changed, remove the old entry (%s line %d, or: ssh-keygen -R '%s' -f %s) and connect again.",
      conn.label, name, r.keytype, knownhosts.fingerprint(r.blob), r.file, r.line, ktype, fp,
      r.file, r.line, name, r.file))
  end
  local policy = cfg.stricthostkeychecking
  if opts.accept_new_host or policy == "accept-new" or policy == "no" or policy == "off" then
    local file = cfg.knownhostsfiles[1]
    if not file then refuse(conn, conn.label .. ": host key unknown and UserKnownHostsFile is none") end
    knownhosts.add(file, cfg.hostname, cfg.port, ktype, blob)
    conn.hostkey.added = file
    if core.sys.isatty(2) then
      io.stderr:write(string.format("gpurent: recorded new host key for %s (%s %s) in %s\n", name, ktype, fp, file))
    end
    return
  end
  local other = #r.types > 0 and (" (keys of other types are known: " .. table.concat(r.types, ", ") .. ")") or ""
  refuse(conn, string.format(
    "%s: host key for %s is not known%s: refusing to connect.\n  offered: %s %s\n" ..
    "Check the fingerprint with the provider, then rerun with --accept-new-host (or set\n" ..
    "StrictHostKeyChecking accept-new for this host in ~/.ssh/config).",
    conn.label, name, other, ktype, fp))
end

-- Does this private key file need a passphrase? PEM says ENCRYPTED; the OpenSSH
-- format names its cipher ("none" when clear).
local function key_is_encrypted(text)
  if text:find("ENCRYPTED", 1, true) then return true end
  local body = text:match("%-%-%-%-%-BEGIN OPENSSH PRIVATE KEY%-%-%-%-%-(.-)%-%-%-%-%-END")
  if not body then return false end
  local bin = core.knownhosts.b64decode((body:gsub("%s", "")))
  if not bin or bin:sub(1, 15) ~= "openssh-key-v1\0" then return false end
  local n = string.unpack(">I4", bin, 16)
  return bin:sub(20, 19 + n) ~= "none"
end

-- Is this an RSA key? libssh2 1.10 signs RSA user auth with SHA-1 only
-- ("ssh-rsa"), which OpenSSH >= 8.8 refuses by default.
local function key_is_rsa(path, text)
  local pub = io.open(path .. ".pub", "r")
  if pub then local t = pub:read("a"); pub:close(); return t:match("^ssh%-rsa ") ~= nil end
  if text:find("BEGIN RSA PRIVATE KEY", 1, true) then return true end
  local body = text:match("%-%-%-%-%-BEGIN OPENSSH PRIVATE KEY%-%-%-%-%-(.-)%-%-%-%-%-END")
  local bin = body and core.knownhosts.b64decode((body:gsub("%s", "")))
  return bin ~= nil and bin:find("\0\0\0\7ssh-rsa", 1, true) ~= nil
end

local RSA_HINT = "; RSA keys: this server takes neither rsa-sha2-256 nor SHA-1 (ssh-rsa) " ..
  "signatures from it; an ed25519 or ecdsa key avoids the question"

local function openssh_version(sess)
  local major, minor = (sess:banner() or ""):match("OpenSSH_(%d+)%.(%d+)")
  return tonumber(major), tonumber(minor)
end

-- OpenSSH 8.8 and later refuse SHA-1 RSA signatures by default.
local function refuses_sha1_rsa(sess)
  local major, minor = openssh_version(sess)
  return major ~= nil and (major > 8 or (major == 8 and minor >= 8))
end

-- rsa-sha2-256 user auth (RFC 8332): OpenSSH since 7.2; other servers are
-- tried with it first and with ssh-rsa after.
local function takes_rsa_sha2(sess)
  local major, minor = openssh_version(sess)
  return major == nil or major > 7 or (major == 7 and minor >= 2)
end

local read_key = require("gpurent.fs").read_if_exists

local function tty_ask(prompt)
  if not core.sys.isatty(0) and not core.sys.isatty(2) then return nil end
  return cssh.askpass(prompt)
end

local function authenticate(conn, opts, deadline)
  local cfg, sess, user = conn.cfg, conn.sess, conn.cfg.user
  local list = ssh.run(conn, deadline, "auth methods", sess.userauth_list, sess, user)
  if list == true then return "none" end
  local has = {}
  for m in list:gmatch("[^,]+") do has[m] = true end
  local tried = {}
  if has.publickey and not cfg.identitiesonly then
    local ok, why = ssh.run(conn, deadline, "agent auth", sess.auth_agent, sess, user, takes_rsa_sha2(sess))
    if ok then return "agent" end
    tried[#tried + 1] = "ssh-agent (" .. tostring(why) .. ")"
  end
  if has.publickey then
    for _, path in ipairs(cfg.identityfiles) do
      local text = read_key(path)
      if not text then
        if cfg.identityfiles_explicit then tried[#tried + 1] = "key " .. path .. " (missing)" end
      else
        local pass
        if key_is_encrypted(text) then
          pass = opts.passphrase and secret.reveal(opts.passphrase)
                 or tty_ask("Enter passphrase for key '" .. path .. "': ")
        end
        local rsa, entry = key_is_rsa(path, text), nil
        if key_is_encrypted(text) and not pass then
          entry = "encrypted; no TTY to ask for its passphrase"
        else
          local sha2_why
          if rsa and takes_rsa_sha2(sess) then
            -- libssh2 1.10 itself signs RSA with SHA-1: sign rsa-sha2-256 here (runtime/rsasha2.c)
            local ok, why = ssh.run(conn, deadline, "rsa-sha2-256 auth", sess.auth_rsa_sha2_file, sess, user, path, pass)
            if ok then return "publickey" end
            sha2_why = "rsa-sha2-256: " .. tostring(why)
          end
          if rsa and refuses_sha1_rsa(sess) then   -- (such a server takes rsa-sha2: sha2_why is set)
            entry = sha2_why .. "; ssh-rsa not tried: the server, " .. sess:banner() .. ", refuses SHA-1 signatures"
          else
            local pub = io.open(path .. ".pub", "r")
            if pub then pub:close(); pub = path .. ".pub" end
            local ok, why = ssh.run(conn, deadline, "public key auth", sess.auth_pubkey, sess, user, path, pass, pub)
            if ok then return "publickey" end
            entry = (sha2_why and (sha2_why .. "; ssh-rsa: ") or "") .. tostring(why) .. (rsa and RSA_HINT or "")
          end
        end
        tried[#tried + 1] = "key " .. path .. " (" .. entry .. ")"
      end
    end
  end
  if has.password then
    if opts.password ~= nil and not secret.is(opts.password) then
      sess:close("auth")
      ssh.error("auth", conn, "a password must be given as gpurent.secret(...), never as a plain string")
    end
    local pw = opts.password and secret.reveal(opts.password)
               or tty_ask(user .. "@" .. cfg.hostname .. "'s password: ")
    if pw then
      local ok, why = ssh.run(conn, deadline, "password auth", sess.auth_password, sess, user, pw)
      if ok then return "password" end
      tried[#tried + 1] = "password (" .. tostring(why) .. ")"
    else
      tried[#tried + 1] = "password (no TTY to ask and no password secret given)"
    end
  end
  sess:close("auth failed")
  ssh.error("auth", conn, string.format("authentication failed for user %s (server offers: %s); tried: %s",
    user, list, #tried > 0 and table.concat(tried, "; ") or "nothing usable"))
end

-- Open a TCP connection within the deadline; returns the fd.
local function tcp(conn, deadline)
  local cfg = conn.cfg
  local fd = cssh.tcp_connect(cfg.hostname, cfg.port)
  conn.fd = fd
  local r = sched.wait(fd, 2, deadline)
  if r == 0 then
    cssh.close_fd(fd)
    ssh.error("timeout", conn, string.format("connect timed out after %gs", conn.connect_timeout), {op = "connect"})
  end
  local ok, why = cssh.connect_result(fd)
  if not ok then
    cssh.close_fd(fd)
    ssh.error("connection", conn, "connect: " .. why)
  end
  return fd
end

function ssh.connect(cfg, opts)
  opts = opts or {}
  local label = cfg.user .. "@" .. cfg.hostname .. ":" .. cfg.port
  if cfg.alias ~= cfg.hostname then label = cfg.alias .. " (" .. label .. ")" end
  local conn = {cfg = cfg, label = label, missed = 0, alive_max = cfg.serveralivecountmax or 3}
  conn.connect_timeout = opts.connect_timeout or cfg.connecttimeout or 30
  local deadline = now() + conn.connect_timeout
  local fd = tcp(conn, deadline)
  conn.sess = cssh.session(fd, label)
  local ok, err = pcall(function()
    local known = knownhosts.types(all_known_files(cfg), cfg.hostname, cfg.port)
    conn.sess:method_pref("hostkey", hostkey_prefs(known))
    conn.sess:method_pref("cipher", cfg.ciphers or CIPHERS)
    conn.sess:method_pref("mac", cfg.macs or MACS)
    ssh.run(conn, deadline, "SSH handshake", conn.sess.handshake, conn.sess)
  end)
  if not ok then
    conn.sess:close("handshake failed")
    if ssh.is_error(err) then error(err, 0) end
    ssh.error("connection", nil, tostring(err))
  end
  check_hostkey(conn, opts)
  conn.auth = authenticate(conn, opts, deadline)
  if (cfg.serveraliveinterval or 0) > 0 then
    conn.keepalive = cfg.serveraliveinterval
    conn.sess:keepalive_config(cfg.serveraliveinterval)
  end
  return conn
end

function ssh.close(conn)
  if conn and conn.sess then conn.sess:close("gpurent done") end
end

return ssh

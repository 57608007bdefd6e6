-- gpurent.ssh: connections. Opens a session for a resolved ssh_config entry with
-- OpenSSH's host key rules and auth order, and drives the C steps of runtime/ssh.c
-- and sftp.c: a step that would block is retried after sched.wait on the
-- session's socket, so the same code is blocking in the main coroutine and
-- concurrent inside gpurent.parallel.
--
--   ssh.connect(cfg, opts) -> conn      cfg from sshconfig.resolve; opts:
--       accept_new_host, connect_timeout, password (secret), passphrase (secret),
--       accept_flag (the caller's command-line flag for accept_new_host, named in
--       the refusal of an unknown host key; without it the hint is an ssh command),
--       compress (true/false: zlib compression; default ssh_config's Compression);
--       conn.compression is the method agreed ("zlib@openssh.com", "zlib" or "none")
--   The transport is TCP, or the stdio of ProxyCommand, or of ProxyJump as OpenSSH
--   defines it (ProxyCommand `ssh -W '[%h]:%p' JUMP`, with -J for the rest of a chain
--   and -F for gpurent's config file): the jump hosts' keys are checked by that ssh
--   with the same config and known_hosts files; the target's key by gpurent here.
--   ssh.run(conn, deadline, op, step, ...) -> the step's results; raises on deadline
--   ssh.wait(conn, dirs, deadline) -> ready bits (0 on deadline); sends keepalives
--   ssh.error(code, conn, msg, fields) -> raises a gpurent.errors object whose
--       kind follows the code (ssh.KIND) and whose e.code, e.host are set
-- Error codes: "timeout", "connection", "auth" (kind transport: the link); "command"
-- (check=true), "transfer", "output" (the capture cap, a to= file) (kind remote: the
-- box); "interrupted" (Ctrl-C during a command; kind interrupted).
local core = require "gpurent.core"
local sched = require "gpurent.transport.sched"
local errors = require "gpurent.util.errors"
local knownhosts = require "gpurent.transport.knownhosts"
local secret = require "gpurent.util.secret"
local sshconfig = require "gpurent.transport.sshconfig"

local cssh, now = core.ssh, core.sys.now
local ssh = {}

-- The error kind (gpurent.errors) of each ssh error code.
ssh.KIND = {timeout = "transport", connection = "transport", auth = "transport",
            command = "remote", transfer = "remote", output = "remote", interrupted = "interrupted"}

-- ssh.new_error(code, label, msg, fields) -> the error object (not raised).
function ssh.new_error(code, label, msg, fields)
  local e = fields or {}
  e.code, e.host = code, label
  return errors.new(ssh.KIND[code], (label and label .. ": " or "") .. msg, e)
end

function ssh.error(code, conn, msg, fields)
  error(ssh.new_error(code, conn and conn.label, msg, fields), 0)
end

-- ssh.is_error(e [, code]) -> is `e` an ssh error (of that code)?
function ssh.is_error(e, code)
  return errors.is_error_object(e) and ssh.KIND[e.code] == e.kind and (code == nil or e.code == code)
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

-- The name and port known_hosts entries are looked up and written under: HostKeyAlias
-- replaces host and port (as in OpenSSH), else [hostname]:port.
local function key_host(cfg)
  if cfg.hostkeyalias then return cfg.hostkeyalias, 22 end
  return cfg.hostname, cfg.port
end

local function refuse(conn, msg)
  conn.sess:close("host key refused")
  errors.refuse(msg, 0)
end

local function tty_ask(prompt, echo)
  if not core.sys.isatty(0) and not core.sys.isatty(2) then return nil end
  return cssh.askpass(prompt, echo)
end

-- Record a new key (hashed under HashKnownHosts yes) in the first UserKnownHostsFile.
local function record_key(conn, ktype, blob, fp)
  local cfg = conn.cfg
  local file = cfg.knownhostsfiles[1]
  if not file then refuse(conn, conn.label .. ": host key unknown and UserKnownHostsFile is none") end
  local host, port = key_host(cfg)
  knownhosts.add(file, host, port, ktype, blob, {hash = cfg.hashknownhosts})
  conn.hostkey.added = file
  if core.sys.isatty(2) then
    io.stderr:write(string.format("Warning: Permanently added '%s' (%s %s) to the list of known hosts (%s).\n",
      knownhosts.name(host, port), ktype, fp, file))
  end
end

-- StrictHostKeyChecking ask on a terminal: ssh's question, answered yes, no or the
-- fingerprint. nil when there is no terminal to ask on (or BatchMode yes).
local function ask_new_key(conn, name, ktype, fp, other)
  if conn.cfg.batchmode or (not core.sys.isatty(0) and not core.sys.isatty(2)) then return nil end
  local prompt = string.format("The authenticity of host '%s' can't be established.\n%s key fingerprint is %s.%s\n" ..
    "Are you sure you want to continue connecting (yes/no/[fingerprint])? ",
    name, (ktype:match("^ssh%-(%w+)$") or ktype:match("^(%w+)") or ktype):upper(), fp, other)
  for _ = 1, 10 do
    local a = cssh.askpass(prompt, true)
    if a == nil then return nil end
    a = a:gsub("^%s+", ""):gsub("%s+$", "")
    if a:lower() == "yes" or a == fp then return true end
    if a:lower() == "no" then return false end
    prompt = "Please type 'yes', 'no' or the fingerprint: "
  end
  return false
end

-- How to record an unknown key, as a command that works from where we are.
local function accept_hint(conn, opts, policy)
  local cfg = conn.cfg
  local ssh_cmd = string.format("ssh%s -o StrictHostKeyChecking=accept-new %s true",
    cfg.config and (" -F " .. cfg.config) or "", cfg.target)
  if policy == "yes" then
    return "StrictHostKeyChecking is yes for this host: add the key to " .. (cfg.knownhostsfiles[1] or "known_hosts") ..
      " yourself, or run `" .. ssh_cmd .. "` (OpenSSH writes the same file)" ..
      (opts.accept_flag and (", or rerun with " .. opts.accept_flag) or "") .. "."
  end
  if opts.accept_flag then
    return "then rerun with " .. opts.accept_flag .. " (or answer the question on a terminal, or set\n" ..
      "StrictHostKeyChecking accept-new for this host in ssh_config)."
  end
  return "then run gpurent on a terminal (it asks), or record it with `" .. ssh_cmd .. "`\n" ..
    "(OpenSSH writes the same known_hosts file), or give gpurent.connect the accept_new_host option."
end

local function check_hostkey(conn, opts)
  local cfg = conn.cfg
  local blob, ktype = conn.sess:hostkey()
  local fp = knownhosts.fingerprint(blob)
  local host, port = key_host(cfg)
  local name = knownhosts.name(host, port)
  local r = knownhosts.lookup(all_known_files(cfg), host, port, ktype, blob)
  conn.hostkey = {type = ktype, fingerprint = fp}
  if r.status == "ok" then return end
  if r.status == "revoked" then
    refuse(conn, string.format("%s: the host key for %s (%s %s) is REVOKED in %s:%d; refusing to connect",
      conn.label, name, ktype, fp, r.file, r.line))
  end
  local policy = cfg.stricthostkeychecking
  if r.status == "changed" then
    refuse(conn, string.format(
      "%s: REMOTE HOST KEY CHANGED for %s: refusing to connect.\n" ..
      "  known:   %s %s  (%s:%d)\n  offered: %s %s\n" ..
      "Someone could be intercepting the connection, or the host was reinstalled. If you know why the key\n" ..
      "changed, remove the old entry (%s line %d, or: ssh-keygen -R '%s' -f %s) and connect again.%s",
      conn.label, name, r.keytype, knownhosts.fingerprint(r.blob), r.file, r.line, ktype, fp,
      r.file, r.line, name, r.file,
      (policy == "no" or policy == "off") and "\n(StrictHostKeyChecking " .. policy ..
        " does not make gpurent accept a changed key.)" or ""))
  end
  -- --accept-new-host is the command line's -o StrictHostKeyChecking=accept-new: it wins
  if opts.accept_new_host or policy == "accept-new" or policy == "no" or policy == "off" then
    return record_key(conn, ktype, blob, fp)
  end
  local other = #r.types > 0 and (" (keys of other types are known: " .. table.concat(r.types, ", ") .. ")") or ""
  if policy ~= "yes" then
    local answer = ask_new_key(conn, name, ktype, fp, other ~= "" and ("\nKeys of other types are known for it: " ..
      table.concat(r.types, ", ") .. ".") or "\nThis key is not known by any other names.")
    if answer then return record_key(conn, ktype, blob, fp) end
    if answer == false then refuse(conn, conn.label .. ": host key for " .. name .. " not accepted; refusing to connect") end
  end
  refuse(conn, string.format(
    "%s: host key for %s is not known%s: refusing to connect (StrictHostKeyChecking %s%s).\n  offered: %s %s\n" ..
    "Check the fingerprint with the provider, %s",
    conn.label, name, other, policy, policy == "yes" and "" or ", and no terminal to ask on", ktype, fp,
    accept_hint(conn, opts, policy)))
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

local read_key = require("gpurent.util.fs").read_if_exists

-- The configured identities' public key blobs: the agent keys IdentitiesOnly allows.
local function configured_blobs(cfg)
  local set = {}
  local function add(pubfile)
    local text = read_key(pubfile)
    local b64 = text and text:match("^%S+%s+(%S+)")
    local blob = b64 and core.knownhosts.b64decode(b64)
    if blob then set[blob] = true end
  end
  for _, p in ipairs(cfg.identityfiles) do add(p .. ".pub"); add(p .. "-cert.pub") end
  for _, c in ipairs(cfg.certificatefiles or {}) do add(c) end
  return set
end

local function agent_auth(conn, deadline, tried)
  local cfg, sess = conn.cfg, conn.sess
  if cfg.identityagent == "none" then
    tried[#tried + 1] = "ssh-agent not used (IdentityAgent none)"
    return false
  end
  local only = cfg.identitiesonly and configured_blobs(cfg) or nil
  local ok, why = ssh.run(conn, deadline, "agent auth", sess.auth_agent, sess, cfg.user, takes_rsa_sha2(sess),
    cfg.identityagent, only)
  if ok then return true end
  tried[#tried + 1] = "ssh-agent" .. (cfg.identityagent and (" at " .. cfg.identityagent) or "") ..
    (only and ", configured keys only (IdentitiesOnly)" or "") .. " (" .. tostring(why) .. ")"
  return false
end

-- One key file: true on success, else the reason.
local function key_auth(conn, deadline, path, text, pass)
  local sess, user = conn.sess, conn.cfg.user
  local reasons = {}
  local rsa, sha2_why = key_is_rsa(path, text), nil
  if rsa and takes_rsa_sha2(sess) then
    -- libssh2 1.10 itself signs RSA with SHA-1: sign rsa-sha2-256 here (runtime/rsasha2.c)
    local ok, why = ssh.run(conn, deadline, "rsa-sha2-256 auth", sess.auth_rsa_sha2_file, sess, user, path, pass)
    if ok then return true end
    sha2_why = "rsa-sha2-256: " .. tostring(why)
  end
  if rsa and refuses_sha1_rsa(sess) then   -- (such a server takes rsa-sha2: sha2_why is set)
    reasons[#reasons + 1] = sha2_why .. "; ssh-rsa not tried: the server, " .. sess:banner() .. ", refuses SHA-1 signatures"
  else
    local pub = io.open(path .. ".pub", "r")
    if pub then pub:close(); pub = path .. ".pub" end
    local ok, why = ssh.run(conn, deadline, "public key auth", sess.auth_pubkey, sess, user, path, pass, pub)
    if ok then return true end
    reasons[#reasons + 1] = (sha2_why and (sha2_why .. "; ssh-rsa: ") or "") .. tostring(why) .. (rsa and RSA_HINT or "")
  end
  return table.concat(reasons, "; ")
end

-- ---- certificates ---------------------------------------------------------------
-- OpenSSH's order: every CertificateFile first, each signed with the IdentityFile key it
-- certifies (same public key, or the file KEY-cert.pub of KEY); with no CertificateFile,
-- KEY-cert.pub right after KEY. libssh2 1.10 signs ECDSA certificates itself (the
-- certificate as the public key file); the other types are refused (sshconfig.cert_refusal).

local function pub_blob(pubfile)
  local text = read_key(pubfile)
  local b64 = text and text:match("^%S+%s+(%S+)")
  return b64 and core.knownhosts.b64decode(b64)
end

-- Does this certificate certify the key of this plain public key blob? A certificate
-- blob is: string type, string nonce, then the key's fields as the plain blob has them.
local function certifies(certblob, keyblob)
  local ok, res = pcall(function()
    local _, p = string.unpack(">s4", certblob)
    _, p = string.unpack(">s4", certblob, p)
    local _, q = string.unpack(">s4", keyblob)
    local fields = keyblob:sub(q)
    return #fields > 0 and certblob:sub(p, p + #fields - 1) == fields
  end)
  return ok and res
end

-- The principals an ECDSA certificate names (after nonce, curve, Q, serial, type, key id).
local function cert_principals(certblob)
  local ok, names = pcall(function()
    local p = select(5, string.unpack(">s4s4s4s4", certblob))        -- after type, nonce, curve, Q
    local _, _, _, packed = string.unpack(">I8I4s4s4", certblob, p)
    local out, i = {}, 1
    while i <= #packed do out[#out + 1], i = string.unpack(">s4", packed, i) end
    return out
  end)
  return ok and names or nil
end

-- One certificate signed by key: true, or the reason.
local function cert_auth(conn, deadline, cert, key, pass)
  local why = sshconfig.cert_refusal(sshconfig.cert_type(cert))
  if why then return "not presented: " .. why end
  local sess = conn.sess
  local ok, err = ssh.run(conn, deadline, "certificate auth", sess.auth_pubkey, sess, conn.cfg.user, key, pass, cert)
  if ok then return true end
  local names = cert_principals(pub_blob(cert) or "")
  return "signed by " .. key .. ": " .. tostring(err) .. (names and ("; the server refused it for user " ..
    conn.cfg.user .. ", the certificate names principals: " .. (#names > 0 and table.concat(names, ", ") or "(any)") ..
    " (ssh-keygen -L -f " .. cert .. " shows its principals and validity)") or "")
end

local function files_auth(conn, opts, deadline, tried, ask)
  local cfg = conn.cfg
  local unlocked = {}            -- path -> {ok, pass or reason}: one passphrase prompt per key
  local function unlock(path, text)
    if not unlocked[path] then
      if not key_is_encrypted(text) then
        unlocked[path] = {true}
      else
        local pass = opts.passphrase and secret.reveal(opts.passphrase) or ask("Enter passphrase for key '" .. path .. "': ")
        unlocked[path] = pass and {true, pass} or {false, cfg.batchmode
          and "encrypted; BatchMode yes: not asking for its passphrase" or "encrypted; no TTY to ask for its passphrase"}
      end
    end
    return unlocked[path][1], unlocked[path][2]
  end
  local certs = cfg.certificatefiles or {}
  for _, cert in ipairs(certs) do
    local certblob = pub_blob(cert)
    if certblob then               -- a missing certificate file is skipped, as ssh does
      local key, entry
      for _, p in ipairs(cfg.identityfiles) do
        local kb = pub_blob(p .. ".pub")
        if read_key(p) and (cert == p .. "-cert.pub" or (kb and certifies(certblob, kb))) then key = p; break end
      end
      if not key then
        entry = "not presented: no IdentityFile private key for it (gpurent does not sign certificates with ssh-agent)"
      else
        local ok, pass = unlock(key, read_key(key))
        if ok then entry = cert_auth(conn, deadline, cert, key, pass) else entry = "key " .. key .. " " .. pass end
        if entry == true then return true end
      end
      tried[#tried + 1] = "certificate " .. cert .. " (" .. entry .. ")"
    end
  end
  for _, path in ipairs(cfg.identityfiles) do
    local text = read_key(path)
    if not text then
      if cfg.identityfiles_explicit then tried[#tried + 1] = "key " .. path .. " (missing)" end
    else
      local ok, pass = unlock(path, text)
      local entry = pass
      if ok then
        entry = key_auth(conn, deadline, path, text, pass)
        if entry == true then return true end
      end
      tried[#tried + 1] = "key " .. path .. " (" .. entry .. ")"
      local cert = path .. "-cert.pub"
      if ok and #certs == 0 and read_key(cert) then
        entry = cert_auth(conn, deadline, cert, path, pass)
        if entry == true then return true end
        tried[#tried + 1] = "certificate " .. cert .. " (" .. entry .. ")"
      end
    end
  end
  return false
end

local function password_auth(conn, opts, deadline, tried, ask)
  local cfg, sess, user = conn.cfg, conn.sess, conn.cfg.user
  if opts.password ~= nil and not secret.is(opts.password) then
    sess:close("auth")
    ssh.error("auth", conn, "a password must be given as gpurent.secret(...), never as a plain string")
  end
  local pw = opts.password and secret.reveal(opts.password) or ask(user .. "@" .. cfg.hostname .. "'s password: ")
  if pw then
    local ok, why = ssh.run(conn, deadline, "password auth", sess.auth_password, sess, user, pw)
    if ok then return true end
    tried[#tried + 1] = "password (" .. tostring(why) .. ")"
  else
    tried[#tried + 1] = cfg.batchmode and "password (BatchMode yes: not asking)"
      or "password (no TTY to ask and no password secret given)"
  end
  return false
end

-- OpenSSH's order: public keys (agent, then files) if PubkeyAuthentication, then the
-- password if PasswordAuthentication. BatchMode yes: never prompt.
local function authenticate(conn, opts, deadline)
  local cfg, sess, user = conn.cfg, conn.sess, conn.cfg.user
  local list = ssh.run(conn, deadline, "auth methods", sess.userauth_list, sess, user)
  if list == true then return "none" end
  local has = {}
  for m in list:gmatch("[^,]+") do has[m] = true end
  local tried = {}
  local ask = cfg.batchmode and function() return nil end or tty_ask
  if has.publickey and cfg.pubkeyauthentication then
    if agent_auth(conn, deadline, tried) then return "agent" end
    if files_auth(conn, opts, deadline, tried, ask) then return "publickey" end
  elseif has.publickey then
    tried[#tried + 1] = "public keys not tried (PubkeyAuthentication no)"
  end
  if has.password and cfg.passwordauthentication then
    if password_auth(conn, opts, deadline, tried, ask) then return "password" end
  elseif has.password then
    tried[#tried + 1] = "password not tried (PasswordAuthentication no)"
  end
  sess:close("auth failed")
  ssh.error("auth", conn, string.format("authentication failed for user %s (server offers: %s); tried: %s",
    user, list, #tried > 0 and table.concat(tried, "; ") or "nothing usable"))
end

-- ---- transport: TCP, or a proxy command's stdio --------------------------------

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- One ProxyJump hop "[ssh://][user@]host[:port]" -> user, host, port.
local function parse_hop(hop)
  local h = hop:gsub("^ssh://", "")
  local user, rest = h:match("^(.*)@([^@]*)$")
  if not user then rest = h end
  local host, port = rest:match("^%[(.+)%]:(%d+)$")
  if not host then host, port = rest:match("^([^:]+):(%d+)$") end
  return user, host or rest:match("^%[(.+)%]$") or rest, port
end

-- ProxyJump a,b,c as OpenSSH runs it: ssh [-l U] [-p P] -J a,b [-F FILE] -W '[%h]:%p' c
local function jump_command(cfg)
  local hops = {}
  for hop in cfg.proxyjump:gmatch("[^,]+") do hops[#hops + 1] = hop end
  local user, host, port = parse_hop(table.remove(hops))
  local a = {"ssh"}
  if user then a[#a + 1] = "-l " .. q(user) end
  if port then a[#a + 1] = "-p " .. port end
  if #hops > 0 then a[#a + 1] = "-J " .. q(table.concat(hops, ",")) end
  if cfg.gfile then a[#a + 1] = "-F " .. q(cfg.gfile) end
  a[#a + 1] = "-W " .. q("[" .. cfg.hostname .. "]:" .. cfg.port)
  a[#a + 1] = "-- " .. q(host)
  return table.concat(a, " ")
end

-- ProxyCommand with its tokens (%h %p %r %n %%), as OpenSSH expands them.
local function proxy_command(cfg)
  return (cfg.proxycommand:gsub("%%(.)", function(c)
    if c == "%" then return "%" elseif c == "h" then return cfg.hostname
    elseif c == "p" then return tostring(cfg.port) elseif c == "r" then return cfg.user
    elseif c == "n" then return cfg.alias end
    error(string.format("%s: ProxyCommand %s: gpurent does not expand the token %%%s", cfg.alias, cfg.proxycommand, c), 0)
  end))
end

-- Start the proxy (ProxyCommand, else ProxyJump); returns its socket fd.
local function proxy(conn)
  local cfg = conn.cfg
  local cmd = cfg.proxycommand and proxy_command(cfg) or jump_command(cfg)
  conn.via = cfg.proxycommand and ("ProxyCommand " .. cfg.proxycommand) or ("ProxyJump " .. cfg.proxyjump)
  local ok, fd, p = pcall(cssh.proxy_spawn, cmd, conn.label)
  if not ok then ssh.error("connection", conn, "via " .. conn.via .. ": " .. tostring(fd)) end
  conn.proxy, conn.fd = p, fd
  return fd
end

-- The proxy's own account of a failure: its exit status and what it printed.
local function proxy_failure(conn, err)
  local p = conn.proxy
  local status
  for _ = 1, 25 do   -- it usually has just exited: give it up to half a second
    status = p:status()
    if status then break end
    sched.sleep(0.02)
  end
  local text = p:stderr():gsub("%s+$", "")
  local inner = errors.message(err):gsub("^[^:]*%.lua:%d+: ", "")
  if inner:sub(1, #conn.label + 2) == conn.label .. ": " then inner = inner:sub(#conn.label + 3) end
  return string.format("via %s: the proxy %s%s (then %s)", conn.via, status or "is still running",
    text ~= "" and (": " .. text:gsub("\n", " / ")) or "", inner)
end

-- Open one TCP connection within the deadline; returns the fd.
local function tcp_once(conn, deadline)
  local cfg = conn.cfg
  local ok, fd = pcall(cssh.tcp_connect, cfg.hostname, cfg.port, cfg.addressfamily)
  if not ok then ssh.error("connection", conn, tostring(fd)) end
  conn.fd = fd
  local r = sched.wait(fd, 2, deadline)
  if r == 0 then
    cssh.close_fd(fd)
    ssh.error("timeout", conn, string.format("connect timed out after %gs", conn.connect_timeout), {op = "connect"})
  end
  local ok2, why = cssh.connect_result(fd)
  if not ok2 then
    cssh.close_fd(fd)
    ssh.error("connection", conn, "connect: " .. why)
  end
  return fd
end

-- ConnectionAttempts: one try per second, as OpenSSH.
local function tcp(conn, deadline)
  local last
  for attempt = 1, math.max(1, math.min(conn.cfg.connectionattempts or 1, 100)) do
    if attempt > 1 then sched.sleep(1) end
    local ok, fd = pcall(tcp_once, conn, deadline)
    if ok then return fd end
    last = fd
    if ssh.is_error(last, "timeout") then break end
  end
  error(last, 0)
end

-- Algorithm preferences: the user's lists when ssh_config changed them (as ssh -G
-- expanded them), else gpurent's own (a subset of OpenSSH's defaults).
local function set_prefs(conn)
  local cfg, sess = conn.cfg, conn.sess
  local function pref(kind, list, keyword)
    local ok, err = pcall(sess.method_pref, sess, kind, list)
    if not ok then
      error(string.format("%s: %s %s: %s", conn.label, keyword, list,
        tostring(err):match("no supported.*") or tostring(err)), 0)
    end
  end
  local host, port = key_host(cfg)
  pref("hostkey", cfg.hostkeyalgorithms or hostkey_prefs(knownhosts.types(all_known_files(cfg), host, port)),
    "HostKeyAlgorithms")
  pref("cipher", cfg.ciphers or CIPHERS, "Ciphers")
  pref("mac", cfg.macs or MACS, "MACs")
  if cfg.kexalgorithms then pref("kex", cfg.kexalgorithms, "KexAlgorithms") end
end

-- Compression: opts.compress (connect{compress=}, `--compress`) when given, else
-- ssh_config's Compression. libssh2 reads the flag only at the handshake, so it is set
-- before it; the server picks (zlib@openssh.com after auth, or zlib), and
-- conn.compression records what was agreed ("none" when the server declined).
local function wants_compression(conn, opts)
  if opts.compress ~= nil then return opts.compress and true or false end
  return conn.cfg.compression and true or false
end

local function handshake(conn, opts, deadline)
  local ok, err = pcall(function()
    set_prefs(conn)
    if wants_compression(conn, opts) then conn.sess:compress(true) end
    ssh.run(conn, deadline, "SSH handshake", conn.sess.handshake, conn.sess)
    conn.compression = conn.sess:negotiated("comp")
  end)
  if ok then return end
  conn.sess:close("handshake failed")
  if conn.proxy then ssh.error("connection", conn, proxy_failure(conn, err)) end
  if ssh.is_error(err) then error(err, 0) end
  ssh.error("connection", nil, tostring(err))
end

function ssh.connect(cfg, opts)
  opts = opts or {}
  local label = cfg.user .. "@" .. cfg.hostname .. ":" .. cfg.port
  if cfg.alias ~= cfg.hostname then label = cfg.alias .. " (" .. label .. ")" end
  local conn = {cfg = cfg, label = label, missed = 0, alive_max = cfg.serveralivecountmax or 3}
  conn.connect_timeout = opts.connect_timeout or cfg.connecttimeout or 30
  local deadline = now() + conn.connect_timeout
  local ok, err = pcall(function()
    local fd = (cfg.proxycommand or cfg.proxyjump) and proxy(conn) or tcp(conn, deadline)
    conn.sess = cssh.session(fd, label)
    handshake(conn, opts, deadline)
    check_hostkey(conn, opts)
    conn.auth = authenticate(conn, opts, deadline)
  end)
  if not ok then
    if conn.sess then conn.sess:close("connect failed") end
    if conn.proxy then conn.proxy:close() end
    error(err, 0)
  end
  if (cfg.serveraliveinterval or 0) > 0 then
    conn.keepalive = cfg.serveraliveinterval
    conn.sess:keepalive_config(cfg.serveraliveinterval)
  end
  return conn
end

function ssh.close(conn)
  if conn and conn.sess then conn.sess:close("gpurent done") end
  if conn and conn.proxy then conn.proxy:close() end
end

return ssh

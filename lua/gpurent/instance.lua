-- gpurent.instance: an Instance is one SSH session to one host plus the methods
-- recipes call on it. Commands run on their own channel; transfers share one
-- SFTP subsystem. Calls on one instance run one at a time (libssh2 cannot
-- interleave packets of two calls on a session); different instances run
-- concurrently under gpurent.parallel.
--
--   gpurent.connect(target [, opts]) -> inst
--     target: ssh_config alias or user@host:port; opts: accept_new_host,
--     connect_timeout, password/passphrase (gpurent.secret), config (ssh_config path)
--   inst:sh(cmd [, opts]) -> {code, signal, stdout, stderr, elapsed}
--     opts: stdin (string|secret), env {NAME=string|secret} (sent over stdin, never
--     in argv), timeout (s: then the channel is closed and the command's remote
--     process group gets TERM; kill_on_timeout=false leaves it running), kill_on_interrupt
--     (Ctrl-C TERMs the command's remote process group too), check (raise
--     on failure), on_line(line, "stdout"|"stderr"), idempotent (re-run once after a
--     lost connection), capture=false (do not keep output)
--   inst:put(local, remote [, opts]) / inst:get(remote, local [, opts]): see gpurent.transfer
--   inst:close()
--
-- A lost connection is reopened by the next call (bounded backoff); the call that
-- saw it is re-run only when idempotent (transfers are: they resume).
local core = require "gpurent.core"
local ssh = require "gpurent.ssh"
local sched = require "gpurent.sched"
local secret = require "gpurent.secret"
local sshconfig = require "gpurent.sshconfig"

local now = core.sys.now
local instance = {}
local Instance = {}
Instance.__index = Instance
Instance.__name = "gpurent.instance"
Instance.__tostring = function(self) return "instance " .. self.label end

local RECONNECT_DELAYS = {0.2, 0.5, 1.0}

function instance.connect(target, opts)
  opts = opts or {}
  local cfg = sshconfig.resolve(target, {config = opts.config})
  local self = setmetatable({target = target, cfg = cfg, opts = opts, busy = false}, Instance)
  self.conn = ssh.connect(cfg, opts)
  self.label = self.conn.label
  return self
end

-- Errors that reconnecting cannot fix: a refused host key or rejected credentials.
local function permanent(e)
  return require("gpurent.errors").is_refusal(e) or ssh.is_error(e, "auth")
end

function Instance:reconnect()
  if self.conn then ssh.close(self.conn) end
  self.conn = nil
  local last
  for attempt = 0, #RECONNECT_DELAYS do
    if attempt > 0 then sched.sleep(RECONNECT_DELAYS[attempt]) end
    local ok, conn = pcall(ssh.connect, self.cfg, self.opts)
    if ok then self.conn = conn; self.reconnects = (self.reconnects or 0) + 1; return end
    last = conn
    if permanent(conn) then break end
  end
  error(last, 0)
end

-- One call at a time per instance: a second coroutine waits its turn.
function Instance:_lock()
  local t0 = now()
  while self.busy do
    if not sched.in_task() then error(self.label .. ": instance is busy (re-entrant call)", 3) end
    sched.sleep(0.002)
    if now() - t0 > 3600 then error(self.label .. ": waited an hour for the instance", 3) end
  end
  self.busy = true
end

-- Run fn(conn) with the instance locked; reconnect first if the session died;
-- re-run once on a lost connection when idempotent.
function Instance:_call(idempotent, fn)
  self:_lock()
  local ok, r = pcall(function()
    if not self.conn or not self.conn.sess:alive() then self:reconnect() end
    local ok1, res = pcall(fn, self.conn)
    if ok1 then return res end
    if not ssh.is_connection_loss(self.conn, res) then error(res, 0) end
    self.conn.sess:mark_dead()
    if not idempotent then
      if not ssh.is_error(res) then
        res = setmetatable({kind = "connection", host = self.label, msg = tostring(res)}, ssh.Error)
      end
      res.msg = res.msg .. " (connection lost; not re-run: the call is not marked idempotent)"
      error(res, 0)
    end
    self:reconnect()
    return fn(self.conn)
  end)
  self.busy = false
  if not ok then error(r, 0) end
  return r
end

function Instance:close()
  if self.conn then ssh.close(self.conn) end
  self.conn = nil
end

-- ---- exec ------------------------------------------------------------------

local shell_quote = require("gpurent.shell").quote
instance.shell_quote = shell_quote

-- The command line and stdin for opts.env: each value is read from stdin by the
-- remote shell (read is a builtin: no process, no argv), so `ps` shows names only.
local function build(cmd, opts)
  local input, secrets = {}, {}
  local line = cmd
  if opts.env then
    local names, pre = {}, {}
    for k in pairs(opts.env) do names[#names + 1] = k end
    table.sort(names)
    for _, k in ipairs(names) do
      if type(k) ~= "string" or not k:match("^[A-Za-z_][A-Za-z0-9_]*$") then
        error("sh: env name " .. tostring(k) .. " is not a shell variable name", 4)
      end
      local v = opts.env[k]
      if secret.is(v) then secrets[#secrets + 1] = v end
      local s = tostring(secret.reveal(v))
      if s:find("[\n%z]") then error("sh: env " .. k .. " contains a newline or NUL byte", 4) end
      input[#input + 1] = s .. "\n"
      pre[#pre + 1] = "IFS= read -r " .. k .. " && export " .. k
    end
    line = table.concat(pre, " && ") .. " && {\n" .. cmd .. "\n}"
  end
  if opts.stdin ~= nil then
    if secret.is(opts.stdin) then secrets[#secrets + 1] = opts.stdin end
    input[#input + 1] = tostring(secret.reveal(opts.stdin))
  end
  return line, table.concat(input), secrets
end

-- Split chunks into lines for on_line; keeps the partial tail per stream.
local function line_feeder(on_line, secrets)
  local tail = {stdout = "", stderr = ""}
  local function emit(line, stream)
    if #secrets > 0 then line = secret.redact(line, secrets) end
    on_line(line, stream)
  end
  return function(chunk, stream)
    if chunk == nil then
      for _, s in ipairs({"stdout", "stderr"}) do
        if tail[s] ~= "" then emit(tail[s], s); tail[s] = "" end
      end
      return
    end
    local data = tail[stream] .. chunk
    local pos = 1
    while true do
      local nl = data:find("\n", pos, true)
      if not nl then break end
      emit(data:sub(pos, nl - 1), stream)
      pos = nl + 1
    end
    tail[stream] = data:sub(pos)
  end
end

local function close_channel(conn, ch)
  local ok = pcall(function()
    local deadline = now() + 5
    ssh.run(conn, deadline, "close channel", ch.close, ch)
    ssh.run(conn, deadline, "free channel", ch.free, ch)
  end)
  if not ok then conn.sess:mark_dead() end
end

-- A command with a timeout first prints its shell's PID on stderr (a marker
-- line, removed from what the caller sees). sshd starts each command's shell as
-- a session and process-group leader, so on timeout that exact group gets TERM
-- over a fresh channel: closing the channel does not stop the command, and
-- libssh2 1.10 cannot send a channel signal.
local PID_MARK = "\1gpurent-pid "
local PID_PRINTF = "printf '\\001gpurent-pid %s\\n' $$ >&2; "

-- Takes stderr chunks; strips the marker line (which may arrive split) and
-- keeps the PID in grab.pid.
local function pid_grabber()
  local grab, head = {}, ""
  function grab.take(chunk)
    if grab.done then return chunk end
    head = head .. chunk
    local nl = head:find("\n", 1, true)
    if not nl then
      if #head >= #PID_MARK and head:sub(1, #PID_MARK) ~= PID_MARK then
        grab.done = true; chunk = head; head = ""; return chunk
      end
      return ""
    end
    grab.done = true
    local line, rest = head:sub(1, nl - 1), head:sub(nl + 1)
    head = ""
    if line:sub(1, #PID_MARK) == PID_MARK then
      grab.pid = tonumber(line:sub(#PID_MARK + 1))
      return rest
    end
    return line .. "\n" .. rest
  end
  return grab
end

-- Pump stdin out and stdout/stderr in until the remote side ends.
local function pump(conn, ch, input, opts, deadline, feed, grab)
  local outs, errs = {}, {}
  local pos, eof_sent = 1, false
  while true do
    local progressed, wdirs, rdirs = false, 0, 1
    if not eof_sent then
      if pos <= #input then
        local n, d = ch:write(input, pos)
        if n then pos = pos + n; progressed = n > 0 else wdirs = d end
      end
      if pos > #input then
        local r, d = ch:send_eof()
        if r then eof_sent = true; progressed = true else wdirs = d end
      end
    end
    local o, e, eof = ch:read()
    if o == false then
      rdirs = e
    else
      if #o > 0 then
        if opts.capture ~= false then outs[#outs + 1] = o end
        if feed then feed(o, "stdout") end
        progressed = true
      end
      if #e > 0 then
        progressed = true
        if grab then e = grab.take(e) end
      end
      if #e > 0 then
        errs[#errs + 1] = e
        if feed then feed(e, "stderr") end
      end
      if eof then break end
    end
    if not progressed and ssh.wait(conn, rdirs | wdirs, deadline) == 0 then
      return nil, "timeout"
    end
  end
  return table.concat(outs), table.concat(errs)
end

-- TERM the remote process group a PID marker named; true when kill succeeded.
local function term_group(exec_fn, conn, pid)
  local sent, r = pcall(exec_fn, conn, string.format("kill -s TERM -- -%d 2>/dev/null || kill -s TERM %d", pid, pid),
    {timeout = 10, kill_on_timeout = false})
  return sent and r.code == 0
end

local function exec(conn, cmd, opts)
  local line, input, secrets = build(cmd, opts)
  local grab = ((opts.timeout and opts.kill_on_timeout ~= false) or opts.kill_on_interrupt) and pid_grabber()
  if grab then line = PID_PRINTF .. line end
  local t0 = now()
  local deadline = opts.timeout and t0 + opts.timeout
  local sess = conn.sess
  local ch = ssh.run(conn, deadline, "open channel", sess.channel_open, sess)
  local feed = opts.on_line and line_feeder(opts.on_line, secrets)
  local ok, out, err = pcall(function()
    ssh.run(conn, deadline, "exec", ch.exec, ch, line)
    return pump(conn, ch, input, opts, deadline, feed, grab)
  end)
  if not ok or out == nil then
    -- After Ctrl-C the channel must still close cleanly (so the session stays
    -- usable): hold the interrupt while cleaning up, then restore it for the exit
    -- code. The process group gets TERM before the close, which sshd answers
    -- only once the command has ended.
    local interrupted = core.sys.interrupted()
    if interrupted then core.sys.clear_interrupt() end
    local timed_out = ok or ssh.is_error(out, "timeout")
    local kill = grab and grab.pid and ((interrupted and opts.kill_on_interrupt)
                                        or (timed_out and opts.kill_on_timeout ~= false))
    local killed = kill and term_group(exec, conn, grab.pid)
    close_channel(conn, ch)
    if interrupted then core.sys.set_interrupted() end
    local group = killed and ("TERM sent to remote process group " .. grab.pid) or nil
    if not timed_out then
      if group and type(out) == "string" then out = out .. " (" .. group .. ")" end
      error(out, 0)
    end
    ssh.error("timeout", conn, string.format("command timed out after %gs (channel closed%s): %s",
      opts.timeout, group and ("; " .. group) or "", cmd), {cmd = cmd, timeout = opts.timeout, remote_pid = grab and grab.pid})
  end
  if feed then feed(nil) end
  local closed = pcall(ssh.run, conn, now() + 10, "close channel", ch.close, ch)
  if closed then pcall(ssh.run, conn, now() + 10, "wait closed", ch.wait_closed, ch) end
  local code, sig = ch:exit()
  pcall(ssh.run, conn, now() + 5, "free channel", ch.free, ch)
  if #secrets > 0 then out, err = secret.redact(out, secrets), secret.redact(err, secrets) end
  return {code = (sig == nil) and code or nil, signal = sig, stdout = out, stderr = err,
          elapsed = now() - t0, cmd = cmd}
end

local function last_lines(text, n)
  local lines = {}
  for l in text:gmatch("[^\n]+") do
    lines[#lines + 1] = l
    if #lines > n then table.remove(lines, 1) end
  end
  return lines
end

function Instance:sh(cmd, opts)
  opts = opts or {}
  if secret.is(cmd) then error("sh: a secret cannot be a command; pass it with env= or stdin=", 2) end
  if type(cmd) ~= "string" then error("sh: command must be a string, got " .. type(cmd), 2) end
  local r = self:_call(opts.idempotent, function(conn) return exec(conn, cmd, opts) end)
  if opts.check and (r.code ~= 0 or r.signal) then
    local why = r.signal and ("killed by signal " .. r.signal) or ("exit code " .. r.code)
    local tail = last_lines(r.stderr, 10)
    ssh.error("command", self.conn, string.format("command failed (%s): %s%s", why, cmd,
      #tail > 0 and ("\n  stderr: " .. table.concat(tail, "\n          ")) or ""),
      {code = r.code, signal = r.signal, result = r, cmd = cmd})
  end
  return r
end

-- ---- transfers (policy in gpurent.transfer) ----------------------------------

function Instance:_sftp(conn)
  if not conn.sftp then
    conn.sftp = ssh.run(conn, now() + 30, "start SFTP", conn.sess.sftp_init, conn.sess)
  end
  return conn.sftp
end

function Instance:put(src, dst, opts)
  return require("gpurent.transfer").put(self, src, dst, opts or {})
end

function Instance:get(src, dst, opts)
  return require("gpurent.transfer").get(self, src, dst, opts or {})
end

instance.Instance = Instance
instance._exec = exec  -- unlocked, for gpurent.transfer (which holds the lock)
return instance

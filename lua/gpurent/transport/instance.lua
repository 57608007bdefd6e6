-- gpurent.instance: an Instance is one SSH session to one host plus the methods
-- recipes call on it. Commands run on their own channel; transfers share one
-- SFTP subsystem. Calls on one instance run one at a time (libssh2 cannot
-- interleave packets of two calls on a session); different instances run
-- concurrently under gpurent.parallel.
--
--   gpurent.connect(target [, opts]) -> inst
--     target: ssh_config alias or user@host:port; opts: accept_new_host,
--     connect_timeout, password/passphrase (gpurent.secret), config (ssh_config path),
--     max_output (the capture cap for this instance's calls), compress (true: zlib
--     compression on this connection and every session it opens for transfers and
--     tunnels; false: none; default ssh_config's Compression; the method agreed is
--     inst:compression(): "zlib@openssh.com", "zlib" or "none" when the server declined)
--   inst:sh(cmd [, opts]) -> {code, signal, stdout, stderr, elapsed}
--     opts: stdin (string|secret), env {NAME=string|secret} (sent over stdin, never
--     in argv), timeout (s: then the channel is closed and the command's remote
--     process group gets TERM; kill_on_timeout=false leaves it running), Ctrl-C
--     TERMs the group too (kill_on_interrupt=false leaves it), check (raise
--     on failure), on_line(line, "stdout"|"stderr"), idempotent (re-run once after a
--     lost connection), capture=false (do not keep stdout), to=FILE (stdout streams
--     to a local file, byte for byte and unredacted; r.stdout is "" and
--     r.stdout_bytes counts it), max_output (bytes or "256M": the cap on captured
--     output, default 64 MiB; past it the group gets TERM and the call raises a
--     kind="output" error; also connect{max_output=}, instance.max_output,
--     GPURENT_MAX_OUTPUT)
--   inst:put(local, remote [, opts]) / inst:get(remote, local [, opts]): see gpurent.transfer
--   inst:forward(remote_port [, opts]) -> tunnel: local port forwarding to the box's
--     127.0.0.1:remote_port over its own session; opts local_port (default the same
--     port; 0 any free), remote_host; see gpurent.tunnel (fwd.url, fwd:serve(), fwd:close())
--   inst:close()
--
-- For the rest of the transport layer (gpurent.transfer, gpurent.lock, the REPL's
-- path completion), which run several steps on one connection:
--   inst:with_session(idempotent, fn) -> fn(conn)'s result, with the instance locked
--     (one call at a time), reconnecting first if the session died, re-run once on a
--     lost connection when idempotent
--   inst:sftp_of(conn) -> the connection's SFTP session (started on first use)
--   instance.exec_on(conn, cmd [, opts]) -> {stdout, stderr, code}: a command on a
--     connection the caller holds through with_session
--
-- A lost connection is reopened by the next call (bounded backoff); the call that
-- saw it is re-run only when idempotent (transfers are: they resume).
local core = require "gpurent.core"
local ssh = require "gpurent.transport.ssh"
local sched = require "gpurent.transport.sched"
local secret = require "gpurent.util.secret"
local sshconfig = require "gpurent.transport.sshconfig"

local now = core.sys.now
local instance = {}
local Instance = {}
Instance.__index = Instance
Instance.__name = "gpurent.instance"
Instance.__tostring = function(self) return "instance " .. self.label end

local RECONNECT_DELAYS = {0.2, 0.5, 1.0}

function instance.connect(target, opts)
  opts = opts or {}
  if opts.compress ~= nil and type(opts.compress) ~= "boolean" then
    error("connect: compress must be true or false, got " .. tostring(opts.compress), 2)
  end
  local cfg = sshconfig.resolve(target, {config = opts.config})
  local self = setmetatable({target = target, cfg = cfg, opts = opts, busy = false}, Instance)
  self.conn = ssh.connect(cfg, opts)
  self.label = self.conn.label
  -- owed at every connect: one line when a same-region peer is powered off and its
  -- release clock runs (gpurent.billing.clock); never fatal to the connection
  pcall(function() require("gpurent.billing.clock").connect_warning(target, cfg) end)
  return self
end

-- The compression method the live connection agreed ("none" when not compressing).
function Instance:compression()
  return self.conn and self.conn.compression
end

-- Errors that reconnecting cannot fix: a refused host key or rejected credentials.
local function permanent(e)
  return require("gpurent.util.errors").is_refusal(e) or ssh.is_error(e, "auth")
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
function Instance:with_session(idempotent, fn)
  self:_lock()
  local ok, r = pcall(function()
    if not self.conn or not self.conn.sess:alive() then self:reconnect() end
    local ok1, res = pcall(fn, self.conn)
    if ok1 then return res end
    if not ssh.is_connection_loss(self.conn, res) then error(res, 0) end
    self.conn.sess:mark_dead()
    if not idempotent then
      if not ssh.is_error(res) then
        res = ssh.new_error("connection", nil, tostring(res), {})
        res.host = self.label
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

-- inst:forward(remote_port [, opts]) -> tunnel (gpurent.tunnel.open)
function Instance:forward(remote_port, opts)
  return require("gpurent.transport.tunnel").open(self, remote_port, opts)
end

-- ---- exec ------------------------------------------------------------------

local shell_quote = require("gpurent.util.shell").quote
instance.shell_quote = shell_quote

local MiB = 1024 * 1024
-- Captured output (stdout + stderr kept in memory) is bounded: past the cap the
-- command is stopped. Per call max_output=, per instance connect{max_output=},
-- for every call instance.max_output (a recipe may set it) or GPURENT_MAX_OUTPUT.
local DEFAULT_MAX_OUTPUT = 64 * MiB
instance.DEFAULT_MAX_OUTPUT = DEFAULT_MAX_OUTPUT
instance.max_output = nil
local READ_MAX = 4 * MiB       -- bytes per stream per channel read

local SIZE_UNITS = {[""] = 1, K = 1024, M = MiB, G = 1024 * MiB}

-- A size in bytes: a positive number (math.huge: no cap) or "65536", "256M",
-- "2G", "512KiB". Raises naming where the value came from.
local function parse_size(v, where)
  if type(v) == "number" and v > 0 and v == v then return v end
  if type(v) == "string" then
    local n, unit = v:match("^%s*(%d+)%s*([KkMmGg]?)i?[Bb]?%s*$")
    if n and tonumber(n) > 0 then return tonumber(n) * SIZE_UNITS[unit:upper()] end
  end
  error(string.format("%s = %s is not a size: give a positive number of bytes, or a string " ..
    "such as \"256M\" or \"2G\"", where, type(v) == "string" and string.format("%q", v) or tostring(v)), 0)
end
instance.parse_size = parse_size

-- The cap for a call that names none: the module's setting, then the environment.
local function default_cap()
  if instance.max_output ~= nil then return parse_size(instance.max_output, "gpurent.instance.max_output") end
  local env = os.getenv("GPURENT_MAX_OUTPUT")
  if env and env ~= "" then return parse_size(env, "GPURENT_MAX_OUTPUT") end
  return DEFAULT_MAX_OUTPUT
end

local function size_text(n)
  if n == math.huge then return "unbounded" end
  if n >= MiB then return string.format("%g MiB", math.floor(n / MiB * 10 + 0.5) / 10) end
  return string.format("%d bytes", n)
end

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
        error("sh: env name " .. tostring(k) .. " is not a shell variable name", 0)
      end
      local v = opts.env[k]
      if secret.is(v) then secrets[#secrets + 1] = v end
      local s = tostring(secret.reveal(v))
      if s:find("[\n%z]") then error("sh: env " .. k .. " contains a newline or NUL byte", 0) end
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

-- An early end of a command, raised inside the pump: why is "timeout", "cap"
-- (captured output passed the cap) or "write" (the to= file failed).
local Stop = {}
local function stop(why, fields)
  fields = fields or {}
  fields.why = why
  error(setmetatable(fields, Stop), 0)
end

-- Split chunks into lines for on_line; keeps the partial tail per stream, which
-- is bounded by the cap too (a line without end would grow it forever).
local function line_feeder(on_line, secrets, cap)
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
    if #tail[stream] > cap then stop("cap", {line = stream}) end
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

-- ---- the command's remote process group --------------------------------------
-- Every command's shell first prints its PID on stderr, on a marker line with a
-- nonce of its own. sshd starts each command's shell as a session and process
-- group leader, so on a timeout, Ctrl-C or the output cap that exact group gets
-- TERM over a fresh channel: closing the channel does not stop the command, and
-- libssh2 1.10 cannot send a channel signal. The login shell's rc files run
-- before the marker and may print anything (`echo x >&2` in ~/.bashrc), so the
-- marker is looked for anywhere in stderr and cut out, never expected first.
local nonce_seq = 0
local function new_nonce()
  nonce_seq = nonce_seq + 1
  return string.format("%x-%x-%x", core.sys.getpid(), math.random(0, 0x7fffffff), nonce_seq)
end

local function pid_printf(nonce)
  return "printf '\\001gpurent-pid-" .. nonce .. " %s\\n' $$ >&2; "
end

-- Length of the longest tail of data that could be the start of mark (0: none).
local function partial_mark(data, mark)
  local i = data:find("\1", math.max(1, #data - #mark + 1), true)
  while i do
    if mark:sub(1, #data - i + 1) == data:sub(i) then return #data - i + 1 end
    i = data:find("\1", i + 1, true)
  end
  return 0
end

-- Takes stderr chunks and returns what the caller may see: the marker line is
-- cut out wherever it lands (and however it is split across chunks) and its PID
-- kept in grab.pid. Bytes that may begin the marker are held back until known;
-- grab.flush() returns them at the end of the stream.
local function pid_grabber(nonce)
  local mark = "\1gpurent-pid-" .. nonce .. " "
  local grab, held = {}, ""
  function grab.take(chunk)
    if grab.pid then return chunk end
    local data = held .. chunk
    held = ""
    local s = data:find(mark, 1, true)
    if s then
      local digits, after = data:match("^(%d+)\n()", s + #mark)
      if digits then
        grab.pid = tonumber(digits)
        return data:sub(1, s - 1) .. data:sub(after)
      end
      if data:find("^%d*$", s + #mark) then held = data:sub(s); return data:sub(1, s - 1) end
    end
    local keep = partial_mark(data, mark)
    held = data:sub(#data - keep + 1)
    return data:sub(1, #data - keep)
  end
  function grab.flush() local h = held; held = ""; return h end
  return grab
end

-- Ctrl-C may come before the marker did (the command just started): read on a
-- moment (bounded) for it. The call is failing, so the output read is dropped.
local function await_pid(run, deadline)
  pcall(function()
    while not run.grab.pid and now() < deadline do
      local o, e, eof = run.ch:read(MiB)
      if o == false then
        if ssh.wait(run.conn, e, deadline) == 0 then return end
      else
        if #e > 0 then run.grab.take(e) end
        if eof then return end
      end
    end
  end)
end

-- TERM the remote process group; true when kill succeeded. The kill runs in a
-- shell of its own (no marker, no kill of its own on failure).
local function term_group(exec_fn, conn, pid)
  -- never `kill -- -1` (every process the user may signal) or -0 (our own group)
  if pid <= 1 then return false end
  local sent, r = pcall(exec_fn, conn, string.format("kill -s TERM -- -%d 2>/dev/null || kill -s TERM %d", pid, pid),
    {timeout = 5, kill_on_timeout = false, kill_on_interrupt = false})
  return sent and r.code == 0
end

-- Why the command stopped decides whether its group is signalled: the caller
-- may opt out for timeouts and Ctrl-C; a command whose output we stopped
-- taking (cap, local write error, on_line raised) is always stopped.
local function wants_kill(run, why)
  if why == "interrupt" then return run.opts.kill_on_interrupt ~= false end
  if why == "timeout" then return run.opts.kill_on_timeout ~= false end
  return true
end

-- TERM the group when wanted; returns what was done, for the error message.
local function stop_group(run, why, exec_fn)
  if not run.grab or not wants_kill(run, why) or not run.conn.sess:alive() then return nil end
  if not run.grab.pid then await_pid(run, now() + 0.5) end
  if not run.grab.pid then return nil end
  if term_group(exec_fn, run.conn, run.grab.pid) then
    return "TERM sent to remote process group " .. run.grab.pid
  end
  return nil
end

-- ---- pumping output ------------------------------------------------------------

local function keep(run, list, s)
  if run.kept + #s > run.cap then stop("cap") end
  run.kept = run.kept + #s
  list[#list + 1] = s
end

local function take_stdout(run, o)
  if run.sink then
    local ok, err = run.sink:write(o)
    if not ok then stop("write", {msg = tostring(err)}) end
    run.sunk = run.sunk + #o
  elseif run.opts.capture ~= false then
    keep(run, run.outs, o)
  end
  if run.feed then run.feed(o, "stdout") end
end

local function take_stderr(run, e)
  if #e == 0 then return end
  keep(run, run.errs, e)
  if run.feed then run.feed(e, "stderr") end
end

-- Send stdin as far as the channel takes it; returns progressed, dirs to wait on.
local function push_input(run)
  local ch, input = run.ch, run.input
  if run.eof_sent then return false, 0 end
  local progressed, wdirs = false, 0
  if run.pos <= #input then
    local n, d = ch:write(input, run.pos)
    if n then run.pos = run.pos + n; progressed = n > 0 else wdirs = d end
  end
  if run.pos > #input then
    local r, d = ch:send_eof()
    if r then run.eof_sent = true; progressed = true else wdirs = d end
  end
  return progressed, wdirs
end

-- Pump stdin out and stdout/stderr in until the remote side ends; an early end
-- is raised as a Stop.
local function pump(run)
  while true do
    local progressed, wdirs = push_input(run)
    local rdirs = 1
    local o, e, eof = run.ch:read(READ_MAX)
    if o == false then
      rdirs = e
    else
      if #o > 0 then progressed = true; take_stdout(run, o) end
      if #e > 0 then progressed = true; take_stderr(run, run.grab and run.grab.take(e) or e) end
      if eof then break end
    end
    if not progressed and ssh.wait(run.conn, rdirs | wdirs, run.deadline) == 0 then stop("timeout") end
  end
  if run.grab then take_stderr(run, run.grab.flush()) end
  if run.feed then run.feed(nil) end
end

-- ---- one command -----------------------------------------------------------------

local function open_sink(path)
  if type(path) ~= "string" or path == "" then
    error("sh: to= must be a local file path, got " .. tostring(path), 0)
  end
  local f, err = io.open(path, "wb")
  if not f then error("sh: to=" .. path .. ": cannot open for writing: " .. tostring(err), 0) end
  return f
end

local function close_sink(run)
  if not run.sink then return true end
  local f = run.sink
  run.sink = nil
  return f:close()
end

local function prepare(conn, cmd, opts, cap)
  local line, input, secrets = build(cmd, opts)
  local run = {conn = conn, cmd = cmd, opts = opts, input = input, secrets = secrets,
               cap = cap or default_cap(), kept = 0, outs = {}, errs = {}, pos = 1, sunk = 0, t0 = now()}
  -- the marker is needed whenever the group may be signalled (always, unless
  -- the caller opted out of both the timeout and the Ctrl-C kill)
  if opts.kill_on_interrupt ~= false or (opts.timeout and opts.kill_on_timeout ~= false) then
    local nonce = new_nonce()
    run.grab = pid_grabber(nonce)
    line = pid_printf(nonce) .. line
  end
  run.line = line
  run.deadline = opts.timeout and run.t0 + opts.timeout
  run.feed = opts.on_line and line_feeder(opts.on_line, secrets, run.cap)
  if opts.to ~= nil then run.sink = open_sink(opts.to) end
  return run
end

local WAYS_OUT = "stream it instead: on_line=function(line, stream) ... end with capture=false, or " ..
  "to=FILE (stdout goes to a local file); or raise the cap: max_output=BYTES for this call, " ..
  "gpurent.connect(host, {max_output=...}), require('gpurent.transport.instance').max_output or GPURENT_MAX_OUTPUT"

local function cap_message(run, failure, group)
  local what = failure.line and ("a line on " .. failure.line .. " without a newline") or "the captured output"
  return string.format("%s passed the %s capture cap (max_output); the command was stopped (%s): %s\n  %s",
    what, size_text(run.cap), group or "channel closed", run.cmd, WAYS_OUT)
end

-- Raise the error for a command that ended early, saying what was signalled.
local function fail(run, why, group, failure)
  local conn, cmd = run.conn, run.cmd
  local fields = {cmd = cmd, remote_pid = run.grab and run.grab.pid or nil, signalled = group ~= nil}
  if why == "interrupt" then
    local left = group or (run.opts.kill_on_interrupt == false and "remote command left running: kill_on_interrupt=false"
                           or "remote command not signalled: its process group is unknown")
    ssh.error("interrupted", conn, string.format("interrupted (%s): %s", left, cmd), fields)
  elseif why == "timeout" then
    fields.timeout = run.opts.timeout
    ssh.error("timeout", conn, string.format("command timed out after %gs (channel closed%s): %s",
      run.opts.timeout, group and ("; " .. group) or "", cmd), fields)
  elseif why == "cap" then
    fields.cap = run.cap
    ssh.error("output", conn, cap_message(run, failure, group), fields)
  elseif why == "write" then
    ssh.error("output", conn, string.format("cannot write the output to %s: %s (the command was stopped: %s): %s",
      run.opts.to, failure.msg, group or "channel closed", cmd), fields)
  end
  if group and ssh.is_error(failure) then failure.msg = failure.msg .. " (" .. group .. ")"
  elseif group and type(failure) == "string" then failure = failure .. " (" .. group .. ")" end
  error(failure, 0)
end

-- A command that ended early: signal its group (as wanted), close the channel,
-- raise. After Ctrl-C the channel must still close cleanly (so the session stays
-- usable): the interrupt is held while cleaning up, then restored for the exit
-- code. The group gets TERM before the close, which sshd answers only once the
-- command has ended.
local function abort(run, failure, exec_fn)
  local interrupted = core.sys.interrupted()
  if interrupted then core.sys.clear_interrupt() end
  local why = interrupted and "interrupt" or (getmetatable(failure) == Stop and failure.why)
              or (ssh.is_error(failure, "timeout") and "timeout") or "error"
  local group = stop_group(run, why, exec_fn)
  close_channel(run.conn, run.ch)
  pcall(close_sink, run)
  if interrupted then core.sys.set_interrupted() end
  fail(run, why, group, failure)
end

local function finish(run)
  local conn, ch = run.conn, run.ch
  local closed = pcall(ssh.run, conn, now() + 10, "close channel", ch.close, ch)
  if closed then pcall(ssh.run, conn, now() + 10, "wait closed", ch.wait_closed, ch) end
  local code, sig = ch:exit()
  pcall(ssh.run, conn, now() + 5, "free channel", ch.free, ch)
  local to = run.sink and run.opts.to
  local ok, err = close_sink(run)
  if not ok then ssh.error("output", conn, "cannot write the output to " .. to .. ": " .. tostring(err)) end
  local out, errs = table.concat(run.outs), table.concat(run.errs)
  if #run.secrets > 0 then out, errs = secret.redact(out, run.secrets), secret.redact(errs, run.secrets) end
  return {code = (sig == nil) and code or nil, signal = sig, stdout = out, stderr = errs,
          elapsed = now() - run.t0, cmd = run.cmd, to = to or nil, stdout_bytes = to and run.sunk or nil}
end

-- exec(conn, cmd, opts [, cap]): run one command on its own channel.
local function exec(conn, cmd, opts, cap)
  local run = prepare(conn, cmd, opts, cap)
  local sess = conn.sess
  local opened, ch = pcall(ssh.run, conn, run.deadline, "open channel", sess.channel_open, sess)
  if not opened then pcall(close_sink, run); error(ch, 0) end
  run.ch = ch
  local ok, failure = pcall(function()
    ssh.run(conn, run.deadline, "exec", ch.exec, ch, run.line)
    pump(run)
  end)
  if not ok then abort(run, failure, exec) end
  return finish(run)
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
  local cap_opt = opts.max_output
  if cap_opt == nil then cap_opt = self.opts.max_output end
  local ok, cap = pcall(function() return cap_opt ~= nil and parse_size(cap_opt, "sh: max_output") or default_cap() end)
  if not ok then error(cap, 2) end
  if opts.to ~= nil and (type(opts.to) ~= "string" or opts.to == "") then
    error("sh: to= must be a local file path (a string), got " .. tostring(opts.to), 2)
  end
  local r = self:with_session(opts.idempotent, function(conn) return exec(conn, cmd, opts, cap) end)
  if opts.check and (r.code ~= 0 or r.signal) then
    local why = r.signal and ("killed by signal " .. r.signal) or ("exit code " .. r.code)
    local tail = last_lines(r.stderr, 10)
    ssh.error("command", self.conn, string.format("command failed (%s): %s%s", why, cmd,
      #tail > 0 and ("\n  stderr: " .. table.concat(tail, "\n          ")) or ""),
      {status = r.code, signal = r.signal, result = r, cmd = cmd})
  end
  return r
end

-- ---- transfers (policy in gpurent.transfer) ----------------------------------

function Instance:sftp_of(conn)
  if not conn.sftp then
    conn.sftp = ssh.run(conn, now() + 30, "start SFTP", conn.sess.sftp_init, conn.sess)
  end
  return conn.sftp
end

function Instance:put(src, dst, opts)
  return require("gpurent.transport.transfer").put(self, src, dst, opts or {})
end

function Instance:get(src, dst, opts)
  return require("gpurent.transport.transfer").get(self, src, dst, opts or {})
end

instance.Instance = Instance
instance.exec_on = exec  -- unlocked: for a caller inside with_session (which holds the lock)
instance._pid_grabber = pid_grabber  -- for its spec
return instance

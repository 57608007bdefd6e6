-- gpurent.tunnel: local port forwarding (ssh -L) over direct-tcpip channels, run by
-- the coroutine scheduler: a listening socket on 127.0.0.1, and for every accepted
-- connection a channel to remote_host:remote_port as the box sees it.
--
--   local fwd = inst:forward(6007, {local_port = 16007})   -- or tunnel.open(inst, 6007, opts)
--   fwd.url ("http://127.0.0.1:16007"), fwd.local_port, fwd.remote_port, fwd:stats()
--   fwd:serve([seconds])   turn the scheduler until closed (or for seconds); tasks
--                          of gpurent.parallel keep it going as well
--   fwd:close()            stop listening, close every connection and the session
--   opts: local_port (default: remote_port; 0 = any free port), remote_host
--   ("127.0.0.1", as the box resolves it), bind ("127.0.0.1": loopback only),
--   log (function(msg): reconnects and refused connections)
--
-- The tunnel has its own SSH session (the instance's stays free for inst:sh). When
-- that session drops, its connections end and the next accepted connection opens a
-- new session (bounded backoff); the listening socket stays open throughout.
--
-- libssh2 rules kept here (one session, many channels, non-blocking):
--  * a partly sent packet must be finished by the same call that queued it: while
--    sess:sending() is true only that coroutine (s.owner) calls into the session;
--  * one channel open at a time per session (libssh2 keeps one open state);
--  * any call may read packets for other channels off the socket, so after every
--    call the channels are swept (sweep) and their data written to the local sockets;
--    waits on the session socket also wake on a short timer as a backstop.
local core = require "gpurent.core"
local ssh = require "gpurent.transport.ssh"
local sched = require "gpurent.transport.sched"

local cssh, now = core.ssh, core.sys.now
local tunnel = {}
local Tunnel = {}
Tunnel.__index = Tunnel
Tunnel.__name = "gpurent.tunnel"
Tunnel.__tostring = function(t) return "tunnel " .. t.url .. " -> " .. t.label .. " " .. t.remote_host .. ":" .. t.remote_port end

local READ_MAX = 256 * 1024
local RECONNECT_DELAYS = {0.2, 0.5, 1, 2, 4}
local BACKSTOP = 0.05          -- s: a wait on the session socket re-checks at least this often
local GATE_LIMIT = 120         -- s: the longest wait for another coroutine's partial packet
local OPEN_TIMEOUT = 30
local CLOSE_TIMEOUT = 5

local function permanent(e)
  return require("gpurent.util.errors").is_refusal(e) or ssh.is_error(e, "auth")
end

-- ---- one SSH session and its channels -------------------------------------------

local function new_session(t, conn)
  return {t = t, conn = conn, conns = {}, dead = false, owner = nil, opening = nil, pumping = false}
end

local kill_session

local function lost(s, e)
  kill_session(s, e)
  ssh.error("connection", s.conn, "tunnel session lost" .. (e and (": " .. tostring(e)) or ""))
end

-- Wait until no other coroutine has a partly sent packet in the session.
local function gate(s)
  local me, t0 = coroutine.running(), now()
  while s.owner and s.owner ~= me do
    if s.dead then lost(s) end
    if now() - t0 > GATE_LIMIT then
      s.conn.sess:mark_dead()
      lost(s, "a partly sent packet was not finished in " .. GATE_LIMIT .. "s")
    end
    sched.sleep(0.001)
  end
  if s.dead then lost(s) end
end

-- After a call: who must finish a partly sent packet (only that call's repeat may run).
local function settle(s)
  if s.conn.sess:sending() then s.owner = coroutine.running()
  elseif s.owner == coroutine.running() then s.owner = nil end
end

local sweep

-- One libssh2 call on the session: gated, settled, then the channels swept.
local function step(s, fn, ...)
  gate(s)
  local ok, r, a, b, c = pcall(fn, ...)
  if not ok then
    if s.owner == coroutine.running() then s.owner = nil end
    if ssh.is_connection_loss(s.conn, r) then lost(s, r) end
    error(r, 0)
  end
  settle(s)
  sweep(s)
  return r, a, b, c
end

-- Drive a step until it finishes; dirs from the step, the backstop timer, a deadline.
local function drive(s, deadline, op, fn, ...)
  while true do
    local r, a, b, c = step(s, fn, ...)
    if r ~= false then return r, a, b, c end
    local t_now = now()
    if deadline and t_now > deadline then ssh.error("timeout", s.conn, op .. " timed out", {op = op}) end
    sched.wait(s.conn.fd, a, math.min(deadline or math.huge, t_now + BACKSTOP))
    if s.dead then lost(s) end
  end
end

local function fail_conn(c, why)
  if not c.failed then c.failed = why or "failed" end
  if c.fd then cssh.sock_shutdown(c.fd, "rw") end
end

-- Write data to the local socket without waiting: what does not fit waits in
-- c.backlog for a flusher task, and the channel is not read meanwhile (the SSH
-- window holds the remote back).
local flush
local function deliver(s, c, data)
  local n, why = cssh.sock_write(c.fd, data)
  if n == nil then fail_conn(c, why); return end
  n = n or 0
  if n < #data then
    c.backlog = data:sub(n + 1)
    s.t.backlogged = s.t.backlogged + 1
    sched.spawn(flush, s, c)
  end
end

-- Read one channel, repeating the read while it left a packet half sent (a window
-- adjust), as libssh2 requires. -> data, eof; nil on a channel error.
local function read_channel(s, c)
  local data, eof, spins = "", false, 0
  while true do
    local ok, out, err, e = pcall(c.ch.read, c.ch, READ_MAX)
    if not ok then
      if s.owner == coroutine.running() then s.owner = nil end
      if ssh.is_connection_loss(s.conn, out) then kill_session(s, out); return nil end
      fail_conn(c, tostring(out)); return nil
    end
    if out ~= false then data = data .. out .. err; eof = eof or e end
    settle(s)
    if s.owner ~= coroutine.running() then return data, eof end
    spins = spins + 1
    if spins > 10000 then s.conn.sess:mark_dead(); kill_session(s, "window adjust never sent"); return nil end
    sched.wait(s.conn.fd, 2, now() + BACKSTOP)
  end
end

-- Read every channel that may have data (libssh2 may hold it already) and pass it
-- on; repeat while a pass brought something, since reads pull other channels' packets.
function sweep(s)
  if s.sweeping or s.dead or (s.owner and s.owner ~= coroutine.running()) then return end
  s.sweeping = true
  local ok, err = pcall(function()
    for _ = 1, 64 do
      local got = false
      for c in pairs(s.conns) do
        if s.dead then return end
        if c.ch and not c.backlog and not c.remote_eof and not c.failed and not c.closing then
          local data, eof = read_channel(s, c)
          if data and #data > 0 then got = true; deliver(s, c, data) end
          if eof then
            c.remote_eof = true
            if not c.backlog then cssh.sock_shutdown(c.fd, "w") end
          end
        end
      end
      if not got then return end
    end
  end)
  s.sweeping = false
  if not ok then error(err, 0) end
end

function flush(s, c)
  while c.backlog and not c.failed do
    local r = sched.wait(c.fd, 2, now() + 1)
    if r ~= 0 then
      local n, why = cssh.sock_write(c.fd, c.backlog)
      if n == nil then fail_conn(c, why)
      elseif n and n > 0 then c.backlog = n < #c.backlog and c.backlog:sub(n + 1) or nil end
    end
    if s.dead or c.closing then break end
  end
  c.backlog = nil
  if c.remote_eof and not c.failed then cssh.sock_shutdown(c.fd, "w") end
  if not s.dead then pcall(sweep, s) end
end

-- The session's reader: waits on its socket while it has channels, sweeping them.
local function pump(s)
  while not s.dead and next(s.conns) do
    if s.owner then sched.sleep(0.002)
    else
      local ok, e = pcall(sweep, s)
      if not ok and not s.dead then s.t:log("tunnel: " .. tostring(e)) end
      sched.wait(s.conn.fd, 1, now() + 0.25)
    end
  end
  s.pumping = false
end

local function register(s, c)
  s.conns[c] = true
  if not s.pumping then s.pumping = true; sched.spawn(pump, s) end
end

function kill_session(s, why)
  if s.dead then return end
  s.dead = true
  s.owner = nil
  if s.t.session_ == s then s.t.session_ = nil end
  if why then s.t:log(string.format("tunnel: session to %s lost (%s): reconnecting on the next connection",
    s.t.label, tostring(why):gsub("%s+$", ""))) end
  for c in pairs(s.conns) do fail_conn(c, "session lost") end
  s.conns = {}
  ssh.close(s.conn)
end

-- ---- the tunnel -------------------------------------------------------------------

function Tunnel:log(msg)
  if self.on_log then pcall(self.on_log, msg) end
end

-- The live session, reconnecting (bounded backoff) when there is none.
function Tunnel:session()
  local s = self.session_
  if s and not s.dead and s.conn.sess:alive() then return s end
  if s and not s.dead then kill_session(s, "connection lost") end
  local t0 = now()
  while self.reconnecting do
    if now() - t0 > 120 then error(self.label .. ": tunnel: reconnect did not finish", 0) end
    sched.sleep(0.01)
  end
  s = self.session_
  if s and not s.dead then return s end
  self.reconnecting = true
  local ok, res = pcall(function()
    local last
    for attempt = 0, #RECONNECT_DELAYS do
      if attempt > 0 then sched.sleep(RECONNECT_DELAYS[attempt]) end
      if self.closed then error(self.label .. ": tunnel closed", 0) end
      local okc, conn = pcall(ssh.connect, self.cfg, self.opts)
      if okc then return conn end
      last = conn
      if permanent(conn) then break end
    end
    error(last, 0)
  end)
  self.reconnecting = false
  if not ok then error(res, 0) end
  self.session_ = new_session(self, res)
  self.reconnects = self.reconnects + 1
  self:log("tunnel: reconnected to " .. self.label)
  return self.session_
end

-- Open the channel for one accepted connection (one open at a time per session).
local function open_channel(t, s, c)
  local me, t0 = coroutine.running(), now()
  while s.opening and s.opening ~= me do
    if s.dead then lost(s) end
    if now() - t0 > OPEN_TIMEOUT then ssh.error("timeout", s.conn, "waited too long to open a channel") end
    sched.sleep(0.002)
  end
  s.opening = me
  local ok, ch = pcall(drive, s, now() + OPEN_TIMEOUT, "open direct-tcpip", s.conn.sess.direct_tcpip, s.conn.sess,
    t.remote_host, t.remote_port, "127.0.0.1", c.peer_port)
  if s.opening == me then s.opening = nil end
  if not ok then error(ch, 0) end
  return ch
end

local function close_channel(s, c)
  c.closing = true
  s.conns[c] = nil
  if not c.ch or s.dead then return end
  local deadline = now() + CLOSE_TIMEOUT
  local ok = pcall(drive, s, deadline, "close channel", c.ch.close, c.ch)
  if ok then ok = pcall(drive, s, deadline, "free channel", c.ch.free, c.ch) end
  c.ch = nil
end

-- Local -> remote, and the connection's life: ends when both sides are done.
local function upstream(t, s, c)
  while not c.failed do
    local r = sched.wait(c.fd, 1, nil)
    if t.closed or s.dead then break end
    if r ~= 0 then
      local data, why = cssh.sock_read(c.fd, READ_MAX)
      if data == nil then fail_conn(c, why); break end
      if data == "" then
        if c.failed or s.dead then break end
        pcall(drive, s, now() + CLOSE_TIMEOUT, "send eof", c.ch.send_eof, c.ch)
        -- the remote side may still answer: wait for its EOF and the local flush
        local t0 = now()
        while not (c.remote_eof and not c.backlog) and not c.failed and not s.dead and not t.closed do
          if now() - t0 > 3600 then break end
          sched.sleep(0.02)
        end
        break
      end
      if data then
        local from = 1
        while from <= #data do
          local n, dirs = step(s, c.ch.write, c.ch, data, from)
          if n == false then
            sched.wait(s.conn.fd, dirs, now() + BACKSTOP)
            if s.dead then lost(s) end
          else from = from + n end
          if c.failed or t.closed then break end
        end
      end
    end
  end
end

local function handle(t, fd, peer)
  local c = {fd = fd, peer = peer, peer_port = tonumber(peer:match(":(%d+)$")) or 0}
  t.active[c] = true
  t.connections = t.connections + 1
  local s
  local ok, err = pcall(function()
    for attempt = 1, 2 do
      s = t:session()
      local okc, ch = pcall(open_channel, t, s, c)
      if okc then c.ch = ch; break end
      -- a session that died unnoticed (the server went away while idle): reconnect once
      if attempt == 2 or not (s.dead or ssh.is_connection_loss(s.conn, ch)) then error(ch, 0) end
      if not s.dead then kill_session(s, ch) end
    end
    register(s, c)
    upstream(t, s, c)
  end)
  if not ok and not t.closed then
    t.refused = t.refused + 1
    t:log(string.format("tunnel: connection from %s to %s:%d: %s", peer, t.remote_host, t.remote_port,
      tostring(err):gsub("%s+$", "")))
  end
  if s then pcall(close_channel, s, c) end
  -- wait for the flusher to give up the socket before closing it
  local t0 = now()
  while c.backlog and now() - t0 < 1 do sched.sleep(0.01) end
  c.closing = true
  t.active[c] = nil
  cssh.close_fd(fd)
  c.fd = nil
end

local function accept_loop(t)
  while not t.closed do
    local r = sched.wait(t.fd, 1, now() + 0.5)
    if t.closed then break end
    if r ~= 0 then
      for _ = 1, 64 do
        local fd, peer = cssh.accept(t.fd)
        if not fd then
          if fd == nil then t:log("tunnel: accept: " .. tostring(peer)); sched.sleep(0.1) end
          break
        end
        t.tasks[sched.spawn(handle, t, fd, peer)] = true
      end
    end
    for task in pairs(t.tasks) do if task.done then t.tasks[task] = nil end end
  end
end

local function check_port(v, what)
  local n = math.tointeger(tonumber(v))
  if not n or n < 0 or n > 65535 then error(string.format("%s %s: give a port number 1-65535", what, tostring(v)), 3) end
  return n
end

-- tunnel.open(inst, remote_port [, opts]) -> tunnel (listening; connections are served
-- while the scheduler turns).
function tunnel.open(inst, remote_port, opts)
  opts = opts or {}
  remote_port = check_port(remote_port, "remote port")
  if remote_port == 0 then error("remote port 0: give the box's port, e.g. 6006", 2) end
  local local_port = opts.local_port == nil and remote_port or check_port(opts.local_port, "local_port")
  local t = setmetatable({
    cfg = inst.cfg, opts = inst.opts or {}, label = inst.label or tostring(inst.target),
    remote_port = remote_port, remote_host = opts.remote_host or "127.0.0.1",
    bind = opts.bind or "127.0.0.1", on_log = opts.log,
    reconnects = 0, connections = 0, refused = 0, backlogged = 0, active = {}, tasks = {}, closed = false,
  }, Tunnel)
  local listening, fd, port = pcall(cssh.listen, t.bind, local_port)
  if not listening then require("gpurent.util.errors").raise("transport", fd, 0, {code = "listen"}) end
  t.fd, t.local_port = fd, port
  t.url = "http://" .. t.bind .. ":" .. port
  local ok, conn = pcall(ssh.connect, t.cfg, t.opts)
  if not ok then cssh.close_fd(fd); error(conn, 0) end
  t.session_ = new_session(t, conn)
  t.accept_task = sched.spawn(accept_loop, t)
  return t
end

function Tunnel:stats()
  local active = 0
  for _ in pairs(self.active) do active = active + 1 end
  return {connections = self.connections, active = active, reconnects = self.reconnects, refused = self.refused,
    backlogged = self.backlogged}
end

-- tunnel.serve(list [, seconds]): turn the scheduler until every tunnel in list is
-- closed, or for seconds.
function tunnel.serve(list, seconds)
  local deadline = seconds and now() + seconds
  local function open_left()
    for _, t in ipairs(list) do if not t.closed then return true end end
    return false
  end
  local waiter = sched.spawn(function()
    while open_left() and (not deadline or now() < deadline) do sched.sleep(0.1) end
  end)
  sched.join({waiter})
  if not waiter.ok then error(waiter.results[1], 0) end
end

function Tunnel:serve(seconds) return tunnel.serve({self}, seconds) end

-- Stop listening, end every connection (bounded), close the session.
function Tunnel:close()
  if self.closed then return end
  self.closed = true
  cssh.close_fd(self.fd)
  for c in pairs(self.active) do fail_conn(c, "tunnel closed") end
  local pending = {}
  for task in pairs(self.tasks) do if not task.done then pending[#pending + 1] = task end end
  if self.accept_task and not self.accept_task.done then pending[#pending + 1] = self.accept_task end
  local waiter = sched.spawn(function()
    local deadline = now() + 3
    while now() < deadline do
      local left = false
      for _, task in ipairs(pending) do if not task.done then left = true end end
      if not left then break end
      sched.sleep(0.02)
    end
  end)
  pcall(sched.join, {waiter})
  for c in pairs(self.active) do
    if c.fd then cssh.close_fd(c.fd); c.fd = nil end
    self.active[c] = nil
  end
  local s = self.session_
  self.session_ = nil
  if s and not s.dead then s.dead = true; ssh.close(s.conn) end
end

return tunnel

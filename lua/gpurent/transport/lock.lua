-- gpurent.lock: exclusive ownership of a path by one gpurent process at a time,
-- on this machine and on a box, with the holder named when someone else has it.
--
--   lock.acquire_local(path [, opts]) -> handle | nil, why, holder
--       an flock(2) on the file `path` (runtime/fs.c lock_file): held per open
--       file, so two coroutines of one gpurent exclude each other too; the kernel
--       drops it when the holder dies, so a local lock is never stale.
--   lock.acquire_remote(ops, path [, opts]) -> handle | nil, why, holder
--       a symlink `path` on the box whose target is the owner line, made over
--       SFTP (lock.box_ops(inst)): symlink(2) is atomic and fails if the name
--       exists, and the link carries the holder's name in the same step (the
--       trick of Emacs lock files and lfs.lock_dir), so there is no window with
--       a lock but no name, one round trip takes it and no shell is needed.
--       flock(1) on the box would need a process holding the lock for the whole
--       transfer, which a lost connection kills mid-resume. A lock whose holder
--       ran on this machine (same hostname and boot) and is gone (PID dead, or
--       reused: start time differs), or that this process left behind (a call
--       that lost its connection), is stale: it is broken and taken.
--   handle:release()  (remote: best effort; a failure leaves a lock that is stale
--       for the next taker on this machine)
--   opts.wait: seconds to wait for a held lock (default 0: answer at once);
--   opts.on_stale(holder, path): told when a stale remote lock is broken; the handle
--       then keeps that holder as handle.broke_stale (a put waits out its writes).
--   holder = {host=, pid=, start=, boot=, nonce=, since=} as the owner line says.
--   lock.identity() -> the holder table this process writes.
local core = require "gpurent.core"
local sched = require "gpurent.transport.sched"

local lock = {}
local now = core.sys.now

local read_line = require("gpurent.util.fs").read_if_exists

-- Field 22 of /proc/PID/stat (start time in clock ticks since boot), and
-- whether the process is a zombie; nil when there is no such process.
local function proc_start(pid)
  local st = read_line("/proc/" .. tostring(pid) .. "/stat")
  if not st then return nil end
  local rest = st:match("^%d+ %b() (.*)$")
  if not rest then return nil end
  local fields = {}
  for w in rest:gmatch("%S+") do fields[#fields + 1] = w end
  return fields[20], fields[1] == "Z"     -- rest starts at field 3 (state)
end

local me
function lock.identity()
  if not me then
    local pid = core.sys.getpid()
    me = {
      host = (read_line("/proc/sys/kernel/hostname") or "unknown"):match("%S+") or "unknown",
      boot = (read_line("/proc/sys/kernel/random/boot_id") or ""):match("%S+") or "unknown",
      pid = tostring(pid), start = proc_start(pid) or "0",
    }
  end
  return me
end

local function nonce()
  local f = io.open("/dev/urandom", "rb")
  local b = f and f:read(8) or tostring(now()) .. tostring({})
  if f then f:close() end
  return (b:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

local held = {}   -- nonce -> true while this process holds that lock

local function owner_line(n)
  local id = lock.identity()
  return string.format("gpurent-lock host=%s pid=%s start=%s boot=%s nonce=%s since=%d",
    id.host, id.pid, id.start, id.boot, n, math.floor(os.time()))
end

function lock.parse(text)
  if type(text) ~= "string" or not text:match("^gpurent%-lock ") then return nil end
  local o = {}
  for k, v in text:gmatch("(%w+)=(%S+)") do o[k] = v end
  return o.pid and o or nil
end

local function describe(o)
  if not o then return "the lock does not name its holder" end
  local age = tonumber(o.since) and string.format(", since %s", os.date("!%Y-%m-%d %H:%M:%SZ", tonumber(o.since))) or ""
  return string.format("host %s, PID %s%s", o.host or "?", o.pid or "?", age)
end
lock.describe = describe

-- Is the holder gone for sure? Only a holder on this machine can be checked.
function lock.holder_gone(o)
  local id = lock.identity()
  if not o or o.host ~= id.host or o.boot ~= id.boot then return false end
  if o.pid == id.pid and o.start == id.start then return not held[o.nonce] end
  local start, zombie = proc_start(o.pid)
  return start == nil or zombie or start ~= o.start
end

-- Poll attempt() (-> handle | nil, why, holder) until it succeeds or opts.wait ends.
local function with_wait(opts, attempt)
  local deadline = now() + ((opts and opts.wait) or 0)
  local MAX_TRIES = 100000   -- bounded however long opts.wait is (5.5 h at 0.2 s)
  for i = 1, MAX_TRIES do
    local h, why, holder = attempt()
    if h or now() >= deadline or i == MAX_TRIES then return h, why, holder end
    sched.sleep(0.2)
  end
end

-- ---- local --------------------------------------------------------------------

local Local = {}
Local.__index = Local
function Local:release()
  if self.fl then self.fl:release(); self.fl = nil end
  held[self.nonce] = nil
end

function lock.acquire_local(path, opts)
  return with_wait(opts, function()
    local n = nonce()
    local fl, text
    for _ = 1, 10 do   -- a holder that has just locked may not have written its name yet
      fl, text = core.fs.lock_file(path, owner_line(n))
      if fl or lock.parse(text) then break end
      sched.sleep(0.02)
    end
    if fl then
      held[n] = true
      return setmetatable({fl = fl, path = path, nonce = n}, Local)
    end
    local o = lock.parse(text)
    return nil, string.format("locked by another gpurent (%s); lock file %s", describe(o), path), o
  end)
end

-- ---- remote -------------------------------------------------------------------

-- Filesystem steps on the box over an Instance's SFTP session, each its own
-- locked call (a lock is taken before, and released after, the transfer's).
-- fast_of(conn) -> an object with the same four steps, or nil: a caller that
-- already has an SFTP channel of its own on conn (gpurent.transfer's spare)
-- takes the steps there, where the link and its read-back go out together.
function lock.box_ops(inst, fast_of)
  local ssh = require "gpurent.transport.ssh"
  local function sftp_call(op, path, ...)
    local args = table.pack(...)
    return inst:with_session(true, function(conn)
      local fast = fast_of and fast_of(conn)
      if fast then return fast[op](table.unpack(args, 1, args.n)) end
      local sftp = inst:sftp_of(conn)
      return ssh.run(conn, now() + 60, op .. " " .. path, sftp[op], sftp, table.unpack(args, 1, args.n))
    end)
  end
  return {
    symlink = function(target, path) return sftp_call("symlink", path, target, path) end,
    readlink = function(path) return sftp_call("readlink", path, path) end,
    unlink = function(path) return sftp_call("unlink", path, path) end,
    rename = function(a, b) return sftp_call("rename", a, a, b) end,
  }
end

local Remote = {}
Remote.__index = Remote
function Remote:release()
  if not self.owner then return end
  held[self.nonce] = nil
  local owner = self.owner
  self.owner = nil
  -- only our own lock: a lock broken meanwhile by a person belongs to its taker now
  if self.ops.readlink(self.path) == owner then self.ops.unlink(self.path) end
end

-- Break a stale lock only if it is still the one judged stale: move it aside
-- (atomic: of two breakers, one moves it), check it, put it back if it is not
-- (a breaker that lost the race moved the winner's fresh lock). Not covered:
-- a third transfer taking the name in the instant before the put-back.
local function break_stale(ops, path, text)
  local aside = path .. ".stale." .. nonce()
  if not ops.rename(path, aside) then return end
  if ops.readlink(aside) == text then ops.unlink(aside)
  else ops.rename(aside, path) end
end

-- One attempt: taken -> handle; held -> nil, why, holder, stale?, owner text;
-- no lock to read (released meanwhile, or something else in the way) -> nil, why.
-- Whose link is at the name decides, not the symlink call's answer (which
-- libssh2 1.10 garbles; runtime/sftp.c): symlink(2) is atomic, so the link
-- there is the one that won.
local function try_remote(ops, path)
  local n = nonce()
  local owner = owner_line(n)
  -- Marked held before it exists: another task of this process that reads this
  -- owner while our symlink call is in flight must not judge it left behind.
  held[n] = true
  local ok, text = pcall(function() ops.symlink(owner, path); return ops.readlink(path) end)
  if ok and text == owner then return setmetatable({ops = ops, path = path, nonce = n, owner = owner}, Remote) end
  held[n] = nil   -- (a link made before a lost connection is now stale for us)
  if not ok then error(text, 0) end
  if not text then return nil, "no link could be made or read there" end
  local o = lock.parse(text)
  return nil, string.format("locked by another gpurent (%s); lock %s on the box", describe(o), path),
    o, o and lock.holder_gone(o), text
end

function lock.acquire_remote(ops, path, opts)
  return with_wait(opts, function()
    local h, why, o, stale, text
    local unreadable, broke = 0, nil
    for _ = 1, 5 do   -- bounded: break a stale lock (or miss a released one), then try again
      h, why, o, stale, text = try_remote(ops, path)
      if h then h.broke_stale = broke; return h end
      if text == nil then
        unreadable = unreadable + 1
        if unreadable >= 2 then
          require("gpurent.util.errors").raise("remote", string.format("lock: cannot create %s on the box (%s): " ..
            "its directory must exist, and nothing but a gpurent lock may have that name", path, why), 0, {code = "lock"})
        end
      elseif not stale then
        return nil, why, o
      else
        break_stale(ops, path, text)
        broke = o or {}
        if opts and opts.on_stale then opts.on_stale(o, path) end
      end
    end
    return nil, why, o
  end)
end

return lock

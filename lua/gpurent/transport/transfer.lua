-- gpurent.transfer: file transfer policy over SFTP (mechanism: runtime/sftp.c).
--   transfer.put(inst, local, remote, opts)   transfer.get(inst, remote, local, opts)
-- Directories are copied recursively. Each file is written to "<dest>.part" and
-- renamed only when complete (remote: SFTP rename, or `mv -f` when the target
-- exists; local: fsync + rename). A transfer owns its destination while it runs:
-- a lock "<dest>.part.lock" (gpurent.lock: an flock'ed file locally, an atomic
-- symlink on the box) makes a second transfer to the same path fail at once naming
-- the holder's host and PID (or wait lock_wait seconds); a lock whose holder on
-- this machine is gone is broken. A rerun after an interruption resumes from the
-- .part's size once the prefix's SHA-256 matches on both sides (else restarts).
-- Mode and mtime are kept. SHA-256 is computed on the bytes as they stream;
-- verify=true checks what is on disk under the final name after the rename
-- (download: the streamed hash against the remote before the rename, then the
-- local file re-hashed; upload: `sha256sum` of the renamed remote file; a large
-- file over several streams: see there); a mismatch leaves nothing under the
-- final name (moved back to .part / removed).
-- Remote hashes read the file on stdin, so any file name (newline, backslash,
-- leading dash, invalid UTF-8) works: sha256sum's escaped name is never parsed.
-- Inside a directory, symlinks are recreated as symlinks with the same target
-- (never followed: a link out of the tree stays a link), and FIFOs, sockets and
-- devices are skipped with one line each on stderr; a special file given as the
-- source itself is refused at once (opening a FIFO would block).
-- opts: verify, resume (default true), idempotent (default true: a lost
-- connection reconnects and resumes), stall_timeout (s without progress, 120),
-- lock_wait (s to wait for another transfer's lock, 0), progress ("json" for JSON
-- lines on stderr off a TTY; a bar on a TTY by default; false for none;
-- GPURENT_PROGRESS=json also selects JSON).
-- Returns {bytes, sent, resumed_from, sha256, elapsed, path} (directories:
-- {files = {...}, links = {{path, target}}, skipped = {{path, type}}, bytes,
-- in_flight = the most files that were in flight at once}).
-- Directories move with many files in flight over SFTP channels of their own
-- (see "trees" below; opts.streams: how many channels, 1-8, default 4;
-- opts.pipelined=false: one file at a time over the libssh2 session, as before),
-- and a re-sent tree skips what is already there (see "incremental re-send"); a
-- tree that is all there already costs one exec on the box ("an unchanged tree").
-- A large file on a long link moves as blocks over several channels at once
-- (see "one large file over several streams"; opts.streams sets the count, 1 the
-- single stream). Results carry sent (file data that crossed the link), and
-- streams for a file.
local lfs = require "lfs"
local core = require "gpurent.core"
local ssh = require "gpurent.transport.ssh"
local sched = require "gpurent.transport.sched"
local instance = require "gpurent.transport.instance"
local lock = require "gpurent.transport.lock"
local hash = require "gpurent.util.hash"

local now = core.sys.now
local q = instance.shell_quote
local transfer = {}

-- A large file's streams (see "one large file over several streams" below).
local RANGE_BLOCK, RANGE_MIN, RANGE_RATE, RANGE_MIN_RTT = 4 << 20, 16 << 20, 256 << 20, 0.002
local RANGE_FAR_RTT = 0.02   -- a first stat this slow is a long link, not a cold start
local RANGE_JOBS = 2     -- blocks in flight per stream

-- opts.streams (1-8; default 4 for trees)
local function streams_of(opts)
  local n = tonumber(opts.streams) or 4
  return math.max(1, math.min(8, math.floor(n)))
end

-- ---- progress ----------------------------------------------------------------

local function human(n)
  local units = {"B", "KiB", "MiB", "GiB", "TiB"}
  local i = 1
  while n >= 1024 and i < #units do n = n / 1024; i = i + 1 end
  return string.format(i == 1 and "%d %s" or "%.1f %s", n, units[i])
end

-- A name as valid UTF-8 for JSON and the terminal: invalid bytes as \xHH.
local function printable(s)
  local out, i = {}, 1
  while i <= #s do
    local ok, bad = utf8.len(s, i)
    if ok then out[#out + 1] = s:sub(i); break end
    out[#out + 1] = s:sub(i, bad - 1) .. string.format("\\x%02X", s:byte(bad))
    i = bad + 1
  end
  return table.concat(out)
end

local function progress(opts, verb, name, total, start)
  name = printable(name)
  local mode = opts.progress
  if mode == nil then
    if core.sys.isatty(2) then mode = "bar"
    elseif os.getenv("GPURENT_PROGRESS") == "json" then mode = "json" end
  end
  local p = {t0 = now(), last = 0, start = start}
  function p.update(done, final)
    if not mode then return end
    local t = now()
    if not final and t - p.last < (mode == "json" and 1 or 0.1) then return end
    p.last = t
    local rate = (done - start) / math.max(t - p.t0, 1e-6)
    local eta = rate > 0 and (total - done) / rate or 0
    if mode == "json" then
      io.stderr:write(require("gpurent.util.json").encode({event = "transfer", op = verb, file = name,
        bytes = done, total = total, rate = math.floor(rate), eta = math.floor(eta), done = final or false}), "\n")
    else
      io.stderr:write(string.format("\r%s %s  %s / %s  %s/s  ETA %d:%02d%s", verb, name, human(done),
        human(total), human(rate), math.floor(eta / 60), math.floor(eta % 60), final and "\n" or "   "))
    end
    io.stderr:flush()
  end
  return p
end

-- ---- helpers -----------------------------------------------------------------

local function octal_mode(perm)
  local m = 0
  for i = 1, 9 do
    if perm:sub(i, i) ~= "-" then m = m | (1 << (9 - i)) end
  end
  return m
end

local function basename(p) return p:match("([^/]+)/*$") or p end

-- sha256 of a remote file (or of its first n bytes) by running sha256sum there.
-- The file is read on stdin: sha256sum then prints "HASH  -", never the name
-- (which it would escape with a leading backslash when it holds \ or a newline).
-- openssl's SHA-256 is several times faster than coreutils' (SHA-NI); sha256sum
-- where the box has no openssl. Both print the hash first on each line.
local BOX_SHA = "{ if command -v openssl >/dev/null 2>&1; then openssl dgst -sha256 -r; else sha256sum; fi; }"
local BOX_SHA_NAMES = "if command -v openssl >/dev/null 2>&1; then xargs -0 openssl dgst -sha256 -r --; " ..
  "else xargs -0 sha256sum --; fi"

local function remote_sha256(conn, path, n)
  local cmd = n and string.format("head -c %d < %s | %s", n, q(path), BOX_SHA) or (BOX_SHA .. " < " .. q(path))
  local r = instance.exec_on(conn, cmd, {timeout = 3600})
  if r.code ~= 0 then return nil, r.stderr end
  return r.stdout:match("^(%x+)")
end

-- The end of a download: when verifying, the box's SHA-256 (`remote`, nil when the
-- box gave none) must equal the streamed one, else the .part is removed and the error
-- raised; then mode and mtime are set and the .part takes its final name.
local function finish_download(conn, src, part, dst, rst, sha, verify, remote)
  if verify and remote ~= sha then
    os.remove(part)
    ssh.error("transfer", conn, string.format("SHA-256 mismatch after download of %s: local %s, remote %s; %s removed",
      src, sha, tostring(remote), part), {reason = "verify"})
  end
  if rst.mode then core.ssh.chmod(part, rst.mode) end
  if rst.mtime then lfs.touch(part, rst.atime or rst.mtime, rst.mtime) end
  local rok, rerr = os.rename(part, dst)
  if not rok then error("get: cannot rename " .. part .. " to " .. dst .. ": " .. tostring(rerr), 0) end
end

-- An upload's check after the rename: the box's SHA-256 of what is on disk under the
-- final name; on a mismatch the file goes back to its .part name and the error says so.
local function verify_renamed(conn, src, dst, part, sha)
  local remote = remote_sha256(conn, dst)
  if remote == sha then return end
  instance.exec_on(conn, "mv -f -- " .. q(dst) .. " " .. q(part), {timeout = 60})
  ssh.error("transfer", conn, string.format("SHA-256 mismatch after upload of %s: local %s, remote %s on disk; " ..
    "moved back to %s", src, sha, tostring(remote), part), {reason = "verify"})
end

local function step_loop(conn, x, stall, prog, offset)
  while true do
    local r, n = x:step()
    if r == false then
      if ssh.wait(conn, n, now() + stall) == 0 then
        ssh.error("timeout", conn, string.format("transfer stalled: no progress for %gs", stall))
      end
    elseif r == true then
      prog.update(offset + n, true)
      return
    else
      prog.update(offset + r)
      sched.yield()
    end
  end
end

-- A failed remote write: say "disk full" when the remote filesystem is.
local function explain_write_error(conn, sftp, dir, remaining, err)
  if ssh.is_connection_loss(conn, err) then error(err, 0) end
  local ok, vfs = pcall(ssh.run, conn, now() + 10, "statvfs", sftp.statvfs, sftp, dir)
  if ok and vfs then
    local free = vfs.bavail * vfs.frsize
    if free < remaining then
      ssh.error("transfer", conn, string.format(
        "remote disk full: %s has %s free, %s more needed; the partial upload is left as .part (not renamed)",
        dir, human(free), human(remaining)), {reason = "disk_full", cause = tostring(err)})
    end
  end
  ssh.error("transfer", conn, tostring(err):gsub("^.-: ", "") .. " (partial upload left as .part)", {cause = err})
end

-- ---- owning the destination ----------------------------------------------------

local function locked_error(inst, verb, dst, why, holder, remove)
  ssh.error("transfer", inst.conn, string.format(
    "%s: %s is being written by another transfer, %s. Wait for it to finish (or pass lock_wait=SECONDS); " ..
    "if that process is gone from a machine gpurent cannot check, remove the lock: %s",
    verb, printable(dst), why, remove), {reason = "locked", holder = holder})
end

local function stale_notice(verb)
  return function(holder, path)
    io.stderr:write(string.format("%s: broke a stale lock %s (holder %s is gone)\n", verb, path, lock.describe(holder)))
  end
end

-- fn() with <dst>.part.lock held; the lock is released however fn ends.
local finish_closing   -- (trees below): channel closes an engine left under way
local spare_steps, drop_spare   -- (the spare channel below): the lock's steps on it; its close
local trace

local function lock_path(dst) return dst .. ".part.lock" end

-- A put that broke a dead holder's lock: that holder's writes may still be landing
-- in the .part (its socket buffers drain, the link delivers what was in flight,
-- through the SFTP server it left, which holds the .part open until its connection
-- ends). Resumed now, they would land inside the file this put names final after
-- checking it. Wait (opts.stale_wait, 15 s) until nothing on the box has the .part
-- open for writing (remote/writers_quiet.sh); past it, an SFTP server still holding
-- it (a dropped link can leave the dead transfer's session half-open for hours) is
-- ended by its PID, and any other writer refuses the put, named.
local STALE_WAIT = 15

local function stale_writers_script(part, opts)
  return require("gpurent.remote").script("writers_quiet", {FILE = part, WAIT = math.ceil(opts.stale_wait or STALE_WAIT)})
end

-- A line of writers_quiet.sh: "waiting PID COMM" and "ended PID COMM" are told on stderr.
local function stale_writer_notice(verb, part, line)
  local what, pid, comm = line:match("^(%a+) (%d+) (.*)$")
  if what == "waiting" then
    io.stderr:write(string.format("%s: waiting for PID %s (%s) on the box to close %s: the killed transfer's " ..
      "writes may still be arriving\n", verb, pid, comm, printable(part)))
  elseif what == "ended" then
    io.stderr:write(string.format("%s: ended PID %s (%s) on the box: it still held %s open for writing, for a " ..
      "transfer whose process is gone\n", verb, pid, comm, printable(part)))
  end
end

-- writers_quiet.sh's exit code and output: nothing when quiet, else the refusal.
local function stale_writers_verdict(conn, verb, part, opts, code, stdout, stderr)
  if code == 0 then return end
  local left = {}
  for pid, comm in (stdout or ""):gmatch("held (%d+) ([^\n]*)") do left[#left + 1] = "PID " .. pid .. " (" .. comm .. ")" end
  ssh.error("transfer", conn, string.format("%s: %s is still open for writing on the box %ds after its lock's " ..
    "holder died: %s. It is not an SFTP server gpurent may end; retry once it is done, or end %s on the box",
    verb, printable(part), math.ceil(opts.stale_wait or STALE_WAIT), #left > 0 and table.concat(left, ", ") or
    ("exit " .. tostring(code) .. ": " .. tostring(stderr)), #left > 1 and "them" or "it"), {reason = "stale_writers"})
end

local function stale_writers_quiet(inst, verb, part, opts)
  local r = inst:sh(stale_writers_script(part, opts), {on_line = function(line) stale_writer_notice(verb, part, line) end})
  stale_writers_verdict(inst.conn, verb, part, opts, r.code, r.stdout, r.stderr)
end

local function owning(inst, verb, dst, opts, fn)
  local path = lock_path(dst)
  local h, why, holder
  if verb == "put" then
    h, why, holder = lock.acquire_remote(lock.box_ops(inst, spare_steps), path,
      {wait = opts.lock_wait, on_stale = stale_notice(verb)})
    if not h then
      if inst.conn then pcall(drop_spare, inst.conn) end
      locked_error(inst, verb, dst, why, holder, "rm -- " .. q(path) .. " on the box")
    end
  else
    h, why, holder = lock.acquire_local(path, {wait = opts.lock_wait})
    if not h then locked_error(inst, verb, dst, why, holder, "rm -- " .. q(path)) end
  end
  local ok, res = pcall(function()
    if h.broke_stale then stale_writers_quiet(inst, verb, dst .. ".part", opts) end
    return fn()
  end)
  pcall(h.release, h)   -- a lock left behind is stale for the next taker, never wrong
  if inst.conn then pcall(finish_closing, inst.conn); pcall(drop_spare, inst.conn) end
  if not ok then error(res, 0) end
  return res
end

-- ---- upload --------------------------------------------------------------------

local function put_file_owned(inst, src, dst, opts)
  local st = lfs.attributes(src)
  if not st then error("put: cannot read " .. src, 0) end
  local size, mode = st.size, octal_mode(st.permissions)
  local part = dst .. ".part"
  local rdir = dst:match("^(.*)/[^/]*$") or "."
  return inst:with_session(opts.idempotent ~= false, function(conn)
    local t0 = now()
    local stall = opts.stall_timeout or 120
    local sftp = inst:sftp_of(conn)
    local function run(op, step, ...) return ssh.run(conn, now() + stall, op, step, ...) end
    local offset = 0
    if opts.resume ~= false then
      local pst = run("stat " .. part, sftp.stat, sftp, part)
      if pst and pst.size and pst.size > 0 and pst.size <= size then offset = pst.size end
    end
    local h = run("open " .. part, sftp.open, sftp, part, offset > 0 and "a" or "w", 384)
    local x = h:transfer(src, "up", offset)
    if offset > 0 and remote_sha256(conn, part, offset) ~= x:hex() then
      run("close", h.close, h)      -- the .part is not a prefix of this file: start over
      x:finish()
      offset = 0
      h = run("open " .. part, sftp.open, sftp, part, "w", 384)
      x = h:transfer(src, "up", 0)
    end
    local prog = progress(opts, "put", src, size, offset)
    local ok, err = pcall(function()
      step_loop(conn, x, stall, prog, offset)
      run("set mode/mtime " .. part, h.fsetstat, h, {mode = mode, mtime = st.modification, atime = st.access})
      run("fsync " .. part, h.fsync, h)
      run("close " .. part, h.close, h)
    end)
    if not ok then
      pcall(run, "close", h.close, h)
      explain_write_error(conn, sftp, rdir, size - offset - 0, err)
    end
    local sha = x:hex()
    x:finish()
    local renamed = run("rename " .. part, sftp.rename, sftp, part, dst)
    if not renamed then
      local r = instance.exec_on(conn, "mv -f -- " .. q(part) .. " " .. q(dst), {})
      if r.code ~= 0 then ssh.error("transfer", conn, "cannot rename " .. part .. " to " .. dst .. ": " .. r.stderr) end
    end
    if opts.verify then verify_renamed(conn, src, dst, part, sha) end   -- on disk, not what was streamed
    return {path = dst, bytes = size, sent = size - offset, resumed_from = offset, sha256 = sha,
            elapsed = now() - t0, verified = opts.verify and true or nil, streams = 1}
  end)
end

local function put_file(inst, src, dst, opts)
  local n = transfer._file_streams(inst, opts, "put", lfs.attributes(src, "size") or 0, dst:match("^(.*)/[^/]*$") or ".")
  return owning(inst, "put", dst, opts, function()
    if n > 1 then return transfer._put_ranged(inst, src, dst, opts, n) end
    return put_file_owned(inst, src, dst, opts)
  end)
end

-- A remote stat -> attrs | false. Its round trip is kept on the connection
-- (conn.stat_rtt): the stream count of a large file is chosen from it without
-- asking again. spare: ask it on the spare channel (opened first when there is none).
local spare_stat
local function remote_stat(inst, path, spare)
  return inst:with_session(true, function(conn)
    if spare then return spare_stat(inst, conn, path) end
    local sftp = inst:sftp_of(conn)
    local t0 = now()
    local st = ssh.run(conn, now() + 60, "stat " .. path, sftp.stat, sftp, path) or false
    conn.stat_rtt = now() - t0
    return st
  end)
end

-- Make a remote directory; below the top one (the caller's choice), an existing
-- one must be a directory, not a symlink to one (it could lead out of the tree).
local function remote_mkdir(inst, path, top)
  inst:with_session(true, function(conn)
    local sftp = inst:sftp_of(conn)
    local ok = ssh.run(conn, now() + 60, "mkdir " .. path, sftp.mkdir, sftp, path, 493)
    if not ok then
      local st = ssh.run(conn, now() + 60, "lstat " .. path, sftp.stat, sftp, path, not top)
      if not st or st.type ~= "directory" then
        ssh.error("transfer", conn, "cannot create remote directory " .. path ..
          (st and (": a " .. st.type .. " is in the way (never written through)") or ""))
      end
    end
  end)
end

-- Recreate a symlink on the box: same target bytes, replacing a file or link
-- of that name (never a directory).
local function remote_symlink(inst, target, path)
  inst:with_session(true, function(conn)
    local sftp = inst:sftp_of(conn)
    local function run(op, step, ...) return ssh.run(conn, now() + 60, op .. " " .. path, step, ...) end
    local st = run("lstat", sftp.stat, sftp, path, true)
    if st and st.type == "directory" then ssh.error("transfer", conn, "cannot create symlink " .. path .. ": a directory is in the way") end
    if st then run("unlink", sftp.unlink, sftp, path) end
    run("symlink", sftp.symlink, sftp, target, path)
    local made, why = run("readlink", sftp.readlink, sftp, path)   -- the symlink call's answer is unreliable
    if made ~= target then
      ssh.error("transfer", conn, "cannot create symlink " .. path .. " -> " .. target .. ": " .. tostring(made or why))
    end
  end)
end


-- ---- trees: many files in flight ------------------------------------------------
-- A directory is moved over raw SFTP channels (sess:sftp_raw, runtime/sftp.c) on
-- which this file speaks SFTP v3 itself: libssh2 1.10 keeps one open/stat/rename/
-- fsync... state per SFTP session, so a second request of a kind in flight
-- through it would be answered with the first's reply. Each file is a coroutine
-- (a job) that sends its requests and yields until their answers arrive; the
-- engine keeps up to TREE_JOBS files in flight over `streams` channels (default
-- 4), so a tree costs a few round trips, not a few per file. Per file, as for a
-- single one: the destination lock, .part + rename, resume after a prefix hash
-- match, mode and mtime, SHA-256 streamed. verify=true: get compares each file's
-- streamed hash with the box's sha256sum (one exec for the tree, running while
-- the data moves: a file changed in between fails), then re-hashes it on disk
-- after the rename; put feeds each renamed file's name to one `sha256sum` exec
-- on the box as it lands and moves mismatches back to .part. The remote locks of
-- a put are held until that check is done. Local .part files are made durable
-- before their rename by one `sync -f` (syncfs) for many files, else an fsync
-- each; on the box by fsync@openssh.com per file. Names are never parsed from
-- sha256sum's output (only the hash that starts each line).
local TREE_JOBS, TREE_CHUNK, TREE_WINDOW = 256, 65536, 32
local P = {OPEN = 3, CLOSE = 4, READ = 5, WRITE = 6, LSTAT = 7, SETSTAT = 9, FSETSTAT = 10, OPENDIR = 11, READDIR = 12,
           REMOVE = 13, MKDIR = 14, STAT = 17, RENAME = 18, READLINK = 19, SYMLINK = 20, EXTENDED = 200,
           STATUS = 101, HANDLE = 102, DATA = 103, NAME = 104, ATTRS = 105}
local FXF_READ, FXF_WRITE, FXF_CREAT, FXF_TRUNC = 1, 2, 8, 16
local spack, sunpack = string.pack, string.unpack

local TYPES = {[0x4000] = "directory", [0x8000] = "file", [0xA000] = "link", [0x1000] = "named pipe",
               [0xC000] = "socket", [0x2000] = "char device", [0x6000] = "block device"}

local function pack_attrs(a)
  local flags, parts = 0, {}
  if a.mode then flags = flags | 4; parts[#parts + 1] = spack(">I4", a.mode) end
  if a.mtime then flags = flags | 8; parts[#parts + 1] = spack(">I4I4", a.atime or a.mtime, a.mtime) end
  return spack(">I4", flags) .. table.concat(parts)
end

local function unpack_attrs(s, pos)
  local flags
  flags, pos = sunpack(">I4", s, pos)
  local a = {}
  if flags & 1 ~= 0 then a.size, pos = sunpack(">I8", s, pos) end
  if flags & 2 ~= 0 then pos = pos + 8 end
  if flags & 4 ~= 0 then
    local p
    p, pos = sunpack(">I4", s, pos)
    a.mode, a.type = p & 4095, TYPES[p & 0xF000] or "other"
  end
  if flags & 8 ~= 0 then a.atime, a.mtime, pos = sunpack(">I4I4", s, pos) end
  if flags & 0x80000000 ~= 0 then
    local n
    n, pos = sunpack(">I4", s, pos)
    for _ = 1, n do local _k; _k, pos = sunpack(">s4", s, pos); _k, pos = sunpack(">s4", s, pos) end
  end
  return a, pos
end

local STATUS_NAMES = {[0] = "ok", "end of file", "no such file", "permission denied",
  "failure (on OpenSSH often: no space left on device)", "bad message", "no connection", "connection lost",
  "operation unsupported"}

local Chan = {}
Chan.__index = Chan

function Chan:queue(bytes) self.out[#self.out + 1] = bytes end

-- Send what is queued as far as the channel's window takes it -> progressed,
-- held (a packet is partly sent: this same write must be repeated before
-- anything else sends on the session; runtime/sftp.c outbound_pending).
function Chan:flush()
  local progressed = false
  for _ = 1, 64 do
    if not self.pending then
      if #self.out == 0 then return progressed, false end
      self.pending, self.ppos, self.out = table.concat(self.out), 1, {}
    end
    local n, held = self.raw:write(self.pending, self.ppos)
    if n == false then return progressed, (held & 2) ~= 0 end
    progressed = true
    self.ppos = self.ppos + n
    if self.ppos > #self.pending then self.pending = nil end
    if held then return progressed, true end
  end
  return progressed, false
end

-- Read what has arrived and hand each complete packet to on_packet(type, body)
-- -> progressed, held (as for flush: a read sends window adjusts).
function Chan:pump(on_packet)
  local data, eof, held = self.raw:read()
  if data == false then return false, (eof & 2) ~= 0 end
  if eof and data == "" then ssh.error("connection", self.eng.conn, "the SFTP channel was closed by the box") end
  local buf = self.ipos > #self.inbuf and data or (self.inbuf:sub(self.ipos) .. data)
  local pos, n = 1, #buf
  while n - pos + 1 >= 5 do
    local len = sunpack(">I4", buf, pos)
    if n - pos + 1 < 4 + len then break end
    on_packet(buf:byte(pos + 4), buf:sub(pos + 5, pos + 3 + len))
    pos = pos + 4 + len
  end
  self.inbuf, self.ipos = buf, pos
  if pos > n then self.inbuf, self.ipos = "", 1 end
  return true, held
end

local Engine = {}
Engine.__index = Engine

-- Open nchan more SFTP channels on the engine's session. Channels open one at a
-- time (libssh2 keeps a channel open's state per session), each one's subsystem
-- request and INIT overlapping the next's open.
function Engine:open_channels(nchan)
  local e, conn = self, self.conn
  local target = #self.chans + nchan
  local ok, err = pcall(function()
    local to_open, deadline = nchan, now() + 30
    while true do
      local progressed, dirs, ready = false, 1, 0
      if to_open > 0 then
        local raw, d = conn.sess:sftp_raw()
        if raw then
          to_open = to_open - 1
          progressed = true
          e.chans[#e.chans + 1] = setmetatable({raw = raw, eng = e, out = {}, inbuf = "", ipos = 1, exts = {},
            phase = "start"}, Chan)
        else dirs = dirs | d end
      end
      for _, c in ipairs(e.chans) do
        if c.phase == "start" then
          local r, d = c.raw:start()
          if r then
            c.phase = "init"
            c:queue(spack(">I4BI4", 5, 1, 3))
            progressed = true
          else dirs = dirs | d end
        end
        if c.phase == "init" then
          if c:flush() then progressed = true end
          if c.pending then dirs = dirs | 2 end
          if c:pump(function(t, body)
            if t ~= 2 then ssh.error("transfer", conn, "SFTP server answered INIT with packet type " .. t) end
            local _, pos = sunpack(">I4", body)
            while pos <= #body do
              local name, data
              name, data, pos = sunpack(">s4s4", body, pos)
              c.exts[name] = data
            end
            c.phase = "ready"
          end) then progressed = true end
        end
        if c.phase == "ready" then ready = ready + 1 end
      end
      if to_open == 0 and ready == target then return end
      for _, c in ipairs(e.chans) do
        if c.phase == "init" and c.raw:buffered() then progressed = true end
      end
      if not progressed and ssh.wait(conn, dirs, deadline) == 0 then
        ssh.error("timeout", conn, "SFTP channels did not open within 30s")
      end
    end
  end)
  if not ok then e:close(); error(err, 0) end
end

-- An engine on conn with nchan SFTP channels open.
local function new_engine(inst, conn, opts, nchan)
  local e = setmetatable({inst = inst, conn = conn, opts = opts, stall = opts.stall_timeout or 120, chans = {},
    next_id = 1, waiters = {}, replies = {}, ignore = {}, bytes = 0, files = 0}, Engine)
  e:open_channels(nchan)
  return e
end

-- The rest of a tree's channels, once it is known that files will move.
function Engine:widen(streams, files)
  for _, f in ipairs(files) do
    if not f.unchanged then
      if #self.chans < streams then self:open_channels(streams - #self.chans) end
      return
    end
  end
end

-- Close every channel at once: each close waits for the box's CLOSE, so one
-- after the other would cost a round trip per channel (8 streams at 200 ms: 1.6 s).
-- A close whose packet is partly sent is finished before the next one sends.
-- later: send the closes and leave the answers to arrive while the caller goes
-- on (conn.closing; finish_closing(conn) completes them).
function Engine:close(later)
  local open, deadline = self.chans, now() + 5
  self.chans = {}
  if later then
    local left = {}
    for _, c in ipairs(open) do
      local ok, r, d = pcall(c.raw.close, c.raw)
      while ok and r == false and (d & 2) ~= 0 and now() < deadline do   -- partly sent: finish it
        ssh.wait(self.conn, d, deadline)
        ok, r, d = pcall(c.raw.close, c.raw)
      end
      if ok and r == false then left[#left + 1] = c end
    end
    self.conn.closing = left
    return
  end
  while #open > 0 do
    local left, dirs = {}, 0
    for _, c in ipairs(open) do
      local ok, r, d = pcall(c.raw.close, c.raw)
      while ok and r == false and (d & 2) ~= 0 and now() < deadline do
        ssh.wait(self.conn, d, deadline)
        ok, r, d = pcall(c.raw.close, c.raw)
      end
      if ok and r == false then left[#left + 1] = c; dirs = dirs | d end
    end
    open = left
    if #open > 0 and (now() >= deadline or ssh.wait(self.conn, dirs, deadline) == 0) then return end
  end
end

-- Complete the channel closes an engine left under way (Engine:close(true)).
finish_closing = function(conn)
  local left = conn and conn.closing
  if not left or #left == 0 then return end
  conn.closing = nil
  setmetatable({conn = conn, chans = left}, Engine):close()
end

-- In a job: send a request (payload without the id) on channel c -> id.
function Engine:send(c, typ, payload, data)
  local id = self.next_id
  self.next_id = id % 0xFFFFFFFF + 1
  c:queue(spack(">I4BI4", 5 + #payload + (data and #data or 0), typ, id) .. payload)
  if data then c:queue(data) end
  return id
end

-- In a job: the answer to id -> type, body (body[5..] follows the id).
function Engine:await(id)
  local r = self.replies[id]
  if r then self.replies[id] = nil; return r[1], r[2] end
  r = coroutine.yield(id)
  return r[1], r[2]
end

function Engine:call(c, typ, payload) return self:await(self:send(c, typ, payload)) end

-- In a job: a request whose answer nobody reads (closing a handle that was only read).
function Engine:post(c, typ, payload) self.ignore[self:send(c, typ, payload)] = true end
-- A request sent whose answer is no longer wanted, whether it has come yet or not.
function Engine:forget(id)
  if self.replies[id] then self.replies[id] = nil else self.ignore[id] = true end
end

local trace_t0
trace = function(what)
  if os.getenv("GPURENT_TREE_TRACE") then
    trace_t0 = trace_t0 or now()
    io.stderr:write(string.format("tree %.3f %s\n", now() - trace_t0, what))
  end
end

-- A STATUS answer -> code, message
local function status_of(t, body)
  if t ~= P.STATUS then return nil end
  local code = sunpack(">I4", body, 5)
  local ok, msg = pcall(sunpack, ">s4", body, 9)
  return code, ok and msg ~= "" and msg or STATUS_NAMES[code] or ("SFTP status " .. code)
end

function Engine:fail(op, path, t, body)
  local code, msg = status_of(t, body)
  ssh.error("transfer", self.conn, string.format("%s %s: %s", op, printable(path),
    code and string.format("%s (SFTP status %d)", STATUS_NAMES[code] or msg, code) or ("unexpected SFTP answer " .. t)),
    {status = code})
end

-- Ops answering ok -> true; a STATUS error -> nil, code, message.
function Engine:simple(c, typ, payload)
  local t, body = self:call(c, typ, payload)
  local code, msg = status_of(t, body)
  if code == 0 then return true end
  return nil, code, msg
end

function Engine:stat(c, path, l)
  local t, body = self:call(c, l and P.LSTAT or P.STAT, spack(">s4", path))
  if t == P.ATTRS then return (unpack_attrs(body, 5)) end
  return nil, status_of(t, body)
end

function Engine:open(c, path, flags, attrs)
  local t, body = self:call(c, P.OPEN, spack(">s4I4", path, flags) .. pack_attrs(attrs or {}))
  if t ~= P.HANDLE then self:fail("open", path, t, body) end
  return (sunpack(">s4", body, 5))
end

-- id: a READLINK of path already sent (its answer is awaited).
function Engine:readlink(c, path, id)
  local t, body = self:await(id or self:send(c, P.READLINK, spack(">s4", path)))
  if t ~= P.NAME then return nil, select(2, status_of(t, body)) end
  return (sunpack(">s4", body, 9))
end

-- symlink(2) on OpenSSH: (target, link) in that order (see runtime/sftp.c).
function Engine:symlink(c, target, path) return self:simple(c, P.SYMLINK, spack(">s4s4", target, path)) end
function Engine:unlink(c, path) return self:simple(c, P.REMOVE, spack(">s4", path)) end
function Engine:rename(c, a, b, replace)
  if replace and c.exts["posix-rename@openssh.com"] then
    return self:simple(c, P.EXTENDED, spack(">s4s4s4", "posix-rename@openssh.com", a, b))
  end
  return self:simple(c, P.RENAME, spack(">s4s4", a, b))
end

-- ---- the spare channel ----------------------------------------------------------
-- A large file's put needs a raw channel for its blocks anyway: it opens that
-- one first (conn.spare, an engine with one ready channel) and takes every step
-- before and after the data on it, pipelined where the order allows: the
-- destination's stat, the lock's link with its read-back, the .part's stat with
-- its open, the lock's release. On libssh2's SFTP session (one request at a time,
-- and a channel of its own) those steps cost 11 round trips before the first
-- block, 0.55 s at 50 ms; on the spare, 6. The next engine on conn adopts it.

-- One job on the engine's first channel, run to its end -> its first result.
function Engine:one(fn) return self:run({fn}, 1)[1] end

-- conn's spare engine, opened now when there is none.
local function spare_of(inst, conn, opts)
  if not conn.spare then conn.spare = new_engine(inst, conn, opts or {}, 1) end
  return conn.spare
end

spare_stat = function(inst, conn, path)
  local eng = spare_of(inst, conn)
  local t0 = now()
  local st = eng:one(function(c) return eng:stat(c, path) end) or false
  conn.stat_rtt = now() - t0
  return st
end

-- The spare engine for a new transfer (nil when conn has none): taken off conn.
local function adopt_spare(conn, opts)
  local eng = conn.spare
  if not eng then return nil end
  conn.spare = nil
  eng.opts, eng.stall, eng.bytes, eng.files, eng.failed = opts, opts.stall_timeout or 120, 0, 0, nil
  return eng
end

-- The lock's four steps (gpurent.lock.box_ops) on conn's spare, when it has one.
-- The link is sent without waiting: its answer says nothing (whose link is at
-- the name decides, read back next), so link and read-back share a round trip.
spare_steps = function(conn)
  local eng = conn.spare
  if not eng then return nil end
  return {
    symlink = function(target, path)
      eng:one(function(c) eng:post(c, P.SYMLINK, spack(">s4s4", target, path)) end)
    end,
    -- a read-back the transfer sent with its last steps (eng.lock_read) is the answer
    readlink = function(path)
      local pre = eng.lock_read
      eng.lock_read = nil
      if pre and pre.path ~= path then eng.replies[pre.id] = nil; pre = nil end
      return eng:one(function(c) return eng:readlink(c, path, pre and pre.id) end)
    end,
    unlink = function(path) return eng:one(function(c) return eng:unlink(c, path) end) end,
    rename = function(a, b) return eng:one(function(c) return eng:rename(c, a, b) end) end,
  }
end

-- Close conn's spare; the answer arrives while the caller goes on (conn.closing).
drop_spare = function(conn)
  local eng = conn.spare
  conn.spare = nil
  if eng then eng:close(true) end
end

-- What a job yields besides a request id: POLL (resume me at the next turn: I
-- step something non-blocking, such as an exec channel), HASHES (resume me once
-- the box's hashes are in: Engine.hashes).
-- SYNCED (resume me once what I wrote locally is on disk: one syncfs for many
-- files instead of an fsync each; Engine.sync_dir names the filesystem).
local POLL, HASHES, SYNCED = {}, {}, {}

-- Run fns (job functions) with up to limit in flight -> their results in order
-- (self.per_chan: instead, that many per usable channel, as channels are added by
-- a background job; a channel marked busy is pumped but given no new job).
-- background: job functions run at once beside them, outside the limit (their
-- results are dropped). A failing job stops new ones from starting; those
-- running finish; the first error is raised.
function Engine:run(fns, limit, on_progress, background)
  limit = limit or TREE_JOBS
  self.peak = 0
  local results, nexti, active, first_err = {}, 1, 0, nil
  local nchan = #self.chans
  local pollers, hash_waiters, sync_waiters = {}, {}, {}
  local load, chan_of, fg = {}, {}, 0   -- jobs running per channel: a new job goes to the least loaded
  local function ended(co)
    active = active - 1
    local c = chan_of[co]
    if c then load[c] = load[c] - 1; chan_of[co] = nil; fg = fg - 1 end
  end
  local function usable()
    local n = 0
    for _, c in ipairs(self.chans) do if not c.busy then n = n + 1 end end
    return n
  end
  local function step(co, i, arg)
    local ok, v = coroutine.resume(co, arg)
    if not ok then
      ended(co)
      if not first_err then first_err = v; self.failed = true end
    elseif coroutine.status(co) == "dead" then
      ended(co)
      if i then results[i] = v end
    elseif v == POLL then pollers[#pollers + 1] = {co, i}
    elseif v == HASHES then hash_waiters[#hash_waiters + 1] = {co, i}
    elseif v == SYNCED then sync_waiters[#sync_waiters + 1] = {co, i}
    else
      self.waiters[v] = {co, i}
    end
  end
  -- a job may start a background job of its own (the opener, one per channel)
  function self.spawn(fn)
    active = active + 1
    step(coroutine.create(fn), nil)
  end
  for _, fn in ipairs(background or {}) do self.spawn(function() return fn(self.chans[1]) end) end
  local function on_packet(t, body)
    if #body < 4 then return end
    local id = sunpack(">I4", body)
    local w = self.waiters[id]
    if w then self.waiters[id] = nil; step(w[1], w[2], {t, body})
    elseif self.ignore[id] then self.ignore[id] = nil
    else self.replies[id] = {t, body} end
  end
  local last_progress = now()
  while true do
    while not first_err and nexti <= #fns and fg < (self.per_chan and self.per_chan * usable() or limit) do
      local i, fn = nexti, fns[nexti]
      local c = self.chans[(i - 1) % nchan + 1]
      for _, o in ipairs(self.chans) do
        if not o.busy and (c.busy or (load[o] or 0) < (load[c] or 0)) then c = o end
      end
      if c.busy then break end
      nexti = nexti + 1
      active, fg = active + 1, fg + 1
      if active > (self.peak or 0) then self.peak = active end
      local co = coroutine.create(function() return fn(c) end)
      chan_of[co], load[c] = c, (load[c] or 0) + 1
      step(co, i)
    end
    if active == 0 then break end
    local progressed, pending = false, false
    local h = self.holder
    if type(h) == "table" then    -- only the call that left a packet partly sent may go on
      local p, held
      if h[2] == "w" then p, held = h[1]:flush() else p, held = h[1]:pump(on_packet) end
      if not held then self.holder = nil end
      progressed, pending = p, held
    elseif not h then
      for _, c in ipairs(self.chans) do
        local p1, held1 = c:flush()
        if held1 then self.holder = {c, "w"}; pending = true; progressed = progressed or p1; break end
        local p2, held2 = c:pump(on_packet)
        if held2 then self.holder = {c, "r"}; pending = true; progressed = true; break end
        local p3, held3 = c:flush()
        if held3 then self.holder = {c, "w"}; pending = true; progressed = true; break end
        if p1 or p2 or p3 then progressed = true end
        pending = pending or c.pending ~= nil
      end
    end
    if #pollers > 0 and type(self.holder) ~= "table" then   -- a job holding the session is among them
      local ps = pollers
      pollers = {}
      self.polled = false
      for _, w in ipairs(ps) do step(w[1], w[2]) end
      if self.polled then progressed = true end
    end
    if #sync_waiters > 0 and (not progressed or #sync_waiters >= 64 or active == #sync_waiters) then
      local sw = sync_waiters
      sync_waiters = {}
      self:sync(sw)
      for _, w in ipairs(sw) do step(w[1], w[2]) end
      progressed = true
    end
    if self.hashes and #hash_waiters > 0 then
      local hw = hash_waiters
      hash_waiters = {}
      for _, w in ipairs(hw) do step(w[1], w[2]) end
      progressed = true
    end
    if active == 0 then progressed = true end   -- the last job ended in this turn: nothing to wait for
    if not progressed then
      -- reading one channel drains the socket for all: data read for another
      -- is in libssh2's buffers, where polling the socket would not see it
      for _, c in ipairs(self.chans) do
        if c.raw:buffered() then progressed = true; break end
      end
    end
    if progressed then
      last_progress = now()
      if on_progress then on_progress(false) end
    elseif ssh.wait(self.conn, pending and 3 or 1, #pollers > 0 and math.min(now() + 0.05, last_progress + self.stall)
                    or last_progress + self.stall) == 0 and now() >= last_progress + self.stall then
      if os.getenv("GPURENT_TREE_TRACE") then
        local nw, nr = 0, 0
        for _ in pairs(self.waiters) do nw = nw + 1 end
        for _ in pairs(self.replies) do nr = nr + 1 end
        local cs = {}
        for k, c in ipairs(self.chans) do
          cs[#cs + 1] = string.format("ch%d out=%d pending=%s inbuf=%d", k, #c.out, tostring(c.pending and #c.pending - c.ppos + 1),
            #c.inbuf - c.ipos + 1)
        end
        trace(string.format("STALL active=%d waiters=%d replies=%d pollers=%d hashw=%d syncw=%d holder=%s hashes=%s next=%d/%d %s",
          active, nw, nr, #pollers, #hash_waiters, #sync_waiters, tostring(self.holder), tostring(self.hashes), nexti, #fns,
          table.concat(cs, "; ")))
      end
      ssh.error("timeout", self.conn, string.format("transfer stalled: no progress for %gs", self.stall))
    end
  end
  if first_err then error(first_err, 0) end
  return results
end

-- Make what the waiting jobs wrote durable: syncfs(2) of the destination's
-- filesystem by `sync -f` (one journal commit for them all); without it, an
-- fsync per file (each job named its file in self.to_sync).
function Engine:sync(waiting)
  local files = self.to_sync or {}
  self.to_sync = {}
  if #files == 0 then return end
  if self.sync_dir and self.syncfs ~= false then
    if os.execute("sync -f -- " .. q(self.sync_dir) .. " 2>/dev/null") then return end
    self.syncfs = false
  end
  local fs = require "gpurent.util.fs"
  for _, p in ipairs(files) do pcall(fs.fsync, p) end
end

-- Entries of the remote directories dirs -> {dir = {{name, type, size, mode, mtime, atime}...}}
-- (missing_ok: false for a directory that cannot be opened; background: jobs run beside)
function Engine:list_dirs(dirs, missing_ok, background)
  local fns = {}
  for i, dir in ipairs(dirs) do
    fns[i] = function(c)
      local t, body = self:call(c, P.OPENDIR, spack(">s4", dir))
      if t ~= P.HANDLE and missing_ok then return false end
      if t ~= P.HANDLE then self:fail("open directory", dir, t, body) end
      local h = sunpack(">s4", body, 5)
      local hp = spack(">s4", h)
      local out, ended = {}, false
      -- READDIRs four at a time: a directory of a few hundred entries in one round trip
      while not ended do
        local ids = {}
        for k = 1, 4 do ids[k] = self:send(c, P.READDIR, hp) end
        for _, id in ipairs(ids) do
          t, body = self:await(id)
          if ended then
            -- answers after the end: dropped
          elseif t ~= P.NAME then
            local code = status_of(t, body)
            if code ~= 1 then self:fail("readdir", dir, t, body) end
            ended = true
          else
            local count, pos = sunpack(">I4", body, 5)
            for _ = 1, count do
              local name, a
              name, _, pos = sunpack(">s4s4", body, pos)
              a, pos = unpack_attrs(body, pos)
              if name ~= "." and name ~= ".." then
                out[#out + 1] = {name = name, type = a.type or "other", size = a.size, mode = a.mode, mtime = a.mtime,
                                 atime = a.atime}
              end
            end
          end
        end
      end
      self:post(c, P.CLOSE, spack(">s4", h))
      table.sort(out, function(x, y) return x.name < y.name end)
      return out
    end
  end
  return self:run(fns, 512, nil, background)
end

-- One exec hashing items on the box: "all:PATH" (the whole file) or "N:PATH"
-- (its first N bytes), names passed NUL-separated on stdin -> hex (nil: unreadable)
-- per item, in order.
local function remote_hashes(conn, items)
  if #items == 0 then return {} end
  local out = {}
  -- whole files: sha256sum over many names per process; only the hash at the start
  -- of each line is read (a line starts with \ when sha256sum escaped the name,
  -- which keeps it one line per file). A file it cannot read prints no line: then
  -- the count is off and those items are hashed one by one below.
  local whole, wi = {}, {}
  for i, it in ipairs(items) do
    local p = it:match("^all:(.*)$")
    if p then whole[#whole + 1], wi[#whole + 1] = p, i end
  end
  if #whole > 0 then
    local r = instance.exec_on(conn, BOX_SHA_NAMES, {stdin = table.concat(whole, "\0") .. "\0", timeout = 3600})
    local lines = {}
    for line in r.stdout:gmatch("[^\n]*\n") do lines[#lines + 1] = line:match("^\\?(%x+) ") or false end
    if #lines == #whole and r.code == 0 then
      for k, h in ipairs(lines) do out[wi[k]] = h end
    end
  end
  local rest, ri = {}, {}
  for i, it in ipairs(items) do
    if out[i] == nil then rest[#rest + 1], ri[#rest + 1] = it, i end
  end
  if #rest == 0 then return out end
  local script = [[xargs -0 sh -c 'for a; do n=${a%%:*}; f=${a#*:}; if [ "$n" = all ]; then ]] ..
    [[sha256sum < "$f" 2>/dev/null || echo x; else head -c "$n" < "$f" 2>/dev/null | sha256sum; fi; done' sh]]
  local r = instance.exec_on(conn, script, {stdin = table.concat(rest, "\0") .. "\0", timeout = 3600})
  local got = {}
  for line in r.stdout:gmatch("[^\n]*\n") do got[#got + 1] = line:match("^(%x+)") or false end
  if #got ~= #rest then
    ssh.error("transfer", conn, string.format("hashing on the box failed (%d of %d answers): %s", #got, #rest,
      r.stderr:sub(1, 300)))
  end
  for k, h in ipairs(got) do out[ri[k]] = h end
  return out
end

-- An exec channel's non-blocking call inside a job -> its results, or false, dirs when
-- it would block. A call that leaves a packet partly sent holds the session
-- (eng.holder = the job's coroutine) until it is repeated to completion.
local function exec_try(eng, fn, ...)
  local me = coroutine.running()
  while eng.holder and eng.holder ~= me do coroutine.yield(POLL) end
  for _ = 1, math.huge do
    local r, a, b, c = fn(...)
    if r ~= false then
      if eng.holder == me then eng.holder = nil end
      return r, a, b, c
    end
    if (a & 2) == 0 then
      if eng.holder == me then eng.holder = nil end
      return false, a
    end
    eng.holder = me
    coroutine.yield(POLL)
  end
end

-- exec_try until the call completes (yielding to the other jobs meanwhile).
local function exec_step(eng, fn, ...)
  for _ = 1, math.huge do
    local r, a, b, c = exec_try(eng, fn, ...)
    if r ~= false then eng.polled = true; return r, a, b, c end
    coroutine.yield(POLL)
  end
end

-- In a job: write all of data on raw, holding the session while a packet is
-- partly sent (as exec_try does for exec channels).
local function raw_write_all(eng, raw, data)
  local me = coroutine.running()
  local pos = 1
  while pos <= #data do
    while eng.holder and eng.holder ~= me do coroutine.yield(POLL) end
    local k, held = raw:write(data, pos)
    if k == false then
      if (held & 2) ~= 0 then eng.holder = me elseif eng.holder == me then eng.holder = nil end
      coroutine.yield(POLL)
    else
      pos = pos + k
      eng.polled = true
      if held then eng.holder = me; coroutine.yield(POLL)
      elseif eng.holder == me then eng.holder = nil end
    end
  end
end

-- In a job: read raw until one whole SFTP packet is in -> type, body.
local function raw_read_packet(eng, raw)
  local me = coroutine.running()
  local buf = ""
  while true do
    while eng.holder and eng.holder ~= me do coroutine.yield(POLL) end
    local data, eof, held = raw:read()
    if data == false then
      if (eof & 2) ~= 0 then eng.holder = me elseif eng.holder == me then eng.holder = nil end
      coroutine.yield(POLL)
    else
      if held then eng.holder = me elseif eng.holder == me then eng.holder = nil end
      if eof and data == "" then ssh.error("connection", eng.conn, "the SFTP channel was closed by the box") end
      buf = buf .. data
      eng.polled = true
      if #buf >= 5 and #buf >= 4 + sunpack(">I4", buf) then
        return buf:byte(5), buf:sub(6, 4 + sunpack(">I4", buf))
      end
      if held then coroutine.yield(POLL) end
    end
  end
end

-- A background job: open n more SFTP channels while the first ones already move
-- data, one at a time (libssh2 keeps one channel open's state per session). Each
-- joins eng.chans marked busy, ready(c) runs on it (opening a file handle through
-- the engine), then it takes jobs.
local function opener_job(eng, n, ready)
  return function()
    local sess = eng.conn.sess
    for _ = 1, n do
      if eng.failed then return end
      local raw = exec_step(eng, sess.sftp_raw, sess)
      eng.spawn(function()   -- its start, INIT and handle overlap the next channel's open
      exec_step(eng, raw.start, raw)
      raw_write_all(eng, raw, spack(">I4BI4", 5, 1, 3))
      local t, body = raw_read_packet(eng, raw)
      if t ~= 2 then ssh.error("transfer", eng.conn, "SFTP server answered INIT with packet type " .. t) end
      local c = setmetatable({raw = raw, eng = eng, out = {}, inbuf = "", ipos = 1, exts = {}, phase = "ready",
        busy = true}, Chan)
      local _, pos = sunpack(">I4", body)
      while pos <= #body do
        local name, data
        name, data, pos = sunpack(">s4s4", body, pos)
        c.exts[name] = data
      end
      eng.chans[#eng.chans + 1] = c
      trace("opener: channel " .. #eng.chans .. " up")
      ready(c)
      c.busy = nil
      trace("opener: channel " .. #eng.chans .. " ready")
      end)
    end
  end
end

-- One exec channel of a background job: feed() -> the next chunk of its stdin (nil:
-- nothing yet), done_feeding() -> true once no more will come (then EOF is sent);
-- its stdout is collected until the command's EOF. Yields to the engine between
-- steps; stops early when the transfer failed. -> stdout pieces, exit code.
local function pump_exec(eng, command, feed, done_feeding)
  local function try(fn, ...) return exec_try(eng, fn, ...) end
  local function step(fn, ...) return exec_step(eng, fn, ...) end
  local ch = step(eng.conn.sess.channel_open, eng.conn.sess)
  step(ch.exec, ch, command)
  local chunk, pos, outs, eof_sent = nil, 1, {}, false
  while not eng.failed do
    local moved = false
    if not chunk then chunk, pos = feed(), 1 end
    if chunk then
      local n = try(ch.write, ch, chunk, pos)
      if n then
        pos, moved = pos + n, n > 0
        if pos > #chunk then chunk = nil end
      end
    elseif done_feeding() and not eof_sent and try(ch.send_eof, ch) then
      eof_sent, moved = true, true
    end
    local o, _, eof = try(ch.read, ch)
    if o then
      outs[#outs + 1] = o
      if eof then break end
      moved = moved or #o > 0
    end
    if moved then eng.polled = true else coroutine.yield(POLL) end
  end
  pcall(step, ch.close, ch)
  local code = ch:exit()
  pcall(step, ch.free, ch)
  return outs, code
end

-- In a job: run cmd on the box with stdin (a string) over an exec channel of its
-- own (pump_exec) -> stdout, exit code.
local function exec_in_job(eng, cmd, stdin)
  local fed = false
  local outs, code = pump_exec(eng, cmd, function()
    if fed then return nil end
    fed = true
    return #stdin > 0 and stdin or nil
  end, function() return fed end)
  return table.concat(outs), code
end

-- A background job: the box's SHA-256 of each whole file in paths, into
-- eng.hashes (path index -> hex | false), while the files move.
local function hashes_job(eng, paths)
  return function()
    local ok, err = pcall(function()
      local out = {}
      if #paths > 0 then
        local stdout, code = exec_in_job(eng, BOX_SHA_NAMES, table.concat(paths, "\0") .. "\0")
        local lines = {}
        for line in stdout:gmatch("[^\n]*\n") do lines[#lines + 1] = line:match("^\\?(%x+) ") or false end
        if #lines == #paths and code == 0 then out = lines
        else   -- a file it could not read: one by one, each answering
          local items = {}
          for i, p in ipairs(paths) do items[i] = "all:" .. p end
          while eng.holder do coroutine.yield(POLL) end
          out = remote_hashes(eng.conn, items)
        end
      end
      eng.hashes = out
    end)
    if not ok then eng.hash_error, eng.hashes = err, {} end
  end
end

-- A background job for put: the box's SHA-256 of each renamed file, names fed
-- as the files land (eng:verify_push(i, path)) to `xargs -0 -n 64 sha256sum`,
-- so the hashing runs while other files still move. Ends once eng.verify_closed
-- is set and every answer is in: eng.verified_hashes[i] = hex | false.
function Engine:verify_push(i, path)
  self.vq[#self.vq + 1] = path .. "\0"
  self.vorder[#self.vorder + 1] = i
end

local function verify_job(eng)
  eng.vq, eng.vorder, eng.verified_hashes = {}, {}, nil
  return function()
    local ok, err = pcall(function()
      local sent = 0
      local outs, code = pump_exec(eng, "xargs -0 -n 64 sha256sum --", function()
        if sent < #eng.vq then
          local chunk = table.concat(eng.vq, "", sent + 1)
          sent = #eng.vq
          return chunk
        end
      end, function() return eng.verify_closed end)
      local lines = {}
      for line in table.concat(outs):gmatch("[^\n]*\n") do lines[#lines + 1] = line:match("^\\?(%x+)  ") or false end
      local out = {}
      if #lines == #eng.vorder and code == 0 then
        for k, h in ipairs(lines) do out[eng.vorder[k]] = h end
      end
      eng.verified_hashes = out
    end)
    if not ok then eng.verified_hashes, eng.verify_error = {}, err end
  end
end

local function hash_prefix_local(path, n)
  local h = hash.sha256_new()
  local f = assert(io.open(path, "rb"))
  local left = n
  while left > 0 do
    local chunk = f:read(math.min(left, 1 << 20))
    if not chunk then break end
    h:update(chunk)
    left = left - #chunk
  end
  f:close()
  return h, left == 0
end

-- Copy a local file (a grown file's old copy into its .part).
local function copy_local(from, to)
  local a = assert(io.open(from, "rb"))
  local b, err = io.open(to, "wb")
  if not b then a:close(); error("get: cannot write " .. to .. ": " .. tostring(err), 0) end
  while true do
    local chunk = a:read(1 << 20)
    if not chunk then break end
    assert(b:write(chunk))
  end
  a:close()
  assert(b:close())
end

-- Aggregated progress for a tree: bytes and files.
local function tree_progress(opts, verb, name, total, nfiles)
  local p = progress(opts, verb, name, total, 0)
  local mode = opts.progress
  if mode == nil then
    if core.sys.isatty(2) then mode = "bar" elseif os.getenv("GPURENT_PROGRESS") == "json" then mode = "json" end
  end
  local last = 0
  return function(eng, final)
    if not mode then return end
    local t = now()
    if not final and t - last < (mode == "json" and 1 or 0.1) then return end
    last = t
    local rate = eng.bytes / math.max(t - p.t0, 1e-6)
    local eta = rate > 0 and (total - eng.bytes) / rate or 0
    if mode == "json" then
      io.stderr:write(require("gpurent.util.json").encode({event = "transfer", op = verb, file = printable(name),
        bytes = eng.bytes, total = total, files = eng.files, files_total = nfiles, rate = math.floor(rate),
        eta = math.floor(eta), done = final or false}), "\n")
    else
      io.stderr:write(string.format("\r%s %s  %s / %s  %d/%d files  %s/s  ETA %d:%02d%s", verb, printable(name),
        human(eng.bytes), human(total), eng.files, nfiles, human(rate), math.floor(eta / 60), math.floor(eta % 60),
        final and "\n" or "   "))
    end
    io.stderr:flush()
  end
end

local SPECIAL_HINT = "only regular files, directories and symlinks are copied"

-- Copy the tree under src to dst, both directions, through ops: prepare(dst_dir)
-- makes a destination directory, children(src_dir) lists {name, type} sorted by
-- name (types as lfs names them, links not followed), copy(src_file, dst_file)
-- moves one file and returns its result, readlink(src) and symlink(target, dst)
-- recreate a link. Anything else is reported on stderr and skipped.
local function copy_tree(verb, src, dst, ops)
  local res = {files = {}, links = {}, skipped = {}, bytes = 0, path = dst}
  local function walk(a, b)
    ops.prepare(b)
    for _, e in ipairs(ops.children(a)) do
      local ap, bp = a .. "/" .. e.name, b .. "/" .. e.name
      if e.type == "directory" then walk(ap, bp)
      elseif e.type == "file" then
        local r = ops.copy(ap, bp)
        res.files[#res.files + 1] = r
        res.bytes = res.bytes + r.bytes
      elseif e.type == "link" then
        local target = ops.readlink(ap)
        ops.symlink(target, bp)
        res.links[#res.links + 1] = {path = bp, target = target}
      else
        io.stderr:write(string.format("%s: skipped %s: a %s (%s)\n", verb, printable(ap), e.type, SPECIAL_HINT))
        res.skipped[#res.skipped + 1] = {path = ap, type = e.type}
      end
    end
  end
  walk(src:gsub("/+$", ""), dst)
  return res
end

-- A local directory's entries as {name, type}, sorted by name (links are not followed).
local function local_children(dir)
  local out = {}
  for n in lfs.dir(dir) do
    if n ~= "." and n ~= ".." then out[#out + 1] = {name = n, type = lfs.symlinkattributes(dir .. "/" .. n, "mode")} end
  end
  table.sort(out, function(x, y) return x.name < y.name end)
  return out
end

-- A source that is neither a regular file nor a directory is refused before
-- anything opens it: a FIFO would block the open until the stall timeout.
local function refuse_special(verb, src, kind, where)
  if kind ~= "file" and kind ~= "directory" then
    error(string.format("%s: %s is a %s%s, not a regular file or directory: refused (%s)",
      verb, printable(src), kind, where, SPECIAL_HINT), 0)
  end
end

-- ---- an unchanged tree: one round trip ------------------------------------------
-- Re-sending a tree that is already there should cost what rsync's does: one
-- exchange with the box, not an SFTP session, channels and a listing per depth.
-- Before a tree put or get, one exec on the box lists the destination (put) or
-- source (get) tree with GNU find (type, size, mode, mtime, link target of every
-- entry) and hashes, in the same run, the files this side names on stdin (the
-- ones it has: a hash is only worth computing for a file both sides hold). When
-- every file is there with the same size, SHA-256, mode and mtime, every
-- directory is a real one and every link has the same target, the tree is done:
-- nothing else crosses the link. Anything else (a difference, a special file, a
-- box without GNU find, an answer that does not parse) -> nil, and the full path
-- below runs; for a put, with what the probe found (the top resolved, the
-- listing, the hashes) in place of its own stat, listing and hashing.
local TREE_PROBE = [[d=$1
if [ -n "$2" ] && [ -d "$d" ]; then d=$2; fi
printf '%s\0' "$d"
cd -- "$d" 2>/dev/null || { printf '\0'; exit 0; }
find . -printf '%y %s %m %T@\0%p\0%l\0' || exit 0
printf '\0'
xargs -0 -r sh -c 'for f; do [ -f "$f" ] && [ ! -L "$f" ] && printf "%s\0" "$f"; done' sh |
if command -v openssl >/dev/null 2>&1; then xargs -0 -r openssl dgst -sha256 -r --; else xargs -0 -r sha256sum --; fi]]

-- The box's answer -> top (the tree's path there), {rel = {type, size, mode, mtime, target}},
-- {hash lines in order}; nil when it is not a whole answer.
local function parse_probe(out)
  local top, pos = out:match("^([^%z]*)%z()")
  if not top then return nil end
  local entries = {}
  while true do
    local head, path, target, nxt = out:match("^([^%z]*)%z([^%z]*)%z([^%z]*)%z()", pos)
    if out:sub(pos, pos) == "\0" then pos = pos + 1; break end
    if not head then return nil end
    local y, size, mode, mtime = head:match("^(%a) (%d+) ([0-7]+) (%d+)")
    if not y or path:sub(1, 1) ~= "." then return nil end
    entries[path == "." and "" or path:sub(3)] = {type = y, size = tonumber(size), mode = tonumber(mode, 8) & 4095,
      mtime = tonumber(mtime), target = target}
    pos = nxt
  end
  local hashes = {}
  for line in out:sub(pos):gmatch("[^\n]*\n") do hashes[#hashes + 1] = line:match("^\\?(" .. ("%x"):rep(64) .. ") ") or false end
  return top, entries, hashes
end

-- Run the probe: root on the box (put: the destination, or root_if_dir when it is
-- a directory, as put decides; get: the source) and the relative paths of the
-- files this side has -> top, entries (entries[""]: the top, nil when it is not
-- there), hashes by rel path; nil when unusable.
local function probe_tree(inst, root, root_if_dir, rels)
  local stdin = {}
  for i, rel in ipairs(rels) do stdin[i] = "./" .. rel end
  local r = inst:with_session(true, function(conn)
    return instance.exec_on(conn, "sh -c " .. q(TREE_PROBE) .. " sh " .. q(root) .. " " .. q(root_if_dir or ""),
      {stdin = #stdin > 0 and (table.concat(stdin, "\0") .. "\0") or "", timeout = 3600},
      math.huge)   -- the listing of a large tree is data for this module, not a command's output
  end)
  if r.code ~= 0 then return nil end
  local top, entries, lines = parse_probe(r.stdout)
  if not top then return nil end
  local hashes, k = {}, 0
  for _, rel in ipairs(rels) do
    local e = entries[rel]
    if e and e.type == "f" then k = k + 1; hashes[rel] = lines[k] end
  end
  if k ~= #lines then return nil end
  return top, entries, hashes
end

-- This side's tree under root -> {dirs = {rel...}, files = {{rel, size, mode, mtime}...},
-- links = {{rel, target}...}} in walk order; nil when it holds a special file.
local function local_tree(root)
  local t = {dirs = {""}, files = {}, links = {}}
  local function walk(dir, rel)
    for _, e in ipairs(local_children(dir)) do
      local p, r = dir .. "/" .. e.name, rel == "" and e.name or (rel .. "/" .. e.name)
      if e.type == "directory" then t.dirs[#t.dirs + 1] = r; walk(p, r)
      elseif e.type == "file" then
        local st = lfs.attributes(p)
        if not st then return nil end
        t.files[#t.files + 1] = {rel = r, path = p, size = st.size, mode = octal_mode(st.permissions), mtime = st.modification}
      elseif e.type == "link" then t.links[#t.links + 1] = {rel = r, target = lfs.symlinkattributes(p, "target")}
      else return nil end
      if not t then return nil end
    end
  end
  local ok = pcall(walk, root, "")
  return ok and t or nil
end

-- Whether want (this side's tree, or the box's: {dirs, files, links}) is all in have
-- (the other side's entries by rel, hashes by rel) -> the unchanged result, or nil.
local function all_there(want, have, hashes, here_hash, path_of)
  if not have[""] or have[""].type ~= "d" then return nil end
  for _, d in ipairs(want.dirs) do
    local e = have[d]
    if not e or e.type ~= "d" then return nil end
  end
  for _, l in ipairs(want.links) do
    local e = have[l.rel]
    if not e or e.type ~= "l" or e.target ~= l.target then return nil end
  end
  for _, f in ipairs(want.files) do   -- all the metadata first: a difference is found before any hashing
    local e = have[f.rel]
    if not e or e.type ~= "f" or e.size ~= f.size or e.mode ~= f.mode or e.mtime ~= f.mtime or not hashes[f.rel] then
      return nil
    end
  end
  local res = {files = {}, links = {}, skipped = {}, bytes = 0, sent = 0, in_flight = 0}
  for _, f in ipairs(want.files) do
    local h = here_hash(f)
    if h ~= hashes[f.rel] then return nil end
    res.files[#res.files + 1] = {path = path_of(f.rel), bytes = f.size, sent = 0, resumed_from = f.size, sha256 = h,
      elapsed = 0, unchanged = true, verified = true}
    res.bytes = res.bytes + f.size
  end
  for _, l in ipairs(want.links) do res.links[#res.links + 1] = {path = path_of(l.rel), target = l.target} end
  return res
end

local function join(top, rel) return rel == "" and top or (top == "/" and "" or top) .. "/" .. rel end

-- put: the whole tree already on the box -> the result, else nil and the probe's
-- answer {top, entries, hashes} (nil when there is none).
local function put_unchanged(inst, src, dst)
  local here = local_tree(src)
  if not here then return nil end
  local rels = {}
  for i, f in ipairs(here.files) do rels[i] = f.rel end
  local top, entries, hashes = probe_tree(inst, dst, dst:gsub("/+$", "") .. "/" .. basename(src), rels)
  if not top then return nil end
  local res = all_there(here, entries, hashes, function(f) return (hash.sha256_file(f.path)) end,
    function(rel) return join(top, rel) end)
  if res then res.path = top; trace("put: unchanged (one probe)"); return res end
  return nil, {top = top, entries = entries, hashes = hashes}
end

-- get: the whole tree already here -> the result, else nil (nothing asked of the
-- box when there is no local copy to compare with) and, when the source is a
-- directory, {ltop (the local top), hashes (the box's, by rel)} for the full path.
local function get_unchanged(inst, src, dst)
  if lfs.attributes(dst, "mode") ~= "directory" then return nil end
  local ltop = dst:gsub("/+$", "") .. "/" .. basename(src)
  if lfs.attributes(ltop, "mode") ~= "directory" then return nil end
  local here = local_tree(ltop)
  if not here then return nil end
  local rels, have = {}, {}
  for _, d in ipairs(here.dirs) do have[d] = {type = "d"} end
  for _, l in ipairs(here.links) do have[l.rel] = {type = "l", target = l.target} end
  for i, f in ipairs(here.files) do
    rels[i] = f.rel
    have[f.rel] = {type = "f", size = f.size, mode = f.mode, mtime = f.mtime, path = f.path}
  end
  local top, entries, hashes = probe_tree(inst, src, nil, rels)
  if not top then return nil end
  local want = {dirs = {}, files = {}, links = {}}
  local names = {}
  for rel in pairs(entries) do names[#names + 1] = rel end
  table.sort(names)
  for _, rel in ipairs(names) do
    local e = entries[rel]
    if e.type == "d" then want.dirs[#want.dirs + 1] = rel
    elseif e.type == "f" then
      want.files[#want.files + 1] = {rel = rel, size = e.size, mode = e.mode, mtime = e.mtime}
    elseif e.type == "l" then want.links[#want.links + 1] = {rel = rel, target = e.target}
    else return nil end   -- a special file on the box: the full path says it is skipped
  end
  local res = all_there(want, have, hashes, function(f) return (hash.sha256_file(have[f.rel].path)) end,
    function(rel) return join(ltop, rel) end)
  if res then res.path = ltop; trace("get: unchanged (one probe)"); return res end
  if entries[""] and entries[""].type == "d" then return nil, {ltop = ltop, hashes = hashes} end
  return nil
end

function transfer.put(inst, src, dst, opts)
  trace("put: start")
  local mode = lfs.attributes(src, "mode")
  if not mode then error("put: no such local file: " .. src, 2) end
  refuse_special("put", src, mode, "")
  if mode == "directory" and opts.pipelined ~= false and opts.resume ~= false then
    local done, probe = put_unchanged(inst, src, dst)
    if done then return done end
    if probe then return transfer._put_tree(inst, src, probe.top, opts, probe) end
  end
  -- a file that may move over several streams: its first stream is opened now, for every step
  local size = mode == "file" and lfs.attributes(src, "size") or 0
  local spare = size > 0 and (opts.streams and streams_of(opts) > 1 or (not opts.streams and size >= RANGE_MIN))
  local dstat = remote_stat(inst, dst, spare)
  if dstat and dstat.type == "directory" then dst = dst:gsub("/+$", "") .. "/" .. basename(src) end
  if mode ~= "directory" then return put_file(inst, src, dst, opts) end
  if opts.pipelined ~= false then return transfer._put_tree(inst, src, dst, opts) end
  return copy_tree("put", src, dst, {
    prepare = function(r) remote_mkdir(inst, r, r == dst) end,
    children = local_children,
    copy = function(lp, rp) return put_file(inst, lp, rp, opts) end,
    readlink = function(lp) return lfs.symlinkattributes(lp, "target") end,
    symlink = function(target, rp) remote_symlink(inst, target, rp) end,
  })
end

-- ---- download --------------------------------------------------------------------

local function get_file_owned(inst, src, dst, opts)
  local part = dst .. ".part"
  return inst:with_session(opts.idempotent ~= false, function(conn)
    local t0 = now()
    local stall = opts.stall_timeout or 120
    local sftp = inst:sftp_of(conn)
    local function run(op, step, ...) return ssh.run(conn, now() + stall, op, step, ...) end
    local rst = run("stat " .. src, sftp.stat, sftp, src)
    if not rst then ssh.error("transfer", conn, "no such remote file: " .. src) end
    local offset = 0
    local lsz = lfs.attributes(part, "size")
    if opts.resume ~= false and lsz and lsz > 0 and lsz <= rst.size then offset = lsz end
    local h = run("open " .. src, sftp.open, sftp, src, "r")
    local x = h:transfer(part, "down", offset)
    if offset > 0 and remote_sha256(conn, src, offset) ~= x:hex() then
      x:finish()
      run("close", h.close, h)
      offset = 0
      h = run("open " .. src, sftp.open, sftp, src, "r")
      x = h:transfer(part, "down", 0)
    end
    local prog = progress(opts, "get", src, rst.size, offset)
    local ok, err = pcall(step_loop, conn, x, stall, prog, offset)
    local sha = x:hex()
    local finished, ferr = pcall(x.finish, x)   -- the last local write or the fsync may fail here
    if ok and not finished then ok, err = false, ferr end
    pcall(run, "close " .. src, h.close, h)
    if not ok then error(err, 0) end
    local got = lfs.attributes(part, "size")
    if got ~= rst.size then
      ssh.error("transfer", conn, string.format("%s changed during download (%d bytes expected, %d received); %s kept for resume",
        src, rst.size, got or -1, part))
    end
    finish_download(conn, src, part, dst, rst, sha, opts.verify, opts.verify and remote_sha256(conn, src) or nil)
    if opts.verify then   -- what is on disk under the final name, not what was streamed
      local disk, bytes = hash.sha256_file(dst)
      if disk ~= sha or bytes ~= rst.size then
        os.rename(dst, part)
        ssh.error("transfer", conn, string.format("%s changed on disk after the download of %s: %d bytes, SHA-256 %s; " ..
          "expected %d bytes, %s; moved back to %s", dst, src, bytes, disk, rst.size, sha, part), {reason = "verify"})
      end
    end
    return {path = dst, bytes = rst.size, sent = rst.size - offset, resumed_from = offset, sha256 = sha,
            elapsed = now() - t0, verified = opts.verify and true or nil, streams = 1}
  end)
end

local function get_file(inst, src, dst, opts, size, st)
  local n = transfer._file_streams(inst, opts, "get", size or 0, src)
  -- a small file on a long link goes on the spare its stat opened, as one stream
  -- (libssh2's SFTP session would cost 3 more round trips to start)
  local c = inst.conn
  local far = c and c.spare and (c.stat_rtt or 0) >= RANGE_MIN_RTT and opts.streams == nil
  return owning(inst, "get", dst, opts, function()
    if n > 1 or far then return transfer._get_ranged(inst, src, dst, opts, n, st) end
    return get_file_owned(inst, src, dst, opts)
  end)
end

-- A remote directory's entries as {name, type}, sorted by name.
local function remote_children(inst, dir)
  return inst:with_session(true, function(conn)
    local sftp = inst:sftp_of(conn)
    local h = ssh.run(conn, now() + 60, "open directory " .. dir, sftp.open, sftp, dir, "d")
    local out = {}
    while true do
      local name, attrs = ssh.run(conn, now() + 60, "readdir " .. dir, h.readdir, h)
      if not name then break end
      if name ~= "." and name ~= ".." then out[#out + 1] = {name = name, type = attrs.type} end
    end
    ssh.run(conn, now() + 60, "close directory", h.close, h)
    table.sort(out, function(a, b) return a.name < b.name end)
    return out
  end)
end

-- A local directory for the copy: the top one is made like mkdir -p; below it,
-- an existing symlink is never written through (it could lead out of the tree).
local function local_prepare(top)
  return function(dir)
    local mode = lfs.symlinkattributes(dir, "mode")
    if dir ~= top and mode and mode ~= "directory" then
      error("get: cannot create directory " .. dir .. ": a " .. mode .. " is in the way (never written through)", 0)
    end
    if not mode then require("gpurent.util.fs").mkdirs(dir) end
  end
end

local function local_symlink(target, path)
  local mode = lfs.symlinkattributes(path, "mode")
  if mode == "directory" then error("get: cannot create symlink " .. path .. ": a directory is in the way", 0) end
  if mode then os.remove(path) end
  local ok, err = lfs.link(target, path, true)
  if not ok then error("get: cannot create symlink " .. path .. " -> " .. target .. ": " .. tostring(err), 0) end
end

local function remote_readlink(inst, path)
  return inst:with_session(true, function(conn)
    local sftp = inst:sftp_of(conn)
    local t, why = ssh.run(conn, now() + 60, "readlink " .. path, sftp.readlink, sftp, path)
    if not t then ssh.error("transfer", conn, "cannot read symlink " .. path .. ": " .. tostring(why)) end
    return t
  end)
end

function transfer.get(inst, src, dst, opts)
  trace("get: start")
  if opts.pipelined ~= false and opts.resume ~= false then
    local done, probe = get_unchanged(inst, src, dst)
    if done then return done end
    if probe then return transfer._get_tree(inst, src, probe.ltop, opts, probe) end
  end
  -- the stat on the spare channel: the file's first stream, when it is one
  local st = remote_stat(inst, src, opts.pipelined ~= false and (not opts.streams or streams_of(opts) > 1))
  if not st or (st.type ~= "file" and st.type ~= "directory") then pcall(drop_spare, inst.conn) end
  if not st then error(inst.label .. ": get: no such remote file: " .. src, 2) end
  refuse_special("get", src, st.type or "file", " on " .. inst.label)
  if lfs.attributes(dst, "mode") == "directory" then dst = dst:gsub("/+$", "") .. "/" .. basename(src) end
  if st.type ~= "directory" then return get_file(inst, src, dst, opts, st.size, st) end
  if opts.pipelined ~= false then return transfer._get_tree(inst, src, dst, opts) end
  return copy_tree("get", src, dst, {
    prepare = local_prepare(dst),
    children = function(dir) return remote_children(inst, dir) end,
    copy = function(rp, lp) return get_file(inst, rp, lp, opts) end,
    readlink = function(rp) return remote_readlink(inst, rp) end,
    symlink = local_symlink,
  })
end

transfer._remote_stat = remote_stat

-- What put/get would move, without moving it (gpurent put/get --dry-run):
-- {{type = "file"|"link"|"directory"|<special>, src, dst, size}} in walk order.
function transfer.plan(inst, verb, src, dst)
  local out = {}
  if verb == "put" then
    local mode = lfs.attributes(src, "mode")
    if not mode then error("put: no such local file: " .. src, 0) end
    refuse_special("put", src, mode, "")
    local dstat = remote_stat(inst, dst)
    if dstat and dstat.type == "directory" then dst = dst:gsub("/+$", "") .. "/" .. basename(src) end
    local function walk(a, b, kind)
      out[#out + 1] = {type = kind, src = a, dst = b, size = kind == "file" and lfs.attributes(a, "size") or nil}
      if kind ~= "directory" then return end
      for _, e in ipairs(local_children(a)) do walk(a .. "/" .. e.name, b .. "/" .. e.name, e.type) end
    end
    walk(src:match("^(.-)/*$"), dst, mode)
  else
    local st = remote_stat(inst, src)
    if not st then error(inst.label .. ": get: no such remote file: " .. src, 0) end
    refuse_special("get", src, st.type or "file", " on " .. inst.label)
    if lfs.attributes(dst, "mode") == "directory" then dst = dst:gsub("/+$", "") .. "/" .. basename(src) end
    local function walk(a, b, kind, size)
      out[#out + 1] = {type = kind, src = a, dst = b, size = kind == "file" and size or nil}
      if kind ~= "directory" then return end
      for _, e in ipairs(remote_children(inst, a)) do
        local cst = e.type == "file" and remote_stat(inst, a .. "/" .. e.name)
        walk(a .. "/" .. e.name, b .. "/" .. e.name, e.type, cst and cst.size)
      end
    end
    walk(src:match("^(.-)/*$"), dst, st.type or "file", st.size)
  end
  return out
end

-- ---- trees (the engine above) ------------------------------------------------------

-- ---- incremental re-send -----------------------------------------------------------
-- Before a tree moves (unless resume=false), each file whose destination already
-- exists is compared by size and SHA-256 (the box hashes its side in one exec):
-- the same bytes are not sent again (the file is "unchanged": its mode and mtime
-- are set when they differ, and it counts as verified, its hash having just been
-- compared on both ends); a destination that is a prefix of the source (a log
-- that grew) is copied to the .part on its side and the rest is appended as for
-- a resume; anything else is sent whole. A result's sent counts the file data
-- that crossed the link (0 for an unchanged file).

-- files: {src, dst, size}; existing(f) -> the size of f's destination, or nil when
-- there is none -> marks f.unchanged (its hex) or f.grown (the destination's size:
-- a prefix of the source). verb says which side is the box's.
-- known: hashes the box already gave, by the item's path (put: the destination).
local function compare_existing(conn, files, existing, verb, known)
  local items, cands = {}, {}
  for _, f in ipairs(files) do
    local dsz = existing(f)
    if dsz and (dsz == f.size or (dsz > 0 and dsz < f.size)) then
      local same = dsz == f.size
      -- hashed on the box: put the destination (whole), get the source (whole or its first dsz bytes)
      if verb == "put" then items[#items + 1] = "all:" .. f.dst
      else items[#items + 1] = (same and "all:" or (dsz .. ":")) .. f.src end
      cands[#cands + 1] = {f, dsz, same}
    end
  end
  if #items == 0 then return end
  local remote, ask, at = {}, {}, {}
  for k, it in ipairs(items) do
    remote[k] = known and known[it:match("^all:(.*)$") or false]
    if not remote[k] then ask[#ask + 1], at[#ask + 1] = it, k end
  end
  for j, h in pairs(remote_hashes(conn, ask)) do remote[at[j]] = h end
  for k, cand in ipairs(cands) do
    local f, dsz, same = cand[1], cand[2], cand[3]
    local here = verb == "put" and f.src or f.dst
    local lh = same and hash.sha256_file(here) or (verb == "put" and hash_prefix_local(f.src, dsz):hex()
      or hash.sha256_file(here))
    if remote[k] and lh == remote[k] then
      if same then f.unchanged = lh else f.grown, f.grown_sha = dsz, lh end
    end
  end
end

local function unchanged_result(f)
  return {path = f.dst, bytes = f.size, sent = 0, resumed_from = f.size, sha256 = f.unchanged, elapsed = 0,
          unchanged = true, verified = true}
end

local function get_one(eng, c, f, opts)
  local t0 = now()
  local part = f.dst .. ".part"
  local pmode = lfs.symlinkattributes(part, "mode")
  if pmode == "link" then os.remove(part)
  elseif pmode and pmode ~= "file" then error("get: cannot write " .. part .. ": a " .. pmode .. " is in the way", 0) end
  local offset, hs = 0, nil
  if f.resume and f.prefix_sha then
    local h2, full = hash_prefix_local(part, f.resume)
    if full and h2:hex() == f.prefix_sha then offset, hs = f.resume, hash_prefix_local(part, f.resume) end
  end
  hs = hs or hash.sha256_new()
  local fh, ferr = io.open(part, offset > 0 and "r+b" or "wb")
  if not fh then error("get: cannot write " .. part .. ": " .. tostring(ferr), 0) end
  if offset > 0 then fh:seek("set", offset) end
  local pos = offset
  local ok, err = pcall(function()
    local handle = eng:open(c, f.src, FXF_READ)
    local hp = spack(">s4", handle)
    -- READs cover [offset, size) exactly, plus one at size to see the end; a
    -- short answer (the file shrank) asks again from where it ended, and
    -- answers for offsets past that are dropped.
    local inflight, head, tail, nexto, eof = {}, 1, 0, offset, false
    local function issue()
      local len = nexto < f.size and math.min(TREE_CHUNK, f.size - nexto) or TREE_CHUNK
      tail = tail + 1
      inflight[tail] = {eng:send(c, P.READ, hp .. spack(">I8I4", nexto, len)), nexto, len}
      nexto = nexto + len
    end
    for _ = 1, math.min(TREE_WINDOW, (f.size - offset + TREE_CHUNK - 1) // TREE_CHUNK + 1) do issue() end
    while head <= tail do
      local r = inflight[head]
      inflight[head] = nil
      head = head + 1
      local t, body = eng:await(r[1])
      if r[2] == pos and not eof then
        if t == P.DATA then
          local data = sunpack(">s4", body, 5)
          local w, werr = fh:write(data)
          if not w then error("write error on " .. part .. ": " .. tostring(werr), 0) end
          hs:update(data)
          pos = pos + #data
          eng.bytes = eng.bytes + #data
          if #data < r[3] then nexto = pos end
          if #data == 0 then eof = true end
        elseif status_of(t, body) == 1 then eof = true
        else eng:fail("read", f.src, t, body) end
      end
      if not eof and tail - head + 1 < TREE_WINDOW then issue() end
    end
    eng:post(c, P.CLOSE, hp)
  end)
  local cok, cerr = fh:close()
  if not ok then error(err, 0) end
  if not cok then error("write error on " .. part .. ": " .. tostring(cerr), 0) end
  eng.to_sync = eng.to_sync or {}
  eng.to_sync[#eng.to_sync + 1] = part
  coroutine.yield(SYNCED)
  if pos ~= f.size then
    ssh.error("transfer", eng.conn, string.format("%s changed during download (%d bytes expected, %d received); %s kept for resume",
      f.src, f.size, pos, part))
  end
  local sha = hs:hex()
  if opts.verify then
    while not eng.hashes do coroutine.yield(HASHES) end
    if eng.hash_error then error(eng.hash_error, 0) end
    f.remote_sha = eng.hashes[f.hash_index] or nil
  end
  if opts.verify and f.remote_sha ~= sha then
    os.remove(part)
    ssh.error("transfer", eng.conn, string.format("SHA-256 mismatch after download of %s: local %s, remote %s; %s removed",
      f.src, sha, tostring(f.remote_sha), part), {reason = "verify"})
  end
  if f.mode then core.ssh.chmod(part, f.mode) end
  if f.mtime then lfs.touch(part, f.atime or f.mtime, f.mtime) end
  local rok, rerr = os.rename(part, f.dst)
  if not rok then error("get: cannot rename " .. part .. " to " .. f.dst .. ": " .. tostring(rerr), 0) end
  if opts.verify then
    local disk, bytes = hash.sha256_file(f.dst)
    if disk ~= sha or bytes ~= f.size then
      os.rename(f.dst, part)
      ssh.error("transfer", eng.conn, string.format("%s changed on disk after the download of %s: %d bytes, SHA-256 %s; " ..
        "expected %d bytes, %s; moved back to %s", f.dst, f.src, bytes, disk, f.size, sha, part), {reason = "verify"})
    end
  end
  return {path = f.dst, bytes = f.size, sent = f.size - offset, resumed_from = offset, sha256 = sha,
          elapsed = now() - t0, verified = opts.verify and true or nil}
end

local function skip_special(verb, res, path, kind)
  io.stderr:write(string.format("%s: skipped %s: a %s (%s)\n", verb, printable(path), kind, SPECIAL_HINT))
  res.skipped[#res.skipped + 1] = {path = path, type = kind}
end

-- probe: what get_unchanged found (the box's hashes of the files here), not asked again.
function transfer._get_tree(inst, src, dst, opts, probe)
  src = src:match("^(.-)/*$")
  if src == "" then src = "/" end
  local known
  if probe then
    known = {}
    for rel, h in pairs(probe.hashes) do known[join(src, rel)] = h end
  end
  local done = {}
  local function run(conn)
    trace("get: connected")
    local eng = adopt_spare(conn, opts) or new_engine(inst, conn, opts, 1)   -- the others open while the first lists
    trace("get: channels open")
    local ok, res = pcall(function()
      local tree, level = {}, {src}
      -- the tree's other channels open while the first lists it
      local opener = {opener_job(eng, streams_of(opts) - 1, function() end)}
      while #level > 0 do          -- one round of listings per depth, every directory of it at once
        local lists = eng:list_dirs(level, false, opener)
        opener = nil
        local nextl = {}
        for i, d in ipairs(level) do
          tree[d] = lists[i]
          for _, e in ipairs(lists[i]) do
            if e.type == "directory" then nextl[#nextl + 1] = (d == "/" and "" or d) .. "/" .. e.name end
          end
        end
        level = nextl
      end
      local res = {files = {}, links = {}, skipped = {}, bytes = 0, path = dst}
      local files, links, dirs = {}, {}, {}
      local function walk(a, b)
        dirs[#dirs + 1] = b
        for _, e in ipairs(tree[a]) do
          local ap, bp = (a == "/" and "" or a) .. "/" .. e.name, b .. "/" .. e.name
          if e.type == "directory" then walk(ap, bp)
          elseif e.type == "file" then
            files[#files + 1] = {src = ap, dst = bp, size = e.size or 0, mode = e.mode, mtime = e.mtime, atime = e.atime}
          elseif e.type == "link" then links[#links + 1] = {src = ap, dst = bp}
          else skip_special("get", res, ap, e.type) end
        end
      end
      walk(src, dst)
      trace("get: listed")
      local prepare = local_prepare(dst)
      for _, d in ipairs(dirs) do prepare(d) end
      eng.sync_dir = dst
      if opts.resume ~= false then   -- what is already here is not sent again
        local pending = {}
        for _, f in ipairs(files) do if not done[f.dst] then pending[#pending + 1] = f end end
        compare_existing(conn, pending, function(f)
          return lfs.symlinkattributes(f.dst, "mode") == "file" and lfs.attributes(f.dst, "size") or nil
        end, "get", known)
        for _, f in ipairs(pending) do   -- a grown file resumes from a .part that starts as the old copy
          if f.grown and not lfs.symlinkattributes(f.dst .. ".part", "mode") then copy_local(f.dst, f.dst .. ".part") end
        end
        trace("get: compared with what is here")
      end
      -- the box's hashes, one exec for the tree: resumable prefixes, and (verify) whole files
      local items, idx = {}, {}
      for _, f in ipairs(files) do
        if not done[f.dst] and not f.unchanged then
          local lsz = lfs.symlinkattributes(f.dst .. ".part", "mode") == "file" and lfs.attributes(f.dst .. ".part", "size")
          if opts.resume ~= false and lsz and lsz > 0 and lsz <= f.size then
            f.resume = lsz
            items[#items + 1], idx[#items + 1] = lsz .. ":" .. f.src, {f, "prefix_sha"}
          end
        end
      end
      trace("get: directories made")
      for k, h in ipairs(remote_hashes(conn, items)) do idx[k][1][idx[k][2]] = h or nil end
      trace("get: resumable prefixes hashed on the box")
      eng:widen(streams_of(opts), files)
      trace("get: channels widened")
      local whole = {}
      if opts.verify then
        for _, f in ipairs(files) do
          if not done[f.dst] and not f.unchanged then whole[#whole + 1] = f.src; f.hash_index = #whole end
        end
      end
      eng.hashes = nil
      local total = 0
      for _, f in ipairs(files) do total = total + f.size end
      local prog = tree_progress(opts, "get", src, total, #files)
      local fns, held = {}, {}
      for i, f in ipairs(files) do
        fns[i] = function(c)
          local r = done[f.dst]
          if not r and f.unchanged then
            local lst = lfs.attributes(f.dst)
            if f.mode and octal_mode(lst.permissions) ~= f.mode then core.ssh.chmod(f.dst, f.mode) end
            if f.mtime and lst.modification ~= f.mtime then lfs.touch(f.dst, f.atime or f.mtime, f.mtime) end
            r = unchanged_result(f)
            done[f.dst] = r
          elseif not r then
            local lpath = lock_path(f.dst)
            local h, why, holder = lock.acquire_local(lpath, {wait = opts.lock_wait})
            if not h then locked_error(inst, "get", f.dst, why, holder, "rm -- " .. q(lpath)) end
            held[lpath] = h
            local ok1, r1 = pcall(get_one, eng, c, f, opts)
            held[lpath] = nil
            pcall(h.release, h)
            if not ok1 then error(r1, 0) end
            r = r1
            done[f.dst] = r
          else
            eng.bytes = eng.bytes + f.size
          end
          eng.files = eng.files + 1
          return r
        end
      end
      -- a failing file stops the engine mid-flight: the other files' locks are released
      -- here, so no .part.lock is left beside the destination
      local okr, files_or_err = pcall(eng.run, eng, fns, TREE_JOBS, function() prog(eng) end,
        opts.verify and {hashes_job(eng, whole)} or nil)
      for _, h in pairs(held) do pcall(h.release, h) end
      if not okr then error(files_or_err, 0) end
      res.files = files_or_err
      res.in_flight = eng.peak
      prog(eng, true)
      trace("get: files moved")
      res.sent = 0   -- file data that crossed the link
      for _, f in ipairs(res.files) do res.bytes, res.sent = res.bytes + f.bytes, res.sent + f.sent end
      local lfns = {}
      for i, l in ipairs(links) do
        lfns[i] = function(c)
          local target, why = eng:readlink(c, l.src)
          if not target then ssh.error("transfer", conn, "cannot read symlink " .. l.src .. ": " .. tostring(why)) end
          local_symlink(target, l.dst)
          return {path = l.dst, target = target}
        end
      end
      res.links = eng:run(lfns, 512)
      return res
    end)
    eng:close()
    if not ok then error(res, 0) end
    return res
  end
  return inst:with_session(opts.idempotent ~= false, run)
end

local function put_one(eng, c, f, opts, stat_id)
  local t0 = now()
  local part = f.dst .. ".part"
  local offset, hs = 0, nil
  if stat_id then
    local t, body = eng:await(stat_id)
    local pst = t == P.ATTRS and (unpack_attrs(body, 5)) or nil
    if pst and pst.size and pst.size > 0 and pst.size <= f.size then
      local h2, full = hash_prefix_local(f.src, pst.size)
      while eng.holder do coroutine.yield(POLL) end   -- the exec below sends on the session
      if full and remote_sha256(eng.conn, part, pst.size) == h2:hex() then
        offset, hs = pst.size, hash_prefix_local(f.src, pst.size)
      end
    end
  end
  hs = hs or hash.sha256_new()
  local fh, ferr = io.open(f.src, "rb")
  if not fh then error("put: cannot read " .. f.src .. ": " .. tostring(ferr), 0) end
  if offset > 0 then fh:seek("set", offset) end
  local handle = eng:open(c, part, FXF_WRITE | FXF_CREAT | (offset == 0 and FXF_TRUNC or 0), {mode = 384})
  local hp = spack(">s4", handle)
  local closed = false
  local ok, err = pcall(function()
    local inflight, head, tail, pos = {}, 1, 0, offset
    local function ack()
      local r = inflight[head]
      inflight[head] = nil
      head = head + 1
      local t, body = eng:await(r[1])
      if status_of(t, body) ~= 0 then eng:fail("write", part, t, body) end
      eng.bytes = eng.bytes + r[2]
    end
    while true do
      local data = fh:read(TREE_CHUNK)
      if not data then break end
      hs:update(data)
      tail = tail + 1
      inflight[tail] = {eng:send(c, P.WRITE, hp .. spack(">I8I4", pos, #data), data), #data}
      pos = pos + #data
      while tail - head + 1 >= TREE_WINDOW do ack() end
    end
    if pos ~= f.size then
      while head <= tail do ack() end
      error("put: " .. f.src .. " changed while it was read (" .. pos .. " bytes, " .. f.size .. " expected)", 0)
    end
    -- mode/mtime, fsync and close go with the last WRITEs (the server answers in
    -- order); the rename below is sent only once every answer said ok
    local id1 = eng:send(c, P.FSETSTAT, hp .. pack_attrs({mode = f.mode, mtime = f.mtime, atime = f.atime}))
    local id2 = c.exts["fsync@openssh.com"] and eng:send(c, P.EXTENDED, spack(">s4s4", "fsync@openssh.com", handle))
    local id3 = eng:send(c, P.CLOSE, hp)
    local wok, werr = pcall(function() while head <= tail do ack() end end)
    if not wok then
      eng:await(id1)
      if id2 then eng:await(id2) end
      eng:await(id3)
      closed = true
      error(werr, 0)
    end
    local t, body = eng:await(id1)
    if status_of(t, body) ~= 0 then eng:fail("set mode/mtime", part, t, body) end
    if id2 then eng:await(id2) end
    t, body = eng:await(id3)
    closed = true
    if status_of(t, body) ~= 0 then eng:fail("close", part, t, body) end
  end)
  fh:close()
  if not ok then
    if not closed then pcall(eng.call, eng, c, P.CLOSE, hp) end
    if ssh.is_connection_loss(eng.conn, err) then error(err, 0) end
    ssh.error("transfer", eng.conn, tostring(err):gsub("^.-: ", "") .. " (partial upload left as .part)", {cause = err})
  end
  if not eng:rename(c, part, f.dst, true) then
    while eng.holder do coroutine.yield(POLL) end
    local r = instance.exec_on(eng.conn, "mv -f -- " .. q(part) .. " " .. q(f.dst), {})
    if r.code ~= 0 then ssh.error("transfer", eng.conn, "cannot rename " .. part .. " to " .. f.dst .. ": " .. r.stderr) end
  end
  return {path = f.dst, bytes = f.size, sent = f.size - offset, resumed_from = offset, sha256 = hs:hex(),
          elapsed = now() - t0}
end

local function tree_box_ops(eng, c)
  return {
    -- not awaited: its answer is unreliable on libssh2 and unread by gpurent.lock,
    -- which reads the link back, and the readlink sent next is answered after it
    symlink = function(target, path) eng:post(c, P.SYMLINK, spack(">s4s4", target, path)); return true end,
    readlink = function(path) return eng:readlink(c, path) end,
    unlink = function(path) return eng:unlink(c, path) end,
    rename = function(a, b) return eng:rename(c, a, b) end,
  }
end

-- probe: what put_unchanged found on the box (dst is its top), used instead of a listing.
function transfer._put_tree(inst, src, dst, opts, probe)
  src = src:match("^(.-)/*$")
  if src == "" then src = "/" end
  local res = {files = {}, links = {}, skipped = {}, bytes = 0, path = dst}
  local files, links, levels = {}, {}, {}
  local function walk(a, b, depth)
    levels[depth] = levels[depth] or {}
    table.insert(levels[depth], b)
    for _, e in ipairs(local_children(a)) do
      local ap, bp = (a == "/" and "" or a) .. "/" .. e.name, b .. "/" .. e.name
      if e.type == "directory" then walk(ap, bp, depth + 1)
      elseif e.type == "file" then
        local st = lfs.attributes(ap)
        if not st then error("put: cannot read " .. ap, 0) end
        files[#files + 1] = {src = ap, dst = bp, size = st.size, mode = octal_mode(st.permissions),
                             mtime = st.modification, atime = st.access}
      elseif e.type == "link" then links[#links + 1] = {src = ap, dst = bp}
      else skip_special("put", res, ap, e.type) end
    end
  end
  walk(src, dst, 0)
  local done = {}
  local function run(conn)
    trace("put: connected")
    local eng = new_engine(inst, conn, opts, 1)   -- the others open while the first lists
    trace("put: channels open")
    local held = {}
    local ok, r = pcall(function()
      -- what is on the box already, every destination directory listed at once: its
      -- files are compared below, and a directory there (a real one, as its parent
      -- lists it, never a symlink to one) is not made again
      local existing, lists, all, is_dir, known = {}, {}, {}, {}, nil
      if probe then
        known = {}
        for rel, e in pairs(probe.entries) do
          local p = join(dst, rel)
          if e.type == "f" then existing[p] = {type = "file", size = e.size, mode = e.mode, mtime = e.mtime}
          elseif e.type == "d" then is_dir[p] = true end
          if probe.hashes[rel] then known[p] = probe.hashes[rel] end
        end
      elseif opts.resume ~= false then
        for depth = 0, #levels do for _, d in ipairs(levels[depth]) do all[#all + 1] = d end end
        lists = eng:list_dirs(all, true, {opener_job(eng, streams_of(opts) - 1, function() end)})
        for i, d in ipairs(all) do
          for _, e in ipairs(lists[i] or {}) do
            local p = d .. "/" .. e.name
            if e.type == "file" then existing[p] = e elseif e.type == "directory" then is_dir[p] = true end
          end
        end
        if lists[1] then is_dir[all[1]] = true end   -- the top one may be a link to a directory
        trace("put: destination listed")
      end
      for depth = 0, #levels do   -- parents first; each depth's directories at once
        local fns = {}
        for _, d in ipairs(levels[depth]) do
          if not is_dir[d] then fns[#fns + 1] = function(c)
            if eng:simple(c, P.MKDIR, spack(">s4", d) .. pack_attrs({mode = 493})) then return end
            -- below the top one, an existing directory must not be a symlink (it could lead out of the tree)
            local st = eng:stat(c, d, depth > 0)
            if not st or st.type ~= "directory" then
              ssh.error("transfer", conn, "cannot create remote directory " .. d ..
                (st and (": a " .. st.type .. " is in the way (never written through)") or ""))
            end
          end end
        end
        eng:run(fns, 512)
      end
      trace("put: directories made")
      if opts.resume ~= false then   -- what is already on the box is not sent again
        local pending = {}
        for _, f in ipairs(files) do if not done[f.dst] then pending[#pending + 1] = f end end
        compare_existing(conn, pending, function(f) return existing[f.dst] and existing[f.dst].size end, "put", known)
        trace("put: compared with what is on the box")
      end
      eng:widen(streams_of(opts), files)
      trace("put: channels widened")
      local total = 0
      for _, f in ipairs(files) do total = total + f.size end
      local prog = tree_progress(opts, "put", src, total, #files)
      local fns = {}
      for i, f in ipairs(files) do
        fns[i] = function(c)
          local r1 = done[f.dst]
          if r1 then eng.bytes = eng.bytes + f.size; eng.files = eng.files + 1; return r1 end
          if f.unchanged then
            local e = existing[f.dst]
            if e.mode ~= f.mode or e.mtime ~= f.mtime then
              eng:simple(c, P.SETSTAT, spack(">s4", f.dst) .. pack_attrs({mode = f.mode, mtime = f.mtime, atime = f.atime}))
            end
            r1 = unchanged_result(f)
            done[f.dst], eng.files = r1, eng.files + 1
            return r1
          end
          local lpath = lock_path(f.dst)
          -- the .part's size asked for with the lock (read only once the lock is ours)
          local grow = f.grown and not existing[f.dst .. ".part"]   -- the .part starts as the old copy
          local stat_id = opts.resume ~= false and not grow and eng:send(c, P.STAT, spack(">s4", f.dst .. ".part")) or nil
          local h, why, holder = lock.acquire_remote(tree_box_ops(eng, c), lpath,
            {wait = opts.lock_wait, on_stale = stale_notice("put")})
          if not h then
            if stat_id then eng:forget(stat_id) end
            locked_error(inst, "put", f.dst, why, holder, "rm -- " .. q(lpath) .. " on the box")
          end
          held[#held + 1] = h
          if h.broke_stale then   -- as owning does for one file; then the .part's size asked again
            local part = f.dst .. ".part"
            local out, code = exec_in_job(eng, stale_writers_script(part, opts), "")
            for line in out:gmatch("[^\n]+") do stale_writer_notice("put", part, line) end
            stale_writers_verdict(eng.conn, "put", part, opts, code, out)
            if stat_id then eng:forget(stat_id); stat_id = eng:send(c, P.STAT, spack(">s4", part)) end
          end
          if grow then
            local _, code = exec_in_job(eng, "cp -- " .. q(f.dst) .. " " .. q(f.dst .. ".part"), "")
            if code == 0 then stat_id = eng:send(c, P.STAT, spack(">s4", f.dst .. ".part")) end
          end
          r1 = put_one(eng, c, f, opts, stat_id)
          done[f.dst] = r1
          eng.files = eng.files + 1
          return r1
        end
      end
      eng.verify_closed = false
      local moving = false
      for _, f in ipairs(files) do if not f.unchanged and not done[f.dst] then moving = true; break end end
      local vjob = opts.verify and moving and verify_job(eng) or nil
      if vjob then   -- the last file job closes the verifier's input
        local left = #fns
        for i, fn in ipairs(fns) do
          fns[i] = function(c)
            local ok1, r1 = pcall(fn, c)
            left = left - 1
            if ok1 and r1 and not r1.unchanged then eng:verify_push(i, r1.path) end
            if left == 0 then eng.verify_closed = true end
            if not ok1 then error(r1, 0) end
            return r1
          end
        end
        if #fns == 0 then eng.verify_closed = true end
      end
      res.files = eng:run(fns, TREE_JOBS, function() prog(eng) end, vjob and {vjob} or nil)
      res.in_flight = eng.peak
      prog(eng, true)
      trace("put: files moved")
      res.sent = 0   -- file data that crossed the link
      for _, f in ipairs(res.files) do res.bytes, res.sent = res.bytes + f.bytes, res.sent + f.sent end
      if opts.verify then   -- what is on disk under the final names, hashed on the box
        local got = eng.verified_hashes or {}
        local missing = {}
        for i, f in ipairs(res.files) do
          if not got[i] and not res.files[i].unchanged then missing[#missing + 1] = i end
        end
        if #missing > 0 then   -- an answer the stream could not give: one by one
          local items = {}
          for k, i in ipairs(missing) do items[k] = "all:" .. res.files[i].path end
          for k, h in ipairs(remote_hashes(conn, items)) do got[missing[k]] = h end
        end
        local bad = {}
        for i = 1, #res.files do
          local h = got[i]
          local f = res.files[i]
          if f.unchanged then   -- compared on both ends before it was skipped
          elseif h ~= f.sha256 then
            instance.exec_on(conn, "mv -f -- " .. q(f.path) .. " " .. q(f.path .. ".part"), {timeout = 60})
            done[f.path] = nil
            bad[#bad + 1] = string.format("%s: local %s, remote %s on disk; moved back to %s.part", printable(f.path),
              f.sha256, tostring(h or "unreadable"), printable(f.path))
          else
            f.verified = true
          end
        end
        if #bad > 0 then
          ssh.error("transfer", conn, "SHA-256 mismatch after upload of " .. #bad .. " file(s): " ..
            table.concat(bad, "; ", 1, math.min(#bad, 5)), {reason = "verify"})
        end
      end
      local lfns = {}
      for i, l in ipairs(links) do
        lfns[i] = function(c)
          local target = lfs.symlinkattributes(l.src, "target")
          local st = eng:stat(c, l.dst, true)
          if st and st.type == "directory" then
            ssh.error("transfer", conn, "cannot create symlink " .. l.dst .. ": a directory is in the way")
          end
          if st then eng:unlink(c, l.dst) end
          eng:symlink(c, target, l.dst)
          local made, why = eng:readlink(c, l.dst)
          if made ~= target then
            ssh.error("transfer", conn, "cannot create symlink " .. l.dst .. " -> " .. target .. ": " .. tostring(made or why))
          end
          return {path = l.dst, target = target}
        end
      end
      trace("put: verified")
      res.links = eng:run(lfns, 512)
      return res
    end)
    -- the locks are released once the files are verified (or the tree failed)
    local rfns = {}
    for i, h in ipairs(held) do rfns[i] = function() pcall(h.release, h) end end
    if #eng.chans > 0 then pcall(eng.run, eng, rfns, #rfns + 1) end
    trace("put: locks released")
    eng:close()
    if not ok then error(r, 0) end
    return r
  end
  return inst:with_session(opts.idempotent ~= false, run)
end

-- ---- one large file over several streams ----------------------------------------
-- A large file on a long link moves as blocks of RANGE_BLOCK bytes over several
-- raw SFTP channels at once (the engine above): each block is a job with its own
-- requests in flight, written at its offset in the one .part, and a new block
-- goes to the least loaded channel. How many streams: opts.streams when given
-- (1 = the single-stream path above), else for a file of RANGE_MIN bytes or more
-- enough that RTT x RANGE_RATE bytes are in flight, given the window one channel
-- may have in flight (sftp:windows(): the server's grant for uploads, the raw
-- channels' 16 MiB receive window for downloads, of which a stream moves about
-- 4 MiB a round trip): 2 to 8; a round trip under RANGE_MIN_RTT (loopback, a LAN) keeps
-- one stream, where the transfer is CPU-bound and the C pump is fastest.
-- Resume: the .part's whole blocks are hashed on both sides (here; on the box by
-- one `split --filter=sha256sum`) and only the blocks that differ or are missing
-- are sent: a killed multi-stream transfer leaves holes anywhere in the .part,
-- and a hole hashes differently from the data. The whole-file SHA-256 is
-- computed by a background job that reads the file in order behind the written
-- blocks; with verify it is compared with the box's SHA-256, checked before the
-- rename, so a .part assembled wrongly never gets the final name (get: the box
-- hashes the source while the blocks move; put: the box reads the .part back in
-- order as its blocks are acknowledged, one exec fed the lengths, so the check
-- costs one round trip after the last write instead of a second pass over the
-- file; a box that cannot follow gets the old check: the renamed file hashed,
-- moved back to .part on a mismatch).

-- How many streams a file of size bytes moves over -> n (1: the single-stream path).
local function file_streams(inst, opts, verb, size, path)
  if opts.streams then return size > 0 and streams_of(opts) or 1 end
  if size < RANGE_MIN then return 1 end
  return inst:with_session(true, function(conn)
    -- put/get's first stat (on the spare channel, or the SFTP session it started)
    -- is reused when it says plainly local or plainly far; a first answer can be
    -- slow on a loaded box (the SFTP server's first request), so anything in
    -- between is asked again
    local rtt = conn.stat_rtt
    if not rtt or (rtt >= RANGE_MIN_RTT and rtt < RANGE_FAR_RTT) then
      local t0 = now()
      if conn.spare then spare_stat(inst, conn, path)
      else local sftp = inst:sftp_of(conn); ssh.run(conn, now() + 60, "stat " .. path, sftp.stat, sftp, path) end
      rtt = math.min(rtt or math.huge, now() - t0)
    end
    if rtt < RANGE_MIN_RTT then return 1 end
    local send, recv
    if conn.spare then send, recv = conn.spare.chans[1].raw:window()
    else send, recv = inst:sftp_of(conn):windows() end
    -- a download stream moves about 4 MiB a round trip whatever window it asks for
    -- (measured at 50 ms: 2 streams 2.7 s, 4 streams 2.45 s for 256 MiB)
    local per = verb == "put" and send or math.min(recv, 4 << 20)
    trace(string.format("streams: rtt %.3f s, window %d", rtt, per))
    return math.max(2, math.min(8, math.ceil(rtt * RANGE_RATE / math.max(per, TREE_CHUNK))))
  end)
end

-- The blocks of a file of size bytes for n streams: {{off, len}...}, block size:
-- RANGE_BLOCK, or smaller (down to 1 MiB) so that every stream has a few blocks
-- (a resume keeps whole blocks only).
local function range_blocks(size, n)
  local want = (size + 4 * n * RANGE_JOBS - 1) // (4 * n * RANGE_JOBS)
  local block = math.min(RANGE_BLOCK, math.max(1 << 20, (want + TREE_CHUNK - 1) // TREE_CHUNK * TREE_CHUNK))
  local blocks = {}
  for off = 0, size - 1, block do blocks[#blocks + 1] = {off = off, len = math.min(block, size - off)} end
  return blocks, block
end

local function hash_region(f, off, len)
  local h = hash.sha256_new()
  f:seek("set", off)
  local left = len
  while left > 0 do
    local chunk = f:read(math.min(left, 1 << 20))
    if not chunk then return nil end
    h:update(chunk)
    left = left - #chunk
  end
  return h:hex()
end

-- Mark the blocks the .part already holds (same SHA-256 on both sides) done ->
-- bytes they cover. part_size: the .part's size; local_path/remote_path: the
-- file on each side to hash (one of them is the .part).
local function blocks_already_there(conn, blocks, block, part_size, local_path, remote_path)
  local covered = 0
  for _, b in ipairs(blocks) do
    if b.off + b.len <= part_size then covered = b.off + b.len end
  end
  if covered == 0 then return 0 end
  local r = instance.exec_on(conn, string.format("head -c %d < %s | split -b %d --filter=sha256sum", covered,
    q(remote_path), block), {timeout = 3600})
  local remote = {}
  for line in r.stdout:gmatch("[^\n]*\n") do remote[#remote + 1] = line:match("^(%x+)") or false end
  local f = io.open(local_path, "rb")
  if r.code ~= 0 or not f then if f then f:close() end return 0 end
  local have = 0
  for i, b in ipairs(blocks) do
    if b.off + b.len > covered then break end
    if remote[i] and hash_region(f, b.off, b.len) == remote[i] then b.done = true; have = have + b.len end
  end
  f:close()
  return have
end

-- A background job: the SHA-256 of the file at path read in order, never past
-- the first block not yet done (state.blocks) -> state.sha. Writers flush a
-- block before marking it done, so what it reads is on the file.
local function follow_hash_job(eng, path, state)
  return function()
    local f = assert(io.open(path, "rb"))
    local h, pos, k, size = hash.sha256_new(), 0, 1, state.size
    while pos < size and not eng.failed do
      while state.blocks[k] and state.blocks[k].done do k = k + 1 end
      local upto = state.blocks[k] and state.blocks[k].off or size
      if upto > pos then
        f:seek("set", pos)
        local data = f:read(math.min(upto - pos, 1 << 20))
        if not data then break end
        h:update(data)
        pos = pos + #data
        eng.polled = true
      end
      coroutine.yield(POLL)
    end
    f:close()
    if pos == size then state.sha = h:hex() end
  end
end

-- A background job for a ranged put: the box's SHA-256 of the .part read back on
-- the box in order as its blocks are acknowledged (one exec; the length of each
-- next run of done blocks is written to its stdin, read with `head -c` from one
-- open descriptor), so the check costs a round trip after the last write instead
-- of a second pass over the file. -> eng.box_sha (nil when the box could not say).
-- What it has read is also written to disk as it goes (`sync -d`, where coreutils
-- has it), so the fsync before the rename finds little left to write.
local BOX_FOLLOW = [[exec 3< "$1" || exit 1
while read -r n; do head -c "$n" <&3 || exit 1; sync -d -- "$1" 2>/dev/null; done | ]] .. BOX_SHA

local function box_follow_hash_job(eng, part, blocks)
  return function()
    local ok = pcall(function()
      local k = 1
      local outs, code = pump_exec(eng, "sh -c " .. q(BOX_FOLLOW) .. " sh " .. q(part), function()
        local n = 0
        while blocks[k] and blocks[k].done do n = n + blocks[k].len; k = k + 1 end
        if n > 0 then return n .. "\n" end
      end, function() return not blocks[k] end)
      if code == 0 and not eng.failed then eng.box_sha = table.concat(outs):match("^(%x+)") end
    end)
    if not ok then eng.box_sha = nil end
  end
end

-- Run fns[k](chan k) once on every channel of eng, at once.
local function on_each_channel(eng, fn)
  local fns = {}
  for k, c in ipairs(eng.chans) do fns[k] = function() return fn(c, k) end end
  return eng:run(fns, #fns)
end

local function ranged_result(dst, size, have, sha, t0, verified, n)
  return {path = dst, bytes = size, sent = size - have, resumed_from = have, sha256 = sha, elapsed = now() - t0,
          verified = verified or nil, streams = n}
end

-- The .part's stat and its open on eng's first channel, sent together (one round
-- trip) -> the .part's attributes when there is one to resume from (nil: start
-- afresh). The open creates the .part but leaves one that is there as it is;
-- one longer than the file is opened again, truncated (resume=false: at once).
-- The streams opened later open it as it is, never creating it.
local function open_part(eng, part, size, resume)
  return eng:one(function(c)
    local sid = resume and eng:send(c, P.STAT, spack(">s4", part))
    c.range_handle = spack(">s4", eng:open(c, part, FXF_WRITE | FXF_CREAT | (resume and 0 or FXF_TRUNC), {mode = 384}))
    if not sid then return nil end
    local t, body = eng:await(sid)
    local a = t == P.ATTRS and (unpack_attrs(body, 5)) or nil
    if a and a.size and a.size > size then
      eng:post(c, P.CLOSE, c.range_handle)
      c.range_handle = spack(">s4", eng:open(c, part, FXF_WRITE | FXF_CREAT | FXF_TRUNC, {mode = 384}))
      return nil
    end
    return a
  end)
end

local function put_ranged(inst, src, dst, opts, n)
  local st = lfs.attributes(src)
  if not st then error("put: cannot read " .. src, 0) end
  local size, part = st.size, dst .. ".part"
  return inst:with_session(opts.idempotent ~= false, function(conn)
    local t0 = now()
    local blocks, block = range_blocks(size, n)
    -- the first stream: the spare put's first steps went over, else a new one;
    -- the others open while the first moves data
    local eng = adopt_spare(conn, opts) or new_engine(inst, conn, opts, 1)
    trace("range put: first channel open")
    local state = {blocks = {}, size = size}   -- the source is whole: hashed at once
    local f = assert(io.open(src, "rb"))
    local have, prog, mismatch = 0, nil, nil
    local ok, err = pcall(function()
      local pst = open_part(eng, part, size, opts.resume ~= false)
      if pst and pst.size and pst.size > 0 then have = blocks_already_there(conn, blocks, block, pst.size, src, part) end
      prog = progress(opts, "put", src, size, have)
      trace("range put: planned, first handle open")
      local window = 32
      local fns = {}
      for i, b in ipairs(blocks) do
        fns[i] = function(c)
          if b.done then return end
          f:seek("set", b.off)
          local data = f:read(b.len)
          if not data or #data ~= b.len then
            error("put: " .. src .. " changed while it was read (shorter than " .. size .. " bytes)", 0)
          end
          local inflight, head, tail = {}, 1, 0
          local function ack()
            local id, len = inflight[head][1], inflight[head][2]
            inflight[head] = nil
            head = head + 1
            local t, body = eng:await(id)
            if status_of(t, body) ~= 0 then eng:fail("write", part, t, body) end
            eng.bytes = eng.bytes + len
          end
          for pos = 1, #data, TREE_CHUNK do
            local piece = data:sub(pos, pos + TREE_CHUNK - 1)
            tail = tail + 1
            inflight[tail] = {eng:send(c, P.WRITE, c.range_handle .. spack(">I8I4", b.off + pos - 1, #piece), piece), #piece}
            while tail - head + 1 >= window do ack() end
          end
          while head <= tail do ack() end
          b.done = true
        end
      end
      local background = {follow_hash_job(eng, src, state),
        -- no CREAT: the first stream made the .part; an open a killed put left in flight
        -- and the box reads late must fail on a .part since renamed, not make a new one
        opener_job(eng, n - 1, function(c) c.range_handle = spack(">s4", eng:open(c, part, FXF_WRITE)) end)}
      if opts.verify then background[3] = box_follow_hash_job(eng, part, blocks) end
      eng.per_chan = RANGE_JOBS
      eng:run(fns, nil, function() prog.update(have + eng.bytes) end, background)
      eng.per_chan = nil
      trace("range put: blocks written")
      if lfs.attributes(src, "size") ~= size then
        error("put: " .. src .. " changed while it was read (" .. size .. " bytes expected)", 0)
      end
      -- the box read the .part back as it was written: a wrong one never takes the final name
      if opts.verify and eng.box_sha and eng.box_sha ~= state.sha then mismatch = eng.box_sha; return end
      -- every write is acknowledged: the mode and mtime, the fsync, the closes and
      -- the rename, sent together (the server answers a channel's requests in
      -- order; a rename the steps before it failed is undone)
      local renamed = false
      on_each_channel(eng, function(c, k)
        local id1, id2, id4
        if k == 1 then
          id1 = eng:send(c, P.FSETSTAT, c.range_handle .. pack_attrs({mode = octal_mode(st.permissions),
            mtime = st.modification, atime = st.access}))
          id2 = c.exts["fsync@openssh.com"] and eng:send(c, P.EXTENDED, spack(">s4", "fsync@openssh.com") .. c.range_handle)
        end
        local id3 = eng:send(c, P.CLOSE, c.range_handle)
        if k == 1 then
          id4 = c.exts["posix-rename@openssh.com"] and eng:send(c, P.EXTENDED,
            spack(">s4s4s4", "posix-rename@openssh.com", part, dst)) or eng:send(c, P.RENAME, spack(">s4s4", part, dst))
          -- the lock's read-back for its release, in the same round trip (spare_steps)
          eng.lock_read = {path = lock_path(dst), id = eng:send(c, P.READLINK, spack(">s4", lock_path(dst)))}
        end
        local t1, b1, t3, b3
        if id1 then t1, b1 = eng:await(id1) end
        if id2 then eng:await(id2) end
        t3, b3 = eng:await(id3)
        if id4 then
          local t4, b4 = eng:await(id4)
          renamed = status_of(t4, b4) == 0
        end
        if (id1 and status_of(t1, b1) ~= 0) or status_of(t3, b3) ~= 0 then
          if renamed then eng:rename(c, dst, part, true); renamed = false end
          if id1 and status_of(t1, b1) ~= 0 then eng:fail("set mode/mtime", part, t1, b1) end
          eng:fail("close", part, t3, b3)
        end
      end)
      if not renamed then   -- no posix-rename and the name taken: mv -f replaces it
        local r = instance.exec_on(conn, "mv -f -- " .. q(part) .. " " .. q(dst), {})
        if r.code ~= 0 then ssh.error("transfer", conn, "cannot rename " .. part .. " to " .. dst .. ": " .. r.stderr) end
      end
    end)
    f:close()
    -- the answers arrive while the lock is released, over the first stream kept
    -- as conn's spare (when the others all went well)
    local first = ok and table.remove(eng.chans, 1)
    eng:close(true)
    if first then eng.chans = {first}; conn.spare = eng end
    if not ok then
      if ssh.is_connection_loss(conn, err) then error(err, 0) end
      explain_write_error(conn, inst:sftp_of(conn), dst:match("^(.*)/[^/]*$") or ".", size - have, err)
    end
    local sha = state.sha or hash.sha256_file(src)
    if mismatch then
      ssh.error("transfer", conn, string.format("SHA-256 mismatch after upload of %s: local %s, remote %s on disk; " ..
        "left as %s (not renamed)", src, sha, mismatch, part), {reason = "verify"})
    end
    prog.update(size, true)
    trace("range put: closed and renamed")
    if opts.verify and not eng.box_sha then   -- the box could not follow: what is on disk under the final name
      verify_renamed(conn, src, dst, part, sha)
    end
    return ranged_result(dst, size, have, sha, t0, opts.verify, n)
  end)
end

-- known: the source's stat when the caller just made it (asked again after a reconnect).
local writeback = require("gpurent.util.fs").writeback

local function get_ranged(inst, src, dst, opts, n, known)
  local part = dst .. ".part"
  return inst:with_session(opts.idempotent ~= false, function(conn)
    local t0 = now()
    local rst = known
    if not rst then local sftp = inst:sftp_of(conn); rst = ssh.run(conn, now() + 60, "stat " .. src, sftp.stat, sftp, src) end
    known = nil
    if not rst then ssh.error("transfer", conn, "no such remote file: " .. src) end
    local size = rst.size
    local blocks, block = range_blocks(size, n)
    local pmode = lfs.symlinkattributes(part, "mode")
    if pmode == "link" then os.remove(part); pmode = nil end
    if pmode and pmode ~= "file" then error("get: cannot write " .. part .. ": a " .. pmode .. " is in the way", 0) end
    local psize = pmode and lfs.attributes(part, "size") or 0
    local fresh = opts.resume == false or psize == 0 or psize > size
    local have = fresh and 0 or blocks_already_there(conn, blocks, block, psize, part, src)
    local fh, ferr = io.open(part, fresh and "wb" or "r+b")
    if not fh then error("get: cannot write " .. part .. ": " .. tostring(ferr), 0) end
    trace("range get: planned")
    -- the first stream: the spare the stat went over, else a new one; the others
    -- open while the first moves data
    local eng = adopt_spare(conn, opts) or new_engine(inst, conn, opts, 1)
    trace("range get: first channel open")
    local state = {blocks = blocks, size = size}
    local prog = progress(opts, "get", src, size, have)
    local ok, err = pcall(function()
      on_each_channel(eng, function(c) c.range_handle = spack(">s4", eng:open(c, src, FXF_READ)) end)
      local _, recv = eng.chans[1].raw:window()
      local window = math.max(4, math.min(8 << 20, recv) // (RANGE_JOBS * TREE_CHUNK))
      local fns = {}
      for i, b in ipairs(blocks) do
        fns[i] = function(c)
          if b.done then return end
          -- READs over the block, window at a time; a short answer asks again for the rest
          local inflight, head, tail, nexto, stop = {}, 1, 0, b.off, b.off + b.len
          local function issue()
            local len = math.min(TREE_CHUNK, stop - nexto)
            tail = tail + 1
            inflight[tail] = {eng:send(c, P.READ, c.range_handle .. spack(">I8I4", nexto, len)), nexto, len}
            nexto = nexto + len
          end
          while nexto < stop and tail - head + 1 < window do issue() end
          while head <= tail do
            local r = inflight[head]
            inflight[head] = nil
            head = head + 1
            local t, body = eng:await(r[1])
            if t == P.DATA then
              local data = sunpack(">s4", body, 5)
              fh:seek("set", r[2])
              local w, werr = fh:write(data)
              if not w then error("write error on " .. part .. ": " .. tostring(werr), 0) end
              eng.bytes = eng.bytes + #data
              if #data < r[3] then   -- short: ask for the rest of this piece
                if #data == 0 then error(src .. " changed during download (it ends before " .. size .. " bytes)", 0) end
                tail = tail + 1
                inflight[tail] = {eng:send(c, P.READ, c.range_handle .. spack(">I8I4", r[2] + #data, r[3] - #data)),
                                  r[2] + #data, r[3] - #data}
              end
            elseif status_of(t, body) == 1 then
              ssh.error("transfer", conn, string.format("%s changed during download (it ends before %d bytes); %s kept for resume",
                src, size, part))
            else eng:fail("read", src, t, body) end
            while nexto < stop and tail - head + 1 < window do issue() end
          end
          local fok, ferr2 = fh:flush()
          if not fok then error("write error on " .. part .. ": " .. tostring(ferr2), 0) end
          writeback(fh, b.off, b.len)   -- the fsync before the rename then finds it written
          b.done = true
        end
      end
      local background = {follow_hash_job(eng, part, state),
        opener_job(eng, n - 1, function(c) c.range_handle = spack(">s4", eng:open(c, src, FXF_READ)) end)}
      if opts.verify then background[3] = hashes_job(eng, {src}) end
      eng.per_chan = RANGE_JOBS
      eng:run(fns, nil, function() prog.update(have + eng.bytes) end, background)
      eng.per_chan = nil
      trace("range get: blocks read")
      on_each_channel(eng, function(c) eng:post(c, P.CLOSE, c.range_handle) end)
    end)
    local cok, cerr = fh:close()
    eng:close(true)   -- the answers arrive while the file is finished here
    if not ok then error(err, 0) end
    if not cok then error("write error on " .. part .. ": " .. tostring(cerr), 0) end
    prog.update(size, true)
    require("gpurent.util.fs").fsync(part)
    trace("range get: fsynced")
    local sha = state.sha or hash.sha256_file(part)
    if opts.verify and eng.hash_error then error(eng.hash_error, 0) end
    finish_download(conn, src, part, dst, rst, sha, opts.verify, eng.hashes and eng.hashes[1])
    trace("range get: renamed")
    return ranged_result(dst, size, have, sha, t0, opts.verify, n)
  end)
end

transfer._file_streams, transfer._put_ranged, transfer._get_ranged = file_streams, put_ranged, get_ranged

return transfer

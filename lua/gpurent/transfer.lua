-- gpurent.transfer: file transfer policy over SFTP (mechanism: runtime/sftp.c).
--   transfer.put(inst, local, remote, opts)   transfer.get(inst, remote, local, opts)
-- Directories are copied recursively. Each file is written to "<dest>.part" and
-- renamed only when complete (remote: SFTP rename, or `mv -f` when the target
-- exists; local: fsync + rename). A transfer owns its destination while it runs:
-- a lock "<dest>.part.lock" (gpurent.lock: an flock'ed file locally, an atomic
-- mkdir on the box) makes a second transfer to the same path fail at once naming
-- the holder's host and PID (or wait lock_wait seconds); a lock whose holder on
-- this machine is gone is broken. A rerun after an interruption resumes from the
-- .part's size once the prefix's SHA-256 matches on both sides (else restarts).
-- Mode and mtime are kept. SHA-256 is computed on the bytes as they stream;
-- verify=true checks what is on disk under the final name after the rename
-- (download: the streamed hash against the remote before the rename, then the
-- local file re-hashed; upload: `sha256sum` of the renamed remote file); a
-- mismatch leaves nothing under the final name (moved back to .part / removed).
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
-- {files = {...}, links = {{path, target}}, skipped = {{path, type}}, bytes}).
local lfs = require "lfs"
local core = require "gpurent.core"
local ssh = require "gpurent.ssh"
local sched = require "gpurent.sched"
local instance = require "gpurent.instance"
local lock = require "gpurent.lock"
local hash = require "gpurent.hash"

local now = core.sys.now
local q = instance.shell_quote
local transfer = {}

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
      io.stderr:write(require("gpurent.json").encode({event = "transfer", op = verb, file = name,
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
local function remote_sha256(conn, path, n)
  local cmd = n and string.format("head -c %d < %s | sha256sum", n, q(path)) or ("sha256sum < " .. q(path))
  local r = instance._exec(conn, cmd, {timeout = 3600})
  if r.code ~= 0 then return nil, r.stderr end
  return r.stdout:match("^(%x+)")
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
local function owning(inst, verb, dst, opts, fn)
  local path = dst .. ".part.lock"
  local h, why, holder
  if verb == "put" then
    h, why, holder = lock.acquire_remote(lock.box_ops(inst), path, {wait = opts.lock_wait, on_stale = stale_notice(verb)})
    if not h then locked_error(inst, verb, dst, why, holder, "rm -- " .. q(path) .. " on the box") end
  else
    h, why, holder = lock.acquire_local(path, {wait = opts.lock_wait})
    if not h then locked_error(inst, verb, dst, why, holder, "rm -- " .. q(path)) end
  end
  local ok, res = pcall(fn)
  pcall(h.release, h)   -- a lock left behind is stale for the next taker, never wrong
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
  return inst:_call(opts.idempotent ~= false, function(conn)
    local t0 = now()
    local stall = opts.stall_timeout or 120
    local sftp = inst:_sftp(conn)
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
      local r = instance._exec(conn, "mv -f -- " .. q(part) .. " " .. q(dst), {})
      if r.code ~= 0 then ssh.error("transfer", conn, "cannot rename " .. part .. " to " .. dst .. ": " .. r.stderr) end
    end
    if opts.verify then   -- what is on disk under the final name, not what was streamed
      local remote = remote_sha256(conn, dst)
      if remote ~= sha then
        instance._exec(conn, "mv -f -- " .. q(dst) .. " " .. q(part), {timeout = 60})
        ssh.error("transfer", conn, string.format("SHA-256 mismatch after upload of %s: local %s, remote %s on disk; " ..
          "moved back to %s", src, sha, tostring(remote), part), {reason = "verify"})
      end
    end
    return {path = dst, bytes = size, sent = size - offset, resumed_from = offset, sha256 = sha,
            elapsed = now() - t0, verified = opts.verify and true or nil}
  end)
end

local function put_file(inst, src, dst, opts)
  return owning(inst, "put", dst, opts, function() return put_file_owned(inst, src, dst, opts) end)
end

local function remote_stat(inst, path)
  return inst:_call(true, function(conn)
    local sftp = inst:_sftp(conn)
    return ssh.run(conn, now() + 60, "stat " .. path, sftp.stat, sftp, path) or false
  end)
end

-- Make a remote directory; below the top one (the caller's choice), an existing
-- one must be a directory, not a symlink to one (it could lead out of the tree).
local function remote_mkdir(inst, path, top)
  inst:_call(true, function(conn)
    local sftp = inst:_sftp(conn)
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
  inst:_call(true, function(conn)
    local sftp = inst:_sftp(conn)
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

function transfer.put(inst, src, dst, opts)
  local mode = lfs.attributes(src, "mode")
  if not mode then error("put: no such local file: " .. src, 2) end
  refuse_special("put", src, mode, "")
  local dstat = remote_stat(inst, dst)
  if dstat and dstat.type == "directory" then dst = dst:gsub("/+$", "") .. "/" .. basename(src) end
  if mode ~= "directory" then return put_file(inst, src, dst, opts) end
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
  return inst:_call(opts.idempotent ~= false, function(conn)
    local t0 = now()
    local stall = opts.stall_timeout or 120
    local sftp = inst:_sftp(conn)
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
    if opts.verify then
      local remote = remote_sha256(conn, src)
      if remote ~= sha then
        os.remove(part)
        ssh.error("transfer", conn, string.format("SHA-256 mismatch after download of %s: local %s, remote %s; %s removed",
          src, sha, tostring(remote), part), {reason = "verify"})
      end
    end
    if rst.mode then core.ssh.chmod(part, rst.mode) end
    if rst.mtime then lfs.touch(part, rst.atime or rst.mtime, rst.mtime) end
    local rok, rerr = os.rename(part, dst)
    if not rok then error("get: cannot rename " .. part .. " to " .. dst .. ": " .. tostring(rerr), 0) end
    if opts.verify then   -- what is on disk under the final name, not what was streamed
      local disk, bytes = hash.sha256_file(dst)
      if disk ~= sha or bytes ~= rst.size then
        os.rename(dst, part)
        ssh.error("transfer", conn, string.format("%s changed on disk after the download of %s: %d bytes, SHA-256 %s; " ..
          "expected %d bytes, %s; moved back to %s", dst, src, bytes, disk, rst.size, sha, part), {reason = "verify"})
      end
    end
    return {path = dst, bytes = rst.size, sent = rst.size - offset, resumed_from = offset, sha256 = sha,
            elapsed = now() - t0, verified = opts.verify and true or nil}
  end)
end

local function get_file(inst, src, dst, opts)
  return owning(inst, "get", dst, opts, function() return get_file_owned(inst, src, dst, opts) end)
end

-- A remote directory's entries as {name, type}, sorted by name.
local function remote_children(inst, dir)
  return inst:_call(true, function(conn)
    local sftp = inst:_sftp(conn)
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
    if not mode then require("gpurent.fs").mkdirs(dir) end
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
  return inst:_call(true, function(conn)
    local sftp = inst:_sftp(conn)
    local t, why = ssh.run(conn, now() + 60, "readlink " .. path, sftp.readlink, sftp, path)
    if not t then ssh.error("transfer", conn, "cannot read symlink " .. path .. ": " .. tostring(why)) end
    return t
  end)
end

function transfer.get(inst, src, dst, opts)
  local st = remote_stat(inst, src)
  if not st then error(inst.label .. ": get: no such remote file: " .. src, 2) end
  refuse_special("get", src, st.type or "file", " on " .. inst.label)
  if lfs.attributes(dst, "mode") == "directory" then dst = dst:gsub("/+$", "") .. "/" .. basename(src) end
  if st.type ~= "directory" then return get_file(inst, src, dst, opts) end
  return copy_tree("get", src, dst, {
    prepare = local_prepare(dst),
    children = function(dir) return remote_children(inst, dir) end,
    copy = function(rp, lp) return get_file(inst, rp, lp, opts) end,
    readlink = function(rp) return remote_readlink(inst, rp) end,
    symlink = local_symlink,
  })
end

return transfer

-- transfer_streams_spec: one file over several SFTP streams at once (issue 16):
-- put and get with --streams round-trip verified, and a multi-stream transfer
-- SIGKILLed mid-range (through bench/relay.c paced to 2 MiB/s, so it is midway
-- when killed) is resumed by the next run: only the blocks the .part lacks (or
-- holds wrongly: one is corrupted on purpose) are sent, and the final name only
-- ever holds the verified file. Files are a few MiB; speed is bench/file_bench.sh's.
package.path = T.root .. "/bench/?.lua;" .. package.path
local sshd = require "sshd"
local relay = require "relay"
local deadput = require "deadput"
local hash = require "gpurent.util.hash"
local lfs = require "lfs"
local core = require "gpurent.core"

local SIZE = 8 * 1048576

local function sh(cmd) assert(os.execute(cmd), cmd) end

-- A gpurent CLI child (put/get through config) in the background -> pid, output path.
local function spawn(dir, config, args)
  local pidfile, out = dir .. "/child.pid", dir .. "/child.out"
  os.remove(pidfile)
  os.execute(string.format("(GPURENT_SSH_CONFIG=%s %s %s >%s 2>&1 & echo $! > %s) >/dev/null 2>&1",
    T.q(config), T.q(T.bin), args, T.q(out), T.q(pidfile)))
  local pid
  for _ = 1, 250 do pid = tonumber(T.read(pidfile) or ""); if pid then break end; core.sys.sleep(0.02) end
  assert(pid, "the child gpurent did not start")
  return pid, out
end

-- Wait (bounded) until path holds at least bytes of data (allocated: a .part
-- written by several streams is sparse, its size says little).
local function wait_data(path, bytes, out)
  for _ = 1, 1500 do                                      -- bounded: 30 s
    local blocks = lfs.attributes(path, "blocks")
    if blocks and blocks * 512 >= bytes then return end
    core.sys.sleep(0.02)
  end
  error("never reached " .. bytes .. " bytes of data: " .. path .. "\n" .. tostring(T.read(out)))
end

local function corrupt(path, offset)
  sh(string.format("printf 'XXXXXXXXXXXXXXXX' | dd of=%s bs=1 seek=%d conv=notrunc 2>/dev/null", T.q(path), offset))
end

describe("one file over several streams", function()
  local fx, inst, dir, link
  setup(function()
    fx = sshd.start{addrs = 1, log_level = "VERBOSE"}   -- VERBOSE: sshd logs each session it starts
    inst = fx:connect(1)
    dir = T.tmpdir()
    link = relay.start(fx, 10, {rate_mibps = 2})
  end)
  teardown(function()
    if link then link:stop() end
    if inst then inst:close() end
    if fx then fx:stop() end
    T.rmtree(dir)
  end)

  it("puts and gets with 4 streams, the whole file's SHA-256 verified on both ends", function()
    local src = dir .. "/blob"
    sh("head -c " .. (SIZE + 12345) .. " /dev/urandom > " .. T.q(src))
    local want = hash.sha256_file(src)
    local up = inst:put(src, fx.home .. "/blob", {verify = true, progress = false, streams = 4})
    assert.equal(4, up.streams)
    assert.equal(want, up.sha256)
    assert.is_true(up.verified)
    assert.equal(SIZE + 12345, up.sent)
    assert.equal(want, hash.sha256_file(fx.home .. "/blob"))
    local down = inst:get(fx.home .. "/blob", dir .. "/back", {verify = true, progress = false, streams = 4})
    assert.equal(4, down.streams)
    assert.equal(want, down.sha256)
    assert.is_true(down.verified)
    assert.equal(want, hash.sha256_file(dir .. "/back"))
    assert.is_nil(lfs.attributes(dir .. "/back.part"))
    assert.is_nil(lfs.attributes(fx.home .. "/blob.part"))
  end)

  it("a multi-stream put takes and releases its lock over its own streams (no other SFTP session); " ..
     "a lock held from another machine refuses it with nothing written", function()
    local src, dst = dir .. "/locked.bin", fx.home .. "/locked.bin"
    sh("head -c " .. SIZE .. " /dev/urandom > " .. T.q(src))
    local fresh = fx:connect(1)   -- no SFTP session started on it yet
    assert(lfs.link("gpurent-lock host=otherbox pid=4242 start=1 boot=0000 nonce=ab since=1700000000",
      dst .. ".part.lock", true))
    local ok, err = pcall(fresh.put, fresh, src, dst, {progress = false, streams = 4})
    assert.is_false(ok)
    assert.matches("host otherbox, PID 4242", tostring(err), 1, true)
    assert.is_nil(lfs.attributes(dst))
    assert.is_nil(lfs.attributes(dst .. ".part"), "a refused put wrote a .part")
    assert.truthy(lfs.symlinkattributes(dst .. ".part.lock"), "the other machine's lock was broken")
    os.remove(dst .. ".part.lock")
    fresh:close()
    fresh = fx:connect(1)
    local before = #T.read(fx.dir .. "/sshd.log")
    local r = fresh:put(src, dst, {verify = true, progress = false, streams = 4})
    fresh:close()
    assert.is_true(r.verified)
    assert.equal(hash.sha256_file(src), hash.sha256_file(dst))
    assert.is_nil(lfs.symlinkattributes(dst .. ".part.lock"), "the put left its lock behind")
    gpurent.sleep(0.2)   -- sshd writes its log lines as the channels close
    local log = T.read(fx.dir .. "/sshd.log"):sub(before + 1)
    local _, sftp = log:gsub("Starting session: subsystem 'sftp'", "")
    assert.equal(4, sftp, "SFTP sessions for a 4-stream put (its streams only):\n" .. log)
  end)

  it("a multi-stream get goes over its streams only (its stat on the first); a small or empty file on a " ..
     "long link moves as one stream on the channel its stat opened, verified", function()
    local src = fx.home .. "/many.bin"
    sh("head -c " .. SIZE .. " /dev/urandom > " .. T.q(src))
    local fresh = fx:connect(1)
    local before = #T.read(fx.dir .. "/sshd.log")
    local r = fresh:get(src, dir .. "/many.back", {verify = true, progress = false, streams = 4})
    fresh:close()
    assert.is_true(r.verified)
    assert.equal(hash.sha256_file(src), hash.sha256_file(dir .. "/many.back"))
    gpurent.sleep(0.2)   -- sshd writes its log lines as the channels close
    local log = T.read(fx.dir .. "/sshd.log"):sub(before + 1)
    local _, sftp = log:gsub("Starting session: subsystem 'sftp'", "")
    assert.equal(4, sftp, "SFTP sessions for a 4-stream get (its streams only):\n" .. log)
    for _, size in ipairs({0, 5000}) do   -- through the 10 ms link
      local name = "small" .. size
      sh("head -c " .. size .. " /dev/urandom > " .. T.q(fx.home .. "/" .. name))
      local p = io.popen(string.format("GPURENT_SSH_CONFIG=%s %s get --json h1 %s %s 2>&1; echo \"exit=$?\"",
        T.q(link.config), T.q(T.bin), T.q(fx.home .. "/" .. name), T.q(dir .. "/" .. name)))
      local out = p:read("a")
      p:close()
      assert.truthy(out:find("exit=0", 1, true), out)
      assert.truthy(out:find('"verified":true', 1, true), out)
      assert.equal(hash.sha256_file(fx.home .. "/" .. name), hash.sha256_file(dir .. "/" .. name))
      assert.equal(size, lfs.attributes(dir .. "/" .. name, "size"))
    end
  end)

  -- kill a child mid-range, corrupt one byte range of what it left, resume here
  local function killed_then_resumed(verb)
    local src = dir .. "/" .. verb .. ".bin"
    sh("head -c " .. SIZE .. " /dev/urandom > " .. T.q(src))
    local remote = fx.home .. "/" .. verb .. ".bin"
    local from, to, part
    if verb == "put" then
      from, to, part = src, remote, remote .. ".part"
    else
      sh("cp " .. T.q(src) .. " " .. T.q(remote))
      from, to, part = remote, dir .. "/" .. verb .. ".back", dir .. "/" .. verb .. ".back.part"
    end
    local pid, out = spawn(dir, link.config, string.format("%s --streams 4 h1 %s %s", verb, T.q(from), T.q(to)))
    wait_data(part, 5 * 1048576, out)
    os.execute("kill -9 " .. pid .. " 2>/dev/null")
    core.sys.sleep(0.3)
    -- never a complete-looking file that is not: the final name does not exist
    assert.is_nil(lfs.attributes(to), "the killed transfer left " .. to)
    corrupt(part, 100)   -- the first block, whole or not, now differs from the source
    local r = inst[verb](inst, from, to, {verify = true, progress = false, streams = 4})
    assert.is_true(r.verified)
    assert.equal(hash.sha256_file(src), r.sha256)
    assert.equal(hash.sha256_file(src), hash.sha256_file(verb == "put" and remote or to))
    assert.is_true(r.resumed_from > 0, "nothing was kept from the killed transfer")
    assert.is_true(r.sent > 0 and r.sent < SIZE, "sent " .. r.sent .. " of " .. SIZE)
    assert.equal(SIZE, r.sent + r.resumed_from)
    assert.is_nil(lfs.attributes(part))
  end

  it("a put SIGKILLed mid-range resumes only the blocks the .part lacks, verified", function()
    killed_then_resumed("put")
  end)

  it("a get SIGKILLed mid-range resumes only the blocks the .part lacks, verified", function()
    killed_then_resumed("get")
  end)

  -- A put killed on a long link leaves writes in flight that the box still applies
  -- after the process is gone, through the SFTP server holding the .part open. Here
  -- a process on the box holds the .part open and writes into it once the final name
  -- appears (or after 3 s), as such a late write would, and the dead put's lock is there. The next put breaks the lock,
  -- waits for that holder to close before it checks what to resume, and so the late
  -- bytes never end up inside the file it names final.
  for _, streams in ipairs({1, 4}) do
    it("a put that breaks a dead holder's lock waits until nothing on the box has the .part open (" ..
       streams .. " stream(s))", function()
      local src, dst = dir .. "/fenced" .. streams .. ".bin", fx.home .. "/fenced" .. streams .. ".bin"
      local part, flag = dst .. ".part", dir .. "/writer" .. streams .. ".started"
      sh("head -c " .. (3 * 1048576) .. " /dev/urandom > " .. T.q(src))
      sh(string.format("head -c 1048576 %s > %s", T.q(src), T.q(part)))
      deadput.lock(dst)
      deadput.late_writer(part, dst, flag)
      local p = io.popen(string.format("GPURENT_SSH_CONFIG=%s %s put --streams %d h1 %s %s 2>&1; echo \"exit=$?\"",
        T.q(fx.config), T.q(T.bin), streams, T.q(src), T.q(dst)))
      local out = p:read("a")
      p:close()
      assert.truthy(out:find("exit=0", 1, true), out)
      assert.matches("broke a stale lock", out, 1, true)
      assert.matches("waiting for PID %d+ %([^)]+%) on the box to close", out)
      core.sys.sleep(0.3)   -- a write the put did not wait for would be in by now
      assert.equal(hash.sha256_file(src), hash.sha256_file(dst), "late bytes landed in the final file")
      assert.is_nil(lfs.attributes(part))
    end)
  end

  it("a put whose dead holder's .part stays open past stale_wait is refused, naming the holder, nothing renamed", function()
    local src, dst = dir .. "/held.bin", fx.home .. "/held.bin"
    local part, flag = dst .. ".part", dir .. "/holder.started"
    sh("head -c 100000 /dev/urandom > " .. T.q(src))
    T.write(part, "")
    deadput.lock(dst)
    local holder = io.popen(string.format("(exec 3<>%s; : > %s; exec sleep 4) >/dev/null 2>&1 & echo $!",
      T.q(part), T.q(flag))):read("l")
    for _ = 1, 250 do if T.read(flag) then break end; core.sys.sleep(0.02) end   -- bounded: 5 s
    local code, out, err = T.run("-e " .. T.q(string.format(
      "gpurent.connect('h1'):put(%q, %q, {stale_wait = 1, progress = false})", src, dst)),
      {env = "GPURENT_SSH_CONFIG=" .. T.q(fx.config)})
    os.execute("kill " .. holder .. " 2>/dev/null")
    assert.are_not.equal(0, code)
    assert.matches("is still open for writing on the box 1s after its lock's holder died: PID " .. holder .. " (sleep)",
      out .. err, 1, true)
    assert.is_nil(lfs.attributes(dst))
    assert.equal(0, lfs.attributes(part, "size"))
    assert.is_nil(lfs.symlinkattributes(dst .. ".part.lock"), "the refused put left its lock")
  end)

  it("past stale_wait, an SFTP server left holding the .part is ended by its PID and the put goes on; a reader is not waited for", function()
    local src, dst = dir .. "/halfopen.bin", fx.home .. "/halfopen.bin"
    local part, flag = dst .. ".part", dir .. "/sftp.started"
    sh("head -c 300000 /dev/urandom > " .. T.q(src))
    sh(string.format("head -c 100000 %s > %s", T.q(src), T.q(part)))
    deadput.lock(dst)
    -- a half-open session's SFTP server: holds the .part for writing and never exits by itself
    sh(string.format("cp /bin/sleep %s/sftp-server", T.q(dir)))
    local server = io.popen(string.format("(exec 3<>%s; : > %s; exec %s/sftp-server 60) >/dev/null 2>&1 & echo $!",
      T.q(part), T.q(flag), T.q(dir))):read("l")
    local reader = io.popen(string.format("(exec 3<%s; exec sleep 60) >/dev/null 2>&1 & echo $!", T.q(part))):read("l")
    for _ = 1, 250 do if T.read(flag) then break end; core.sys.sleep(0.02) end   -- bounded: 5 s
    local code, out, err = T.run("-e " .. T.q(string.format(
      "gpurent.connect('h1'):put(%q, %q, {stale_wait = 1, progress = false, verify = true})", src, dst)),
      {env = "GPURENT_SSH_CONFIG=" .. T.q(fx.config)})
    local reader_alive = os.execute("kill -0 " .. reader .. " 2>/dev/null")
    os.execute("kill " .. server .. " " .. reader .. " 2>/dev/null")
    assert.are.equal(0, code, out .. err)
    assert.matches("waiting for PID " .. server .. " (sftp-server)", err, 1, true)
    assert.matches("ended PID " .. server .. " (sftp-server) on the box", err, 1, true)
    assert.is_nil(err:find("PID " .. reader, 1, true), "the put waited for a reader:\n" .. err)
    assert.truthy(reader_alive, "the put ended a reader")
    assert.equal(hash.sha256_file(src), hash.sha256_file(dst))
  end)

  -- the source's tail rewritten in place after it was hashed here but before it was
  -- read for sending: the box's hash of the .part (read back there as its blocks are
  -- acknowledged) differs, and the .part never takes the final name
  it("a put whose source changes mid-transfer fails verification; the final name never appears", function()
    local src, remote = dir .. "/moving_up.bin", fx.home .. "/moving_up.bin"
    sh("head -c " .. SIZE .. " /dev/urandom > " .. T.q(src))
    local pid, out = spawn(dir, link.config, string.format("put --streams 4 h1 %s %s", T.q(src), T.q(remote)))
    wait_data(remote .. ".part", 1048576, out)
    corrupt(src, SIZE - 1000)   -- the last block: streamed only at the end of the paced link
    local code
    for _ = 1, 1500 do                                   -- bounded: 30 s
      if not os.execute("kill -0 " .. pid .. " 2>/dev/null") then code = true; break end
      if lfs.attributes(remote) then break end
      core.sys.sleep(0.02)
    end
    assert.is_nil(lfs.attributes(remote), "a file that failed verification took the final name")
    assert.is_true(code, "the put did not end")
    assert.matches("SHA-256 mismatch after upload", T.read(out), 1, true)
    assert.equal(SIZE, lfs.attributes(remote .. ".part", "size"))
  end)

  -- the source rewritten in place (same size) under a download: what was streamed is
  -- not what the box holds, so the verification fails and nothing takes the final name
  for _, streams in ipairs({1, 4}) do
    it("a get whose source changes mid-transfer fails verification, leaving no file (" .. streams .. " stream(s))", function()
      local remote, to = fx.home .. "/moving" .. streams .. ".bin", dir .. "/moving" .. streams .. ".back"
      sh("head -c " .. SIZE .. " /dev/urandom > " .. T.q(remote))
      local pid, out = spawn(dir, link.config, string.format("get --streams %d h1 %s %s", streams, T.q(remote), T.q(to)))
      wait_data(to .. ".part", 2 * 1048576, out)
      corrupt(remote, 100)   -- already streamed: the box's hash now differs from the stream's
      local code
      for _ = 1, 1500 do                                   -- bounded: 30 s
        if not os.execute("kill -0 " .. pid .. " 2>/dev/null") then code = true; break end
        core.sys.sleep(0.02)
      end
      assert.is_true(code, "the get did not end")
      local text = T.read(out)
      assert.matches("SHA-256 mismatch after download", text, 1, true)
      assert.is_nil(lfs.attributes(to), "a file that failed verification took the final name")
      assert.is_nil(lfs.attributes(to .. ".part"), "the unverifiable .part was kept")
    end)
  end
end)

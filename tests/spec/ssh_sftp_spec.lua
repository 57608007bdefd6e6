-- ssh_sftp_spec: inst:put / inst:get over SFTP against a real sshd: .part + rename,
-- mode and mtime, SHA-256 verify, directories, resume after the serving sshd
-- process is killed mid-transfer, a full remote tmpfs, progress as JSON lines.
local sshd = require "sshd"
local hash = require "gpurent.util.hash"
local lfs = require "lfs"

local function mkfile(path, mib)
  os.execute(string.format("head -c %d /dev/urandom > %s", mib * 1048576, T.q(path)))
  return path
end

local function mode_mtime(path)
  local p = io.popen("stat -c '%a %Y' " .. T.q(path))
  local s = p:read("l"); p:close()
  return s
end

describe("inst:put / inst:get", function()
  local fx, inst, dir
  setup(function()
    fx = sshd.start{addrs = 1, tmpfs = "6m"}
    inst = fx:connect(1)
    dir = T.tmpdir()
  end)
  teardown(function()
    if inst then inst:close() end
    if fx then fx:stop() end
    T.rmtree(dir)
  end)

  it("round-trips a file with mode, mtime and a verified SHA-256, via .part", function()
    local src = mkfile(dir .. "/a.bin", 3)
    os.execute("chmod 750 " .. src .. " && touch -d '2021-02-03 04:05:06' " .. src)
    local want = hash.sha256_file(src)
    local r = inst:put(src, fx.home .. "/a.bin", {verify = true})
    assert.equal(want, r.sha256)
    assert.equal(3 * 1048576, r.bytes)
    assert.is_true(r.verified)
    assert.equal(mode_mtime(src), mode_mtime(fx.home .. "/a.bin"))
    assert.is_nil(lfs.attributes(fx.home .. "/a.bin.part"))
    -- overwrite an existing destination (SFTP rename refuses; mv -f fallback)
    inst:put(src, fx.home .. "/a.bin", {})
    local g = inst:get(fx.home .. "/a.bin", dir .. "/back.bin", {verify = true})
    assert.equal(want, g.sha256)
    assert.equal(want, hash.sha256_file(dir .. "/back.bin"))
    assert.equal(mode_mtime(src), mode_mtime(dir .. "/back.bin"))
    assert.is_nil(lfs.attributes(dir .. "/back.bin.part"))
  end)

  it("copies directories recursively both ways", function()
    local tree = dir .. "/tree"
    os.execute("mkdir -p " .. tree .. "/sub/deeper && echo one > " .. tree .. "/one.txt && " ..
      "echo two > " .. tree .. "/sub/two.txt && echo three > " .. tree .. "/sub/deeper/three.txt")
    local r = inst:put(tree, fx.home .. "/tree", {})
    assert.equal(3, #r.files)
    assert.equal("three\n", T.read(fx.home .. "/tree/sub/deeper/three.txt"))
    local g = inst:get(fx.home .. "/tree", dir .. "/tree_back", {})
    assert.equal(3, #g.files)
    assert.equal("two\n", T.read(dir .. "/tree_back/sub/two.txt"))
  end)

  it("restarts instead of resuming when the .part is not a prefix of the source", function()
    local src = mkfile(dir .. "/b.bin", 2)
    T.write(fx.home .. "/b.bin.part", string.rep("z", 100000))
    local r = inst:put(src, fx.home .. "/b.bin", {verify = true})
    assert.equal(0, r.resumed_from)
    assert.equal(hash.sha256_file(src), hash.sha256_file(fx.home .. "/b.bin"))
  end)

  -- Run transfer() in one task and kill the sshd processes serving it from
  -- another once the .part holds a few MiB of data (allocated blocks: a .part
  -- written by several streams is sparse, its size jumps ahead of its data).
  -- Bounded by time (30 s), not by a count: under valgrind everything is slower.
  local function kill_midway(part, transfer)
    local res = gpurent.parallel({"xfer", "killer"}, function(role)
      if role == "xfer" then return transfer() end
      local deadline = gpurent.now() + 30
      while gpurent.now() < deadline do
        if (lfs.attributes(part, "blocks") or 0) * 512 > 6 * 1048576 then return fx:kill_connections() end
        require("gpurent.transport.sched").sleep(0.005)
      end
      error("the transfer never got going")
    end)
    assert.is_true(res[2].ok, tostring(res[2].error))
    assert.is_true(res[2].value > 0)
    return res[1]
  end

  it("resumes an upload after the serving sshd is killed mid-transfer", function()
    local src = mkfile(dir .. "/big.bin", 64)
    local want = hash.sha256_file(src)
    local dst = fx.home .. "/big.bin"
    local first = kill_midway(dst .. ".part", function() return inst:put(src, dst, {idempotent = false}) end)
    assert.is_false(first.ok)
    assert.matches("connection lost", tostring(first.error))
    assert.is_nil(lfs.attributes(dst))                     -- nothing claims completeness
    local part_size = lfs.attributes(dst .. ".part", "size")
    assert.is_true(part_size > 0 and part_size < 64 * 1048576)
    local r = inst:put(src, dst, {verify = true})
    assert.is_true(r.resumed_from > 0, string.format("restarted: .part was %d bytes after the kill, %s now",
      part_size, tostring(lfs.attributes(dst .. ".part", "size"))))
    assert.is_true(r.sent < 64 * 1048576)
    assert.equal(want, r.sha256)
    assert.equal(want, hash.sha256_file(dst))
    -- default (idempotent) put survives a kill by itself
    os.remove(dst)
    local auto = kill_midway(dst .. ".part", function() return inst:put(src, dst, {}) end)
    assert.is_true(auto.ok, tostring(auto.error))
    assert.is_true(auto.value.resumed_from > 0)
    assert.equal(want, hash.sha256_file(dst))
  end)

  it("resumes a download after the serving sshd is killed mid-transfer", function()
    local src = mkfile(fx.home .. "/dl.bin", 64)
    local want = hash.sha256_file(src)
    local dst = dir .. "/dl.bin"
    local first = kill_midway(dst .. ".part", function() return inst:get(src, dst, {idempotent = false}) end)
    assert.is_false(first.ok)
    assert.is_nil(lfs.attributes(dst))
    local r = inst:get(src, dst, {verify = true})
    assert.is_true(r.resumed_from > 0)
    assert.equal(want, r.sha256)
    assert.equal(want, hash.sha256_file(dst))
  end)

  it("reports a full remote disk clearly and leaves no completed-looking file", function()
    local src = mkfile(dir .. "/toobig.bin", 10)
    local dst = fx.small .. "/toobig.bin"
    local ok, err = pcall(inst.put, inst, src, dst, {})
    assert.is_false(ok)
    assert.matches("remote disk full", tostring(err))
    assert.matches(fx.small:gsub("%p", "%%%0"), tostring(err))
    local check = inst:sh("ls " .. fx.small)
    assert.is_nil(check.stdout:find("toobig.bin\n", 1, true))
    assert.equal("ok\n", inst:sh("echo ok").stdout)           -- the session is still fine
    inst:sh("rm -f " .. fx.small .. "/*")
  end)

  it("a full local disk during a large download names the file and leaves only the .part", function()
    -- 8 MiB in 2 MiB blocks: the local writes run on the transfer's worker thread
    local src = mkfile(fx.home .. "/dlfull.bin", 8)
    local small = dir .. "/localsmall"
    lfs.mkdir(small)
    assert.is_true(os.execute("mount -t tmpfs -o size=3m tmpfs " .. T.q(small)))
    local ok, err = pcall(inst.get, inst, src, small .. "/dlfull.bin", {idempotent = false})
    os.execute("ls -la " .. T.q(small) .. " >/dev/null")
    local final = lfs.attributes(small .. "/dlfull.bin")
    local part = lfs.attributes(small .. "/dlfull.bin.part", "size")
    os.execute("umount " .. T.q(small))
    assert.is_false(ok)
    assert.matches("write error on .*dlfull%.bin%.part: No space left on device", tostring(err))
    assert.is_nil(final)
    assert.is_true(part ~= nil and part < 8 * 1048576)
    assert.equal("ok\n", inst:sh("echo ok").stdout)           -- the session is still fine
    os.remove(src)
  end)

  it("prints JSON progress lines off a TTY when asked", function()
    local src = mkfile(dir .. "/p.bin", 4)
    local recipe = dir .. "/progress.lua"
    T.write(recipe, string.format("local i = gpurent.connect('h1', {config = %q})\n" ..
      "i:put(%q, %q, {})\n", fx.config, src, fx.home .. "/p.bin"))
    local code, _, err = T.run("run " .. T.q(recipe), {env = "GPURENT_PROGRESS=json"})
    assert.equal(0, code, err)
    local last
    for line in err:gmatch("[^\n]+") do last = require("gpurent.util.json").decode(line) end
    assert.equal("transfer", last.event)
    assert.equal(4 * 1048576, last.bytes)
    assert.is_true(last.done)
    local code2, _, err2 = T.run("run " .. T.q(recipe))
    assert.equal(0, code2)
    assert.equal("", err2)                                      -- silent off a TTY by default
  end)
end)

describe("transfers across re-keying", function()
  local fx, dir
  setup(function()
    -- sshd re-keys every MiB: each new key must reach the batched AES-CTR contexts
    fx = sshd.start{addrs = 1, sshd_options = "RekeyLimit 1M"}
    dir = T.tmpdir()
  end)
  teardown(function()
    if fx then fx:stop() end
    T.rmtree(dir)
  end)

  -- In a child process: libssh2 1.10 leaks the 51-byte copy of the host key at
  -- every re-key (fixed in 1.11), which LeakSanitizer would report under
  -- `make asan`; the child runs with leak detection off for that reason only.
  local function child(script, env)
    return T.run("-e " .. T.q(script), {env = "ASAN_OPTIONS=detect_leaks=0 " .. (env or "")})
  end

  it("round-trips 24 MiB with verified SHA-256 on the batched AES-CTR", function()
    local src = mkfile(dir .. "/rk.bin", 24)
    local want = hash.sha256_file(src)
    local code, out, err = child(string.format([[
      local inst = gpurent.connect("h1", {config = %q})
      local r = inst:put(%q, %q, {verify = true, idempotent = false, progress = false})
      local g = inst:get(%q, %q, {verify = true, idempotent = false, progress = false})
      print(require("gpurent.core").ssh.aesctr(), r.sha256, g.sha256)]], fx.config, src, fx.home .. "/rk.bin",
      fx.home .. "/rk.bin", dir .. "/rk.back"))
    assert.equal(0, code, err)
    assert.equal("batched\t" .. want .. "\t" .. want .. "\n", out)
    assert.equal(want, hash.sha256_file(dir .. "/rk.back"))
  end)

  it("GPURENT_SSH_AESCTR=openssl keeps OpenSSL's own AES-CTR, and transfers still verify", function()
    local src = mkfile(dir .. "/plain.bin", 3)
    local code, out, err = child(string.format([[
      local inst = gpurent.connect("h1", {config = %q})
      local r = inst:put(%q, %q, {verify = true, progress = false})
      print(require("gpurent.core").ssh.aesctr(), r.sha256)]], fx.config, src, fx.home .. "/plain.bin"),
      "GPURENT_SSH_AESCTR=openssl")
    assert.equal(0, code, err)
    assert.equal("openssl (GPURENT_SSH_AESCTR)\t" .. hash.sha256_file(src) .. "\n", out)
  end)
end)

describe("interrupting a transfer", function()
  local fx, dir
  local core = require "gpurent.core"
  setup(function() fx = sshd.start{addrs = 1}; dir = T.tmpdir() end)
  teardown(function() if fx then fx:stop() end; T.rmtree(dir) end)

  -- SIGINT reaches the scheduler thread while the worker thread writes and
  -- hashes: the transfer is released (worker joined) and gpurent exits 130.
  it("Ctrl-C during a large download exits 130 at once, keeping only the .part", function()
    local src = fx.home .. "/int.bin"
    os.execute(string.format("head -c %d /dev/urandom > %s", 256 * 1048576, T.q(src)))
    local dst = dir .. "/int.bin"
    local script = string.format([[
      local inst = gpurent.connect("h1", {config = %q})
      inst:get(%q, %q, {progress = false, idempotent = false})
      print("finished")]], fx.config, src, dst)
    local pidfile, codefile = dir .. "/pid", dir .. "/code"
    os.execute(string.format("(%s -e %s >%s 2>&1 & echo $! > %s; wait $!; echo $? > %s) &",
      T.q(T.bin), T.q(script), T.q(dir .. "/out"), T.q(pidfile), T.q(codefile)))
    local pid
    for _ = 1, 100 do
      pid = tonumber(T.read(pidfile) or "")
      if pid then break end
      core.sys.sleep(0.02)
    end
    assert.truthy(pid)
    local started = false
    for _ = 1, 500 do                                  -- bounded: 10 s
      if (lfs.attributes(dst .. ".part", "size") or 0) > 16 * 1048576 then started = true; break end
      core.sys.sleep(0.02)
    end
    assert.is_true(started, "the download never got going")
    local t0 = core.sys.now()
    os.execute("kill -INT " .. pid)
    local code
    for _ = 1, 250 do                                  -- bounded: 5 s
      code = tonumber(T.read(codefile) or "")
      if code then break end
      core.sys.sleep(0.02)
    end
    assert.equal(130, code, T.read(dir .. "/out"))
    assert.is_true(core.sys.now() - t0 < 2)
    assert.matches("interrupted", T.read(dir .. "/out"))
    assert.is_nil(lfs.attributes(dst))
    local part = lfs.attributes(dst .. ".part", "size")
    assert.is_true(part ~= nil and part < 256 * 1048576)
    os.remove(src)
  end)
end)

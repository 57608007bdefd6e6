-- transfer_tree_spec: directory trees with many files in flight (issue 16): a tree
-- of 5000 entries with empty files and deep paths round-tripped and verified both
-- ways, the same through an emulated 20 ms link (bench/relay.c), an interrupted
-- tree get resumed, an unchanged tree re-sent moving no file data (the transfer's
-- own count of bytes sent) and a changed one moving only what changed, and the
-- `gpurent put` / `gpurent get` verbs: exit codes, JSON lines, --dry-run. Speed is measured by bench/tree_bench.sh, never asserted here.
package.path = T.root .. "/bench/?.lua;" .. package.path
local sshd = require "sshd"
local relay = require "relay"
local deadput = require "deadput"
local hash = require "gpurent.util.hash"
local lfs = require "lfs"
local json = require "gpurent.util.json"
local core = require "gpurent.core"

local function sh(cmd) assert(os.execute(cmd), cmd) end

-- path (relative) -> "file <sha256>" | "dir" | "link <target>" for every entry under root
local function snapshot(root)
  local out = {}
  local function walk(dir, rel)
    for name in lfs.dir(dir) do
      if name ~= "." and name ~= ".." then
        local p, r = dir .. "/" .. name, rel == "" and name or (rel .. "/" .. name)
        local mode = lfs.symlinkattributes(p, "mode")
        if mode == "directory" then out[r] = "dir"; walk(p, r)
        elseif mode == "link" then out[r] = "link " .. lfs.symlinkattributes(p, "target")
        else out[r] = "file " .. hash.sha256_file(p) end
      end
    end
  end
  walk(root, "")
  return out
end

local function count(t) local n = 0; for _ in pairs(t) do n = n + 1 end; return n end

-- 5023 entries: 4752 files (791 of them empty) in 40 directories, a 30-deep chain
-- of directories with a file at the bottom, and some links.
local function make_tree(root)
  sh(string.format([[mkdir -p %s && cd %s && for d in $(seq 1 40); do mkdir d$d; done &&
    for i in $(seq 1 4750); do d=d$(( i %% 40 + 1 )); if [ $((i %% 6)) -eq 0 ]; then : > $d/e$i; else
      head -c $(( (i * 37) %% 9000 + 1 )) /dev/urandom > $d/f$i; fi; done &&
    p=deep; for i in $(seq 1 30); do p=$p/level$i; done; mkdir -p $p && echo bottom > $p/leaf.txt &&
    for i in $(seq 1 200); do ln -s ../d1/f$i d2/l$i; done &&
    head -c 3000000 /dev/urandom > big.bin]], T.q(root), T.q(root)))
end

local function no_leftovers(root)
  local p = io.popen("find " .. T.q(root) .. " -name '*.part' -o -name '*.part.lock' | head -5")
  local s = p:read("a"); p:close()
  return s
end

describe("trees with many files in flight", function()
  local fx, inst, dir
  setup(function()
    fx = sshd.start{addrs = 1, log_level = "VERBOSE"}
    inst = fx:connect(1)
    dir = T.tmpdir()
  end)
  teardown(function()
    if inst then inst:close() end
    if fx then fx:stop() end
    T.rmtree(dir)
  end)

  it("round-trips 5000 entries with empty files and deep paths, every file verified, many in flight", function()
    local src = dir .. "/tree"
    make_tree(src)
    local want = snapshot(src)
    assert.is_true(count(want) >= 5000)
    local up = inst:put(src, fx.home .. "/tree", {verify = true, progress = false})
    assert.equal(4752, #up.files)
    assert.equal(200, #up.links)
    for _, f in ipairs(up.files) do assert.is_true(f.verified, f.path) end
    assert.is_true(up.in_flight >= 100, "files in flight at once: " .. tostring(up.in_flight))
    assert.same(want, snapshot(fx.home .. "/tree"))
    assert.equal("", no_leftovers(fx.home .. "/tree"))
    local down = inst:get(fx.home .. "/tree", dir .. "/back", {verify = true, progress = false})
    assert.equal(4752, #down.files)
    for _, f in ipairs(down.files) do assert.is_true(f.verified, f.path) end
    assert.is_true(down.in_flight >= 100, "files in flight at once: " .. tostring(down.in_flight))
    assert.same(want, snapshot(dir .. "/back"))
    assert.equal("", no_leftovers(dir .. "/back"))
    -- mode and mtime kept
    local a, b = lfs.attributes(src .. "/d3/f2"), lfs.attributes(dir .. "/back/d3/f2")
    assert.equal(a.modification, b.modification)
    assert.equal(a.permissions, b.permissions)
  end)

  it("re-sending an unchanged tree moves no file data; a changed one moves only what changed", function()
    local src = dir .. "/again"
    sh(string.format([[mkdir -p %s/sub && cd %s && for i in $(seq 1 200); do head -c $((i * 50)) /dev/urandom > f$i; done &&
      head -c 2000000 /dev/urandom > sub/big && printf 'line 1\n' > sub/train.log && : > empty]], T.q(src), T.q(src)))
    local total = 0
    for i = 1, 200 do total = total + i * 50 end
    total = total + 2000000 + 7
    local first = inst:put(src, fx.home, {verify = true, progress = false})
    assert.equal(total, first.sent)
    local again = inst:put(src, fx.home, {verify = true, progress = false})
    assert.equal(203, #again.files)
    assert.equal(0, again.sent)                      -- the transfer's own count of file data sent
    for _, f in ipairs(again.files) do assert.is_true(f.unchanged and f.verified and f.sent == 0, f.path) end
    os.execute("mkdir -p " .. T.q(dir .. "/here"))
    assert.equal(total, inst:get(fx.home .. "/again", dir .. "/here", {verify = true, progress = false}).sent)
    assert.equal(0, inst:get(fx.home .. "/again", dir .. "/here", {verify = true, progress = false}).sent)
    -- a log that grew sends only its new bytes; a rewritten file is sent whole
    sh(string.format("printf 'line 2\n' >> %s && head -c 500 /dev/urandom > %s", T.q(src .. "/sub/train.log"),
      T.q(src .. "/f7")))
    local changed = inst:put(src, fx.home, {verify = true, progress = false})
    assert.equal(7 + 500, changed.sent)
    assert.same(snapshot(src), snapshot(fx.home .. "/again"))
    local back = inst:get(fx.home .. "/again", dir .. "/here", {verify = true, progress = false})
    assert.equal(7 + 500, back.sent)
    assert.same(snapshot(src), snapshot(dir .. "/here/again"))
    assert.equal("", no_leftovers(dir .. "/here") .. no_leftovers(fx.home .. "/again"))
  end)

  it("an unchanged tree re-sent costs one exchange with the box: one command, no SFTP session", function()
    -- what the box's sshd saw (LogLevel VERBOSE: a "Starting session:" line per
    -- channel, naming its command or subsystem) while a fresh connection re-sent
    -- and re-pulled a tree
    local src = dir .. "/probe"
    sh(string.format([[mkdir -p %s/a/b && cd %s && for i in $(seq 1 50); do head -c $((i * 70)) /dev/urandom > a/f$i; done &&
      echo deep > a/b/leaf && ln -s a/f1 link && : > empty]], T.q(src), T.q(src)))
    inst:put(src, fx.home, {verify = true, progress = false})
    os.execute("mkdir -p " .. T.q(dir .. "/probe_back"))
    inst:get(fx.home .. "/probe", dir .. "/probe_back", {verify = true, progress = false})
    local function sessions(text)
      local n = {exec = 0, sftp = 0}
      for line in text:gmatch("[^\n]+") do
        if line:find("Starting session: command", 1, true) then n.exec = n.exec + 1 end
        if line:find("Starting session: subsystem 'sftp'", 1, true) then n.sftp = n.sftp + 1 end
      end
      assert.is_true(n.exec + n.sftp > 0, "sshd logged no session start: " .. text:sub(1, 300))
      return n
    end
    for _, verb in ipairs({"put", "get"}) do
      local via = fx:connect(1)
      local before = #T.read(fx.dir .. "/sshd.log")
      local r = verb == "put" and via:put(src, fx.home, {verify = true, progress = false})
        or via:get(fx.home .. "/probe", dir .. "/probe_back", {verify = true, progress = false})
      via:close()
      gpurent.sleep(0.2)   -- sshd writes its log lines as the channels close
      local seen = sessions(T.read(fx.dir .. "/sshd.log"):sub(before + 1))
      assert.equal(0, r.sent)
      assert.equal(52, #r.files)
      for _, f in ipairs(r.files) do assert.is_true(f.unchanged and f.verified, f.path) end
      assert.equal(1, #r.links)
      assert.same({exec = 1, sftp = 0}, seen, verb)
    end
  end)

  it("a two-file tree verifies (the box hashes while the files move)", function()
    local src = fx.home .. "/changing"
    sh("mkdir -p " .. T.q(src) .. " && echo one > " .. T.q(src .. "/a") .. " && echo two > " .. T.q(src .. "/b"))
    local r = inst:get(src, dir .. "/changing", {verify = true, progress = false})
    assert.equal(2, #r.files)
    assert.equal("one\n", T.read(dir .. "/changing/a"))
  end)

  -- as transfer_streams_spec's one-file case: a dead put's lock on one file of the
  -- tree, and a process on the box still holding that file's .part open that writes
  -- into it once the final name appears (or after 3 s): the tree put waits for it
  it("a tree put that breaks a dead holder's lock on a file waits until nothing on the box has its .part open", function()
    local src, dst = dir .. "/fenced_tree", fx.home .. "/fenced_tree"
    local flag = dir .. "/tree_writer.started"
    sh(string.format("mkdir -p %s %s && head -c 2000000 /dev/urandom > %s/big.bin && echo small > %s/small.txt",
      T.q(src), T.q(dst), T.q(src), T.q(src)))
    local part, final = dst .. "/big.bin.part", dst .. "/big.bin"
    sh(string.format("head -c 500000 %s/big.bin > %s", T.q(src), T.q(part)))
    deadput.lock(final)
    deadput.late_writer(part, final, flag)
    local p = io.popen(string.format("GPURENT_SSH_CONFIG=%s %s put h1 %s %s 2>&1; echo \"exit=$?\"",
      T.q(fx.config), T.q(T.bin), T.q(src), T.q(fx.home)))
    local out = p:read("a")
    p:close()
    assert.truthy(out:find("exit=0", 1, true), out)
    assert.matches("waiting for PID %d+ %([^)]+%) on the box to close", out)
    core.sys.sleep(0.3)   -- a write the put did not wait for would be in by now
    assert.equal(hash.sha256_file(src .. "/big.bin"), hash.sha256_file(final), "late bytes landed in the final file")
    assert.is_nil(lfs.attributes(part))
  end)

  it("moves a tree through an emulated 20 ms link (bench/relay.c), verified", function()
    local link = relay.start(fx, 20)
    local ok, err = pcall(function()
      local via = gpurent.connect("h1", {config = link.config})
      local src = dir .. "/small"
      sh("mkdir -p " .. T.q(src .. "/x/y") .. " && for i in $(seq 1 300); do head -c $((i * 13)) /dev/urandom > " ..
        T.q(src) .. "/x/f$i; done && : > " .. T.q(src .. "/x/y/empty"))
      local up = via:put(src, fx.home .. "/small", {verify = true, progress = false})
      assert.equal(301, #up.files)
      local down = via:get(fx.home .. "/small", dir .. "/small_back", {verify = true, progress = false})
      assert.equal(301, #down.files)
      assert.same(snapshot(src), snapshot(dir .. "/small_back"))
      via:close()
    end)
    link:stop()
    assert(ok, err)
  end)
end)

describe("an interrupted tree get", function()
  local fx, dir, link
  setup(function()
    fx = sshd.start{addrs = 1}
    dir = T.tmpdir()
    link = relay.start(fx, 50)   -- slow enough to stop it midway
  end)
  teardown(function()
    if link then link:stop() end
    if fx then fx:stop() end
    T.rmtree(dir)
  end)

  it("is resumed by the next get: .part prefixes kept, every file verified", function()
    local src = fx.home .. "/ckpt"
    sh(string.format("mkdir -p %s && for i in 1 2 3 4; do head -c 25165824 /dev/urandom > %s/s$i.pt; done && " ..
      "for i in $(seq 1 50); do head -c 4096 /dev/urandom > %s/m$i.json; done", T.q(src), T.q(src), T.q(src)))
    local want = snapshot(src)
    local dst = dir .. "/ckpt"
    -- a gpurent child, SIGKILLed once some .part holds data
    local pidfile = dir .. "/pid"
    os.execute(string.format("(GPURENT_SSH_CONFIG=%s %s get h1 %s %s >%s 2>&1 & echo $! > %s) >/dev/null 2>&1",
      T.q(link.config), T.q(T.bin), T.q(src), T.q(dir), T.q(dir .. "/out"), T.q(pidfile)))
    local pid
    for _ = 1, 250 do pid = tonumber(T.read(pidfile) or ""); if pid then break end; core.sys.sleep(0.02) end
    assert(pid, "child did not start")
    local partial = false
    for _ = 1, 1500 do                                   -- bounded: 30 s
      for i = 1, 4 do
        if (lfs.attributes(dst .. "/s" .. i .. ".pt.part", "size") or 0) >= 1048576 then partial = true end
      end
      if partial then break end
      core.sys.sleep(0.02)
    end
    os.execute("kill -9 " .. pid .. " 2>/dev/null")
    assert.is_true(partial, "no .part grew: " .. tostring(T.read(dir .. "/out")))
    core.sys.sleep(0.2)
    local inst = fx:connect(1)
    local r = inst:get(src, dir, {verify = true, progress = false})
    inst:close()
    local resumed = 0
    for _, f in ipairs(r.files) do
      assert.is_true(f.verified)
      if f.resumed_from > 0 then resumed = resumed + 1 end
    end
    assert.is_true(resumed >= 1, "no file resumed")
    assert.equal(54, #r.files)
    assert.same(want, snapshot(dst))
    assert.equal("", no_leftovers(dst))
  end)
end)

describe("gpurent put / get", function()
  local fx, dir, env
  setup(function()
    fx = sshd.start{addrs = 1}
    dir = T.tmpdir()
    env = "GPURENT_SSH_CONFIG=" .. T.q(fx.config)
  end)
  teardown(function()
    if fx then fx:stop() end
    T.rmtree(dir)
  end)

  local function lines(out)
    local t = {}
    for l in out:gmatch("[^\n]+") do t[#t + 1] = json.decode(l) end
    return t
  end

  it("put and get a tree and a file with JSON lines, exit 0, verified", function()
    local src = dir .. "/res"
    sh("mkdir -p " .. T.q(src .. "/sub") .. " && echo a > " .. T.q(src .. "/a.txt") .. " && : > " ..
      T.q(src .. "/sub/empty") .. " && head -c 100000 /dev/urandom > " .. T.q(src .. "/sub/b.bin"))
    local code, out, err = T.run(string.format("put h1 %s %s --json", T.q(src), T.q(fx.home .. "/res")), {env = env})
    assert.equal(0, code, err)
    local ev = lines(out)
    local files = 0
    for _, e in ipairs(ev) do
      if e.event == "file" then files = files + 1; assert.is_true(e.verified); assert.equal(64, #e.sha256) end
    end
    assert.equal(3, files)
    assert.equal("done", ev[#ev].event)
    assert.equal(3, ev[#ev].files)
    assert.equal(100002, ev[#ev].bytes)
    code, out, err = T.run(string.format("get h1 %s %s %s --json", T.q(fx.home .. "/res"),
      T.q(fx.home .. "/res/a.txt"), T.q(dir .. "/down")), {env = "mkdir -p " .. T.q(dir .. "/down") .. " && " .. env})
    assert.equal(0, code, err)
    ev = lines(out)
    assert.equal("done", ev[#ev].event)
    assert.equal(4, ev[#ev].files)
    assert.equal("a\n", T.read(dir .. "/down/a.txt"))
    assert.equal(hash.sha256_file(src .. "/sub/b.bin"), hash.sha256_file(dir .. "/down/res/sub/b.bin"))
  end)

  it("--dry-run lists what would move and moves nothing", function()
    local src = dir .. "/dry"
    sh("mkdir -p " .. T.q(src .. "/s") .. " && echo x > " .. T.q(src .. "/s/x"))
    local code, out, err = T.run(string.format("put h1 %s %s --dry-run --json", T.q(src), T.q(fx.home .. "/dry")),
      {env = env})
    assert.equal(0, code, err)
    local ev = lines(out)
    local planned = {}
    for _, e in ipairs(ev) do if e.event == "plan" then planned[e.dst] = e.type end end
    assert.equal("file", planned[fx.home .. "/dry/s/x"])
    assert.equal("directory", planned[fx.home .. "/dry/s"])
    assert.is_true(ev[#ev].dry_run)
    assert.is_nil(lfs.attributes(fx.home .. "/dry"))
    code, out = T.run(string.format("get h1 %s %s --dry-run", T.q(fx.home .. "/res"), T.q(dir .. "/nowhere")), {env = env})
    assert.equal(0, code)
    assert.matches("get file " .. fx.home .. "/res/a.txt -> " .. dir .. "/nowhere/a.txt", out, 1, true)
    assert.is_nil(lfs.attributes(dir .. "/nowhere"))
  end)

  it("exit codes: 2 usage, 1 a failed transfer (with a JSON error line), 130 interrupted", function()
    local code, _, err = T.run("put h1 only-one-arg", {env = env})
    assert.equal(2, code)
    assert.matches("put needs HOST, at least one SRC and DST", err, 1, true)
    code = T.run("get h1 a b --streams 99", {env = env})
    assert.equal(2, code)
    local out
    code, out, err = T.run(string.format("get h1 %s %s --json", T.q(fx.home .. "/no/such"), T.q(dir .. "/x")), {env = env})
    assert.equal(1, code, err)
    local ev = lines(out)
    assert.equal("error", ev[#ev].event)
    assert.matches("no such remote file", ev[#ev].message, 1, true)
    code = T.run(string.format("put h1 %s %s %s", T.q(dir .. "/res"), T.q(dir .. "/dry"), T.q(fx.home .. "/not-a-dir")),
      {env = env})
    assert.equal(1, code)
    -- Ctrl-C during a slow tree get (through a 200 ms link): 130, nothing under a final name half-written
    local link = relay.start(fx, 200)
    local big = fx.home .. "/bigtree"
    sh("mkdir -p " .. T.q(big) .. " && for i in 1 2 3; do head -c 20000000 /dev/urandom > " .. T.q(big) .. "/b$i; done")
    code = T.run(string.format("get h1 %s %s", T.q(big), T.q(dir .. "/int")),
      {env = "GPURENT_SSH_CONFIG=" .. T.q(link.config) .. " timeout --preserve-status -k 20 -s INT 2"})
    link:stop()
    assert.equal(130, code)
    for i = 1, 3 do
      local final = dir .. "/int/bigtree/b" .. i
      if lfs.attributes(final) then assert.equal(hash.sha256_file(big .. "/b" .. i), hash.sha256_file(final)) end
    end
  end)
end)

-- transfer_compress_spec: zlib compression on gpurent's connections (issue 16):
-- connect{compress=true}, ssh_config's Compression yes and `gpurent put/get
-- --compress` negotiate zlib with the server (libssh2's flag set before the
-- handshake) on the instance's session and on a tunnel's own, a text-heavy tree round-trips verified with it on and crosses the link
-- in far fewer bytes than its size (counted by the relay in between: bench/relay.c
-- --count), and without it the link carries every byte.
-- Speed is measured by bench/compress_bench.sh, never asserted here.
package.path = T.root .. "/bench/?.lua;" .. package.path
local sshd = require "sshd"
local relay = require "relay"
local text_tree = require "text_tree"
local hash = require "gpurent.util.hash"
local lfs = require "lfs"
local json = require "gpurent.util.json"

local ZLIB = {["zlib@openssh.com"] = true, zlib = true}

local function sh(cmd) assert(os.execute(cmd), cmd) end

-- relative path -> sha256 of every file under root
local function snapshot(root)
  local out = {}
  local function walk(dir, rel)
    for name in lfs.dir(dir) do
      if name ~= "." and name ~= ".." then
        local p, r = dir .. "/" .. name, rel == "" and name or (rel .. "/" .. name)
        if lfs.attributes(p, "mode") == "directory" then walk(p, r) else out[r] = hash.sha256_file(p) end
      end
    end
  end
  walk(root, "")
  return out
end

-- Bytes the relay delivered so far, both directions (bench/relay.c --count).
local function relay_bytes(link) return link:bytes() end

describe("compression (zlib) on gpurent's connections", function()
  local fx, dir, link
  setup(function()
    fx = sshd.start{addrs = 1}
    dir = T.tmpdir()
    link = relay.start(fx, 2, {count = true})
  end)
  teardown(function()
    if link then link:stop() end
    if fx then fx:stop() end
    T.rmtree(dir)
  end)

  it("connect{compress=true} negotiates zlib; without it, or with false, none", function()
    local on = fx:connect(1, {compress = true})
    assert.is_true(ZLIB[on:compression()] ~= nil, "negotiated: " .. tostring(on:compression()))
    assert.is_true(ZLIB[on.conn.sess:negotiated("comp_sc")] ~= nil)
    assert.equal("hi\n", on:sh("echo hi").stdout)
    -- a tunnel opens its own session: the same setting
    local fwd = on:forward(22, {local_port = 0})
    assert.is_true(ZLIB[fwd:session().conn.compression] ~= nil, "tunnel: " .. tostring(fwd:session().conn.compression))
    fwd:close()
    on:close()
    local off = fx:connect(1)
    assert.equal("none", off:compression())
    off:close()
    local err = select(2, pcall(fx.connect, fx, 1, {compress = "yes"}))
    assert.matches("compress must be true or false, got yes", tostring(err), 1, true)
  end)

  it("honours ssh_config's Compression yes, and compress=false overrides it", function()
    local cfg = dir .. "/ssh_config_compress"
    sh("cp " .. T.q(fx.config) .. " " .. T.q(cfg) .. " && printf '\\nHost *\\n  Compression yes\\n' >> " .. T.q(cfg))
    assert.is_true(require("gpurent.transport.sshconfig").resolve("h1", {config = cfg}).compression)
    local on = gpurent.connect("h1", {config = cfg})
    assert.is_true(ZLIB[on:compression()] ~= nil, "negotiated: " .. tostring(on:compression()))
    on:close()
    local off = gpurent.connect("h1", {config = cfg, compress = false})
    assert.equal("none", off:compression())
    off:close()
  end)

  it("a text tree round-trips verified with compression on, in far fewer bytes on the link", function()
    local src = dir .. "/texts"
    local size = text_tree.make(src, 20, 2 * 1048576)
    local want = snapshot(src)
    local function moved(compress, tag)
      local via = gpurent.connect("h1", {config = link.config, compress = compress})
      local before = relay_bytes(link)
      local up = via:put(src, fx.home .. "/texts_" .. tag, {verify = true, progress = false})
      local down = via:get(fx.home .. "/texts_" .. tag, dir .. "/back_" .. tag, {verify = true, progress = false})
      local wire = relay_bytes(link) - before
      via:close()
      for _, r in ipairs({up, down}) do
        assert.equal(20, #r.files)
        for _, f in ipairs(r.files) do assert.is_true(f.verified, f.path) end
      end
      assert.same(want, snapshot(fx.home .. "/texts_" .. tag))
      assert.same(want, snapshot(dir .. "/back_" .. tag))
      return wire
    end
    local plain = moved(false, "plain")
    local zipped = moved(true, "zlib")
    -- both directions: 2 x size of file data; zlib takes these logs to well under a third
    assert.is_true(plain >= 2 * size, string.format("uncompressed link carried %d bytes for 2 x %d", plain, size))
    assert.is_true(zipped < (2 * size) / 3, string.format("compressed link carried %d bytes for 2 x %d", zipped, size))
  end)

  it("gpurent put/get --compress negotiate it and say so in the done line", function()
    local src = dir .. "/cli"
    text_tree.make(src, 4, 64 * 1024)
    for _, verb in ipairs({"put", "get"}) do
      local from, to = src, fx.home .. "/cli_up"
      if verb == "get" then from, to = fx.home .. "/cli_up", dir .. "/cli_down" end
      local p = io.popen(string.format("%s %s %s --json --compress h1 %s %s 2>&1", fx:env(), T.q(T.bin), verb,
        T.q(from), T.q(to)))
      local out = p:read("a")
      assert.is_true(p:close(), out)
      local done
      for line in out:gmatch("[^\n]+") do
        local ok, t = pcall(json.decode, line)
        if ok and type(t) == "table" and t.event == "done" then done = t end
      end
      assert.is_table(done, out)
      assert.is_true(ZLIB[done.compression] ~= nil, out)
    end
    assert.same(snapshot(src), snapshot(dir .. "/cli_down"))
  end)

  it("--compress against a server that declines it says so and moves the files uncompressed", function()
    local plain = sshd.start{addrs = 1, sshd_options = "Compression no"}
    local ok, err = pcall(function()
      local src = dir .. "/declined"
      text_tree.make(src, 2, 8192)
      local p = io.popen(string.format("%s %s put --compress h1 %s %s 2>&1", plain:env(), T.q(T.bin), T.q(src),
        T.q(plain.home .. "/declined")))
      local out = p:read("a")
      assert.is_true(p:close(), out)
      assert.matches("h1 declined compression (its sshd has Compression no): moving uncompressed", out, 1, true)
      assert.same(snapshot(src), snapshot(plain.home .. "/declined"))
    end)
    plain:stop()
    if not ok then error(err, 0) end
  end)
end)

-- hash_json_fs_spec: SHA-256 (file and streaming), JSON (lenient decode with named
-- errors, stable encode), and atomic file writes that never leave a torn file.
local hash = require "gpurent.util.hash"
local json = require "gpurent.util.json"
local fs = require "gpurent.util.fs"

local EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
local ABC = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"

describe("hash", function()
  local dir
  before_each(function() dir = T.tmpdir() end)
  after_each(function() T.rmtree(dir) end)

  it("matches the FIPS test vectors", function()
    assert.are.equal(EMPTY, hash.sha256(""))
    assert.are.equal(ABC, hash.sha256("abc"))
  end)

  it("hashes a file the same as sha256sum and returns its size", function()
    local p = dir .. "/blob"
    os.execute("head -c 3000001 /dev/urandom > " .. T.q(p))
    local hex, bytes = hash.sha256_file(p)
    local want = io.popen("sha256sum " .. T.q(p)):read("a"):match("^(%x+)")
    assert.are.equal(want, hex)
    assert.are.equal(3000001, bytes)
  end)

  it("streams: chunked updates equal the one-shot digest", function()
    local h = hash.sha256_new()
    h:update("a"):update("b"):update("c")
    assert.are.equal(ABC, h:hex())
    assert.are.equal(ABC, h:hex()) -- idempotent after final
    assert.has_error(function() h:update("x") end, "sha256: update after hex()")
  end)

  it("names the path when a file cannot be read", function()
    assert.has_error(function() hash.sha256_file(dir .. "/none") end,
      "sha256_file: cannot open " .. dir .. "/none: No such file or directory")
    assert.has_error(function() hash.sha256_file(dir) end,
      "sha256_file: cannot read " .. dir .. ": Is a directory")
  end)
end)

describe("json", function()
  it("decodes and names the input in errors", function()
    assert.are.same({a = {1, 2}, b = "x"}, json.decode('{"a":[1,2],"b":"x"}'))
    assert.are.equal(json.null, json.decode('{"n":null}').n)
    local ok, err = pcall(json.decode, '{"a":', "PULL_MANIFEST.json")
    assert.is_false(ok)
    assert.matches("PULL_MANIFEST%.json: invalid JSON", err)
  end)

  it("encodes stably: sorted keys, two-space indent, UTF-8 and slashes kept", function()
    local text = json.encode_stable({z = 1, a = {path = "best/模型.pth", bytes = 12}, files = json.array({}),
                                     list = {"x", "y"}, f = 0.5, n = json.null, t = true})
    assert.are.equal([[
{
  "a": {
    "bytes": 12,
    "path": "best/模型.pth"
  },
  "f": 0.5,
  "files": [],
  "list": [
    "x",
    "y"
  ],
  "n": null,
  "t": true,
  "z": 1
}
]], text)
    assert.are.same({z = 1, a = {path = "best/模型.pth", bytes = 12}, files = {}, list = {"x", "y"}, f = 0.5,
                     n = json.null, t = true}, json.decode(text))
  end)

  it("refuses what JSON cannot hold", function()
    assert.has_error(function() json.encode_stable({x = 0/0}) end, "json: NaN at $.x")
    assert.has_error(function() json.encode_stable({bad = "\xff"}) end, "json: invalid UTF-8 in string at $.bad")
    local t = {}; t.self = t
    assert.has_error(function() json.encode_stable(t) end, "json: cycle at $.self")
  end)
end)

describe("fs", function()
  local dir
  before_each(function() dir = T.tmpdir() end)
  after_each(function() T.rmtree(dir) end)

  it("atomic_write replaces a file whole and leaves no temp file", function()
    local p = dir .. "/run.json"
    T.write(p, "old")
    fs.atomic_write(p, "new contents")
    assert.are.equal("new contents", T.read(p))
    local names = {}
    for n in fs.dir(dir) do if n ~= "." and n ~= ".." then names[#names + 1] = n end end
    assert.are.same({"run.json"}, names)
  end)

  it("atomic_write on a full disk keeps the old file and names the path", function()
    local mnt = dir .. "/small"
    fs.mkdirs(mnt)
    assert.is_true(os.execute("mount -t tmpfs -o size=64k tmpfs " .. T.q(mnt)), "need root to mount a tmpfs")
    local ok, err = pcall(function()
      local p = mnt .. "/state.json"
      T.write(p, "precious")
      local ok2, err2 = pcall(fs.atomic_write, p, string.rep("x", 1024 * 1024))
      assert.is_false(ok2)
      assert.matches("atomic_write " .. p:gsub("%p", "%%%0") .. ": write failed: No space left on device", err2)
      assert.are.equal("precious", T.read(p))
      local count = 0
      for n in fs.dir(mnt) do if n ~= "." and n ~= ".." then count = count + 1 end end
      assert.are.equal(1, count)
    end)
    os.execute("umount " .. T.q(mnt))
    assert(ok, err)
  end)

  it("writeback starts writing a flushed range of an open file; a closed one is refused", function()
    local p = dir .. "/wb"
    local f = assert(io.open(p, "wb"))
    f:write(string.rep("x", 100000)); f:flush()
    assert.is_true(fs.writeback(f, 0, 100000))
    assert.has_error(function() fs.writeback(f, -1, 10) end, "writeback: negative offset or length")
    f:close()
    assert.has_error(function() fs.writeback(f, 0, 10) end)
    assert.are.equal(100000, #T.read(p))
  end)

  it("mkdirs creates nested directories and names a blocking file", function()
    fs.mkdirs(dir .. "/a/b/c")
    assert.is_true(fs.is_dir(dir .. "/a/b/c"))
    fs.mkdirs(dir .. "/a/b/c") -- idempotent
    T.write(dir .. "/file", "x")
    assert.has_error(function() fs.mkdirs(dir .. "/file/sub") end,
      "fs.mkdirs " .. dir .. "/file/sub: " .. dir .. "/file exists and is not a directory")
  end)
end)

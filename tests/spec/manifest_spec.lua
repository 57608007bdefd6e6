-- manifest_spec.lua: PULL_MANIFEST.json builder and PULL_VERIFIED.json verifier,
-- rule by rule from ../shared/design/MANIFEST.md, on real files.
local manifest = require "gpurent.lifecycle.manifest"
local hash = require "gpurent.util.hash"
local json = require "gpurent.util.json"
local fs = require "gpurent.util.fs"

local function mkresult(root, name, extra)
  fs.mkdirs(root .. "/" .. name .. "/test/t1")
  T.write(root .. "/" .. name .. "/best.pth", "weights of " .. name)
  T.write(root .. "/" .. name .. "/best_metrics.json", '{"acc": 0.9}\n')
  T.write(root .. "/" .. name .. "/test/t1/metrics.json", "{}\n")
  for p, data in pairs(extra or {}) do T.write(root .. "/" .. name .. "/" .. p, data) end
end

local function errmsg(fn, ...)
  local ok, e = pcall(fn, ...)
  assert.is_false(ok, "expected an error")
  return tostring(e)
end

-- A remote root with results a and b, its manifest, and a pulled copy.
local function pulled_pair()
  local remote, loc = T.tmpdir(), T.tmpdir()
  mkresult(remote, "a"); mkresult(remote, "b")
  manifest.build(remote, "a\nb\n", {run_id = "run-1"})
  os.execute(string.format("cp -a %s/. %s/", T.q(remote), T.q(loc)))
  return remote, loc
end

describe("manifest.parse_roster", function()
  it("ignores comments, blank lines, a BOM and CRLF", function()
    assert.are.same({"r1", "r_2.x-y"}, manifest.parse_roster("\239\187\191# roster\r\nr1\r\n\n  r_2.x-y  \n"))
  end)
  it("refuses an empty roster, duplicates and bad names", function()
    assert.matches("empty", errmsg(manifest.parse_roster, "# nothing\n\n"))
    assert.matches("listed twice", errmsg(manifest.parse_roster, "a\nb\na\n"))
    assert.matches("letters, digits", errmsg(manifest.parse_roster, "a/b\n"))
    assert.matches("letters, digits", errmsg(manifest.parse_roster, "..\n"))
  end)
end)

describe("manifest.build", function()
  local root
  before_each(function() root = T.tmpdir() end)
  after_each(function() T.rmtree(root) end)

  it("writes the exact layout: sorted keys, two-space indent, per-file bytes and sha256", function()
    mkresult(root, "b"); mkresult(root, "a")
    T.write(root .. "/a/skip.tmp", "partial")
    local m, text = manifest.build(root, "b\na\n", {run_id = "run-1", created_at_utc = "2026-01-02T03:04:05+00:00"})
    assert.are.equal(text, T.read(root .. "/PULL_MANIFEST.json"))
    assert.matches('^{\n  "created_at_utc": "2026%-01%-02T03:04:05%+00:00",\n  "files": %[\n    {\n      "bytes": ', text)
    assert.are.same({"a", "b"}, m.top_level_dirs)
    local paths = {}
    for _, f in ipairs(m.files) do paths[#paths + 1] = f.path end
    assert.are.same({"a/best.pth", "a/best_metrics.json", "a/test/t1/metrics.json",
                     "b/best.pth", "b/best_metrics.json", "b/test/t1/metrics.json"}, paths)
    assert.are.equal(hash.sha256("weights of a"), m.files[1].sha256)
    assert.are.equal(#"weights of a", m.files[1].bytes)
    assert.are.equal(6, m.totals.files)
    assert.are.equal("remote-gpu-trainer/PULL/v1", json.decode(text).schema)
  end)

  it("refuses a missing and an unexpected directory, naming both", function()
    mkresult(root, "a"); mkresult(root, "extra")
    local e = errmsg(manifest.build, root, "a\nb\n", {run_id = "r"})
    assert.matches("b/: missing", e, 1, true)
    assert.matches("extra/: unexpected", e, 1, true)
    assert.is_false(fs.exists(root .. "/PULL_MANIFEST.json"))
  end)

  it("refuses a result directory without its required files", function()
    mkresult(root, "a")
    os.remove(root .. "/a/best_metrics.json")
    assert.matches("a/best_metrics.json: required file missing", errmsg(manifest.build, root, "a", {run_id = "r"}), 1, true)
  end)

  it("refuses symlinks", function()
    mkresult(root, "a")
    os.execute("ln -s /etc/hostname " .. T.q(root .. "/a/link"))
    assert.matches("a/link: a symlink", errmsg(manifest.build, root, "a", {run_id = "r"}), 1, true)
  end)

  it("refuses zero files and a missing run_id", function()
    fs.mkdirs(root .. "/a")
    local e = errmsg(manifest.build, root, "a", {run_id = "r", required = {}})
    assert.matches("zero files", e, 1, true)
    assert.matches("run_id", errmsg(manifest.build, root, "a", {}))
  end)
end)

describe("manifest.verify", function()
  local remote, loc
  before_each(function() remote, loc = pulled_pair() end)
  after_each(function() T.rmtree(remote); T.rmtree(loc) end)

  local function verify(opts) return manifest.verify(loc, opts or {load_cmd = "test -s {}"}) end

  it("writes PULL_VERIFIED.json with the manifest's sha256 when everything matches", function()
    T.write(loc .. "/a/ignored.tmp", "x")
    local v = verify()
    local onfile = json.decode(T.read(loc .. "/PULL_VERIFIED.json"))
    assert.are.same(v, onfile)
    assert.are.equal("remote-gpu-trainer/PULL-VERIFIED/v1", v.schema)
    assert.are.equal("run-1", v.run_id)
    assert.are.equal(hash.sha256(T.read(loc .. "/PULL_MANIFEST.json")), v.manifest_sha256)
    assert.are.equal(6, v.files)
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT", v.verified_at_utc)
    -- byte counts are integers on file (the manifest was read back through JSON: 2797, never 2797.0)
    assert.matches('\n  "bytes": %d+,\n', T.read(loc .. "/PULL_VERIFIED.json"))
    assert.are.equal("integer", math.type(v.bytes))
  end)

  it("a missing file and an unexpected extra file are both errors; no marker", function()
    os.remove(loc .. "/b/best.pth")
    T.write(loc .. "/b/stray.bin", "x")
    local e = errmsg(verify)
    assert.matches("b/best.pth: missing locally", e, 1, true)
    assert.matches("b/stray.bin: unexpected local file", e, 1, true)
    assert.is_false(fs.exists(loc .. "/PULL_VERIFIED.json"))
  end)

  it("a size mismatch and a same-size content change are errors", function()
    T.write(loc .. "/a/best_metrics.json", '{"acc": 0.99}\n')
    assert.matches("a/best_metrics.json: 14 bytes locally, 13 in the manifest", errmsg(verify), 1, true)
    T.write(loc .. "/a/best_metrics.json", '{"acc": 0.1}\n')
    assert.matches("a/best_metrics.json: sha256 %x+ locally", errmsg(verify))
    assert.is_false(fs.exists(loc .. "/PULL_VERIFIED.json"))
  end)

  it("checkpoints must load: a failing load command and no load command both fail", function()
    assert.matches("a/best.pth: does not load", errmsg(verify, {load_cmd = "false"}), 1, true)
    assert.matches("no load check was given", errmsg(verify, {}), 1, true)
    local seen = {}
    verify({load_check = function(p) seen[#seen + 1] = p:match("[^/]+/[^/]+$"); return true end})
    assert.are.same({"a/best.pth", "b/best.pth"}, seen)
  end)

  it("refuses bad manifests: schema, run_id, empty files, .., absolute, duplicates", function()
    local function with(mut)
      local m = json.decode(T.read(remote .. "/PULL_MANIFEST.json"))
      mut(m)
      T.write(loc .. "/PULL_MANIFEST.json", json.encode_stable(m))
      return errmsg(verify)
    end
    assert.matches("schema is", with(function(m) m.schema = "other/v1" end))
    assert.matches("run_id is empty", with(function(m) m.run_id = "" end))
    assert.matches("files is empty", with(function(m) m.files = json.array{} end))
    assert.matches("contains %.%.", with(function(m) m.files[1].path = "a/../a/best.pth" end))
    assert.matches("absolute", with(function(m) m.files[1].path = "/etc/passwd" end))
    assert.matches("absolute", with(function(m) m.files[1].path = "\\x" end))
    assert.matches("listed twice", with(function(m) m.files[2] = m.files[1] end))
  end)

  it("read_verified notices a manifest changed after verification", function()
    verify()
    local v, m = manifest.read_verified(loc)
    assert.are.equal(6, #m.files)
    assert.are.equal("run-1", v.run_id)
    T.write(loc .. "/PULL_MANIFEST.json", T.read(loc .. "/PULL_MANIFEST.json") .. " ")
    assert.matches("changed since it was verified", errmsg(manifest.read_verified, loc))
  end)

  it("compare reports path, byte and hash differences", function()
    local a = json.decode(T.read(remote .. "/PULL_MANIFEST.json"))
    local b = json.decode(T.read(remote .. "/PULL_MANIFEST.json"))
    b.files[1].bytes = b.files[1].bytes + 1
    b.files[2].sha256 = string.rep("0", 64)
    b.files[3].path = "a/renamed.json"
    local d = table.concat(manifest.compare(a, b), "\n")
    assert.matches("a/best.pth: 12 bytes local, 13 bytes remote", d, 1, true)
    assert.matches("a/best_metrics.json: sha256", d, 1, true)
    assert.matches("a/test/t1/metrics.json: in the local manifest, not in the remote one", d, 1, true)
    assert.matches("a/renamed.json: in the remote manifest, not in the local one", d, 1, true)
    assert.are.same({}, manifest.compare(a, a))
  end)
end)

describe("gpurent verify", function()
  it("verifies a pulled directory (exit 0) and fails a broken one (exit 1)", function()
    local remote, loc = pulled_pair()
    local code, out, err = T.run("verify " .. T.q(loc) .. " --load-cmd 'test -s'")
    assert.are.equal(0, code, err)
    assert.matches("verified .*: run run%-1, 6 files", out)
    os.remove(loc .. "/PULL_VERIFIED.json")
    T.write(loc .. "/a/best.pth", "tampered!!!!")      -- same size, other bytes
    code, out, err = T.run("verify " .. T.q(loc) .. " --load-cmd 'test -s'")
    assert.are.equal(1, code)
    assert.matches("a/best.pth: sha256", err, 1, true)
    assert.is_false(fs.exists(loc .. "/PULL_VERIFIED.json"))
    T.rmtree(remote); T.rmtree(loc)
  end)

  it("--build writes the manifest from a roster file", function()
    local root = T.tmpdir()
    mkresult(root, "x")
    T.write(root .. "/../roster-" .. root:match("[^/]+$"), "x\n")
    local roster = root .. "/../roster-" .. root:match("[^/]+$")
    local code, out, err = T.run("verify " .. T.q(root) .. " --build " .. T.q(roster) .. " --run-id r9")
    assert.are.equal(0, code, err)
    assert.matches("run r9, 3 files", out)
    assert.are.equal("r9", json.decode(T.read(root .. "/PULL_MANIFEST.json")).run_id)
    os.remove(roster)
    T.rmtree(root)
  end)
end)

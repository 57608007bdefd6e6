-- gate_spec.lua: the teardown gate (Iron Law) end to end: `gpurent billing release`
-- against the simulated AutoDL (tests/sim: a booted box per test, its API server and
-- journal), a result root with its PULL_MANIFEST.json on the region FS, and a pulled,
-- verified local copy. Each box's inventory is taken over SSH while it runs
-- (`gpurent billing inventory`), then it is powered off: what release_inventory_spec
-- proves about the whole disk is a given here, and these tests are about the pull
-- evidence and the approval. Every refusal exits 3 and the API journal proves
-- nothing destructive was sent.
--
-- The "remote" manifest is also re-read from the region FS as the host mounts it
-- (--durable-dir): a local read, as the output says. The SSH reader
-- (--remote-manifest TARGET:PATH) is the production path.
local testbed = require "testbed"
local manifest = require "gpurent.lifecycle.manifest"
local json = require "gpurent.util.json"
local fs = require "gpurent.util.fs"

local function mkresult(root, name)
  fs.mkdirs(root .. "/" .. name)
  T.write(root .. "/" .. name .. "/best.pth", "weights " .. name)
  T.write(root .. "/" .. name .. "/best_metrics.json", "{}\n")
end

local ok_tb, why = testbed.available()

describe("teardown gate", function()
  if not ok_tb then pending("testbed unavailable: " .. why); return end
  local tb, durable, pulled, outputs
  local n = 0
  local srv = {}                 -- what the tests read of the API: url, token, journal

  local function run(args, opts)
    opts = opts or {}
    -- setsid: no controlling terminal, so nothing can be typed at the prompt
    local code, out, err = T.run("-w " .. T.q(T.bin) .. " " .. args,
      {bin = "setsid", env = tb:env(), stdin = opts.stdin, cwd = opts.cwd})
    outputs[#outputs + 1] = out .. err
    return code, out, err
  end

  -- a fresh box per test, inventoried while it runs and then powered off, so an
  -- allowed release does not spoil the next
  local function instance()
    n = n + 1
    local name = "gbox" .. n
    tb:up(name, "--region westDC2 --data-size 16M --fs-size 32M --fs-inodes 2000")
    local code, out, err = run("billing inventory " .. name .. " " .. name)
    assert(code == 0, out .. err)
    tb:sim("poweroff " .. name)
    return name, tb.uuids[name]
  end

  function srv.journal(_, part, at_least)
    for _ = 1, 60 do                     -- the API journals a request after answering it
      local got = tb:api_calls(part)
      if #got >= (at_least or 0) then return got end
      os.execute("sleep 0.05")
    end
    return tb:api_calls(part)
  end

  local function releases() return #srv:journal("/instance/pro/release") end

  local function gate_rows()
    local L = require("gpurent.state.ledger").open(tb.state .. "/ledger.sqlite")
    local rows = L.db:query([[SELECT g.action, g.decision, g.reason, g.approved_by, i.name FROM gate_decisions g
      LEFT JOIN instances i ON i.id = g.instance_id ORDER BY g.id]])
    L:close()
    return rows
  end

  setup(function()
    tb = testbed.new()
    outputs = {}
    instance()                          -- boots the API and the region FS
    srv.url = testbed.read(tb.dir .. "/api.url"):match("%S+")
    srv.token = testbed.read(tb.dir .. "/api.token"):match("%S+")
    durable = tb.dir .. "/regions/westDC2/gate/results"   -- the region FS, as the host mounts it
    fs.mkdirs(durable)
    mkresult(durable, "r1"); mkresult(durable, "r2")
    manifest.build(durable, "r1\nr2\n", {run_id = "run-gate"})
    pulled = T.tmpdir()
    os.execute(string.format("cp -a %s/. %s/", T.q(durable), T.q(pulled)))
    manifest.verify(pulled, {load_cmd = "test -s"})
  end)
  teardown(function()
    if not tb then return end
    local state = testbed.sh("cat " .. T.q(tb.state) .. "/* " .. T.q(tb.state) .. "/*/* 2>/dev/null")
    local all = table.concat(outputs, "\n") .. (T.read(tb.dir .. "/journal.jsonl") or "") .. state
    tb:down()
    T.rmtree(pulled)
    assert.is_nil(all:find(srv.token, 1, true), "the token leaked")
  end)

  local function release_args(name, extra)
    return string.format("billing release %s --pulled %s --durable-dir %s %s", name, T.q(pulled), T.q(durable), extra or "")
  end

  it("refuses without PULL_VERIFIED.json (exit 3, nothing sent)", function()
    local name = instance()
    local bare = T.tmpdir()
    os.execute(string.format("cp -a %s/. %s/ && rm %s/PULL_VERIFIED.json", T.q(pulled), T.q(bare), T.q(bare)))
    local code, _, err = run(string.format("billing release %s --pulled %s --durable-dir %s --approve %s",
      name, T.q(bare), T.q(durable), name))
    assert.are.equal(3, code)
    assert.matches("no PULL_VERIFIED.json", err, 1, true)
    assert.are.equal(0, releases())
    T.rmtree(bare)
  end)

  it("refuses when the remote manifest no longer matches the verified pull", function()
    local name = instance()
    local moved = T.tmpdir()
    os.execute(string.format("cp -a %s/. %s/", T.q(durable), T.q(moved)))
    T.write(moved .. "/r2/best.pth", "weights r3")          -- same size, other bytes
    manifest.build(moved, "r1\nr2\n", {run_id = "run-gate"})
    local code, _, err = run(string.format("billing release %s --pulled %s --durable-dir %s --approve %s",
      name, T.q(pulled), T.q(moved), name))
    assert.are.equal(3, code)
    assert.matches("no longer matches the verified pull", err, 1, true)
    assert.matches("r2/best.pth: sha256", err, 1, true)
    assert.matches("a local read, not over SSH", err, 1, true)
    assert.are.equal(0, releases())
    T.rmtree(moved)
  end)

  it("refuses an empty roster", function()
    local name = instance()
    local empty = T.tmpdir()
    local m = {schema = manifest.SCHEMA, run_id = "run-gate", created_at_utc = "2026-01-01T00:00:00+00:00",
               top_level_dirs = json.array{}, files = json.array{}, totals = {files = 0, bytes = 0}}
    local text = json.encode_stable(m)
    T.write(empty .. "/PULL_MANIFEST.json", text)
    T.write(empty .. "/PULL_VERIFIED.json", json.encode_stable{schema = manifest.VERIFIED_SCHEMA, run_id = "run-gate",
      manifest_sha256 = require("gpurent.util.hash").sha256(text), verified_at_utc = "x", files = 0, bytes = 0})
    local code, _, err = run(string.format("billing release %s --pulled %s --durable-dir %s --approve %s",
      name, T.q(empty), T.q(empty), name))
    assert.are.equal(3, code)
    assert.matches("empty roster is a failure", err, 1, true)
    assert.are.equal(0, releases())
    T.rmtree(empty)
  end)

  it("refuses without approval, even with the name on stdin", function()
    local name = instance()
    local answer = T.write(os.tmpname(), name .. "\n")
    local code, _, err = run(release_args(name), {stdin = answer})
    os.remove(answer)
    assert.are.equal(3, code)
    assert.matches("no --approve " .. name, err, 1, true)
    assert.matches("no terminal to ask on", err, 1, true)
    assert.are.equal(0, releases())
  end)

  it("an approval for another instance does not count", function()
    local name = instance()
    local code, _, err = run(release_args(name, "--approve someother"))
    assert.are.equal(3, code)
    assert.matches("no --approve " .. name, err, 1, true)
    assert.are.equal(0, releases())
  end)

  it("refuses approval given only from inside a recipe", function()
    local name = instance()
    local dir = T.tmpdir()
    local recipe = T.write(dir .. "/sneaky.lua", string.format([=[
local name, pulled, durable = %q, %q, %q
local core = require "gpurent.core"
local function try(what, fn)
  local ok, e = pcall(fn)
  print(what .. ": " .. (ok and "no error" or "error"))
end
-- 1. fields and functions that are not there
try("assign granted", function() core.approval.granted = function() return true end end)
try("call grant", function() core.approval.grant(name) end)
try("rawset", function() rawset(core.approval, "granted", function() return true end) end)
try("setmetatable", function() setmetatable(core.approval, {__index = {granted = function() return true end}}) end)
-- 2. forged arguments
print("granted(name, true): " .. tostring(core.approval.granted(name, true)))
print("granted({name}): " .. tostring(core.approval.granted({name})))
print("ask with stdin: " .. tostring((core.approval.ask(name, "sneaky"))))
print("after io.read: " .. tostring(io.read("l")) .. " " .. tostring(core.approval.granted(name)))
-- 3. the gate with forged options
local gate = require "gpurent.lifecycle.gate"
local ok, e = pcall(gate.check, {action = "release", instance = name, pulled_dir = pulled,
  read_remote_manifest = gate.local_reader(durable), approved = true, approved_by = "flag",
  approval = name, interactive = true})
print("gate with forged options: " .. (ok and "ALLOWED" or ("refused exit " .. tostring(e.exit))))
-- 4. reach under the locked metatable and swap in a C function that returns true
-- (where the host no longer hands recipes debug.getmetatable, there is nothing to tamper with)
local tampered = pcall(function()
  local mt = debug.getmetatable(core.approval)
  mt.__index.granted = require("lfs").mkdir     -- mkdir(name) -> true
end)
print("tampered granted: " .. (tampered and tostring(core.approval.granted(name)) or "cannot tamper"))
package.loaded["gpurent.lifecycle.gate"] = nil
package.loaded["gpurent.commands.billing"] = nil
-- 5. the real command, with the tampered view: C must still refuse to send
return require("gpurent.commands.billing").main{"release", name, "--pulled", pulled, "--durable-dir", durable}
]=], name, pulled, durable))
    local answer = T.write(dir .. "/answer", name .. "\n" .. name .. "\n")
    local code, out, err = run("run " .. T.q(recipe) .. " approve=" .. name .. " -- --approve " .. name,
      {stdin = answer, cwd = dir})
    assert.are.equal(3, code, out .. err)
    for _, what in ipairs({"assign granted", "call grant", "rawset", "setmetatable"}) do
      assert.matches(what .. ": error", out, 1, true)
    end
    assert.matches("granted(name, true): false", out, 1, true)
    assert.matches("granted({name}): false", out, 1, true)
    assert.matches("ask with stdin: false", out, 1, true)
    assert.matches("after io.read: " .. name .. " false", out, 1, true)
    assert.matches("gate with forged options: refused exit 3", out, 1, true)
    if out:find("tampered granted: cannot tamper", 1, true) then
      assert.matches("gate: release " .. name .. ": refused\n  - no approval: no --approve " .. name, err, 1, true)
    else
      assert.matches("tampered granted: true", out, 1, true)
      assert.matches("refused: the person has not approved this action on " .. name, err, 1, true)
    end
    assert.are.equal(0, releases())
    T.rmtree(dir)
  end)

  it("--dry-run prints the release call with the token as *** and sends nothing", function()
    local name, uuid = instance()
    local code, out = run(release_args(name, "--dry-run --approve " .. name))
    assert.are.equal(0, code)
    assert.matches("dry run: would send POST " .. srv.url .. "/api/v1/dev/instance/pro/release", out, 1, true)
    assert.matches("Authorization: ***", out, 1, true)
    assert.matches('"instance_uuid":"' .. uuid .. '"', out, 1, true)
    assert.are.equal(0, releases())
  end)

  it("allows release with a matching verified pull and --approve; exactly one call", function()
    local name, uuid = instance()
    local code, out, err = run(release_args(name, "--approve " .. name))
    assert.are.equal(0, code, err)
    assert.matches("gate: release " .. name .. ": allowed (approval: flag; verified pull matches", err, 1, true)
    assert.matches(name .. ": release accepted", out, 1, true)
    local j = srv:journal("/instance/pro/release", 1)
    assert.are.equal(1, #j)
    assert.are.equal(uuid, j[1].body.instance_uuid)
    assert.are.equal("Success", j[1].code)
    -- every decision above is in the ledger, with its reason
    local rows = gate_rows()
    local last = rows[#rows]
    assert.are.same({"release", "allow", "flag", name}, {last.action, last.decision, last.approved_by, last.name})
    local refused = 0
    for _, r in ipairs(rows) do if r.decision == "refuse" then refused = refused + 1; assert.is_string(r.reason) end end
    assert.is_true(refused >= 5)
  end)

  it("asks on the terminal: the typed name approves, anything else refuses", function()
    local tty = require "tty"
    local name, uuid = instance()
    local env = tb:env():gsub("'", "")
    local t = tty.start(T.bin .. " " .. release_args(name) .. "; echo EXIT=$?; sleep 30", {env = env})
    t:wait_for("Type the instance name", 10, true)
    t:line(name .. "x")
    local screen = t:wait_for("EXIT=", 10, true)
    t:close()
    assert.matches("EXIT=3", screen, 1, true)
    assert.matches("was not the instance name", screen, 1, true)
    t = tty.start(T.bin .. " " .. release_args(name) .. "; echo EXIT=$?; sleep 30", {env = env})
    t:wait_for("Type the instance name", 10, true)
    t:line(name)
    screen = t:wait_for("EXIT=", 10, true)
    t:close()
    assert.matches("EXIT=0", screen, 1, true)
    assert.matches("allowed (approval: tty", screen, 1, true)
    local j = srv:journal("/instance/pro/release", 2)
    assert.are.equal(2, #j)
    assert.are.equal(uuid, j[#j].body.instance_uuid)
  end)
end)

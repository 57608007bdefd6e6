-- release_inventory_spec.lua: a release proves the whole disk (issue 14). On the
-- simulated AutoDL (tests/sim: real sshd, real tmpfs disks, the API server and its
-- journal): the inventory is taken over SSH while the box runs (`billing inventory`,
-- or `billing power-off --ssh`), recorded in the state dir, and `billing release`
-- refuses (exit 3, nothing sent, a ledger line) unless every file that dies with the
-- box is covered by a verified pull (same size and SHA-256), reproducible by the
-- profile (the HF cache) or discarded by the person (--discard GLOB, echoed first).
local testbed = require "testbed"
local manifest = require "gpurent.lifecycle.manifest"
local fs = require "gpurent.util.fs"

local ok_tb, why = testbed.available()

-- n bytes of deterministic, seed-dependent content (so sizes can match while bytes differ)
local function blob(n, seed)
  local parts, chunk = {}, string.rep(string.char(65 + seed % 26), 1023) .. "\n"
  for _ = 1, n // 1024 do parts[#parts + 1] = chunk end
  parts[#parts + 1] = string.rep("x", n % 1024)
  return table.concat(parts)
end

describe("release inventory", function()
  if not ok_tb then pending("testbed unavailable: " .. why); return end
  local tb, pulled, outputs = nil, nil, {}
  local n = 0
  local BEST = blob(300 * 1024, 1)

  setup(function() tb = testbed.new() end)
  teardown(function()
    if tb then
      local token = (testbed.read(tb.dir .. "/api.token") or ""):match("%S+")
      local all = table.concat(outputs, "\n")
      tb:down()
      if token then assert.is_nil(all:find(token, 1, true), "the token leaked") end
    end
  end)

  local function run(args)
    local code, out, err = tb:gpurent(args)
    outputs[#outputs + 1] = out .. err
    return code, out, err
  end

  -- A fresh box holding one run's export (pulled and verified), the same run's
  -- results with PULL_MANIFEST.json on the region FS, an HF cache blob, and more.
  local function box(extra)
    n = n + 1
    local name = "rel" .. n
    tb:up(name, "--region westDC2 --data-size 64M --fs-size 64M --fs-inodes 4000")
    local data = tb.dir .. "/instances/" .. name .. "/data"
    local results = tb.dir .. "/regions/westDC2/proj" .. n .. "/results"
    for _, root in ipairs({data .. "/proj/export", results}) do
      fs.mkdirs(root .. "/run-" .. n)
      T.write(root .. "/run-" .. n .. "/best.pth", BEST)
      T.write(root .. "/run-" .. n .. "/best_metrics.json", '{"acc": 0.9}\n')
    end
    manifest.build(results, "run-" .. n .. "\n", {run_id = "run-" .. n})
    pulled = tb.dir .. "/pulled" .. n
    os.execute(string.format("cp -a %s/. %s/", T.q(results), T.q(pulled)))
    manifest.verify(pulled, {load_cmd = "test -s"})
    fs.mkdirs(data .. "/huggingface_cache/hub/models--tiny")
    T.write(data .. "/huggingface_cache/hub/models--tiny/blob.bin", blob(200 * 1024, 2))
    for path, text in pairs(extra or {}) do
      fs.mkdirs(data .. "/" .. path:match("^(.*)/"))
      T.write(data .. "/" .. path, text)
    end
    return name, data
  end

  local function releases() return #tb:api_calls("/instance/pro/release") end

  local function last_gate(name)
    local L = require("gpurent.state.ledger").open(tb.state .. "/ledger.sqlite")
    local rows = L.db:query([[SELECT g.action, g.decision, g.reason FROM gate_decisions g
      JOIN instances i ON i.id = g.instance_id WHERE i.name = ? ORDER BY g.id]], name)
    L:close()
    return rows[#rows]
  end

  it("refuses a release that would delete an unpulled file, lists it, then releases with --discard", function()
    local name, data = box{["otherproj/epoch_90_NOT_PULLED.pth"] = blob(3 * 1024 * 1024, 3),
                           ["otherproj/notes.txt"] = "remember\n"}
    -- power-off over SSH takes the inventory first
    local code, out, err = run("billing power-off " .. name .. " --ssh " .. name .. " --approve " .. name)
    assert.are.equal(0, code, out .. err)
    assert.matches("inventory of " .. name .. " %(.-%) taken .- over SSH", out)
    assert.matches(name .. ": shutdown", out, 1, true)
    assert.truthy(fs.exists(tb.state .. "/inventories/" .. tb.uuids[name] .. ".json"))

    code, out, err = run("billing release " .. name .. " --pulled " .. T.q(pulled .. "") .. " --approve " .. name)
    assert.are.equal(3, code, out .. err)
    local text = out .. err
    assert.matches("gate: release " .. name .. ": refused", err, 1, true)
    assert.matches("2 files (3.0 MiB (3145737 bytes)) that die with " .. name .. " are not covered", err, 1, true)
    -- largest first, with sizes
    local big = text:find("3.0 MiB (3145728 bytes)  /root/autodl-tmp/otherproj/epoch_90_NOT_PULLED.pth", 1, true)
    local small = text:find("9 B  /root/autodl-tmp/otherproj/notes.txt", 1, true)
    assert.truthy(big, text)
    assert.truthy(small and small > big, text)
    local cmd = err:match("pull them with:\n    (gpurent billing power%-on [^\n]+)\n")
    assert.truthy(cmd, err)
    -- said when the inventory and the manifest re-read were taken
    assert.matches("inventory of " .. name .. " taken %S+ over SSH %(" .. name .. "%).- 1 PULL_MANIFEST.json re%-read on the box then; verified pulls matching one: run%-" .. n, err)
    -- the pulled run, its identical export on the data disk and the HF cache do not block
    assert.falsy(text:find("export/run-" .. n .. "/best.pth", 1, true), text)
    assert.falsy(text:find("huggingface_cache", 1, true), text)
    assert.are.equal(0, releases())
    local g = last_gate(name)
    assert.are.same({"release", "refuse"}, {g.action, g.decision})
    assert.matches("epoch_90_NOT_PULLED.pth", g.reason, 1, true)

    -- the printed command runs as printed (gpurent on PATH) and fetches the files
    local cwd, bin = T.tmpdir(), T.tmpdir()
    os.execute("ln -s " .. T.q(T.bin) .. " " .. T.q(bin .. "/gpurent"))
    local _, rc = testbed.sh("cd " .. T.q(cwd) .. " && " .. tb:env("PATH=" .. T.q(bin) .. ":$PATH") .. " sh -c " .. T.q(cmd))
    assert.are.equal(0, rc, cmd)
    assert.are.equal(blob(3 * 1024 * 1024, 3),
      T.read(cwd .. "/" .. name .. "-unpulled/root/autodl-tmp/otherproj/epoch_90_NOT_PULLED.pth"))
    T.rmtree(cwd); T.rmtree(bin)
    -- powered on again: the power-off takes a new inventory, else the release is stale
    code, out, err = run("billing power-off " .. name .. " --ssh " .. name .. " --approve " .. name)
    assert.are.equal(0, code, out .. err)
    code, out, err = run("billing release " .. name .. " --pulled " .. T.q(pulled) ..
      " --discard 'otherproj/**' --approve " .. name)
    assert.are.equal(0, code, out .. err)
    assert.matches("discard 'otherproj/**': 2 files, 3.0 MiB (3145737 bytes)\n  3.0 MiB (3145728 bytes)  /root/autodl-tmp/otherproj/epoch_90_NOT_PULLED.pth", out, 1, true)
    -- the echo comes before the release call is sent
    assert.truthy(out:find("discard 'otherproj/**'", 1, true) < out:find("release accepted", 1, true))
    assert.matches("allowed (approval: flag; every file that dies with " .. name .. " is safe: 2 pulled and verified, 5 reproducible, 2 discarded)", err, 1, true)
    local j = tb:api_calls("/instance/pro/release")
    assert.are.equal(1, #j)
    assert.are.equal(tb.uuids[name], j[1].body.instance_uuid)
    assert.are.equal("Success", j[1].code)
    assert.are.same({"release", "allow"}, {last_gate(name).action, last_gate(name).decision})
    for _ = 1, 100 do                      -- the API carries the release out just after answering
      if not fs.exists(data .. "/otherproj/epoch_90_NOT_PULLED.pth") then break end
      os.execute("sleep 0.1")
    end
    assert.falsy(fs.exists(data .. "/otherproj/epoch_90_NOT_PULLED.pth"))
  end)

  it("a --discard glob that matches nothing is an error naming it; nothing sent", function()
    local name = box{["otherproj/a.pth"] = "a"}
    assert.are.equal(0, (run("billing inventory " .. name .. " " .. name)))
    tb:sim("poweroff " .. name)
    local before = releases()
    local code, out, err = run("billing release " .. name .. " --pulled " .. T.q(pulled) ..
      " --discard 'otherproj/**' --discard 'otherprj/**' --approve " .. name)
    assert.are.equal(2, code, out .. err)
    assert.matches("--discard 'otherprj/**' matches no file that dies with the instance", err, 1, true)
    assert.are.equal(before, releases())
  end)

  it("a file of the same size as a pulled one but other bytes is not covered; an identical one is", function()
    local name = box{["proj/active/copy/best.pth"] = BEST, ["proj/active/other/best.pth"] = blob(#BEST, 7)}
    assert.are.equal(0, (run("billing inventory " .. name .. " " .. name)))
    tb:sim("poweroff " .. name)
    local before = releases()
    local code, out, err = run("billing release " .. name .. " --pulled " .. T.q(pulled) .. " --approve " .. name)
    assert.are.equal(3, code, out .. err)
    assert.matches("1 file (300.0 KiB (307200 bytes)) that die with " .. name .. " are not covered", err, 1, true)
    assert.matches("/root/autodl-tmp/proj/active/other/best.pth", err, 1, true)
    assert.falsy(err:find("active/copy/best.pth", 1, true), err)
    assert.are.equal(before, releases())
  end)

  it("refuses without an inventory, and with one taken before the last power-on", function()
    local name = box()
    tb:sim("poweroff " .. name)
    local before = releases()
    local code, out, err = run("billing release " .. name .. " --pulled " .. T.q(pulled) .. " --approve " .. name)
    assert.are.equal(3, code, out .. err)
    assert.matches("no inventory of " .. name .. ": take one while it runs", err, 1, true)
    assert.matches("gpurent billing inventory '" .. name .. "' '" .. name .. "'", err, 1, true)
    tb:sim("poweron " .. name)
    assert.are.equal(0, (run("billing inventory " .. name .. " " .. name)))
    tb:sim("poweroff " .. name)
    os.execute("sleep 1.1")               -- the API's started_at has one-second steps
    tb:sim("poweron " .. name)
    tb:sim("poweroff " .. name)
    code, out, err = run("billing release " .. name .. " --pulled " .. T.q(pulled) .. " --approve " .. name)
    assert.are.equal(3, code, out .. err)
    assert.matches("was powered on again at", err, 1, true)
    assert.matches("gpurent billing inventory '" .. name .. "' '" .. name .. "'", err, 1, true)
    assert.are.equal(before, releases())
    assert.are.equal("refuse", last_gate(name).decision)
  end)

  it("refuses a release while the box still runs (AutoDL releases only a powered-off box)", function()
    local name = box()
    assert.are.equal(0, (run("billing inventory " .. name .. " " .. name)))
    local before = releases()
    local code, out, err = run("billing release " .. name .. " --pulled " .. T.q(pulled) .. " --approve " .. name)
    assert.are.equal(3, code, out .. err)
    assert.matches(name .. " is running: it must be shutdown first", err, 1, true)
    assert.are.equal(before, releases())
  end)
end)

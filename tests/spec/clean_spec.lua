-- clean_spec.lua: `gpurent clean HOST` on the simulated AutoDL (seed AD5/AD4): it lists
-- the HF cache reached through its symlink, a directory of many files (inodes) and
-- stale checkpoints, deletes nothing by itself, refuses a path that is not exactly a
-- listed target (nothing deleted), refuses without approval, and with --approve HOST
-- deletes exactly the named targets.
local testbed = require "testbed"

local ok_tb, why = testbed.available()

describe("gpurent clean", function()
  if not ok_tb then pending("testbed unavailable: " .. why); return end
  local tb
  local HF = "/root/.cache/huggingface/hub/models--org--big"
  local VIS = "/root/autodl-fs/proj/vis/samples"
  local STALE = "/root/autodl-tmp/proj/active/r1/out/latest.pth"
  local QUAR = "/root/autodl-tmp/proj/quarantine/r0--1/best.pth"
  local BEST = "/root/autodl-tmp/proj/active/r1/out/best.pth"
  setup(function()
    tb = testbed.new()
    tb:up("c1", "--region westDC2 --data-size 64M --fs-size 32M --fs-inodes 4000")
    local o, rc = tb:exec("c1", table.concat({
      "mkdir -p " .. HF .. "/blobs && head -c 3000000 /dev/zero > " .. HF .. "/blobs/b1",
      "mkdir -p " .. VIS .. " && i=0; while [ $i -lt 1200 ]; do : > " .. VIS .. "/s$i.png; i=$((i+1)); done",
      -- a finished run (DONE marker, no live wrapper) with its scratch and its best
      "mkdir -p /root/autodl-tmp/proj/active/r1/out /root/autodl-tmp/proj/active/r1/.gpurent/a1",
      "echo 1 > /root/autodl-tmp/proj/active/r1/.gpurent/current",
      "echo 'exit=0 stage=done at=1' > /root/autodl-tmp/proj/active/r1/.gpurent/a1/DONE",
      "head -c 20000 /dev/zero > " .. STALE .. " && head -c 20000 /dev/zero > " .. BEST,
      "mkdir -p /root/autodl-tmp/proj/quarantine/r0--1 && head -c 1000 /dev/zero > " .. QUAR,
    }, " && "))
    assert(rc == 0, o)
  end)
  teardown(function() if tb then tb:down() end end)

  local function exists(path)
    local _, rc = tb:exec("c1", "test -e " .. path)
    return rc == 0
  end

  it("lists the HF cache through its symlink, many-file dirs and stale checkpoints; deletes nothing", function()
    local code, out, err = tb:gpurent("clean c1 --profile autodl")
    assert.are.equal(0, code, out .. err)
    assert.truthy(out:find("hf%-cache%s+[%d.]+ MiB  " .. HF:gsub("%p", "%%%0") ..
      "  %(model cache %(on the data tier via /root/autodl%-tmp/huggingface_cache/hub/models%-%-org%-%-big%)"), out)
    assert.truthy(out:find("inodes%s+1200 files  " .. VIS:gsub("%p", "%%%0")), out)
    assert.truthy(out:find(STALE .. "  (scratch of a finished run)", 1, true), out)
    assert.truthy(out:find(QUAR .. "  (checkpoint of a quarantined capsule)", 1, true), out)
    assert.falsy(out:find(BEST .. "  (", 1, true), "best.pth is never a target: " .. out)
    assert.truthy(out:find("inodes %d+ free of 4000"), out)
    for _, p in ipairs({HF, VIS, STALE, QUAR, BEST}) do assert.is_true(exists(p), p) end
  end)

  it("refuses a path that is not exactly a listed target, and deletes nothing of the others named", function()
    local code, out, err = tb:gpurent("clean c1 --profile autodl --delete " .. HF .. " /root/autodl-tmp/proj --approve c1")
    assert.are.equal(3, code, out .. err)
    assert.truthy(err:find("not a listed target on c1: /root/autodl-tmp/proj", 1, true), err)
    assert.truthy(err:find("nothing was deleted", 1, true), err)
    assert.is_true(exists(HF))
    assert.is_true(exists("/root/autodl-tmp/proj/active/r1"))
    code, out, err = tb:gpurent("clean c1 --profile autodl --delete " .. HF .. "/ --approve c1")
    assert.are.equal(3, code, out .. err)
    assert.is_true(exists(HF))
  end)

  it("refuses without approval (no --approve, no terminal)", function()
    local code, out, err = tb:gpurent("clean c1 --profile autodl --delete " .. HF)
    assert.are.equal(3, code, out .. err)
    assert.truthy(err:find("gate: delete_files c1: refused", 1, true), err)
    assert.is_true(exists(HF))
  end)

  it("with --approve HOST deletes exactly the named targets", function()
    local code, out, err = tb:gpurent("clean c1 --profile autodl --delete " .. HF .. " " .. VIS .. " " .. STALE .. " --approve c1")
    assert.are.equal(0, code, out .. err)
    assert.truthy(out:find("deleted " .. HF, 1, true), out)
    assert.truthy(out:find("deleted " .. VIS, 1, true), out)
    assert.truthy(out:find("deleted " .. STALE, 1, true), out)
    assert.is_false(exists(HF))
    assert.is_false(exists(VIS))
    assert.is_false(exists(STALE))
    -- what was not named stays
    assert.is_true(exists(BEST))
    assert.is_true(exists(QUAR))
    assert.is_true(exists("/root/autodl-fs/proj/vis"))
    assert.is_true(exists("/root/autodl-tmp/huggingface_cache/hub"))
  end)
end)

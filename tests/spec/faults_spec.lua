-- faults_spec: the fault matrix cases no other spec covers (docs/RELIABILITY.md maps
-- every fault to the spec that proves it), on real parts:
--   - the LOCAL disk fills during the pull (a real 8 KiB tmpfs as the pull destination):
--     the run fails, no PULL_VERIFIED.json, nothing incomplete under a final name;
--   - the durable tier's inode cap is reached while PULL_MANIFEST.json is written (a real
--     tmpfs with nr_inodes, exhausted at that exact step by wrapping the phase, the way a
--     recipe replaces a phase): the run fails naming it, no manifest, no verified marker;
--   - the API answers 502 to power_off: one call, a clear error, not retried; 502s on the
--     status reads after a power_off are retried (reads are idempotent) and the power-off
--     completes with exactly one power_off call in the API journal;
--   - sshd is restarted mid-session: the next call reconnects.
local testbed = require "testbed"
local sshd = require "sshd"
local cjson = require "cjson"
local lfs = require "lfs"

local ok_tb, why = testbed.available()

-- autodl_train.lua with a fault injected once the phases are loaded (GR_FAULT=...)
local INJECT = [[
local fault = os.getenv("GR_FAULT")
if fault == "inode_cap_at_manifest" then
  local orig = phases.pull.build_remote
  phases.pull.build_remote = function(inst, root, ...)
    -- the checked syncs are done; exhaust the durable tier's inodes before the manifest
    local res = inst:sh("mkdir -p /root/autodl-fs/zz-fill && cd /root/autodl-fs/zz-fill && i=0; " ..
      "while [ $i -lt 100000 ] && : > f$i 2>/dev/null; do i=$((i+1)); done; echo filled $i", {check = true})
    print("[fault] " .. res.stdout:match("[^\n]*"))
    return orig(inst, root, ...)
  end
end
]]

local function fault_recipe(dir)
  local text = T.read(T.root .. "/recipes/autodl_train.lua")
  local anchor = 'local phases = require "gpurent.lifecycle.phases"\n'
  local a, b = text:find(anchor, 1, true)
  assert(a, "recipes/autodl_train.lua no longer loads gpurent.phases where expected")
  local path = dir .. "/fault_train.lua"
  T.write(path, text:sub(1, b) .. INJECT .. text:sub(b + 1))
  return path
end

local function find_files(dir, pat)
  local out = {}
  local function walk(d)
    for name in lfs.dir(d) do
      if name ~= "." and name ~= ".." then
        local p = d .. "/" .. name
        if lfs.attributes(p, "mode") == "directory" then walk(p) elseif p:match(pat) then out[#out + 1] = p end
      end
    end
  end
  if lfs.attributes(dir) then walk(dir) end
  return out
end

describe("faults on the simulated AutoDL", function()
  if not ok_tb then pending("testbed unavailable: " .. why); return end
  local tb, recipe, small
  setup(function()
    tb = testbed.new()
    recipe = fault_recipe(tb.dir)
    tb:up("f1", "--region westDC2 --data-size 256M --fs-size 64M --fs-inodes 600")
  end)
  teardown(function()
    if small then os.execute("umount " .. T.q(small) .. " 2>/dev/null") end
    if tb then tb:down() end
  end)

  local function train(o)
    local args = testbed.train_args("f1", o):gsub("^run recipes/autodl_train%.lua", "run " .. T.q(recipe))
    return tb:gpurent(args, {env = o.fault and ("GR_FAULT=" .. o.fault) or nil})
  end

  local function run_id(out) return out:match("%[run%] run (%S+):") end

  it("a full local disk during the pull fails the run: no PULL_VERIFIED.json, partial data only as .part", function()
    small = tb.dir .. "/small"
    os.execute("mkdir -p " .. T.q(small))
    assert.is_true(os.execute("mount -t tmpfs -o size=8k tmpfs " .. T.q(small)))
    local code, out, err = train{local_dir = small, steps = 4}
    local id = run_id(out)
    assert.truthy(id, out .. err)
    assert.are_not.equal(0, code)
    assert.matches("%[pull%]", out)
    assert.truthy((out .. err):find("No space left on device", 1, true) or (out .. err):find("ENOSPC", 1, true),
      out .. err)
    assert.are.same({}, find_files(small, "PULL_VERIFIED%.json$"))
    -- every file under a final name is complete: the same bytes as the box's copy
    local root = "/root/autodl-fs/tiny/results/" .. id
    local m = cjson.decode((tb:exec("f1", "cat " .. root .. "/PULL_MANIFEST.json")))
    local want = {}
    for _, f in ipairs(m.files) do want[f.path] = f end
    local hash = require "gpurent.util.hash"
    for _, p in ipairs(find_files(small, ".")) do
      local rel = p:sub(#small + #id + 3)
      if not p:match("%.part$") and rel ~= "PULL_MANIFEST.json" then
        assert.truthy(want[rel], "unexpected final file " .. rel)
        local hex, bytes = hash.sha256_file(p)
        assert.are.equal(want[rel].bytes, bytes, rel)
        assert.are.equal(want[rel].sha256, hex, rel)
      end
    end
    assert.is_true(#find_files(small, "%.part$") + #find_files(small, ".") >= 1, "nothing was attempted locally")
    -- the ledger records the run as failed, the pull phase as failed
    local hcode, hist = tb:gpurent("history --run " .. id)
    assert.are.equal(0, hcode, hist)
    assert.matches("failed", hist)
    os.execute("umount " .. T.q(small))
    small = nil
  end)

  it("the durable tier's inode cap reached while writing PULL_MANIFEST.json fails the run naming it", function()
    local pulled = tb.dir .. "/pulled-inode"
    local code, out, err = train{local_dir = pulled, steps = 4, fault = "inode_cap_at_manifest"}
    local id = run_id(out)
    assert.truthy(id, out .. err)
    assert.are_not.equal(0, code)
    assert.matches("filled %d+", out .. err)
    assert.truthy((out .. err):find("PULL_MANIFEST.json", 1, true), out .. err)
    assert.truthy((out .. err):find("No space left on device", 1, true), out .. err)
    -- no manifest on the box (not even a .tmp), nothing verified locally
    local o, rc = tb:exec("f1", "ls -A /root/autodl-fs/tiny/results/" .. id .. "; test ! -e /root/autodl-fs/tiny/results/" ..
      id .. "/PULL_MANIFEST.json && test ! -e /root/autodl-fs/tiny/results/" .. id .. "/PULL_MANIFEST.json.tmp")
    assert.are.equal(0, rc, o)
    assert.are.same({}, find_files(pulled, "PULL_VERIFIED%.json$"))
    -- the capsule itself reached the durable tier before the cap: it is still there
    local _, rc2 = tb:exec("f1", "test -s /root/autodl-fs/tiny/results/" .. id .. "/" .. id .. "/best.pth")
    assert.are.equal(0, rc2)
    tb:exec("f1", "rm -rf /root/autodl-fs/zz-fill")
  end)

  -- gpurent SIGKILLed at three fixed points of the recipe (each point is an output line,
  -- so the kill lands at the same step every run): before anything is launched (in the
  -- smoke command), right after the launch (before the first watch tick), and inside the
  -- pull. Rerun = `gpurent watch RUN --finish`, from the ledger alone.
  local KILL_POINTS = {
    {name = "smoke", pat = "%[prepare%] local CPU smoke", launched = false},
    {name = "launch", pat = "%[launch%] started attempt 1", launched = true},
    {name = "pull", pat = "%[pull%] expected roster", launched = true},
  }
  for _, kp in ipairs(KILL_POINTS) do
    it("SIGKILL at " .. kp.name .. ": no duplicate launch, and `gpurent watch RUN --finish` converges", function()
      local pulled = tb.dir .. "/pulled-kill-" .. kp.name
      local args = testbed.train_args("f1", {local_dir = pulled, steps = 15, step_seconds = 0.1})
      if kp.name == "smoke" then
        args = args:gsub(T.q("smoke=python3 train.py --smoke --out {tmp}"):gsub("%p", "%%%0"), T.q("smoke=sleep 4 && python3 train.py --smoke --out {tmp}"))
      end
      local h = tb:spawn(args)
      local id = h:wait_for("%[run%] run (%S+):", 30)
      assert.truthy(id, h:output())
      assert.truthy(h:wait_for(kp.pat, 120), h:output())
      h:kill()
      assert.are.equal(137, h:wait(10), h:output())
      local meta = "/root/autodl-tmp/tiny/active/" .. id .. "/.gpurent"
      local code, out, err = tb:gpurent("watch " .. id .. " --interval 0.3 --finish")
      local o = tb:exec("f1", "cat " .. meta .. "/current 2>/dev/null; ls -d " .. meta .. "/a* 2>/dev/null; true")
      if not kp.launched then
        -- nothing was started on the box, and the rerun does not start anything either
        assert.are_not.equal(0, code, out .. err)
        assert.are.equal("", o)
        assert.is_nil(testbed.read(pulled .. "/" .. id .. "/PULL_VERIFIED.json"))
      else
        assert.are.equal(0, code, out .. err)
        -- exactly one attempt ever started on the box: the rerun never launched again
        assert.are.equal("1\n" .. meta .. "/a1\n", o)
        assert.is_nil((out .. err):find("relaunched", 1, true))
        assert.truthy(testbed.read(pulled .. "/" .. id .. "/PULL_VERIFIED.json"), out .. err)
        local L = require("gpurent.state.ledger").open(tb.state .. "/ledger.sqlite")
        local status = L:run(id).status
        L:close()
        assert.are.equal("succeeded", status)
      end
      -- the same recipe rerun with the same id is refused before it could launch a second copy
      local rc2, out2, err2 = tb:gpurent(args .. " id=" .. id)
      assert.are.equal(3, rc2, out2 .. err2)
      assert.matches("already in the ledger", out2 .. err2, 1, true)
      assert.matches("gpurent watch " .. id .. " --finish", out2 .. err2, 1, true)
      local o2 = tb:exec("f1", "cat " .. meta .. "/current 2>/dev/null; true")
      assert.are.equal(kp.launched and "1\n" or "", o2)
    end)
  end

  local function faults(body)
    local url = testbed.read(tb.dir .. "/api.url"):match("%S+")
    local out = testbed.sh(string.format("curl -sS --noproxy '*' -m 10 -X POST -H 'Content-Type: application/json' -d %s %s",
      T.q(cjson.encode(body)), T.q(url .. "/__sim/faults")))
    assert.truthy(out:find("{", 1, true), out)
  end

  it("a 502 on power_off is one call, a clear error, not retried; 502s on the status reads are retried", function()
    local before = #tb:api_calls("/power_off")
    faults{http_5xx = 1, match = "/power_off"}
    local code, out, err = tb:gpurent("billing power-off f1 --approve f1")
    assert.are.equal(1, code, out .. err)
    assert.matches("502", out .. err)
    assert.matches("power_off", out .. err)
    assert.are.equal(before + 1, #tb:api_calls("/power_off"))
    local st = cjson.decode((testbed.sh("GPURENT_SIM_DIR=" .. T.q(tb.dir) .. " " .. T.q(testbed.SIM) .. " info f1")))
    assert.are.equal("running", st.status)
    -- the person reruns it; the status polls meet two 502s and carry on
    faults{clear = true}
    faults{http_5xx = 2, match = "/status"}
    local status_before = #tb:api_calls("/status")
    code, out, err = tb:gpurent("billing power-off f1 --approve f1")
    assert.are.equal(0, code, out .. err)
    assert.matches("retrying 1/5", out .. err)
    assert.matches("retrying 2/5", out .. err)
    assert.matches("f1: shutdown", out)
    assert.are.equal(before + 2, #tb:api_calls("/power_off"))
    assert.is_true(#tb:api_calls("/status") >= status_before + 3)
    -- nothing billable was sent by either command
    assert.are.equal(0, #tb:api_calls("/power_on"))
    assert.are.equal(0, #tb:api_calls("/create"))
    assert.are.equal(0, #tb:api_calls("/release"))
  end)
end)

describe("faults over plain SSH", function()
  local fx
  setup(function() fx = sshd.start{} end)
  teardown(function() if fx then fx:stop() end end)

  it("sshd restarted mid-session: the next call reconnects", function()
    local inst = fx:connect(1)
    assert.are.equal("one\n", inst:sh("echo one").stdout)
    -- restart the daemon: kill the listener and every connection, start it again on the
    -- same port with the same config (in the same kind of private mount namespace)
    local dir = fx.dir
    fx:kill_connections()
    os.execute("kill " .. fx.pid)
    for _ = 1, 100 do if not lfs.attributes("/proc/" .. fx.pid .. "/exe") then break end; gpurent.sleep(0.05) end
    local script = "mount -t tmpfs tmpfs /run && mkdir -p /run/sshd && chmod 755 /run/sshd && " ..
      "mount --bind " .. T.q(dir .. "/passwd") .. " /etc/passwd && " ..
      "sleep 1 && exec /usr/sbin/sshd -D -e -f " .. T.q(dir .. "/sshd_config")
    local p = io.popen(string.format("unshare -m --propagation private sh -c %s >>%s 2>&1 </dev/null & echo $!",
      T.q(script), T.q(dir .. "/sshd.log")))
    fx.pid = tonumber(p:read("l"))
    p:close()
    -- the call is made while the daemon is still down: the bounded reconnect backoff must bridge it
    local t0 = gpurent.now()
    local res = inst:sh("echo two", {idempotent = true, timeout = 30})
    assert.are.equal("two\n", res.stdout)
    assert.is_true(gpurent.now() - t0 < 30)
    -- and a non-idempotent call on the new session just works
    assert.are.equal("three\n", inst:sh("echo three").stdout)
    inst:close()
  end)
end)

describe("faults in input files", function()
  -- found by `make fuzz` (fuzz/regressions/knownhosts/timeout-many-stars): a host glob of
  -- ~100 '*' made the Lua-pattern matcher backtrack for minutes inside every connect
  it("a known_hosts or ssh_config glob of 100 '*' is matched in well under a second", function()
    local sshconfig = require "gpurent.transport.sshconfig"
    local knownhosts = require "gpurent.transport.knownhosts"
    local dir = T.tmpdir()
    local kh = dir .. "/known_hosts"
    T.write(kh, T.read(T.root .. "/fuzz/regressions/knownhosts/timeout-many-stars") .. "\n")
    local t0 = os.clock()
    pcall(knownhosts.lookup, {kh}, "connect.westb.seetacloud.com", 12345, "ssh-ed25519", "blob")
    local nomatch = sshconfig.host_matches({string.rep("*", 100) .. "x"}, string.rep("a", 200))
    local match = sshconfig.host_matches({"*a*" .. string.rep("*", 100)}, string.rep("a", 200))
    local elapsed = os.clock() - t0
    T.rmtree(dir)
    assert.is_false(nomatch)
    assert.is_true(match)
    assert.is_true(elapsed < 1, "took " .. elapsed .. " s")
  end)
end)

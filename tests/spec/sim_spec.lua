-- sim_spec.lua: the simulated AutoDL testbed (tests/sim) behaves like AutoDL.
--
-- Boots three instances (two in region A, one in region B) in a private
-- GPURENT_SIM_DIR, then checks each promise the testbed makes to gpurent's
-- other tests: real ENOSPC from byte and inode caps, region-scoped sharing,
-- the image's quirks (no python3, conda python, tmux/turbo toggles), the GPU
-- state file, cgroup readings, the API journal with redaction, power off/on,
-- `shutdown` inside an instance, release, and a clean `down --all`.
--
-- Plain Lua 5.4 + io.popen/os.execute, lfs and cjson. Needs root (skipped
-- otherwise). Run: busted tests/spec/sim_spec.lua

local lfs = require "lfs"
local cjson = require "cjson"

local function here()
  local src = debug.getinfo(1, "S").source:sub(2)
  local dir = src:match("^(.*)/[^/]*$") or "."
  if dir:sub(1, 1) ~= "/" then dir = lfs.currentdir() .. "/" .. dir end
  return dir
end

local SIM_CLI = here() .. "/../sim/autodl-sim"

-- Shell helpers ---------------------------------------------------------------

local function q(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- run(cmd) -> combined output, exit status
local function run(cmd)
  local p = assert(io.popen(cmd .. " 2>&1; echo \"__rc=$?\""))
  local out = p:read("a")
  p:close()
  local body, rc = out:match("^(.*)__rc=(%d+)%s*$")
  return body or out, tonumber(rc)
end

local function is_root()
  local out = run("id -u")
  return out:match("^0%s*$") ~= nil
end

local read_file = require("gpurent.util.fs").read_if_exists

local function write_file(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

local function sleep(seconds)
  os.execute("sleep " .. seconds)
end

-- wait_for(fn, seconds): poll fn every 0.1 s until it returns truthy (bounded).
local function wait_for(fn, seconds)
  for _ = 1, math.ceil(seconds * 10) do
    local v = fn()
    if v then return v end
    sleep(0.1)
  end
  return nil
end

-- The testbed -------------------------------------------------------------------

local DIR -- this spec's GPURENT_SIM_DIR

local function sim(args)
  return run("GPURENT_SIM_DIR=" .. q(DIR) .. " " .. q(SIM_CLI) .. " " .. args)
end

local function info(name)
  local out, rc = sim("info " .. name)
  assert(rc == 0, out)
  return cjson.decode(out)
end

local function ssh(name, remote)
  return run("ssh -F " .. q(DIR .. "/ssh_config") ..
    " -o BatchMode=yes -o ConnectTimeout=5 " .. name .. " " .. q(remote))
end

local function api_url() return (read_file(DIR .. "/api.url") or ""):gsub("%s+$", "") end
local function api_token() return (read_file(DIR .. "/api.token") or ""):gsub("%s+$", "") end

-- api(method, route, body[, token]) -> decoded envelope (or nil), HTTP status
local function api(method, route, body, token)
  local out = run("curl -s -m 10 -o /dev/stdout -w '\\n%{http_code}' -X " .. method ..
    " -H " .. q("Authorization: " .. (token or api_token())) ..
    " -H 'Content-Type: application/json' -d " .. q(cjson.encode(body or {})) ..
    " " .. q(api_url() .. route))
  local text, status = out:match("^(.*)\n(%d+)%s*$")
  local ok, env = pcall(cjson.decode, text or "")
  return ok and env or nil, tonumber(status)
end

local function status_of(uuid)
  local env = api("GET", "/api/v1/dev/instance/pro/status", { instance_uuid = uuid })
  return env and (env.code == "Success" and env.data or env.code)
end

local function port_open(ip, port)
  local _, rc = run("timeout 2 bash -c " .. q("exec 3<>/dev/tcp/" .. ip .. "/" .. port))
  return rc == 0
end

local function alive(pid)
  local stat = read_file("/proc/" .. pid .. "/stat")
  if not stat then return false end
  local state = stat:match("%) (%a)")
  return state ~= "Z" and state ~= "X"
end

local function journal()
  local entries = {}
  for line in (read_file(DIR .. "/journal.jsonl") or ""):gmatch("[^\n]+") do
    entries[#entries + 1] = cjson.decode(line)
  end
  return entries
end

-- The spec ------------------------------------------------------------------------

if not is_root() then
  describe("simulated AutoDL testbed", function()
    pending("needs root (mounts, namespaces, cgroups)")
  end)
  return
end

describe("simulated AutoDL testbed", function()
  local a1, a2, b1

  lazy_setup(function()
    DIR = run("mktemp -d /tmp/gpurent-sim-spec.XXXXXX"):gsub("%s+$", "")
    local out, rc = sim("up a1 --region A --data-size 64M --fs-size 32M --fs-inodes 300 --mem 1G --cpus 2")
    assert(rc == 0, out)
    out, rc = sim("up a2 --region A")
    assert(rc == 0, out)
    out, rc = sim("up b1 --region B --no-tmux --no-turbo --gpus 2")
    assert(rc == 0, out)
    a1, a2, b1 = info("a1"), info("a2"), info("b1")
    api("POST", "/__sim/config", { settle_delay = 0.2 })
  end)

  lazy_teardown(function()
    if not DIR then return end
    sim("down --all")
    -- Delete the dir only when nothing is mounted under it any more.
    if not (read_file("/proc/self/mountinfo") or ""):find(DIR, 1, true) then
      run("rm -rf " .. q(DIR))
    end
  end)

  it("boots instances reachable over ssh with the AutoDL layout", function()
    local out, rc = ssh("a1", "hostname; ls -d /root/autodl-tmp /root/autodl-fs /root/tf-logs; " ..
      "readlink /root/.cache/huggingface; test -f /etc/network_turbo && echo turbo; command -v tmux")
    assert.are.equal(0, rc, out)
    assert.matches("autodl%-container%-", out)
    assert.matches("/root/tf%-logs", out)
    assert.matches("/root/autodl%-tmp/huggingface_cache", out)
    assert.matches("turbo", out)
    assert.matches("/usr/bin/tmux", out)
    assert.truthy(a1.uuid:match("^pro%-%x+$"))
  end)

  it("gives ENOSPC when the data disk's byte cap is reached", function()
    local out, rc = ssh("a1", "dd if=/dev/zero of=/root/autodl-tmp/big bs=1M count=100")
    assert.are_not.equal(0, rc)
    assert.matches("No space left on device", out)
    ssh("a1", "rm -f /root/autodl-tmp/big")
  end)

  it("gives ENOSPC at the region FS inode cap while df -h shows free space", function()
    local out = ssh("a1", [[
      mkdir -p /root/autodl-fs/many
      i=0
      while [ $i -lt 1000 ]; do
        i=$((i+1)); : > /root/autodl-fs/many/f$i || break
      done
      echo "created=$i"
      df -h /root/autodl-fs | tail -1
      df -i /root/autodl-fs | tail -1]])
    assert.matches("No space left on device", out)
    local created = tonumber(out:match("created=(%d+)"))
    assert.is_true(created < 300)
    local byte_use = tonumber(out:match("gpurent%-sim%-fs%-A%s+%S+%s+%S+%s+%S+%s+(%d+)%%"))
    local lines = {}
    for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
    local inode_use = tonumber(lines[#lines]:match("(%d+)%%"))
    assert.is_true(byte_use < 50, out)
    assert.are.equal(100, inode_use, out)
    ssh("a1", "rm -rf /root/autodl-fs/many")
  end)

  it("shares /root/autodl-fs within a region only; the data disk is per instance", function()
    local token = "hello-" .. os.time() .. "-" .. math.random(1e6)
    local _, rc = ssh("a1", "echo " .. token .. " > /root/autodl-fs/" .. token ..
      " && echo mine > /root/autodl-tmp/" .. token)
    assert.are.equal(0, rc)
    local out = ssh("a2", "cat /root/autodl-fs/" .. token)
    assert.matches(token, out, 1, true)
    _, rc = ssh("b1", "test -e /root/autodl-fs/" .. token)
    assert.are.equal(1, rc)
    _, rc = ssh("a2", "test -e /root/autodl-tmp/" .. token)
    assert.are.equal(1, rc)
  end)

  it("has no python3 but has /root/miniconda3/bin/python; tmux and turbo can be absent", function()
    local out, rc = ssh("a1", "python3 -c 1")
    assert.are.equal(127, rc)
    assert.matches("command not found", out)
    out, rc = ssh("a1", "/root/miniconda3/bin/python -c 'print(6*7)'")
    assert.are.equal(0, rc, out)
    assert.are.equal("42\n", out)
    _, rc = ssh("b1", "command -v tmux")
    assert.are.equal(1, rc)
    _, rc = ssh("b1", "test -e /etc/network_turbo")
    assert.are.equal(1, rc)
  end)

  it("prints GPU readings from the state file tests write", function()
    write_file(a1.gpu_state_file, "gpu 0 util=87 mem=12345 temp=66 power=300\n")
    local out, rc = ssh("a1", "nvidia-smi --query-gpu=name,utilization.gpu,memory.used,memory.total " ..
      "--format=csv,noheader,nounits")
    assert.are.equal(0, rc, out)
    assert.are.equal("NVIDIA GeForce RTX 4090, 87, 12345, 24564\n", out)
    out = ssh("a1", "nvidia-smi")
    assert.matches("12345MiB /  24564MiB", out, 1, true)
    out = ssh("b1", "nvidia-smi -L")
    assert.matches("GPU 0: .*GPU 1: ", out)
  end)

  it("exposes the instance's own cgroup readings", function()
    local out, rc = ssh("a1", "cat /sys/fs/cgroup/memory/memory.limit_in_bytes " ..
      "/sys/fs/cgroup/cpu/cpu.cfs_quota_us; grep oom_kill /sys/fs/cgroup/memory/memory.oom_control; " ..
      "test -r /sys/fs/cgroup/memory/memory.max_usage_in_bytes && echo peak")
    assert.are.equal(0, rc, out)
    assert.matches("^1073741824\n200000\n", out)
    assert.matches("oom_kill 0", out)
    assert.matches("peak", out)
  end)

  it("journals every API request with the token redacted", function()
    local token = api_token()
    local env, status = api("POST", "/api/v1/dev/wallet/balance", { echo = token })
    assert.are.equal(200, status)
    assert.are.equal("Success", env.code)
    assert.is_number(env.data.assets)
    env, status = api("POST", "/api/v1/dev/wallet/balance", {}, "Bearer " .. token)
    assert.are.equal(401, status)
    assert.are_not.equal("Success", env.code)
    assert.is_string(env.request_id)

    local ok_seen, wrong_seen = false, false
    for _, e in ipairs(journal()) do
      if e.path == "/api/v1/dev/wallet/balance" then
        if e.auth == "ok" and e.body.echo == "<redacted>" then ok_seen = true end
        if e.auth == "wrong" and e.code ~= "Success" then wrong_seen = true end
      end
    end
    assert.is_true(ok_seen)
    assert.is_true(wrong_seen)
    assert.is_nil(read_file(DIR .. "/journal.jsonl"):find(token, 1, true))
  end)

  it("powers off through the API (sshd stops) and back on with the same disks and port", function()
    local _, rc = ssh("a1", "echo kept > /root/autodl-tmp/keep")
    assert.are.equal(0, rc)
    local env = api("POST", "/api/v1/dev/instance/pro/power_off", { instance_uuid = a1.uuid })
    assert.are.equal("Success", env.code)
    assert.are.equal("shutdown", wait_for(function()
      return status_of(a1.uuid) == "shutdown" and "shutdown"
    end, 10))
    assert.is_false(port_open(a1.ip, a1.port))

    env = api("POST", "/api/v1/dev/instance/pro/power_on", { instance_uuid = a1.uuid, payload = "gpu" })
    assert.are.equal("Success", env.code)
    assert.truthy(wait_for(function() return status_of(a1.uuid) == "running" end, 10))
    local out
    out, rc = ssh("a1", "cat /root/autodl-tmp/keep")
    assert.are.equal(0, rc, out)
    assert.are.equal("kept\n", out)
    assert.are.equal(a1.port, info("a1").port)
  end)

  it("`shutdown` inside an instance leaves it powered off in the API with its port closed", function()
    ssh("a2", "shutdown -h now")
    assert.truthy(wait_for(function() return status_of(a2.uuid) == "shutdown" end, 10))
    assert.truthy(wait_for(function() return not port_open(a2.ip, a2.port) end, 5))
    assert.is_false(info("a2").running)
  end)

  it("answers injected faults: out of stock, 5xx, malformed JSON; rate-limits WeChat", function()
    api("POST", "/__sim/faults", { out_of_stock = 1 })
    local env = api("POST", "/api/v1/dev/instance/pro/power_on", { instance_uuid = a2.uuid, payload = "gpu" })
    assert.are.equal("GpuStockNotEnough", env.code)
    assert.are.equal("shutdown", status_of(a2.uuid))

    api("POST", "/__sim/faults", { http_5xx = 1, malformed = 1, match = "/wallet/balance" })
    local status
    env, status = api("POST", "/api/v1/dev/wallet/balance", {})
    assert.are.equal(502, status)
    assert.is_nil(env)
    env, status = api("POST", "/api/v1/dev/wallet/balance", {})
    assert.are.equal(200, status)
    assert.is_nil(env) -- truncated JSON does not decode
    env = api("POST", "/api/v1/dev/wallet/balance", {})
    assert.are.equal("Success", env.code)

    local codes = {}
    for i = 1, 6 do
      env = api("POST", "/api/v1/wechat/message/send", { title = "t" .. i, content = "c" })
      codes[i] = env.code
    end
    assert.are.same({ "Success", "Success", "Success", "Success", "Success", "TooManyRequests" }, codes)
  end)

  it("releases only a powered-off instance, deleting its data disk", function()
    local env = api("POST", "/api/v1/dev/instance/pro/release", { instance_uuid = a1.uuid })
    assert.are_not.equal("Success", env.code)
    env = api("POST", "/api/v1/dev/instance/pro/release", { instance_uuid = a2.uuid })
    assert.are.equal("Success", env.code)
    assert.truthy(wait_for(function()
      return status_of(a2.uuid) == "RecordNotFoundError" and lfs.attributes(a2.data_dir) == nil
    end, 10))
    assert.is_false((read_file("/proc/self/mountinfo") or ""):find(a2.data_dir, 1, true) ~= nil)
  end)

  it("bills running instances in thousandths of a yuan; a negative balance forces a power-off", function()
    local before = api("POST", "/api/v1/dev/wallet/balance", {}).data
    api("POST", "/__sim/config", { time_scale = 3600 }) -- one second bills one hour
    sleep(0.5)
    local after = api("POST", "/api/v1/dev/wallet/balance", {}).data
    assert.is_true(after.assets < before.assets)
    assert.are.equal(before.assets - after.assets, after.accumulate - before.accumulate)
    assert.are.equal(math.floor(after.assets), after.assets) -- whole thousandths

    api("POST", "/__sim/wallet", { assets = 10 })
    assert.truthy(wait_for(function()
      return status_of(b1.uuid) == "shutdown" and status_of(a1.uuid) == "shutdown"
    end, 10))
    local list = api("POST", "/api/v1/dev/instance/pro/list", { page_index = 1, page_size = 10 }).data
    for _, item in ipairs(list.list) do
      assert.are.equal("arrears", item.sub_status)
    end
    assert.is_false(port_open(b1.ip, b1.port))
    api("POST", "/__sim/config", { time_scale = 1 })
    api("POST", "/__sim/wallet", { assets = 100000 })
    local out, rc = sim("poweron b1")
    assert.are.equal(0, rc, out)
    assert.are.equal("running", status_of(b1.uuid))
  end)

  it("`down --all` leaves no process or mount behind", function()
    local pids = {}
    local running = info("b1")
    assert.is_true(running.running)
    pids[#pids + 1] = running.launcher_pid
    for _, p in ipairs(running.pids) do pids[#pids + 1] = p end
    assert.is_true(#pids >= 3) -- launcher, namespace init, sshd
    local api_pid = cjson.decode(read_file(DIR .. "/api.pid")).pid
    pids[#pids + 1] = api_pid
    local a1_now, b1_now = info("a1"), info("b1")

    local out, rc = sim("down --all")
    assert.are.equal(0, rc, out)
    for _, pid in ipairs(pids) do
      assert.is_false(alive(pid), "pid " .. pid .. " survived")
    end
    assert.is_nil((read_file("/proc/self/mountinfo") or ""):find(DIR, 1, true))
    for _, i in ipairs({ a1_now, b1_now }) do
      for _, cg in pairs(i.cgroups) do
        assert.is_nil(lfs.attributes(cg), cg .. " left behind")
      end
      assert.is_false(port_open(i.ip, i.port))
    end
  end)
end)

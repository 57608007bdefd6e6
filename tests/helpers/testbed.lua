-- testbed.lua: the simulated AutoDL (tests/sim) as a spec fixture for the lifecycle
-- specs. Each testbed lives in its own temp GPURENT_SIM_DIR with its own HOME,
-- ledger (GPURENT_STATE_DIR), ssh_config (GPURENT_SSH_CONFIG) and API token, and
-- tb:down() removes everything with `autodl-sim down --all` (only this dir's
-- instances, API and mounts).
--
--   local testbed = require "testbed"
--   if not testbed.available() then pending(...) end
--   local tb = testbed.new()
--   tb:up("a1", "--region westDC2 --data-size 256M")     -> output (raises on failure)
--   tb:gpurent("run recipes/autodl_train.lua host=a1 ...") -> code, stdout, stderr
--   local h = tb:spawn("run recipes/...")   h:wait_for(pattern, s)  h:wait(s) -> code
--   h:kill()  (SIGKILL, its exact PID)      h:output() -> stdout .. stderr
--   tb:exec("a1", "cat /root/x") -> output, rc             tb:journal() -> {entries}
--   tb:down()
local core = require "gpurent.core"
local cjson = require "cjson"

local testbed = {}
local TB = {}
TB.__index = TB

local q = T.q
testbed.SIM = T.root .. "/tests/sim/autodl-sim"

local function sh(cmd)
  local p = assert(io.popen(cmd .. " 2>&1; echo \"__rc=$?\""))
  local out = p:read("a")
  p:close()
  local body, rc = out:match("^(.*)__rc=(%d+)%s*$")
  return body or out, tonumber(rc)
end
testbed.sh = sh

function testbed.available()
  local id = sh("id -u")
  if not id:match("^0%s") then return false, "the simulated AutoDL needs root" end
  local _, rc = sh("test -x " .. q(testbed.SIM) .. " && command -v tmux && command -v sshd || test -x /usr/sbin/sshd")
  if rc ~= 0 then return false, "tests/sim/autodl-sim, tmux or sshd missing" end
  return true
end

function testbed.new()
  local dir = sh("mktemp -d /tmp/gr-tb.XXXXXX"):match("%S+")
  local tb = setmetatable({dir = dir, state = dir .. "/state", home = dir .. "/home"}, TB)
  sh("mkdir -p " .. q(tb.state) .. " " .. q(tb.home .. "/.ssh"))
  return tb
end

function TB:sim(args)
  return sh("GPURENT_SIM_DIR=" .. q(self.dir) .. " " .. q(testbed.SIM) .. " " .. args)
end

function TB:up(name, opts)
  local out, rc = self:sim("up " .. name .. " " .. (opts or ""))
  assert(rc == 0, "autodl-sim up " .. name .. " failed: " .. out)
  self.uuids = self.uuids or {}
  self.uuids[name] = out:match("instance_uuid (%S+)")
  return out
end

local read = require("gpurent.util.fs").read_if_exists
testbed.read = read

-- The environment every gpurent child gets: this testbed's sim, ledger, HOME, API.
-- opts.own_ssh_config: leave GPURENT_SSH_CONFIG unset, so gpurent reads $HOME/.ssh/config.
function TB:env(extra, opts)
  local parts = {
    "HOME=" .. q(self.home), "GPURENT_SIM_DIR=" .. q(self.dir), "GPURENT_STATE_DIR=" .. q(self.state),
    "GPURENT_PROGRESS=none",
  }
  if opts and opts.own_ssh_config then
    table.insert(parts, 1, "env -u GPURENT_SSH_CONFIG")
  else
    parts[#parts + 1] = "GPURENT_SSH_CONFIG=" .. q(self.dir .. "/ssh_config")
  end
  local url, token = read(self.dir .. "/api.url"), read(self.dir .. "/api.token")
  if url then parts[#parts + 1] = "GPURENT_AUTODL_BASE_URL=" .. q(url:match("%S+")) end
  if token then parts[#parts + 1] = "AUTODL_TOKEN=" .. q(token:match("%S+")) end
  if extra then parts[#parts + 1] = extra end
  return table.concat(parts, " ")
end

-- Bounded: a hung gpurent fails its test after 240 s instead of hanging the suite.
function TB:gpurent(args, opts)
  opts = opts or {}
  return T.run(args, {env = self:env(opts.env, opts) .. " timeout -k 5 240", cwd = T.root})
end

function TB:exec(name, cmd)
  local out, rc = self:sim("exec " .. name .. " " .. q(cmd))
  return out, rc
end

function TB:journal()
  local list = {}
  for line in (read(self.dir .. "/journal.jsonl") or ""):gmatch("[^\n]+") do list[#list + 1] = cjson.decode(line) end
  return list
end

-- Developer-API calls (not admin) to paths containing `pat`.
function TB:api_calls(pat)
  local out = {}
  for _, e in ipairs(self:journal()) do
    if not e.admin and e.path:find(pat, 1, true) then out[#out + 1] = e end
  end
  return out
end

function TB:down()
  if not self.dir then return end
  self:sim("down --all")
  for _, h in ipairs(self.spawned or {}) do h:kill() end
  sh("rm -rf " .. q(self.dir))
  self.dir = nil
end

-- ---- a gpurent child running in the background -------------------------------------

local H = {}
H.__index = H

function TB:spawn(args, opts)
  opts = opts or {}
  local n = (self.nspawn or 0) + 1
  self.nspawn = n
  local base = self.dir .. "/spawn" .. n
  local h = setmetatable({out = base .. ".out", err = base .. ".err", pidf = base .. ".pid", rcf = base .. ".rc"}, H)
  local inner = "cd " .. q(T.root) .. " && " .. self:env(opts.env, opts) .. " " .. q(T.bin) .. " " .. args ..
    " >" .. q(h.out) .. " 2>" .. q(h.err) .. " </dev/null & echo $! >" .. q(h.pidf) .. "; wait $!; echo $? >" .. q(h.rcf)
  os.execute("sh -c " .. q(inner) .. " >/dev/null 2>&1 &")
  for _ = 1, 100 do
    local pid = read(h.pidf)
    if pid and pid:match("%d+") then h.pid = tonumber(pid:match("%d+")); break end
    core.sys.sleep(0.05)
  end
  assert(h.pid, "spawned gpurent did not start")
  self.spawned = self.spawned or {}
  self.spawned[#self.spawned + 1] = h
  return h
end

function H:output() return (read(self.out) or "") .. (read(self.err) or "") end

function H:wait_for(pattern, seconds)
  for _ = 1, math.ceil((seconds or 30) / 0.1) do
    local out = self:output()
    local m = out:match(pattern)
    if m then return m end
    if read(self.rcf) then return nil end
    core.sys.sleep(0.1)
  end
  return nil
end

function H:wait(seconds)
  for _ = 1, math.ceil((seconds or 60) / 0.1) do
    local rc = read(self.rcf)
    if rc and rc:match("%d+") then self.done = true; return tonumber(rc:match("%d+")) end
    core.sys.sleep(0.1)
  end
  return nil
end

-- SIGKILL the exact gpurent process this handle started (if it still runs).
function H:kill()
  if self.pid and not self.done and not read(self.rcf) then
    os.execute("kill -9 " .. self.pid .. " 2>/dev/null")
  end
end

-- The common arguments of a tiny-train run on HOST.
function testbed.train_args(host, o)
  o = o or {}
  local train = string.format("{python} train.py --out {out} --steps %d --step-seconds %s%s", o.steps or 12,
    tostring(o.step_seconds or 0.1), o.extra and (" " .. o.extra) or "")
  local parts = {
    "run recipes/autodl_train.lua", "host=" .. host, "project=" .. (o.project or "tiny"), "code=examples/tiny-train",
    q("train=" .. train), q("smoke=python3 train.py --smoke --out {tmp}"),
    o.load ~= false and q("load=python3 " .. T.root .. "/examples/tiny-train/load_check.py {}") or "",
    o.box_load ~= false and q("box_load=" .. (o.box_load or "{python} load_check.py {}")) or "",
    "interval=" .. tostring(o.interval or 0.3), "stall=" .. tostring(o.stall or 20), "local_dir=" .. q(o.local_dir),
    "gotchas=" .. (o.gotchas and "yes" or "no"),
  }
  if o.more then parts[#parts + 1] = o.more end
  return table.concat(parts, " ")
end

return testbed

-- slurmbed.lua: the simulated Slurm cluster (tests/sim/slurm-sim) as a spec fixture.
-- Each cluster lives in its own temp GPURENT_SIM_DIR; the login node is reached
-- with the real OpenSSH client and the ssh_config block slurm-sim wrote, as
-- gpurent's `host add` would; c:down() ends it (exact PIDs) and removes the dir.
--
--   local slurmbed = require "slurmbed"
--   assert(slurmbed.available())             -- root + the Debian packages (make deps)
--   local c = slurmbed.new()
--   c:up("--gpus 2")                          -> slurm-sim's output (raises on failure)
--   c:ssh("sbatch --wrap 'hostname'")         -> output, rc  (on the login node)
--   c:sbatch("--array=0-2 --wrap 'true'")     -> job id (raises unless submitted)
--   c:job_state(id) -> "RUNNING" (squeue, else sacct)   c:wait_state(id, {COMPLETED=true}, 30)
--   c:sim("drain --reason maint") -> output, rc        c:status() -> table
--   c:workspace{simcluster = slurmbed.SITE}   the person's side: c.state, c.home, c.profiles,
--                                             c.pulled (profile overlays written by name)
--   c:env() -> "VAR=... " for gpurent          c:gpurent(args, seconds) -> code, out, err
--   c:down()                                  -> output, rc   c:teardown(): down if still up
--   c:assert_steps_once(csv_path, steps)      a train.csv on the login node holds steps 1..steps,
--                                             each once, in order (no step lost or redone by a requeue)
local cjson = require "cjson"

local slurmbed = {}
local C = {}
C.__index = C

slurmbed.SIM = T.root .. "/tests/sim/slurm-sim"
local q = T.q

local function sh(cmd)
  local p = assert(io.popen(cmd .. " 2>&1; echo \"__rc=$?\""))
  local out = p:read("a")
  p:close()
  local body, rc = out:match("^(.*)__rc=(%d+)%s*$")
  return body or out, tonumber(rc)
end
slurmbed.sh = sh

-- The spec must fail (not skip) where Slurm is missing: callers assert this.
function slurmbed.available()
  if not sh("id -u"):match("^0%s") then return false, "the Slurm testbed needs root" end
  local missing = {}
  for _, tool in ipairs{"slurmctld", "slurmd", "slurmdbd", "sbatch", "munged", "mariadbd", "sshd"} do
    local _, rc = sh("command -v " .. tool .. " || test -x /usr/sbin/" .. tool)
    if rc ~= 0 then missing[#missing + 1] = tool end
  end
  if #missing > 0 then
    return false, "missing " .. table.concat(missing, ", ") .. ": run `make deps` as root"
  end
  return true
end

function slurmbed.new()
  local dir = sh("mktemp -d /tmp/gr-slurm.XXXXXX"):match("%S+")
  return setmetatable({dir = dir, ssh_config = dir .. "/ssh_config", host = "cluster"}, C)
end

function C:sim(args)
  return sh("GPURENT_SIM_DIR=" .. q(self.dir) .. " " .. q(slurmbed.SIM) .. " " .. args)
end

function C:up(opts)
  local out, rc = self:sim("up " .. (opts or ""))
  assert(rc == 0, "slurm-sim up failed: " .. out)
  self.host = out:match("^Host (%S+)") or self.host
  return out
end

-- A command on the login node over real ssh (bounded: a hang fails the test, not the suite).
function C:ssh(cmd, seconds)
  return sh(string.format("timeout %d ssh -F %s -o BatchMode=yes %s %s", seconds or 60,
    q(self.ssh_config), q(self.host), q(cmd)))
end

function C:sbatch(args)
  local out, rc = self:ssh("sbatch --parsable " .. args)
  local id = out:match("^(%d+)")
  assert(rc == 0 and id, "sbatch " .. args .. " failed: " .. out)
  return id
end

-- squeue while the job is known to slurmctld, else sacct (the first line: the job itself).
function C:job_state(id)
  local out = self:ssh("squeue -h -j " .. id .. " -o %T 2>/dev/null | head -1")
  local state = out:match("^(%u[%u_]+)")
  if state then return state end
  out = self:ssh("sacct -n -X -j " .. id .. " -o State%30 | head -1")
  return out:match("(%u[%u_]+)")
end

function C:wait_state(id, states, seconds)
  local deadline, last = os.time() + seconds, nil
  repeat
    last = self:job_state(id)
    if last and states[last] then return last end
    sh("sleep 0.5")
  until os.time() > deadline
  return last
end

-- wait_for(fn, seconds): poll fn every 0.5 s until it returns truthy.
function C.wait_for(fn, seconds)
  local deadline = os.time() + seconds
  repeat
    local v = fn()
    if v then return v end
    sh("sleep 0.5")
  until os.time() > deadline
  return nil
end

function C:assert_steps_once(csv_path, steps)
  local check = require "luassert"   -- (busted's assert reaches specs, not helper modules)
  local csv = self:ssh("cat " .. q(csv_path))
  local n = 0
  for s in csv:gmatch("\n(%d+),") do
    n = n + 1
    check.are.equal(n, tonumber(s), "train.csv out of order at row " .. n)
  end
  check.are.equal(steps, n, "steps in train.csv")
end

function C:status()
  local out, rc = self:sim("status")
  assert(rc == 0, "slurm-sim status failed: " .. out)
  return cjson.decode(out)
end

-- The site overlay a cluster's users write: the testbed's home and scratch as absolute paths.
slurmbed.SITE = [[
extends: slurm
tiers:
  home: {path: /root}
  scratch: {path: /root/scratch}
checkpoints:
  live_dir: /root/scratch/checkpoints/{name}
  durable_dir: /root/gpurent-results/{project}/{name}
  run_root: /root/scratch/{project}
]]

-- The person's side of the cluster: a private HOME, state dir (the ledger), profile dir
-- (overlays: name -> YAML text) and where pulls land, all inside the cluster's dir.
function C:workspace(overlays)
  self.state, self.home, self.profiles, self.pulled = self.dir .. "/state", self.dir .. "/home", self.dir .. "/profiles",
    self.dir .. "/pulled"
  local out, rc = sh("mkdir -p " .. q(self.state) .. " " .. q(self.home .. "/.ssh") .. " " .. q(self.profiles))
  assert(rc == 0, out)
  for name, text in pairs(overlays or {}) do T.write(self.profiles .. "/" .. name .. ".yaml", text) end
  return self
end

-- gpurent as the person runs it: this cluster's ssh_config, the workspace's HOME,
-- ledger and profiles, no progress bars.
function C:env()
  return "GPURENT_PROFILE_PATH=" .. q(self.profiles) .. " HOME=" .. q(self.home) .. " GPURENT_STATE_DIR=" ..
    q(self.state) .. " GPURENT_PROGRESS=none GPURENT_SSH_CONFIG=" .. q(self.ssh_config)
end

-- One gpurent command, bounded (a hang fails the test, not the suite).
function C:gpurent(args, seconds)
  return T.run(args, {env = self:env() .. " timeout -k 5 " .. tostring(seconds or 120), cwd = T.root})
end

-- For a spec's teardown: ends the cluster unless down() already did (its dir is gone).
function C:teardown()
  if self.dir and sh("test -d " .. q(self.dir) .. " && echo y"):match("y") then self:down() end
end

function C:down()
  local out, rc = self:sim("down")
  if rc == 0 then T.rmtree(self.dir) end
  return out, rc
end

return slurmbed

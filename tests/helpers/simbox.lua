-- tests/helpers/simbox.lua: boots simulated AutoDL instances (tests/sim/autodl-sim)
-- in a private sim dir for the profile/storage/gotcha/check specs, and connects to
-- them with gpurent.connect over the sim's ssh_config.
--
--   local simbox = require "simbox"
--   local ok, why = simbox.available()
--   local box = simbox.new()                 -- private $GPURENT_SIM_DIR under /tmp
--   local inst = box:up("a1", "--region r1 --fs-inodes 300")  -> connected instance (profile autodl)
--   box:exec("a1", "cmd")  -> code, output     box:info("a1") -> table
--   box:gpu_state("a1", "gpu 0 temp=92\n")     box:env() -> "GPURENT_SIM_DIR=... GPURENT_SSH_CONFIG=..."
--   box:down()                               -- every instance, the API, the sim dir
local json = require "gpurent.util.json"
local profile = require "gpurent.config.profile"

local simbox = {}
local Box = {}
Box.__index = Box

local SIM = T.root .. "/tests/sim/autodl-sim"

local function sh(cmd)
  local f = io.popen(cmd .. " 2>&1")
  local out = f:read("a")
  local _, _, code = f:close()
  return code, out
end

function simbox.available()
  local code, out = sh("id -u")
  if out:gsub("%s+", "") ~= "0" then return false, "the testbed needs root" end
  if not io.open(SIM) then return false, "tests/sim/autodl-sim is missing" end
  code = sh("command -v sshd >/dev/null || test -x /usr/sbin/sshd")
  if code ~= 0 then return false, "sshd is not installed" end
  return true
end

function simbox.new()
  local code, dir = sh("mktemp -d /tmp/gpurent-sim5.XXXXXX")
  assert(code == 0, dir)
  return setmetatable({dir = dir:gsub("%s+$", ""), insts = {}}, Box)
end

function Box:env()
  return "GPURENT_SIM_DIR=" .. T.q(self.dir) .. " GPURENT_SSH_CONFIG=" .. T.q(self.dir .. "/ssh_config")
end

function Box:sim(args)
  return sh(self:env() .. " " .. T.q(SIM) .. " " .. args)
end

function Box:up(name, args)
  local code, out = self:sim("up " .. name .. " " .. (args or ""))
  assert(code == 0, "autodl-sim up " .. name .. " failed: " .. out)
  local inst = gpurent.connect(name, {config = self.dir .. "/ssh_config"})
  inst.profile = profile.load("autodl")
  -- every command of a spec is bounded: a hung call fails its test instead of the suite
  local raw_sh = inst.sh
  function inst.sh(i, cmd, opts)
    opts = opts or {}
    if opts.timeout == nil then opts.timeout = 90 end
    return raw_sh(i, cmd, opts)
  end
  self.insts[name] = inst
  return inst
end

function Box:exec(name, cmd)
  return self:sim("exec " .. name .. " -- " .. T.q(cmd))
end

function Box:info(name)
  local code, out = self:sim("info " .. name)
  assert(code == 0, out)
  return json.decode(out, "info")
end

-- Replace the GPU readings nvidia-smi prints inside the instance.
function Box:gpu_state(name, text)
  T.write(self:info(name).gpu_state_file, text)
end

function Box:down()
  for _, inst in pairs(self.insts) do pcall(inst.close, inst) end
  self.insts = {}
  local code, out = self:sim("down --all")
  if code == 0 then T.rmtree(self.dir) end
  return code, out
end

return simbox

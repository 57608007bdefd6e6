-- demo.lua (`make demo`): recipes/autodl_train.lua end to end with examples/tiny-train.
-- With host=ALIAS it runs on that instance (the meter runs: you pay for it). Without,
-- it boots the simulated AutoDL (tests/sim: real sshd, tmpfs tiers, the developer API;
-- needs root) in a temp dir, runs every phase there with its output shown, tears the
-- simulator down, and leaves the pulled, verified results in /tmp/gpurent-demo-runs/.
local params = gpurent.recipe {
  description = "Demo: train examples/tiny-train end to end (on the simulated AutoDL unless host= is given)",
  params = {
    {name = "host", help = "a real instance's ssh alias (default: a simulated one)"},
    {name = "steps", type = "integer", default = 30, help = "training steps of the tiny trainer"},
    {name = "local_dir", default = "/tmp/gpurent-demo-runs", help = "where the verified results go"},
  },
}
local sys = require "gpurent.util.sys"
local errors = require "gpurent.util.errors"
local q = require("gpurent.util.shell").quote
local function sh(cmd)
  local f = assert(io.popen(cmd .. " 2>&1"))
  local out = f:read("a")
  local ok, _, code = f:close()
  return out, ok and 0 or code
end

local here = (arg and arg[0] or "recipes/demo.lua"):match("^(.*)/[^/]*$") or "."
local top = here .. "/.."
local self_exe = sh("readlink /proc/" .. sys.getpid() .. "/exe"):match("[^\n]+")
local train_args = table.concat({
  "run", q(top .. "/recipes/autodl_train.lua"), "project=tiny-demo", "code=" .. q(top .. "/examples/tiny-train"),
  q("train={python} train.py --out {out} --steps " .. params.steps .. " --step-seconds 0.2"),
  q("smoke=python3 train.py --smoke --out {tmp}"),
  q("load=python3 " .. top .. "/examples/tiny-train/load_check.py {}"), q("box_load={python} load_check.py {}"),
  "local_dir=" .. q(params.local_dir), "interval=1", "stall=60", "gotchas=yes",
}, " ")

if params.host then
  local ok, _, code = os.execute(q(self_exe) .. " " .. train_args .. " host=" .. q(params.host))
  if not ok then errors.raise("remote", "demo: the run failed (exit " .. tostring(code) .. ")", 0) end
  return
end

if sh("id -u"):match("%d+") ~= "0" then
  errors.usage("demo: the simulated AutoDL needs root (or pass host=ALIAS for a real instance)", 0)
end
local sim = top .. "/tests/sim/autodl-sim"
local dir = sh("mktemp -d /tmp/gpurent-demo.XXXXXX"):match("%S+")
local env = "GPURENT_SIM_DIR=" .. q(dir)
print("[demo] booting a simulated AutoDL instance 'demo1' in " .. dir .. " (real sshd, tmpfs tiers, developer API)")
local out, rc = sh(env .. " " .. q(sim) .. " up demo1 --region westDC2 --data-size 512M --fs-size 256M --fs-inodes 20000")
if rc ~= 0 then sh(env .. " " .. q(sim) .. " down --all; rm -rf " .. q(dir)); errors.raise("remote", "demo: autodl-sim up failed: " .. out, 0) end
io.write(out)
local function read(f) local h = io.open(f); local s = h and h:read("a"); if h then h:close() end; return s and s:match("%S+") end
local child_env = table.concat({env, "GPURENT_SSH_CONFIG=" .. q(dir .. "/ssh_config"),
  "GPURENT_STATE_DIR=" .. q(dir .. "/state"), "AUTODL_TOKEN=" .. q(read(dir .. "/api.token")),
  "GPURENT_AUTODL_BASE_URL=" .. q(read(dir .. "/api.url"))}, " ")
print("[demo] gpurent run recipes/autodl_train.lua host=demo1 ... (every phase below is the real recipe)")
local ok, _, code = os.execute(child_env .. " " .. q(self_exe) .. " " .. train_args .. " host=demo1")
local calls, stops = 0, 0
local jf = io.open(dir .. "/journal.jsonl")
for line in (jf and jf:lines() or function() return nil end) do
  local e = require("gpurent.util.json").decode(line)
  if e.admin == false then
    calls = calls + 1
    if e.path:find("power_off", 1, true) or e.path:find("release", 1, true) then stops = stops + 1 end
  end
end
if jf then jf:close() end
print(string.format("[demo] API journal: %d developer-API call(s), %d power-off/release (teardown needs teardown=yes --approve)", calls, stops))
print("[demo] tearing the simulator down")
sh(env .. " " .. q(sim) .. " down --all")
sh("rm -rf " .. q(dir))
if not ok then errors.raise("remote", "demo: the run failed (exit " .. tostring(code) .. ")", 0) end
print("[demo] done: verified results under " .. params.local_dir .. "/")

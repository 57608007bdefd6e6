-- autodl_train.lua: one training job on an AutoDL instance, the whole arc:
-- setup -> audit -> connect -> prepare -> launch -> watch -> close -> pull
-- -> teardown (only with teardown=yes AND the person's approval: --approve NAME).
-- Each step is a phase in lua/gpurent/lifecycle/phases/; replace one by assigning your own
-- function to phases.NAME before the arc below runs.
local p = gpurent.recipe {
  description = "Train one job on AutoDL end to end: audit, launch detached, watch, seal, pull, verify",
  params = {
    {name = "host", required = true, help = "ssh alias of the instance (gpurent host add)"},
    {name = "project", required = true, help = "project name: the run root is <data>/<project>"},
    {name = "code", required = true, help = "local code directory pushed to the box"},
    {name = "train", required = true, help = "train command, run in the code dir; {python} {out} {run_id} filled in"},
    {name = "smoke", help = "local CPU smoke command run before anything remote ({tmp}: a temp dir)"},
    {name = "expected", type = "list", help = "capsule roster: files every result holds",
     default = {"run.json", "train.csv", "best.pth", "best_metrics.json", "test/final/metrics.json"}},
    {name = "load", help = "checkpoint load command, run locally; {} is the checkpoint path"},
    {name = "budget", type = "number", help = "spend budget in yuan: the launch is refused beyond it"},
    {name = "notify", type = "boolean", default = false, help = "also send the outcome by WeChat (AutoDL API)"},
    {name = "teardown", type = "boolean", default = false, help = "power off after the verified pull (needs --approve)"},
    {name = "instance", help = "the API's instance name or uuid (default: host)"},
    {name = "local_dir", default = "runs", help = "where pulled results go"},
    {name = "secrets", type = "list", help = "names of environment variables pushed as secrets over stdin"},
    {name = "mode", default = "auto", allowed = {"auto", "tmux", "nohup"}, help = "detach primitive"},
    {name = "interval", type = "number", default = 30, help = "watch: seconds between probes"},
    {name = "stall", type = "number", default = 600, help = "watch: stall window in seconds"},
    {name = "expected_seconds", type = "number", help = "watch: expected duration (fast-finish check)"},
    {name = "max_relaunches", type = "integer", default = 2, help = "watch: relaunches of a probabilistic failure"},
    {name = "max_wait", type = "number", default = 86400, help = "watch: bounded wait in seconds"},
    {name = "ckpt_size", default = "50M", help = "audit: size of one checkpoint (budget)"},
    {name = "gotchas", type = "boolean", default = true, help = "audit: run the gotcha probes"},
    {name = "id", help = "run id (default: a fresh one)"},
  },
}
local phases = require "gpurent.lifecycle.phases"
local run = require "gpurent.lifecycle.run"
local run_lock = require "gpurent.lifecycle.run_lock"

local r = run.new{host = p.host, project = p.project, recipe = "autodl_train", id = p.id,
  local_dir = p.local_dir, interval = p.interval, stall_seconds = p.stall, expected_seconds = p.expected_seconds,
  max_relaunches = p.max_relaunches, max_wait = p.max_wait, roster = p.expected, load_cmd = p.load,
  ssh_config = os.getenv("GPURENT_SSH_CONFIG")}
r:say("run", "run %s: %s on %s (profile %s); re-attach from any shell: gpurent watch %s", r.id, p.project, p.host,
  r.profile_name, r.id)

local result
local ok, err = pcall(function()
  local inst = r:connect()
  r:phase("setup", phases.setup, inst, r, {})
  r:phase("audit", phases.audit, inst, r, {ckpt_bytes = p.ckpt_size, gotchas = p.gotchas})
  inst = r:phase("connect", phases.connect, inst, r, {secrets = run.secrets_from_env(p.secrets)})
  r:phase("prepare", phases.prepare, inst, r, {code_dir = p.code, smoke = p.smoke, command = p.train, params = p})
  if p.budget then r:say("launch", "%s", r:check_budget(p.budget, p.instance)) end
  r:phase("launch", phases.launch, inst, r, {command = p.train, mode = p.mode})
  local w = r:phase("watch", phases.watch, inst, r, {})
  if w.state ~= "finished" then
    error(string.format("run %s ended %s: %s", r.id, w.state,
      (w.verdict and (w.verdict.why or (w.verdict.triage and w.verdict.triage.cause))) or w.why or ""), 0)
  end
  -- one finisher at a time: a `gpurent watch RUN --finish` elsewhere cannot slip in
  -- between close, pull, teardown and the ledger's "succeeded"
  result = run_lock.hold(r, inst, function()
    r:phase("close", phases.close, inst, r, {roster = p.expected})
    local pulled = r:phase("pull", phases.pull, inst, r, {roster = p.expected, load_cmd = p.load, local_dir = p.local_dir})
    if p.teardown then
      r:phase("teardown", phases.teardown, inst, r, {pulled_dir = pulled.local_dir, instance = p.instance})
    else
      r:say("teardown", "not requested: the meter is still ON for %s. When you are done, power it off " ..
        "(AutoDL's reversible 关机, disks kept): gpurent billing power-off %s --ssh %s --approve %s " ..
        "(or on the console)", p.host, p.instance or p.host, p.host, p.instance or p.host)
    end
    r:finish("succeeded")
    return pulled
  end)
end)
-- a run another finisher holds is that finisher's to record
if not ok and not run_lock.is_busy(err) then r:finish("failed") end
if ok then
  r:say("run", "run %s succeeded: verified results in %s", r.id, result.local_dir)
  r:tell("run " .. r.id .. " succeeded: results verified in " .. result.local_dir, p.notify)
else
  r:say("run", "run %s FAILED: %s", r.id, tostring(type(err) == "table" and (err.msg or err.reason) or err):match("[^\n]*"))
  r:tell("run " .. r.id .. " failed: " .. tostring(type(err) == "table" and (err.msg or err.reason) or err):match("[^\n]*"), p.notify)
  error(err, 0)
end

-- gpurent.phases: the lifecycle's phases (LIFECYCLE.md), each a plain function
-- (inst, run, opts) that a recipe calls, wraps or replaces:
--
--   local phases = require "gpurent.lifecycle.phases"
--   phases.audit(inst, r, {ckpt_bytes = "2G"})
--   phases.watch = function(inst, r, o) ... end      -- a team's own watcher
--
-- setup (-1)  alias answers, durable tier present, first-contact notice once per host
-- audit (0)   run root, survival matrix, df -h/-i, cgroup, GPUs, hogs, budgets, gotchas
-- connect (1) proxy hook, the image's interpreter, secrets over stdin, mirrors -> hooked inst
-- prepare (2) unique run id, identities into run.json, local CPU smoke gate
-- launch (3)  verified code push, detached start in the wrapper, short probe
-- watch (4)   one-round-trip probe per tick, classification, fixed remedies
-- close (5a)  export/.partial -> validate -> rename to export/<id> | quarantine
-- pull (5b)   checked-sync to durable, PULL_MANIFEST from the roster, pull, verify
-- teardown (5c) the billing gate and the meter-stop verb, only with approval
-- Each module is also a table with its helpers (phases.launch.relaunch, ...).
local phases = {}
local ORDER = {"setup", "audit", "connect", "prepare", "launch", "watch", "close", "pull", "teardown"}
phases.ORDER = ORDER

return setmetatable(phases, {__index = function(t, k)
  for _, name in ipairs(ORDER) do
    if name == k then
      local m = require("gpurent.lifecycle.phases." .. k)
      rawset(t, k, m)
      return m
    end
  end
  return nil
end})

-- gpurent.lifecycle.phases: the lifecycle's phases (LIFECYCLE.md), each a table that
-- gpurent.lifecycle runs: {name, needs, produces, run = function(ctx, opts)}. A phase
-- reads what earlier phases produced from the context and returns what it produces;
-- no phase calls another. Read top-down, phases.train() is the whole arc:
--
-- connect      open the SSH session to the run's host                     -> inst
-- setup (-1)   alias answers, durable tier present, first-contact notice  -> durable
-- audit (0)    run root, survival matrix, df -h/-i, cgroup, GPUs, hogs,
--              budgets, gotchas (a gate)                                  -> audit
-- environment  proxy hook, the image's interpreter, secrets over stdin,
--              mirrors                                   -> box, python, env, hook, cred_file
-- prepare (2)  unique run id, identities into run.json, local CPU smoke    -> code, run_json
-- install      the requirements pushed, the pins probe on them, pip without the
--              framework pins (env.install_filter), torch unchanged        -> installed
-- launch (3)   budget, verified code push, detached start, short probe     -> job
-- watch (4)    one-round-trip probe per tick, classification, fixed remedies -> watched
-- close (5a)   export/.partial -> validate -> rename to export/<id> | quarantine -> export
-- pull (5b)    checked-sync to durable, PULL_MANIFEST from the roster, pull,
--              verify                                                     -> verified
-- teardown (5c) the billing gate and the meter-stop verb, only with approval -> teardown
--
-- A recipe replaces one (lifecycle.replace(list, "watch", mine)) or inserts its own
-- (lifecycle.insert_after(list, "prepare", mine)). Each module also holds its
-- helpers (phases.launch.expand, phases.prepare.tree, ...).
local phases = {}
local ORDER = {"connect", "setup", "audit", "environment", "prepare", "install", "launch", "watch", "close", "pull",
  "teardown"}
phases.ORDER = ORDER

-- The whole arc, a fresh list each call (so composing it never changes another's).
function phases.train()
  local list = {}
  for i, name in ipairs(ORDER) do list[i] = phases[name] end
  return list
end

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

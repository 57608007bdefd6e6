-- Phase 5c, teardown: the Iron Law's order (no meter-stop before PULL_VERIFIED.json
-- exists), then the platform's one guarded power-off (gpurent.platform: P.stop): the gate refuses
-- (exit 3, nothing sent) without the person's approval (`--approve INSTANCE` on the
-- gpurent command line, or the name typed on the terminal) and, where the profile
-- calls power-off irreversible, without every file that dies being pulled. Over this
-- phase's SSH session it first takes the inventory a later release will need.
-- It runs under the run's finish lock (gpurent.run_lock), like close and pull.
--
--   needs {run, inst, verified} -> produces {teardown = {decision =, status =}}
--   opts: pulled_dir (where PULL_VERIFIED.json is; the pull's local_dir), instance (the API's name or uuid,
--         or an alias linked by host add --uuid; r.host), client (the platform's billing
--         client; made when absent: the token stays in C), dry_run, wait, deadline
local manifest = require "gpurent.lifecycle.manifest"
local errors = require "gpurent.util.errors"
local run_lock = require "gpurent.lifecycle.run_lock"

local teardown = {name = "teardown", needs = {"run", "inst", "verified"}, produces = {"teardown"},
  finishes = true, ending = true}

local function power_off(inst, r, o)
  o = o or {}
  local pulled = o.pulled_dir
  local ok, why = pcall(manifest.read_verified, pulled or "")
  if not pulled or not ok then
    errors.refuse("teardown: no meter-stop before a verified pull: " .. tostring(pulled and why or "no pulled_dir given"), 0)
  end
  local res = require("gpurent.platform").of(r.profile).stop{verb = "power_off", client = o.client,
    without_client = "refusal", context = "teardown: ", ref = o.instance or r.host,
    inst = inst, target = r.host, pulled = {pulled}, profile = r.profile, profile_name = r.profile_name,
    run_id = r.id, interactive = require("gpurent.util.sys").isatty(0), dry_run = o.dry_run,
    wait = o.wait, deadline = o.deadline,
    say = function(fmt, ...) r:say("teardown", fmt, ...) end}
  return {decision = res.decision, status = res.status}
end

function teardown.run(ctx, o)
  local opts = {}
  for k, v in pairs(o or {}) do opts[k] = v end
  opts.pulled_dir = opts.pulled_dir or ctx.verified.local_dir
  local inst = require("gpurent.lifecycle").session(ctx)
  return {teardown = run_lock.hold(ctx.run, inst, power_off, inst, ctx.run, opts)}
end

return setmetatable(teardown, {__call = function(_, ...) return teardown.run(...) end})

-- autodl_train.lua: one training job on an AutoDL instance, the whole arc:
-- connect -> setup -> audit -> environment -> prepare -> launch -> watch -> close
-- -> pull -> teardown (only with teardown=yes AND the person's approval: --approve NAME).
-- Each step is a phase in lua/gpurent/lifecycle/phases/; gpurent.lifecycle runs them
-- and owns errors, the ledger, Ctrl-C and the ending. Your own recipe replaces one
-- (lifecycle.replace(list, "watch", mine)) or inserts its own (lifecycle.insert_after).
-- The parameters every lifecycle recipe shares (host, project, code, train, the watch's
-- knobs...) are declared once, by name, in gpurent.lifecycle.params; this recipe's own
-- are the tables.
local shared = require "gpurent.lifecycle.params"
local params = gpurent.recipe {
  description = "Train one job on AutoDL end to end: audit, launch detached, watch, seal, pull, verify",
  params = shared.list {
    "host", "project", "code", "train", "smoke", "expected", "load", "box_load",
    {name = "budget", type = "number", help = "spend budget in yuan: the launch is refused beyond it"},
    {name = "notify", type = "boolean", default = false, help = "also send the outcome by WeChat (AutoDL API)"},
    {name = "teardown", type = "boolean", default = false, help = "power off after the verified pull (needs --approve)"},
    {name = "instance", help = "the API's instance name or uuid (default: host)"},
    "local_dir", "secrets", "mode", "interval", "stall", "expected_seconds", "max_relaunches", "max_wait",
    "ckpt_size", "gotchas", "id",
  },
}
local lifecycle = require "gpurent.lifecycle"
local phases = require "gpurent.lifecycle.phases"
local run = require "gpurent.lifecycle.run"

local r = run.new{host = params.host, project = params.project, recipe = "autodl_train", id = params.id,
  local_dir = params.local_dir, interval = params.interval, stall_seconds = params.stall,
  expected_seconds = params.expected_seconds, max_relaunches = params.max_relaunches, max_wait = params.max_wait,
  roster = params.expected, load_cmd = params.load}
r:say("run", "run %s: %s on %s (profile %s); re-attach from any shell: gpurent watch %s", r.id, params.project,
  params.host, r.profile_name, r.id)

lifecycle.run(r, phases.train(), {push = params.notify, options = {
  audit = {ckpt_bytes = params.ckpt_size, gotchas = params.gotchas},
  environment = {secrets = run.secrets_from_env(params.secrets)},
  prepare = {code_dir = params.code, smoke = params.smoke, command = params.train, params = params},
  launch = {command = params.train, mode = params.mode, budget = params.budget, instance = params.instance,
            roster = params.expected, box_load = params.box_load},
  close = {roster = params.expected, box_load = params.box_load},
  pull = {roster = params.expected, load_cmd = params.load, local_dir = params.local_dir},
  teardown = {skip = not params.teardown, instance = params.instance},
}})

-- pull.lua: phase 5b alone - sync a sealed run to the durable tier, write
-- PULL_MANIFEST.json from the expected roster, pull it and verify it locally.
local p = gpurent.recipe {
  description = "Pull a sealed run: checked-sync to durable, PULL_MANIFEST from the roster, pull, verify",
  params = {
    {name = "host", required = true, help = "ssh alias"},
    {name = "project", required = true, help = "project name"},
    {name = "run", required = true, help = "the run id (its export/<run> must be sealed)"},
    {name = "expected", type = "list", help = "capsule roster: files every result holds",
     default = {"run.json", "train.csv", "best.pth", "best_metrics.json", "test/final/metrics.json"}},
    {name = "cells", type = "list", help = "result directories (run ids); default: the run itself"},
    {name = "load", help = "checkpoint load command, run locally; {} is the checkpoint path"},
    {name = "local_dir", default = "runs", help = "where pulled results go"},
  },
}
local run = require "gpurent.lifecycle.run"
local ledger = require "gpurent.state.ledger"
local r
local L = ledger.open()
local known = L:run(p.run)
L:close()
if known then r = run.load(p.run) else r = run.new{host = p.host, project = p.project, id = p.run, recipe = "pull"} end
r.host, r.project = p.host, p.project
r.paths = run.paths(r.profile, r.project, r.id)
local res
local ok, err = pcall(function()
  local inst = r:connect()
  res = r:phase("pull", require("gpurent.lifecycle.phases").pull, inst, r,
    {roster = p.expected, cells = p.cells, load_cmd = p.load, local_dir = p.local_dir})
end)
if not ok then
  r:say("pull", "FAILED: %s", tostring(type(err) == "table" and err.msg or err))
  error(err, 0)
end
r:say("pull", "verified results in %s", res.local_dir)

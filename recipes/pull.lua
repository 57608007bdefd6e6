-- pull.lua: phase 5b alone - sync a sealed run to the durable tier, write
-- PULL_MANIFEST.json from the expected roster, pull it and verify it locally.
local params = gpurent.recipe {
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
local lifecycle = require "gpurent.lifecycle"
local phases = require "gpurent.lifecycle.phases"
local run = require "gpurent.lifecycle.run"
local ledger = require "gpurent.state.ledger"

-- a run of the ledger is pulled as itself; any other sealed export gets a run row here
local L = ledger.open()
local known = L:run(params.run)
L:close()
local r = known and run.load(params.run) or run.new{host = params.host, project = params.project, id = params.run, recipe = "pull"}
r.host, r.project = params.host, params.project
r.paths = run.paths(r.profile, r.project, r.id)
lifecycle.run(r, {phases.connect, phases.pull}, {tell = false, record_status = not known, options = {
  pull = {roster = params.expected, cells = params.cells, load_cmd = params.load, local_dir = params.local_dir},
}})

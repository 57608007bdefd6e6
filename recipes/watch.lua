-- watch.lua: phase 4 alone - re-attach to a run recorded in the ledger (same as `gpurent watch RUN`).
local params = gpurent.recipe {
  description = "Watch a run until it finishes, dies or stalls (re-attaches from the ledger)",
  params = {
    {name = "run", required = true, help = "run id (gpurent history)"},
    {name = "interval", type = "number", help = "seconds between probes"},
    {name = "stall", type = "number", help = "stall window in seconds"},
    {name = "max_wait", type = "number", help = "bounded wait in seconds"},
  },
}
local lifecycle = require "gpurent.lifecycle"
local phases = require "gpurent.lifecycle.phases"
local r = require("gpurent.lifecycle.run").load(params.run)
-- the job was launched earlier: Ctrl-C here detaches, it never fails the run
lifecycle.run(r, {phases.connect, phases.watch}, {partial = true, tell = false, context = {job = {reattached = true}},
  options = {watch = {interval = params.interval, stall_seconds = params.stall, max_wait = params.max_wait}}})

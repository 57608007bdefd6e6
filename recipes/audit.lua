-- audit.lua: phase 0 alone - what the box holds and whether a run fits, before renting more time.
local params = gpurent.recipe {
  description = "Audit an instance: run root, survival matrix, df -h/-i, cgroup, GPUs, hogs, budgets, gotchas",
  params = {
    {name = "host", required = true, help = "ssh alias"},
    {name = "project", required = true, help = "project name (the run root is <data>/<project>)"},
    {name = "ckpt_size", default = "50M", help = "size of one checkpoint"},
    {name = "ckpt_count", type = "integer", default = 2, help = "checkpoints kept at once"},
    {name = "files", type = "integer", default = 16, help = "files the run writes on the durable tier"},
    {name = "gotchas", type = "boolean", default = true, help = "run the gotcha probes"},
  },
}
local lifecycle = require "gpurent.lifecycle"
local phases = require "gpurent.lifecycle.phases"
local r = require("gpurent.lifecycle.run").new{host = params.host, project = params.project, recipe = "audit"}
lifecycle.run(r, {phases.connect, phases.setup, phases.audit}, {tell = false, options = {
  audit = {ckpt_bytes = params.ckpt_size, ckpt_count = params.ckpt_count, files = params.files, gotchas = params.gotchas},
}})
r:say("audit", "all budgets pass on %s", params.host)

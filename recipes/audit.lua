-- audit.lua: phase 0 alone - what the box holds and whether a run fits, before renting more time.
local p = gpurent.recipe {
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
local phases = require "gpurent.lifecycle.phases"
local r = require("gpurent.lifecycle.run").new{host = p.host, project = p.project, recipe = "audit"}
local ok, err = pcall(function()
  local inst = r:connect()
  r:phase("setup", phases.setup, inst, r, {})
  r:phase("audit", phases.audit, inst, r, {ckpt_bytes = p.ckpt_size, ckpt_count = p.ckpt_count, files = p.files,
    gotchas = p.gotchas})
end)
r:finish(ok and "succeeded" or "failed")
if not ok then error(err, 0) end
r:say("audit", "all budgets pass on %s", p.host)

-- watch.lua: phase 4 alone - re-attach to a run recorded in the ledger (same as `gpurent watch RUN`).
local p = gpurent.recipe {
  description = "Watch a run until it finishes, dies or stalls (re-attaches from the ledger)",
  params = {
    {name = "run", required = true, help = "run id (gpurent history)"},
    {name = "interval", type = "number", help = "seconds between probes"},
    {name = "stall", type = "number", help = "stall window in seconds"},
    {name = "max_wait", type = "number", help = "bounded wait in seconds"},
  },
}
local r = require("gpurent.lifecycle.run").load(p.run)
local inst = r:connect()
local w = r:phase("watch", require("gpurent.lifecycle.phases").watch, inst, r,
  {interval = p.interval, stall_seconds = p.stall, max_wait = p.max_wait})
if w.state ~= "finished" then error("run " .. r.id .. " ended " .. w.state, 0) end

-- autodl_sweep.lua: a queue of cells (one `<config> <task> [epochs]` per line) with
-- the run_queue semantics of LIFECYCLE.md: blank and # lines skipped and not
-- counted; start=N resumes from cell N; a free-space gate before each cell (abort
-- below the floor); each cell's failure recorded - training OR durable sync; a final
-- `QUEUE DONE` line naming the failed cells; a non-zero exit when any failed.
-- Several hosts (host=a1,a2) fan the queue out: each host takes the next cell.
local p = gpurent.recipe {
  description = "Run a queue of training cells over one or more AutoDL instances",
  params = {
    {name = "host", type = "list", required = true, help = "ssh alias(es); several fan the queue out"},
    {name = "project", required = true, help = "project name"},
    {name = "code", required = true, help = "local code directory"},
    {name = "queue", required = true, help = "queue file: <config> <task> [epochs] per line"},
    {name = "train", required = true, help = "command template: {config} {task} {epochs} {python} {out}"},
    {name = "start", type = "integer", default = 1, help = "first cell to run (resume)"},
    {name = "smoke", help = "local CPU smoke command, run once before any cell"},
    {name = "expected", type = "list", help = "capsule roster",
     default = {"run.json", "train.csv", "best.pth", "best_metrics.json", "test/final/metrics.json"}},
    {name = "load", help = "checkpoint load command ({} = path); with pull=yes"},
    {name = "pull", type = "boolean", default = false, help = "pull and verify the finished cells"},
    {name = "local_dir", default = "runs", help = "where pulled results go"},
    {name = "floor", default = "64M", help = "free bytes the live tier must have before each cell"},
    {name = "floor_inodes", type = "integer", default = 100, help = "free inodes on the durable tier before each cell"},
    {name = "interval", type = "number", default = 30}, {name = "stall", type = "number", default = 600},
    {name = "max_relaunches", type = "integer", default = 1}, {name = "max_wait", type = "number", default = 86400},
    {name = "mode", default = "auto", allowed = {"auto", "tmux", "nohup"}},
  },
}
local phases = require "gpurent.lifecycle.phases"
local run = require "gpurent.lifecycle.run"
local storage = require "gpurent.lifecycle.storage"
local fs = require "gpurent.util.fs"
local run_lock = require "gpurent.lifecycle.run_lock"

local cells = run.parse_queue(fs.read_file(p.queue))
local todo = {}
for _, c in ipairs(cells) do if c.index >= p.start then todo[#todo + 1] = c end end
local sweep = run.new_id(p.project .. "-sweep")
print(string.format("[sweep] %s: %d cells in %s, running %d (from cell %d) on %s", sweep, #cells, p.queue, #todo,
  p.start, table.concat(p.host, ", ")))

-- per host, once: setup, audit, connect (and the local smoke test once for all)
local smoked, nexti, abort = false, 1, nil
local failed, done = {}, {}

local function run_cell(inst, host, c)
  local r = run.new{host = host, project = p.project, id = string.format("%s-c%02d", sweep, c.index), recipe = "autodl_sweep",
    parent = sweep, interval = p.interval, stall_seconds = p.stall, max_relaunches = p.max_relaunches,
    max_wait = p.max_wait, ssh_config = os.getenv("GPURENT_SSH_CONFIG")}
  r.python, r.env, r.hook, r.cred_file = inst.python, inst.env, inst.hook, inst.cred_file
  r:say("cell", "cell %d (%s %s %s) -> run %s on %s", c.index, c.config, c.task, tostring(c.epochs or ""), r.id, host)
  local ok, err = pcall(function()
    local live, durable = r.profile.checkpoints.live_tier, r.profile.checkpoints.durable_tier
    storage.free_gate(inst, live, {profile = r.profile, min_bytes = p.floor})
    storage.free_gate(inst, durable, {profile = r.profile, min_inodes = p.floor_inodes})
    r:phase("prepare", phases.prepare, inst, r, {code_dir = p.code, command = p.train, params = c})
    local cmd = p.train:gsub("{config}", c.config):gsub("{task}", c.task):gsub("{epochs}", tostring(c.epochs or 0))
    r:phase("launch", phases.launch, inst, r, {command = cmd, mode = p.mode})
    local w = r:phase("watch", phases.watch, inst, r, {})
    if w.state ~= "finished" then
      local v = w.verdict or {}
      error(string.format("%s (%s)", w.state, v.why or (v.triage and v.triage.cause) or w.why or "?"), 0)
    end
    -- the cell's finish: sealed and marked succeeded under the run's finish lock, so
    -- a `gpurent watch CELL --finish` from another shell finds it finished
    run_lock.hold(r, inst, function()
      r:phase("close", phases.close, inst, r, {roster = p.expected})
      r:finish("succeeded")
    end)
  end)
  -- another gpurent finishing this cell owns its ledger status
  if not ok and not run_lock.is_busy(err) then r:finish("failed") end
  if ok then
    done[#done + 1] = {cell = c, id = r.id, host = host}
  else
    local why = tostring(type(err) == "table" and (err.msg or err.reason) or err):match("[^\n]*")
    failed[#failed + 1] = {cell = c, id = r.id, why = why}
    r:say("cell", "cell %d FAILED: %s", c.index, why)
    if require("gpurent.util.errors").is_refusal(err) and why:find("free gate", 1, true) then abort = why end
  end
end

local results = gpurent.parallel(p.host, function(host)
  local r0 = run.new{host = host, project = p.project, id = sweep .. "-" .. host, recipe = "autodl_sweep/host", parent = sweep}
  local inst = r0:connect()
  r0:phase("setup", phases.setup, inst, r0, {})
  r0:phase("audit", phases.audit, inst, r0, {gotchas = false, hogs = false})
  inst = r0:phase("connect", phases.connect, inst, r0, {})
  inst.python, inst.env, inst.hook = r0.python, r0.env, r0.hook
  if not smoked and p.smoke then
    smoked = true
    phases.prepare.smoke(r0, p.smoke, {code_dir = p.code})
  end
  r0:finish("succeeded")
  while not abort and nexti <= #todo do
    local c = todo[nexti]
    nexti = nexti + 1
    run_cell(inst, host, c)
  end
  if p.pull then
    local mine = {}
    for _, d in ipairs(done) do if d.host == host then mine[#mine + 1] = d.id end end
    if #mine > 0 then
      phases.pull(inst, r0, {cells = mine, bundle = sweep .. "-" .. host, roster = p.expected, load_cmd = p.load,
        local_dir = p.local_dir})
    end
  end
  inst:close()
end)
for i, res in ipairs(results) do
  if not res.ok then
    failed[#failed + 1] = {cell = {index = 0}, id = p.host[i], why = "host " .. p.host[i] .. ": " .. tostring(res.error):match("[^\n]*")}
  end
end
table.sort(failed, function(a, b) return a.cell.index < b.cell.index end)
local names = {}
for _, f in ipairs(failed) do
  names[#names + 1] = f.cell.index > 0 and string.format("cell %d (%s: %s)", f.cell.index, f.id, f.why) or f.why
end
if abort then print("[sweep] aborted at the free-space gate: " .. abort) end
print(string.format("QUEUE DONE %s: %d cell(s) run, %d ok, %d failed%s", sweep, #done + #failed, #done, #failed,
  #failed > 0 and (": " .. table.concat(names, "; ")) or ""))
if #failed > 0 or abort then
  local msg = "sweep " .. sweep .. ": " .. #failed .. " cell(s) failed" .. (abort and " (aborted at the free-space gate)" or "")
  error(setmetatable({exit = 1, msg = msg}, {__tostring = function(e) return e.msg end}), 0)
end

-- gpurent.lifecycle.params: the recipe parameters the lifecycle recipes share, each
-- declared once with one wording (host, project, code, train, the watch's knobs...).
-- A recipe lists them by name inside its gpurent.recipe{} declaration, beside its own:
--
--   local shared = require "gpurent.lifecycle.params"
--   local params = gpurent.recipe {
--     description = "...",
--     params = shared.list {
--       "host", "project", "code", "train", "smoke",
--       {name = "gotchas", default = false},              -- a shared one, its default changed
--       {name = "parallel", type = "integer", help = "..."}, -- the recipe's own
--     },
--   }
--
-- A name is a copy of the shared declaration; a table whose name is shared is that
-- declaration with the table's fields over it; any other table is the recipe's own.
-- A name that is not shared is an error naming it (a typo would drop a parameter).
local params = {}

local ROSTER = {"run.json", "train.csv", "best.pth", "best_metrics.json", "test/final/metrics.json"}

local SHARED = {
  host = {required = true, help = "ssh alias of the box (gpurent host add NAME 'ssh ...')"},
  project = {required = true, help = "project name: the run root is <data>/<project>"},
  code = {type = "dir", required = true, help = "local code directory pushed to the box"},
  queue = {type = "file", required = true, help = "queue file: <config> <task> [epochs] per line"},
  train = {required = true, help = "train command, run in the code dir; {python} {out} {run_id} filled in"},
  start = {type = "integer", default = 1, help = "first cell to run (resume)"},
  smoke = {help = "local CPU smoke command, run in the code dir before anything is pushed ({tmp}: a temp dir); " ..
    "its failure stops the run"},
  expected = {type = "list", default = ROSTER, help = "capsule roster: files every result holds"},
  load = {help = "checkpoint load command, run locally; {} is the checkpoint path (default: the box's check)"},
  box_load = {help = "checkpoint load check on the box before the durable sync and the seal, run in the code " ..
    "dir; {} is the checkpoint, {python} the box interpreter (default: torch.load weights_only=True, CPU)"},
  pull = {type = "boolean", default = false, help = "pull and verify the finished cells"},
  local_dir = {default = "runs", help = "where pulled results go"},
  secrets = {type = "list", help = "names of environment variables pushed as secrets over stdin"},
  mode = {default = "auto", allowed = {"auto", "tmux", "nohup"}, help = "detach primitive"},
  interval = {type = "number", default = 30, help = "watch: seconds between probes"},
  stall = {type = "number", default = 600, help = "watch: stall window in seconds"},
  expected_seconds = {type = "number", help = "watch: expected duration (fast-finish check)"},
  max_relaunches = {type = "integer", default = 2, help = "watch: relaunches of a probabilistic failure"},
  max_wait = {type = "number", default = 86400, help = "watch: bounded wait in seconds"},
  -- the sweeps' per-cell disk-budget gate (gpurent.lifecycle.queue.gate_lines): checked
  -- on the box (or the compute node) before each cell; a tier below a floor gates the cell
  floor = {default = "64M", help = "free bytes the live tier must have before each cell (disk gate)"},
  floor_durable = {default = "1M", help = "free bytes the durable tier must have before each cell (disk gate)"},
  floor_inodes = {type = "integer", default = 100, help = "free inodes every tier a cell writes must have (disk gate)"},
  ckpt_size = {default = "50M", help = "audit: size of one checkpoint (budget)"},
  gotchas = {type = "boolean", default = true, help = "audit: run the gotcha probes"},
  id = {help = "run id (default: a fresh one)"},
}

-- A fresh copy (gpurent.recipe fills in fields; a list default must not be shared).
local function copy(t)
  local out = {}
  for k, v in pairs(t) do out[k] = type(v) == "table" and copy(v) or v end
  return out
end

-- params.list{entry, ...} -> the declarations, in the order given
function params.list(entries)
  local out = {}
  for i, e in ipairs(entries) do
    local name = type(e) == "string" and e or (type(e) == "table" and e.name)
    local base = SHARED[name]
    if type(e) == "string" and not base then
      error(string.format("lifecycle.params: entry %d, %q, is no shared parameter (give a table to declare your own)",
        i, e), 2)
    end
    local decl = base and copy(base) or {}
    if type(e) == "table" then for k, v in pairs(e) do decl[k] = v end end
    decl.name = name
    out[i] = decl
  end
  return out
end

return params

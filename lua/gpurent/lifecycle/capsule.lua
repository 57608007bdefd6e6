-- gpurent.lifecycle.capsule: what a run's capsule (its sealed export) may hold - the
-- roster rules that close (which seals it) and pull (which syncs and verifies it)
-- both apply, so neither phase reaches into the other.
--
--   capsule.DEFAULT_ROSTER   run.json, train.csv, best.pth, best_metrics.json,
--                            test/final/metrics.json
--   capsule.check_roster(r, roster) -> roster: relative, normal paths; no scratch,
--                            temp files or caches; no duplicates (usage error otherwise)
--
-- The load check (seed: a checkpoint that does not load is never synced as durable,
-- sealed or listed in a manifest): one piece of shell code, run on the box in the
-- run's code dir with the checkpoint's path in $CKPT, exit 0 when it loads. The
-- launch wrapper runs it before the durable sync, close before the seal.
--   capsule.checkpoints(r, roster) -> the roster's checkpoints and the profile's sync
--                            list's (*.pth *.pt *.ckpt), each once
--   capsule.load_check{command=, python=} -> {shell =, how =, default = bool}
--                            command: the person's (box_load=; {} the checkpoint,
--                            {python} the box interpreter; {} appended when absent);
--                            none: torch.load(weights_only=True, map_location="cpu")
--                            with the box interpreter (remote/ckpt_load.py), which
--                            exits 3 saying so when the box has no torch
--   capsule.loaded_on_box(export, recorded) -> fn(path) -> ok, why: a pulled checkpoint
--                            passes when its SHA-256 is one the box's load check
--                            passed before the seal: in export (this process sealed
--                            it) or recorded ({sha256 = path}: the ledger's verdicts,
--                            Ledger:box_loaded) (the pull's default with no load=)
local errors = require "gpurent.util.errors"
local q = require("gpurent.util.shell").quote

local capsule = {}

capsule.DEFAULT_ROSTER = {"run.json", "train.csv", "best.pth", "best_metrics.json", "test/final/metrics.json"}

function capsule.check_roster(r, roster)
  if type(roster) ~= "table" or #roster == 0 then errors.usage("close: the capsule roster is empty", 0) end
  local scratch = {}
  for _, s in ipairs(r.profile.checkpoints.scratch or {}) do scratch[s] = true end
  local seen = {}
  for _, f in ipairs(roster) do
    if type(f) ~= "string" or f == "" or f:sub(1, 1) == "/" or f:find("%.%.") or f:find("//", 1, true)
       or not f:match("^[%w._/%-]+$") then
      errors.usage("close: capsule path " .. tostring(f) .. " is not a plain relative path", 0)
    end
    local base = f:match("([^/]+)$")
    if scratch[base] or base:match("%.tmp$") or base:match("%.part$") or f:match("cache") then
      errors.usage("close: " .. f .. " does not belong in an export (scratch, temp file or cache)", 0)
    end
    if seen[f] then errors.usage("close: " .. f .. " listed twice", 0) end
    seen[f] = true
  end
  return roster
end

capsule.CHECKPOINTS = {"%.pth$", "%.pt$", "%.ckpt$"}

function capsule.is_checkpoint(path)
  for _, p in ipairs(capsule.CHECKPOINTS) do if path:match(p) then return true end end
  return false
end

function capsule.checkpoints(r, roster)
  local out, seen = {}, {}
  local function add(list)
    for _, f in ipairs(list or {}) do
      if capsule.is_checkpoint(f) and not seen[f] then seen[f] = true; out[#out + 1] = f end
    end
  end
  add(roster or capsule.DEFAULT_ROSTER)
  add(r.profile.checkpoints and r.profile.checkpoints.sync)
  return out
end

function capsule.load_check(o)
  local py = o.python or "python3"
  if o.command ~= nil then
    if type(o.command) ~= "string" or not o.command:match("%S") then
      errors.usage("box_load: the checkpoint load command is empty (give a command, {} = the checkpoint on the box)", 0)
    end
    local cmd = o.command:gsub("{python}", function() return q(py) end)
    if cmd:find("{}", 1, true) then cmd = cmd:gsub("{}", function() return '"$CKPT"' end)
    else cmd = cmd .. ' "$CKPT"' end
    return {shell = cmd, how = "box_load " .. o.command, default = false}
  end
  local src = require("gpurent.remote").text("ckpt_load", "py")
  return {shell = q(py) .. " -c " .. q(src) .. ' "$CKPT"', default = true,
          how = "the default load check: torch.load(weights_only=True, map_location=cpu) with " .. py}
end

function capsule.loaded_on_box(export, recorded)
  local ok_sha = {}
  for sha, path in pairs(recorded or {}) do ok_sha[sha] = path end
  for _, f in ipairs(export and export.files or {}) do if f.loaded then ok_sha[f.sha256] = f.path end end
  return function(path)
    local hex = require("gpurent.util.hash").sha256_file(path)
    if ok_sha[hex] then return true end
    return false, "not a checkpoint the box's load check passed before the seal (no load= given for a local check)"
  end
end

return capsule

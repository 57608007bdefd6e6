-- gpurent.lifecycle.capsule: what a run's capsule (its sealed export) may hold - the
-- roster rules that close (which seals it) and pull (which syncs and verifies it)
-- both apply, so neither phase reaches into the other.
--
--   capsule.DEFAULT_ROSTER   run.json, train.csv, best.pth, best_metrics.json,
--                            test/final/metrics.json
--   capsule.check_roster(r, roster) -> roster: relative, normal paths; no scratch,
--                            temp files or caches; no duplicates (usage error otherwise)
local errors = require "gpurent.util.errors"

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

return capsule

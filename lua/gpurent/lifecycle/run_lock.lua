-- gpurent.run_lock: one process at a time finishes a run (issue 15). Finishing -
-- sealing the export (close), pulling it (pull), powering off (teardown), and
-- `gpurent watch RUN --finish` around them - rewrites shared state on the box and
-- on this machine: two finishers at once made one report a false "sha256 differs"
-- and quarantine a good capsule while the other sealed it. Every finisher goes
-- through run_lock.hold, which holds two locks (gpurent.lock) for the run:
--
--   local   <state dir>/locks/<run id>.finish: an flock, so a finisher that died
--           left nothing stale behind (the kernel let go of it)
--   box     <run dir>/.gpurent/finish.lock: for finishers on different machines;
--           one whose holder ran on this machine and is gone is taken over
--
--   run_lock.hold(r, inst, fn, ...) -> fn(...)'s results. Re-entrant: a phase that
--       a finisher calls while holding the run's locks runs under them. When
--       another gpurent holds either lock: a refusal (exit 3) naming its host and
--       PID, and what to do.
--   run_lock.paths(r) -> local_path, box_path
--   run_lock.is_busy(err) -> whether err is hold's refusal (another finisher): a
--       refusal carrying busy = true
local lock = require "gpurent.transport.lock"
local errors = require "gpurent.util.errors"
local fs = require "gpurent.util.fs"
local storage = require "gpurent.lifecycle.storage"

local run_lock = {}

-- run id -> the coroutine holding its locks in this process. Keyed by coroutine:
-- another task of this process (gpurent.parallel) finishing the same run is a
-- second finisher, not a re-entry (and the local flock refuses it).
local holders = {}

function run_lock.paths(r)
  local state = require("gpurent.state.ledger").state_dir()
  return state .. "/locks/" .. r.id .. ".finish", r.paths.meta .. "/finish.lock"
end

local BUSY = "is being finished by another gpurent"

function run_lock.is_busy(err)
  return errors.is(err, "refusal") and err.busy == true
end

-- Another gpurent holds the run's lock (a file here, or `path` on the box).
local function refuse_busy(r, holder, path, on_box)
  local who = lock.describe(holder)
  if not on_box then
    errors.raise("refusal", string.format("run %s " .. BUSY .. " (%s; lock file %s).\n" ..
      "  Let that one finish; `gpurent history` shows the outcome.", r.id, who, path), 0, {busy = true})
  end
  errors.raise("refusal", string.format("run %s " .. BUSY .. " (%s; lock %s on the box).\n" ..
    "  Let that one finish; `gpurent history` shows the outcome. If that process is gone (gpurent can " ..
    "check only processes of this machine), remove the lock on the box: rm -- %s, and run this again.",
    r.id, who, path, storage.q(path)), 0, {busy = true})
end

-- Take the box lock in the run's meta dir (made if the run never launched here).
local function take_box_lock(r, inst, path)
  inst:sh("mkdir -p -- " .. storage.q(r.paths.meta), {timeout = 60, check = true})
  return lock.acquire_remote(lock.box_ops(inst), path, {on_stale = function(o)
    r:say("lock", "took over the finish lock of run %s left by %s (that process is gone)", r.id, lock.describe(o))
  end})
end

local function release_all(local_h, box_h)
  if box_h then pcall(box_h.release, box_h) end   -- best effort: stale for the next taker
  if local_h then local_h:release() end
end

function run_lock.hold(r, inst, fn, ...)
  local me = coroutine.running()
  if holders[r.id] == me then return fn(...) end
  local local_path, box_path = run_lock.paths(r)
  fs.mkdirs(local_path:match("^(.*)/[^/]*$"))
  local local_h, _, local_holder = lock.acquire_local(local_path)
  if not local_h then refuse_busy(r, local_holder, local_path, false) end
  local ok, box_h, _, box_holder = pcall(take_box_lock, r, inst, box_path)
  if not ok or not box_h then
    release_all(local_h, nil)
    if not ok then error(box_h, 0) end
    refuse_busy(r, box_holder, box_path, true)
  end
  holders[r.id] = me
  local res = table.pack(pcall(fn, ...))
  holders[r.id] = nil
  release_all(local_h, box_h)
  if not res[1] then error(res[2], 0) end
  return table.unpack(res, 2, res.n)
end

return run_lock

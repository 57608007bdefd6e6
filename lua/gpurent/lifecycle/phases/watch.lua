-- Phase 4, watch (LIFECYCLE.md): a patrol that reports every tick even when
-- nothing changed, decides state from live facts (gpurent.monitor), and applies
-- the fixed remedy of each failure class - never a blind restart: every relaunch
-- goes through a probe on the box, so a watcher firing mid-run cannot launch a
-- second copy. Nothing depends on the watcher surviving: the wrapper's completion
-- chain runs on the box, the state lives there and in the ledger, and
-- `gpurent watch RUN` from any new shell re-attaches.
--
--   needs {run, inst} -> produces {watched = {state = "finished", verdict =, facts =,
--                                  relaunches =, ticks =}}
--   Any other end ("dead", "stalled", "fast_finish", "unreachable", "timeout") is an
--   error (kind remote) carrying watch_state = that state and the result as watched;
--   after a timeout the job still runs (still_running = true).
--   watch.patrol(inst, r, opts) -> the result whatever the state (no error)
--   opts (defaults from the run): interval (30 s), stall_seconds (600), expected_seconds,
--     max_wait (86400 s), max_relaunches (2: attempts beyond the first), probe_failures
--     (20 ticks unreachable in a row), min_free_bytes (for relaunch after disk-full),
--     on_tick(facts, verdict)
--   watch.prune_scratch(inst, r) -> freed list: the profile's scratch files of this
--     project's finished runs (never best, never a live run's)
local monitor = require "gpurent.lifecycle.monitor"
local storage = require "gpurent.lifecycle.storage"
local profile_mod = require "gpurent.config.profile"
local sched = require "gpurent.transport.sched"
local sys = require "gpurent.util.sys"
local remote = require "gpurent.remote"
local errors = require "gpurent.util.errors"

local watch = {name = "watch", needs = {"run", "inst"}, produces = {"watched"}}
local now = sys.now

local function opt(o, r, k, default)
  if o[k] ~= nil then return o[k] end
  if r[k] ~= nil then return r[k] end
  return default
end

function watch.prune_scratch(inst, r)
  local names = r.profile.checkpoints.scratch or {}
  if #names == 0 then return {} end
  local script = remote.script("prune_scratch", {ROOT = r.paths.root, ACTIVE = r.paths.active,
    NAMES = remote.lines(names, "watch: scratch")})
  local res = inst:sh(script, {timeout = 300})
  local out = {}
  for p in res.stdout:gmatch("pruned ([^\n]+)") do out[#out + 1] = p end
  return out
end

local function say_dead(r, f, v)
  local t = v.triage
  r:say("watch", "DEAD: %s", t.cause)
  if t.evidence then r:say("watch", "  evidence: %s", t.evidence) end
  for _, c in ipairs(t.causes or {}) do
    r:say("watch", "  cause %-16s %s: %s", c.cause, c.likely and "LIKELY" or "unlikely", c.evidence)
  end
  local lines = f.tail or {}
  if #lines > 0 then
    r:say("watch", "  log tail:")
    for i = math.max(1, #lines - 5), #lines do r:say("watch", "    | %s", lines[i]) end
  end
  for _, x in ipairs(t.full or {}) do
    if x.advice then r:say("watch", "  full: the %s tier's %s -> %s", x.tier, x.dim, x.advice) end
  end
  r:say("watch", "  class %s -> remedy %s", t.class, t.remedy)
end

function watch.patrol(inst, r, o)
  o = o or {}
  local interval = opt(o, r, "interval", 30)
  local stall = opt(o, r, "stall_seconds", 600)
  local expected = opt(o, r, "expected_seconds", nil)
  local max_wait = opt(o, r, "max_wait", 86400)
  local max_relaunches = opt(o, r, "max_relaunches", 2)
  local max_fail = o.probe_failures or 20
  local t0 = now()
  local deadline = t0 + max_wait
  local fails, relaunches, ticks = 0, 0, 0
  local seen_reconnects = inst.reconnects or 0
  r:say("watch", "watching %s on %s every %gs (stall window %ds%s; bounded at %ds)", r.id, r.host, interval, stall,
    expected and (", expected " .. expected .. "s") or "", max_wait)
  local max_ticks = math.ceil(max_wait / math.max(interval, 0.05)) + max_fail + 10
  for _ = 1, max_ticks do
    ticks = ticks + 1
    local ok, f = pcall(monitor.probe, inst, r, {timeout = o.probe_timeout or math.max(10, 3 * interval)})
    if not ok then
      fails = fails + 1
      r:say("watch", "t+%ds probe failed (%d in a row): %s; the job runs detached on the box, retrying",
        math.floor(now() - t0), fails, tostring(f):match("[^\n]*"))
      if fails >= max_fail then
        return {state = "unreachable", ticks = ticks, relaunches = relaunches, why = tostring(f)}
      end
      -- a stalled channel is not trusted again: the next probe runs on a fresh connection
      if require("gpurent.transport.ssh").is_error(f, "timeout") then pcall(inst.reconnect, inst) end
    else
      if fails > 0 then r:say("watch", "re-attached after %d failed probe(s)", fails) end
      if (inst.reconnects or 0) > seen_reconnects then
        seen_reconnects = inst.reconnects
        r:say("watch", "re-attached: the SSH connection was lost and re-established (reconnect %d); the job ran on, detached",
          seen_reconnects)
      end
      fails = 0
      local v = monitor.classify(f, {stall_seconds = stall, expected_seconds = expected})
      r:say("watch", "t+%ds %s", math.floor(now() - t0), monitor.status_line(f, v))
      if o.on_tick then o.on_tick(f, v) end
      if v.note then r:say("watch", "  note: %s", v.note) end
      if v.state == "not_launched" then
        error("watch: " .. r.id .. " was never launched on " .. r.host .. " (no attempt on the box)", 0)
      elseif v.state == "finished" then
        if v.fast_finish then
          r:say("watch", "FAST FINISH: %s", v.why)
          return {state = "fast_finish", verdict = v, facts = f, ticks = ticks, relaunches = relaunches}
        end
        r:say("watch", "FINISHED: exit 0 after %ds, durable copy verified by the wrapper (%s)", v.elapsed or -1,
          f.done and f.done.text or "")
        return {state = "finished", verdict = v, facts = f, ticks = ticks, relaunches = relaunches}
      elseif v.state == "stalled" then
        r:say("watch", "STALLED: %s (not running, not finished): inspect it (py-spy dump / strace -p %s) or stop it; " ..
          "gpurent never restarts a live job", v.why, tostring(f.pid))
        return {state = "stalled", verdict = v, facts = f, ticks = ticks, relaunches = relaunches}
      elseif v.state == "dead" then
        -- one probe reads df before the log tail: a writer that filled the disk in
        -- between leaves "disk full" evidence with no tier reading full. Read once more
        -- so the triage names the tier and dimension that filled.
        if v.triage and v.triage.class == "disk_full" and #(v.triage.full or {}) == 0 then
          local ok2, f2 = pcall(monitor.probe, inst, r, {timeout = o.probe_timeout or math.max(10, 3 * interval)})
          local v2 = ok2 and monitor.classify(f2, {stall_seconds = stall, expected_seconds = expected})
          if v2 and v2.state == "dead" then f, v = f2, v2 end
        end
        say_dead(r, f, v)
        local t = v.triage
        local attempts_left = (f.attempt or 1) <= max_relaunches
        local relaunch = false
        if t.remedy == "relaunch" then
          relaunch = attempts_left
          if not attempts_left then r:say("watch", "  no relaunch left (%d attempts made, max_relaunches %d)", f.attempt, max_relaunches) end
        elseif t.remedy == "prune" then
          local freed = watch.prune_scratch(inst, r)
          r:say("watch", "  pruned %d scratch file(s) of finished runs (best kept): %s", #freed, table.concat(freed, ", "))
          -- re-read the tiers that were full (else the live one): bytes AND inodes
          local live = profile_mod.live_tier(r.profile)
          local names, seen = {}, {}
          for _, x in ipairs(t.full or {}) do if not seen[x.tier] then seen[x.tier] = true; names[#names + 1] = x.tier end end
          if #names == 0 then names = {live.name} end
          local m = storage.measure(inst, {profile = r.profile, tiers = names})
          local still = {}
          for _, name in ipairs(names) do
            for _, d in ipairs(storage.full(m.tiers[name], r.profile)) do still[#still + 1] = {t = m.tiers[name], dim = d.dim} end
          end
          local need = o.min_free_bytes and storage.parse_size(o.min_free_bytes)
          local lt = m.tiers[live.name]
          if need and #still == 0 and (not lt or (lt.bytes_free and lt.bytes_free >= need)) and attempts_left then
            relaunch = true
          elseif #still > 0 then
            for _, x in ipairs(still) do
              r:say("watch", "  still full: %s\n  ASK the person: %s; gpurent deletes nothing else",
                storage.dimension_text(x.t, x.dim), storage.advice(r.profile, x.t, x.dim))
            end
          else
            local x = m.tiers[names[1]]
            r:say("watch", "  %s\n  ASK the person: %s; gpurent deletes nothing else", storage.dimension_text(x, "bytes"),
              storage.advice(r.profile, x, "bytes"))
          end
        end
        if not relaunch then
          return {state = "dead", verdict = v, facts = f, ticks = ticks, relaunches = relaunches}
        end
        r:relaunch(inst, o)
        relaunches = relaunches + 1
      end
    end
    if now() >= deadline then
      r:say("watch", "TIMEOUT: still not finished after %ds (bounded wait); the job keeps running; re-attach with gpurent watch %s",
        max_wait, r.id)
      return {state = "timeout", ticks = ticks, relaunches = relaunches}
    end
    sched.sleep(interval)
  end
  return {state = "timeout", ticks = ticks, relaunches = relaunches}
end

function watch.run(ctx, o)
  local r = ctx.run
  local inst = require("gpurent.lifecycle").session(ctx)
  local w = watch.patrol(inst, r, o)
  -- a scheduler's accounting of the run's jobs (gpurent cost shows it); never fatal
  if w.state ~= "unreachable" then require("gpurent.billing.usage").note(inst, r, "watch") end
  if w.state == "finished" then return {watched = w}, w.state end
  local v = w.verdict or {}
  errors.raise("remote", string.format("run %s ended %s: %s", r.id, w.state,
    v.why or (v.triage and v.triage.cause) or w.why or ""), 0,
    {watch_state = w.state, watched = w, detail = w.state, still_running = w.state == "timeout" or nil})
end

return setmetatable(watch, {__call = function(_, ...) return watch.run(...) end})

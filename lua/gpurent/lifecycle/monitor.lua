-- gpurent.monitor: what a running job is doing, from live facts, in one round trip.
--
-- A probe (lua/gpurent/remote/run_probe.sh) gathers, in one SSH command: the run's tmux session and wrapper process
-- (by exact name and exact PID), the wrapper's DONE/FAILED markers for the current
-- attempt, the log's mtime and last line, the newest artifact's mtime, df -h and
-- df -i of the live and durable tiers, cgroup memory and its oom_kill count, GPU
-- utilisation, and - only when nothing is alive - the log's tail for triage.
-- State is decided from those facts, never from a grep of a cumulative log:
--   finished  no session, no process, and the wrapper's marker says exit 0
--   dead      no session, no process, and no success marker (FAILED, or vanished)
--   pending   the platform's scheduler holds the job queued (P.job_state): not stalled
--   stalled   alive, but the newest log line and artifact are older than the window
--   running   alive and moving (a frozen log with advancing artifacts is noted as
--             buffered stdout)
-- A dead job is triaged into a class with a fixed remedy:
--   probabilistic -> relaunch the identical command (it resumes from its checkpoint)
--   disk_full     -> prune the profile's scratch (keep best), else ask: naming the tier and
--                    the dimension (bytes or inodes) that filled, advising on that one only
--   everything else (code bug, CUDA OOM, cgroup OOM, durable sync) -> stop
--
--   monitor.probe_script(r) -> sh text          monitor.parse(r, stdout) -> facts
--   monitor.probe(inst, r [, {timeout=}]) -> facts
--   monitor.classify(facts, {stall_seconds=, expected_seconds=}) -> verdict
--   monitor.triage(facts) -> {class=, cause=, remedy=, evidence=}
--   monitor.status_line(facts, verdict) -> one line
local storage = require "gpurent.lifecycle.storage"
local profile_mod = require "gpurent.config.profile"
local remote = require "gpurent.remote"

local monitor = {}

monitor.REMEDY = {
  probabilistic = "relaunch",
  disk_full = "prune",
  code = "stop", cuda_oom = "stop", oom = "stop", durable_sync = "stop", unknown = "stop",
  disk_gate = "stop",   -- a sweep's cell the disk-budget gate held back: its trainer never started
  cancelled = "stop",   -- the scheduler cancelled the job (scancel): a decision, never undone by a relaunch
  -- the scheduler ended the job itself and did not requeue it (P.job_state's ended: a
  -- Slurm PREEMPTED or NODE_FAIL): a copy would take the node back from the job that
  -- pre-empted it, or run on a failing node; the person decides, named with the state
  preempted = "stop", node_fail = "stop",
}

-- The tiers a probe measures: the live one and the durable one.
local function tiers_of(r)
  local names, seen = {}, {}
  for _, t in ipairs({profile_mod.live_tier(r.profile), profile_mod.durable_tier(r.profile)}) do
    if t and not seen[t.name] then seen[t.name] = true; names[#names + 1] = t.name end
  end
  return names
end

function monitor.probe_script(r)
  return remote.script("run_probe", {META = r.paths.meta, SESSION = r.session, LOG = r.paths.log,
    OUT = r.paths.out, TIERS = storage.tier_lines(r.profile, tiers_of(r))})
end

local function num(s) return s and tonumber((s:match("^%s*(%S+)"))) end

local function marker(text)
  if not text then return nil end
  return {exit = tonumber(text:match("exit=(%-?%d+)")), stage = text:match("stage=(%S+)"),
          at = tonumber(text:match("at=(%d+)")), text = text}
end

function monitor.parse(r, stdout)
  local m = storage.parse_measure(r.profile, tiers_of(r), stdout)
  local f = {tiers = m.tiers, mem = m.mem, tail = {}, profile = r.profile}
  for line in stdout:gmatch("[^\n]+") do
    local k, v = line:match("^gr_(%w+) ?(.*)$")
    if k == "tail" then f.tail[#f.tail + 1] = v
    elseif k == "attempt" then f.attempt = tonumber(v) or 0
    elseif k == "session" then f.session = (v == "none") and nil or (v == "1"); f.tmux = v ~= "none"
    elseif k == "proc" then
      local a, pid = v:match("^(%d) (%S+)")
      f.proc, f.pid = a == "1", tonumber(pid)
    elseif k == "done" then f.done = marker(v)
    elseif k == "failed" then f.failed = marker(v)
    elseif k == "now" then f.now = num(v)
    elseif k == "started" then f.started = num(v)
    elseif k == "boot" then
      local now_b, then_b = v:match("^(%S*)%s*(%S*)$")
      f.boot_now, f.boot0 = tonumber(now_b), tonumber(then_b)
    elseif k == "oom0" then f.oom0 = num(v)
    elseif k == "logmtime" then f.log_mtime = num(v)
    elseif k == "last" then f.last_line = v
    elseif k == "artifact" then
      local t, p = v:match("^(%S+) (.*)$")
      f.artifact_mtime, f.artifact = tonumber(t), p
    elseif k == "gpu" then
      f.gpu = v:match("^%s*(.-)%s*$")
    end
  end
  f.alive = (f.session == true) or f.proc == true
  return f
end

local function probe_once(inst, r, o)
  -- a probe only reads: safe to re-run after a lost connection
  local res = inst:sh(monitor.probe_script(r), {timeout = o.timeout or 20, idempotent = true})
  if res.code ~= 0 then
    error(string.format("probe of %s on %s exited %s: %s", r.id, r.host, tostring(res.code), res.stderr or ""), 0)
  end
  return monitor.parse(r, res.stdout)
end

function monitor.probe(inst, r, o)
  o = o or {}
  local f = probe_once(inst, r, o)
  -- a platform whose jobs run elsewhere (a scheduler's compute node) says whether the
  -- job is still queued or running: the wrapper's PID is not visible from here
  local P = require("gpurent.platform").of(r.profile)
  if P.job_state and (f.attempt or 0) > 0 then
    local job = P.job_state(inst, r)
    -- the job may have ended between the two reads: its marker, written before the job
    -- ended, is there now; read again rather than call a finished job dead
    if job and not job.active and not (f.done or f.failed) then f = probe_once(inst, r, o) end
    f.job = job
    if job and job.active then f.alive = true end
  end
  return f
end

-- ---- triage ------------------------------------------------------------------

-- Log patterns, first match wins; each names a class (and so a remedy).
monitor.TRIAGE = {
  {class = "disk_full", cause = "disk full during save",
   patterns = {"iostream error", "No space left on device", "Errno 28", "ENOSPC", "Disk quota exceeded"}},
  {class = "cuda_oom", cause = "CUDA out of memory (the batch does not fit the GPU)",
   patterns = {"CUDA out of memory", "OutOfMemoryError"}},
  {class = "code", cause = "a bug in the code (same input, same error: never blind-retry)",
   patterns = {"KeyError", "AttributeError", "NameError", "TypeError", "ImportError", "ModuleNotFoundError",
               "SyntaxError", "IndexError", "ValueError", "RuntimeError", "AssertionError", "Traceback"}},
}

local function find_in(lines, pat)
  for i = #lines, 1, -1 do
    if lines[i]:find(pat, 1, true) then return lines[i] end
  end
end

local function oom_grew(f)
  local now = f.mem and f.mem.oom_kill
  return now and f.oom0 and now > f.oom0, now
end

local function rebooted(f)
  return f.boot_now and f.boot0 and f.boot_now ~= f.boot0
end

-- Why a wrapper vanished without writing a marker: each candidate with its evidence.
function monitor.vanished_causes(f)
  local c = {}
  local grew, now = oom_grew(f)
  c[#c + 1] = {cause = "reboot", likely = rebooted(f) and true or false,
    evidence = rebooted(f) and "PID 1 started again since the launch (the box rebooted or was powered off)"
      or "PID 1 is the one that was running at launch"}
  c[#c + 1] = {cause = "cgroup OOM kill", likely = grew and true or false,
    evidence = string.format("oom_kill %s at launch, %s now", tostring(f.oom0), tostring(now))}
  c[#c + 1] = {cause = "SSH hang-up", likely = false,
    evidence = "the job was detached (tmux/nohup + setsid): a hang-up does not reach it"}
  c[#c + 1] = {cause = "manual kill", likely = not rebooted(f) and not grew,
    evidence = "no marker: the wrapper itself was killed (its PID or group) before it could write one"}
  return c
end

-- The tiers the run writes to (live, durable) that read full, and in which dimension
-- (bytes or inodes): what a disk-full triage names, and the only ones it advises on.
function monitor.full_tiers(f)
  local out, names = {}, {}
  for name in pairs(f.tiers or {}) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    for _, d in ipairs(storage.full(f.tiers[name], f.profile)) do
      out[#out + 1] = {tier = name, dim = d.dim, text = storage.dimension_text(f.tiers[name], d.dim),
        advice = f.profile and storage.advice(f.profile, f.tiers[name], d.dim) or nil}
    end
  end
  return out
end

local function full_text(full, f)
  if #full == 0 then
    local names = {}
    for name, t in pairs(f.tiers or {}) do
      names[#names + 1] = string.format("%s %s%% bytes %s%% inodes", name, tostring(t.bytes_pct or "?"), tostring(t.inodes_pct or "?"))
    end
    table.sort(names)
    return "no tier reads full now (" .. table.concat(names, ", ") .. ")"
  end
  local parts = {}
  for _, x in ipairs(full) do parts[#parts + 1] = x.text end
  return table.concat(parts, "; ")
end

function monitor.triage(f)
  local tail = f.tail or {}
  local fm = f.failed
  if f.job and f.job.ended then
    return {class = f.job.ended.class, remedy = monitor.REMEDY[f.job.ended.class] or "stop",
      evidence = "job " .. tostring(f.job.id) .. " " .. tostring(f.job.state) .. (fm and ("; the wrapper's " .. fm.text) or ""),
      cause = f.job.ended.cause}
  end
  if f.job and f.job.state == "CANCELLED" then
    return {class = "cancelled", remedy = "stop", evidence = "job " .. tostring(f.job.id) .. " CANCELLED",
      cause = "the scheduler cancelled the job (scancel: a person's or an administrator's decision): not relaunched"}
  end
  if fm and fm.stage == "load-check" then
    return {class = "load_check", remedy = "stop", evidence = find_in(tail, "load check FAILED") or fm.text,
      cause = "the command exited 0 but a checkpoint does not load: it was not synced to the durable tier " ..
        "and will not be sealed (a file that does not load is not a result)"}
  end
  if fm and fm.stage == "durable-sync" then
    local full = monitor.full_tiers(f)
    return {class = "durable_sync", remedy = "stop", evidence = find_in(tail, "durable sync FAILED") or fm.text,
      full = full, cause = "the command exited 0 but the checked copy to the durable tier failed: " .. full_text(full, f)}
  end
  if fm and fm.stage == "gate" then
    return {class = "disk_gate", remedy = "stop", evidence = find_in(tail, "disk gate:") or fm.text,
      cause = "the disk-budget gate: a tier the cell writes is below its floor, so its trainer was not started; " ..
        "free that tier (or lower floor=, floor_durable=, floor_inodes=) and resubmit the sweep's failed cells"}
  end
  for _, t in ipairs(monitor.TRIAGE) do
    if t.class ~= "code" then
      for _, p in ipairs(t.patterns) do
        local line = find_in(tail, p)
        if line then
          local out = {class = t.class, cause = t.cause, remedy = monitor.REMEDY[t.class], evidence = line}
          if t.class == "disk_full" then
            out.full = monitor.full_tiers(f)
            out.cause = t.cause .. ": " .. full_text(out.full, f)
          end
          return out
        end
      end
    end
  end
  local exit = fm and fm.exit
  local grew, now = oom_grew(f)
  if exit == 137 or find_in(tail, "Killed") and (tail[#tail] or ""):match("^%s*Killed") then
    if grew then
      return {class = "oom", remedy = "stop", cause = "cgroup OOM kill (exit 137)",
        evidence = string.format("memory oom_kill %s -> %s", tostring(f.oom0), tostring(now))}
    end
    return {class = "probabilistic", remedy = "relaunch", cause = "killed by SIGKILL (exit 137) without a cgroup OOM: a manual or external kill",
      evidence = string.format("exit %s; oom_kill unchanged (%s)", tostring(exit), tostring(now))}
  end
  for _, t in ipairs(monitor.TRIAGE) do
    if t.class == "code" then
      for _, p in ipairs(t.patterns) do
        local line = find_in(tail, p)
        if line then return {class = "code", cause = t.cause, remedy = "stop", evidence = line} end
      end
    end
  end
  if exit == 143 or exit == 129 or exit == 130 then
    return {class = "probabilistic", remedy = "relaunch", evidence = "exit " .. exit,
      cause = ({[143] = "terminated (SIGTERM)", [129] = "hang-up (SIGHUP)", [130] = "interrupted (SIGINT)"})[exit]}
  end
  if not fm then
    local causes = monitor.vanished_causes(f)
    local likely = {}
    for _, c in ipairs(causes) do if c.likely then likely[#likely + 1] = c.cause end end
    local cls = grew and "oom" or "probabilistic"
    return {class = cls, remedy = monitor.REMEDY[cls], causes = causes,
      cause = "the job vanished without a marker: " .. (#likely > 0 and table.concat(likely, " or ") or "unknown"),
      evidence = "no tmux session, no wrapper process, no DONE/FAILED marker"}
  end
  return {class = "unknown", remedy = "stop", cause = "exit " .. tostring(exit) .. " with no recognised error in the log",
    evidence = tail[#tail]}
end

-- ---- classification ------------------------------------------------------------

function monitor.classify(f, o)
  o = o or {}
  local stall = o.stall_seconds or 600
  local v = {facts = f}
  if (f.attempt or 0) == 0 then v.state = "not_launched"; return v end
  local now = f.now or os.time()
  -- queued, not stalled: the scheduler has not started it (or requeued it)
  if f.job and f.job.pending then
    v.state = "pending"
    v.why = "waiting for the scheduler" .. (f.job.reason and (": " .. f.job.reason) or "")
    return v
  end
  if f.alive then
    local newest = math.max(f.log_mtime or 0, f.artifact_mtime or 0, f.started or 0)
    if newest == 0 and f.job then newest = now end   -- just started: the wrapper has not written yet
    v.quiet_for = math.floor(now - newest)
    if v.quiet_for > stall then
      v.state = "stalled"
      v.why = string.format("alive but nothing written for %ds (log and newest artifact; window %ds)", v.quiet_for, stall)
    else
      v.state = "running"
      if f.log_mtime and f.artifact_mtime and now - f.log_mtime > stall and now - f.artifact_mtime <= stall then
        v.note = "log frozen while checkpoints advance: stdout is buffered (PYTHONUNBUFFERED=1 / python -u)"
      end
      if f.done or f.failed then v.note = "marker written, the wrapper is exiting" end
    end
    return v
  end
  if f.done and f.done.exit == 0 and not f.failed then
    v.state = "finished"
    v.elapsed = (f.done.at or now) - (f.started or now)
    if o.expected_seconds and o.expected_seconds > 0 and v.elapsed < 0.5 * o.expected_seconds then
      v.fast_finish = true
      v.why = string.format("finished in %ds, under half the expected %ds: probable failure", v.elapsed, o.expected_seconds)
    end
    return v
  end
  v.state = "dead"
  v.triage = monitor.triage(f)
  v.why = v.triage.cause
  return v
end

-- ---- the status line -------------------------------------------------------------

local function ago(now, t) return t and (math.floor(math.max(0, now - t)) .. "s ago") or "never" end

local function tier_text(t)
  if not t then return "?" end
  if t.exists == false then return t.path .. " missing" end
  return string.format("%s %s%% bytes %s%% inodes", t.path, tostring(t.bytes_pct or "?"), tostring(t.inodes_pct or "?"))
end

function monitor.status_line(f, v)
  local now = f.now or os.time()
  local parts = {}
  parts[#parts + 1] = string.format("attempt %d %s", f.attempt or 0, string.upper(v.state))
  local alive = {}
  -- a live session is named; a gone one is not (a nohup job never had one, and a
  -- tmux job's session ends with its wrapper, which "pid gone" already says)
  if f.session then alive[#alive + 1] = "tmux up" end
  if f.job then
    alive[#alive + 1] = "job " .. f.job.id .. " " .. f.job.state .. (f.job.reason and (" (" .. f.job.reason .. ")") or "")
    if f.job.note then alive[#alive + 1] = f.job.note end   -- e.g. a Slurm job requeued and resuming
  else
    alive[#alive + 1] = "pid " .. tostring(f.pid or "-") .. (f.proc and " alive" or " gone")
  end
  parts[#parts + 1] = table.concat(alive, ", ")
  if f.done then parts[#parts + 1] = "DONE exit " .. tostring(f.done.exit) end
  if f.failed then parts[#parts + 1] = "FAILED exit " .. tostring(f.failed.exit) .. " at " .. tostring(f.failed.stage) end
  parts[#parts + 1] = string.format("log %s %q", ago(now, f.log_mtime), f.last_line or "")
  parts[#parts + 1] = string.format("newest artifact %s%s", ago(now, f.artifact_mtime),
    f.artifact and (" (" .. f.artifact .. ")") or "")
  local names = {}
  for name in pairs(f.tiers or {}) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do parts[#parts + 1] = tier_text(f.tiers[name]) end
  local m = f.mem or {}
  parts[#parts + 1] = string.format("mem %s/%s oom_kill %s", storage.human(m.usage), storage.human(m.limit),
    tostring(m.oom_kill or "?"))
  parts[#parts + 1] = "gpu " .. (f.gpu and (f.gpu .. "%") or "n/a")
  return table.concat(parts, " | ")
end

return monitor

-- gpurent.detach: a job that outlives the SSH connection and gpurent itself.
--
-- The job runs inside a wrapper script gpurent writes on the box
-- (lua/gpurent/remote/run_wrapper.sh; its start, stop and probes are remote/run_*.sh). The wrapper is
-- the on-box completion chain: it runs the command with stdout unbuffered into the
-- run's log, then - whatever any watcher does - checked-syncs the profile's sync
-- list (best.pth) to the durable tier, prunes scratch, and only then writes the
-- DONE marker; any failure writes FAILED with the exit code and the stage. Markers
-- are written by the wrapper after the command returns, never inferred from what
-- the program prints.
--
-- Layout on the box (r.paths.meta = active/<run-id>/.gpurent):
--   run-vN.sh         the wrapper, version N; never rewritten (bash reads scripts by
--                     byte offset): a different wrapper is a new version
--   current           the current attempt number
--   aN/pid            the wrapper's PID (its process group leader); aN/started (epoch),
--   aN/boot           PID 1's start time (reboot check), aN/oom0 (oom_kill at start),
--   aN/DONE|FAILED    "exit=<code> stage=<stage> at=<epoch>"
--
--   detach.wrapper(r, o) -> text            o: command, env {K=V}, hook, cred_file,
--                                              sync {names}, scratch {names}, durable_dir, durable_tier,
--                                              load_check (shell code, $CKPT: gpurent.lifecycle.capsule)
--   detach.install(inst, r, text_for_version) -> path, version, created
--       text_for_version(version) -> the wrapper's text (reuses an identical version)
--   detach.start(inst, r, {script=, mode="auto"|"tmux"|"nohup"}) -> {mode=, attempt=}
--       (the platform's P.start_detached instead when it has one: gpurent.platform)
--       the start itself is gpurent's one detach starter, detach_start in
--       lua/gpurent/remote/detach.sh (tmux when present/asked, else nohup + setsid),
--       shared with the autostop watchdog; an on-box queue includes it the same way
--       (`# gpurent-include: detach.sh` in its remote/*.sh)
--       refuses (exit 3) when this run's session or wrapper process is alive
--   detach.stop(inst, r) -> text            the exact tmux session and the exact process group
local errors = require "gpurent.util.errors"
local remote = require "gpurent.remote"

local detach = {}

local q = require("gpurent.util.shell").quote
detach.q = q

function detach.wrapper(r, o)
  local env = {}
  local names = {}
  for k in pairs(o.env or {}) do names[#names + 1] = k end
  table.sort(names)
  for _, k in ipairs(names) do
    if not k:match("^[%a_][%w_]*$") then error("detach: env name " .. k .. " is not a shell variable", 2) end
    env[#env + 1] = "export " .. k .. "=" .. q(o.env[k])
  end
  if not o.command or o.command == "" then error("detach.wrapper: no command", 2) end
  local vars = {
    VERSION = o.version or 1, RUN_ID = r.id, META = r.paths.meta, LOG = r.paths.log,
    OUT = r.paths.out, CODE = r.paths.code, HOOK = o.hook or "", CRED_FILE = o.cred_file or "",
    ENV = table.concat(env, "\n"), COMMAND = o.command,
    DURABLE_DIR = o.durable_dir or r.paths.durable_ckpt or "", DURABLE_TIER = o.durable_tier or "/",
    SYNC = remote.lines(o.sync, "detach.wrapper: sync"), SCRATCH = remote.lines(o.scratch, "detach.wrapper: scratch"),
    LOAD_CHECK = o.load_check or "",
  }
  if not o.durable_dir and not r.paths.durable_ckpt then
    vars.SYNC = ""   -- no durable tier in this profile: nothing to sync
  end
  return remote.script("run_wrapper", vars)
end

-- Write the wrapper as run-vN.sh: an existing version with the same text is reused;
-- a different text never overwrites it, it becomes version N+1.
function detach.install(inst, r, text_for_version)
  local meta = r.paths.meta
  local res = inst:sh(remote.script("run_versions", {META = meta}), {timeout = 60, check = true, idempotent = true})
  local have, maxv = {}, 0
  for f, h in res.stdout:gmatch("(run%-v%d+%.sh) (%x+)") do
    local v = tonumber(f:match("v(%d+)"))
    have[v] = h
    if v > maxv then maxv = v end
  end
  local hash = require "gpurent.util.hash"
  for v = 1, maxv do
    local text = text_for_version(v)
    if have[v] and have[v] == hash.sha256(text) then return meta .. "/run-v" .. v .. ".sh", v, false end
  end
  local v = maxv + 1
  local path = meta .. "/run-v" .. v .. ".sh"
  -- set -C (noclobber): the create fails rather than overwrite a file that appeared meanwhile
  inst:sh(remote.script("run_install", {PATH = path}),
    {stdin = text_for_version(v), timeout = 60, check = true})
  return path, v, true
end

-- The guard + start (remote/run_start.sh, with the one detach starter remote/detach.sh).
-- A platform with its own starter (a scheduler's batch submission) supplies it as
-- P.start_detached(inst, r, o) -> {mode=, attempt=, how=}: the same wrapper, its way.
function detach.start(inst, r, o)
  o = o or {}
  local P = r.profile and require("gpurent.platform").of(r.profile)
  if P and P.start_detached then return P.start_detached(inst, r, o) end
  local script = remote.script("run_start", {META = r.paths.meta, SESSION = r.session, SCRIPT = o.script,
    LOG = r.paths.log, MODE = o.mode or "auto"})
  -- not idempotent: a lost connection mid-start must be probed, never blindly re-run
  local res = inst:sh(script, {timeout = 60})
  local out = res.stdout or ""
  local refuse = out:match("refuse ([^\n]*)")
  if refuse then
    errors.refuse("launch " .. r.id .. " on " .. r.host .. ": " .. refuse .. " (probe first: no second copy of a live job)", 0)
  end
  if res.code ~= 0 then
    error(string.format("launch %s on %s: start script exited %s: %s%s", r.id, r.host, tostring(res.code), out,
      res.stderr or ""), 0)
  end
  return {mode = out:match("mode (%a+)"), attempt = tonumber(out:match("attempt (%d+)")),
          pid = tonumber(out:match("pid (%d+)"))}
end

-- The current attempt's wrapper and mode, for a relaunch of the identical command.
function detach.current(inst, r)
  local res = inst:sh(remote.script("run_current", {META = r.paths.meta}), {timeout = 60, idempotent = true})
  return {attempt = tonumber(res.stdout:match("attempt (%d+)")), script = res.stdout:match("script (%S+)"),
          mode = res.stdout:match("mode (%a+)")}
end

-- Stop this run's job (remote/run_stop.sh): its exact tmux session, then its wrapper's
-- exact process group - never a name pattern.
function detach.stop(inst, r)
  local res = inst:sh(remote.script("run_stop", {META = r.paths.meta, SESSION = r.session}), {timeout = 60, check = true})
  return res.stdout
end

return detach

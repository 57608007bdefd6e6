-- gpurent.detach: a job that outlives the SSH connection and gpurent itself.
--
-- The job runs inside a wrapper script gpurent writes on the box. The wrapper is
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
--                                              sync {names}, scratch {names}, durable_dir, durable_tier
--   detach.install(inst, r, text_for_version) -> path, version, created
--       text_for_version(version) -> the wrapper's text (reuses an identical version)
--   detach.start(inst, r, {script=, mode="auto"|"tmux"|"nohup"}) -> {mode=, attempt=}
--       refuses (exit 3) when this run's session or wrapper process is alive
--   detach.stop(inst, r) -> text            the exact tmux session and the exact process group
local errors = require "gpurent.util.errors"

local detach = {}

local q = require("gpurent.util.shell").quote
detach.q = q

local function words(list)
  local out = {}
  for _, w in ipairs(list or {}) do out[#out + 1] = q(w) end
  return table.concat(out, " ")
end

local WRAPPER = [=[
#!/bin/bash
# gpurent wrapper v@VERSION@ for run @ID@ (written by lua/gpurent/lifecycle/detach.lua).
# Never edited in place: a changed wrapper is a new file, so a live job's bash never
# reads a script that moved under it. The completion chain below runs on the box
# whatever the watcher does: command && durable sync && prune scratch && DONE.
ATT=${1:?usage: run-vN.sh ATTEMPT}
M=@META@; D="$M/a$ATT"; LOG=@LOG@; OUT=@OUT@
mkdir -p "$D" "$OUT"
echo $$ > "$D/pid.tmp" && mv -f "$D/pid.tmp" "$D/pid"
date +%s > "$D/started"
mark() { printf 'exit=%s stage=%s at=%s\n' "$2" "$3" "$(date +%s)" > "$D/$1.tmp" && mv -f "$D/$1.tmp" "$D/$1"; }
say() { echo "[gpurent] $*" >> "$LOG"; }
@HOOK@
@CRED@
export PYTHONUNBUFFERED=1 GPURENT_RUN_ID=@ID@ GPURENT_OUT="$OUT" GPURENT_ATTEMPT="$ATT"
@ENV@
say "attempt $ATT of run @ID@ started $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname)"
cd @CODE@ || { say "cannot cd to the code"; mark FAILED 1 cd; exit 1; }

# durable sync: copy, rename, re-read; the success line only after the hashes match
sync_durable() {
  dst=@DURABLE_DIR@; tier=@DURABLE_TIER@
  for f in @SYNC@; do
    src="$OUT/$f"
    [ -f "$src" ] || { say "durable sync FAILED: $src is missing"; return 1; }
    if mkdir -p "$dst" 2>>"$LOG" && cp "$src" "$dst/$f.part" 2>>"$LOG" && mv -f "$dst/$f.part" "$dst/$f" 2>>"$LOG" &&
       [ "$(sha256sum < "$src")" = "$(sha256sum < "$dst/$f")" ]; then
      say "synced $f -> $dst/$f ($(wc -c < "$dst/$f") bytes, sha256 verified)"
    else
      rm -f "$dst/$f.part" 2>/dev/null
      say "durable sync FAILED: $src -> $dst/$f"
      say "  df -i $tier: $(df -P -i "$tier" 2>&1 | tail -n 1)"
      say "  df -h $tier: $(df -P -h "$tier" 2>&1 | tail -n 1)"
      return 1
    fi
  done
}
prune_scratch() { for f in @SCRATCH@; do rm -f "$OUT/$f"; done; }

( @COMMAND@ ) >> "$LOG" 2>&1 < /dev/null
rc=$?
if [ "$rc" -ne 0 ]; then say "command exited $rc"; mark FAILED "$rc" train; exit "$rc"; fi
if sync_durable && prune_scratch && mark DONE 0 done; then say "DONE (exit 0, durable copy verified)"; exit 0; fi
mark FAILED 0 durable-sync
say "FAILED: the command exited 0 but the durable sync failed (see above)"
exit 1
]=]

function detach.wrapper(r, o)
  local env = {}
  local names = {}
  for k in pairs(o.env or {}) do names[#names + 1] = k end
  table.sort(names)
  for _, k in ipairs(names) do
    if not k:match("^[%a_][%w_]*$") then error("detach: env name " .. k .. " is not a shell variable", 2) end
    env[#env + 1] = "export " .. k .. "=" .. q(o.env[k])
  end
  local cred = o.cred_file and ("[ -r " .. q(o.cred_file) .. " ] && . " .. q(o.cred_file)) or "# no credential file"
  local subs = {
    VERSION = tostring(o.version or 1), ID = r.id, META = q(r.paths.meta), LOG = q(r.paths.log),
    OUT = q(r.paths.out), CODE = q(r.paths.code),
    HOOK = o.hook and ("# proxy hook (profile network.proxy_hook)\n" .. o.hook) or "# no proxy hook",
    CRED = cred, ENV = #env > 0 and table.concat(env, "\n") or "# no extra environment",
    DURABLE_DIR = q(o.durable_dir or r.paths.durable_ckpt or ""), DURABLE_TIER = q(o.durable_tier or "/"),
    SYNC = words(o.sync), SCRATCH = words(o.scratch), COMMAND = o.command,
  }
  if not o.command or o.command == "" then error("detach.wrapper: no command", 2) end
  if not o.durable_dir and not r.paths.durable_ckpt then
    subs.SYNC = ""   -- no durable tier in this profile: nothing to sync
  end
  return (WRAPPER:gsub("@([%u_]+)@", function(k)
    local v = subs[k]
    if v == nil then error("detach.wrapper: no value for @" .. k .. "@", 0) end
    return v
  end))
end

-- Write the wrapper as run-vN.sh: an existing version with the same text is reused;
-- a different text never overwrites it, it becomes version N+1.
function detach.install(inst, r, text_for_version)
  local meta = r.paths.meta
  local res = inst:sh("mkdir -p " .. q(meta) .. " && cd " .. q(meta) ..
    " && for f in run-v*.sh; do [ -f \"$f\" ] && echo \"$f $(sha256sum < \"$f\" | cut -d' ' -f1)\"; done; true",
    {timeout = 60, check = true, idempotent = true})
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
  inst:sh("rm -f " .. q(path .. ".tmp") .. " && set -C && cat > " .. q(path .. ".tmp") .. " && chmod 755 " .. q(path .. ".tmp") ..
    " && ln " .. q(path .. ".tmp") .. " " .. q(path) .. " && rm -f " .. q(path .. ".tmp"),
    {stdin = text_for_version(v), timeout = 60, check = true})
  return path, v, true
end

-- The guard + start, one round trip, so a second launcher racing us on the box
-- sees the same facts: never a second copy of a live job.
local START = [=[
M=@META@; S=@SESSION@; W=@SCRIPT@; LOG=@LOG@; MODE=@MODE@
mkdir -p "$M"
cur=$(cat "$M/current" 2>/dev/null || echo 0)
if [ "$cur" != 0 ]; then
  if command -v tmux >/dev/null 2>&1 && tmux has-session -t "=$S" 2>/dev/null; then echo "refuse tmux session $S is alive"; exit 3; fi
  pid=$(cat "$M/a$cur/pid" 2>/dev/null)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$M/run-v"; then
    echo "refuse wrapper PID $pid (attempt $cur) is alive"; exit 3
  fi
fi
n=$((cur + 1))
mkdir -p "$M/a$n" || exit 1
echo "$n" > "$M/current.tmp" && mv -f "$M/current.tmp" "$M/current" || exit 1
cut -d' ' -f22 /proc/1/stat > "$M/a$n/boot" 2>/dev/null
oom=$(awk '/^oom_kill /{print $2}' /sys/fs/cgroup/memory.events /sys/fs/cgroup/memory/memory.oom_control 2>/dev/null | head -n 1)
echo "${oom:-0}" > "$M/a$n/oom0"
echo "$W" > "$M/a$n/script"
if [ "$MODE" != nohup ] && command -v tmux >/dev/null 2>&1; then
  tmux new-session -d -s "$S" "exec bash '$W' $n" || exit 1
  echo tmux > "$M/a$n/mode"; echo "mode tmux"
else
  [ "$MODE" = tmux ] && { echo "refuse tmux is not installed"; exit 4; }
  if command -v setsid >/dev/null 2>&1; then
    nohup setsid bash "$W" "$n" < /dev/null >> "$LOG" 2>&1 &
  else
    nohup bash "$W" "$n" < /dev/null >> "$LOG" 2>&1 &
  fi
  echo nohup > "$M/a$n/mode"; echo "mode nohup"
fi
echo "attempt $n"
i=0; while [ ! -s "$M/a$n/pid" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
echo "pid $(cat "$M/a$n/pid" 2>/dev/null)"
]=]

local function fill(template, subs)
  return (template:gsub("@([%u_]+)@", function(k) return subs[k] end))
end

function detach.start(inst, r, o)
  o = o or {}
  local script = fill(START, {META = q(r.paths.meta), SESSION = q(r.session), SCRIPT = q(o.script),
    LOG = q(r.paths.log), MODE = q(o.mode or "auto")})
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

-- Stop this run's job: its exact tmux session, then its wrapper's exact process
-- group (checked by the wrapper path in /proc/PID/cmdline) - never a name pattern.
local STOP = [=[
M=@META@; S=@SESSION@
cur=$(cat "$M/current" 2>/dev/null || echo 0)
if command -v tmux >/dev/null 2>&1 && tmux has-session -t "=$S" 2>/dev/null; then
  tmux kill-session -t "=$S" && echo "stopped tmux session $S"
fi
pid=$(cat "$M/a$cur/pid" 2>/dev/null)
if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$M/run-v"; then
  pg=$(cut -d' ' -f5 "/proc/$pid/stat")
  if [ "$pg" = "$pid" ]; then kill -TERM -- "-$pg" 2>/dev/null; else kill -TERM "$pid" 2>/dev/null; fi
  echo "stopped wrapper PID $pid (process group $pg)"
fi
true
]=]

-- The current attempt's wrapper and mode, for a relaunch of the identical command.
function detach.current(inst, r)
  local M = q(r.paths.meta)
  local res = inst:sh("cur=$(cat " .. M .. "/current 2>/dev/null || echo 0); echo \"attempt $cur\"; " ..
    "echo \"script $(cat " .. M .. "/a$cur/script 2>/dev/null)\"; echo \"mode $(cat " .. M .. "/a$cur/mode 2>/dev/null)\"",
    {timeout = 60, idempotent = true})
  return {attempt = tonumber(res.stdout:match("attempt (%d+)")), script = res.stdout:match("script (%S+)"),
          mode = res.stdout:match("mode (%a+)")}
end

function detach.stop(inst, r)
  local res = inst:sh(fill(STOP, {META = q(r.paths.meta), SESSION = q(r.session)}), {timeout = 60, check = true})
  return res.stdout
end

return detach

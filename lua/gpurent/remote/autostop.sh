#!/bin/sh
# gpurent autostop watchdog: runs ON the rented box, so the meter stops even when
# the laptop that armed it is asleep. Source: lua/gpurent/remote/autostop.sh;
# lua/gpurent/billing/autostop.lua pushes it as $STATE/autostop-<sha256:16>.sh
# (content-addressed: a changed script is a new file, a live one is never
# rewritten) and starts it as `sh SCRIPT CONFIG` with gpurent's one detach starter
# (remote/detach.sh: tmux, else nohup + setsid). POSIX sh only: the box may have no
# python3. Generic: everything platform-specific (the power-off verb, the durable
# tier, the job layout) comes from the profile through CONFIG.
#
# Every INTERVAL seconds it reads live facts and powers the box off with the
# profile's in-instance verb (STOP_VERB, e.g. `shutdown`: reversible, disks kept)
# only when:
#   idle:  no job of ours alive (tmux session / wrapper PID, never a log grep), the
#          last job's DONE marker says its durable sync was verified (or no job ever
#          ran), and for IDLE seconds in a row: every GPU readable and at or under
#          THRESHOLD %, no interactive SSH session (sshd ...@pts/N, `who`), no tmux
#          session that is not ours;
#   ttl:   ARMED_AT + TTL has passed, no job alive, last job synced (a hard cap: GPU
#          readings and open sessions do not hold it off);
#   stalled (STOP_STALLED=1 only): every live job is stalled - GPU idle and no new
#          log line or artifact for STALL seconds - and nobody is logged in;
#   budget (BUDGET_MILLI > 0 only): the spend, SPENT_MILLI at arming plus PRICE_MILLI
#          per hour since ARMED_AT (money in thousandths, from the platform's API at
#          arming), reached BUDGET_MILLI: a hard cap, jobs or not. First each running
#          job's newest checkpoint (CKPT_GLOB under its out dir) is copied to the job's
#          durable dir (its wrapper's DURABLE_DIR) and re-read (sha256), then the verb.
#          At BUDGET_WARN percent it warns once: watchdog.log, readings (budget_warned),
#          the durable events.log, and a push (POST PUSH_URL, header PUSH_AUTH_HEADER
#          from PUSH_TOKEN_FILE) when that token file exists on the box.
# A reading that fails, times out or is garbage counts as activity: never stop on
# doubt. It writes why to $STATE/last-stop and to the durable tier ($DURABLE/last-stop,
# $DURABLE/events.log) before the verb, and never releases anything.
#
# Files in $STATE: pid ("PID STARTTIME"), readings (key=value, replaced each tick),
# watchdog.log (verdict changes, stalls, stops), last-stop.
CONF=${1:?usage: autostop-HASH.sh CONFIG}
# shellcheck source=/dev/null
. "$CONF" || exit 2
: "${STATE:?}" "${INTERVAL:?}" "${STOP_VERB:?}" "${ARMED_AT:?}"
IDLE=${IDLE:-0}; TTL=${TTL:-0}; STALL=${STALL:-1800}; STOP_STALLED=${STOP_STALLED:-0}
THRESHOLD=${THRESHOLD:-5}; GPU_TIMEOUT=${GPU_TIMEOUT:-20}; LIFETIME=${LIFETIME:-2678400}
SESSION=${SESSION:-gpurent-autostop}; SESSION_PREFIX=${SESSION_PREFIX:-gr-}
BUDGET_MILLI=${BUDGET_MILLI:-0}; SPENT_MILLI=${SPENT_MILLI:-0}; PRICE_MILLI=${PRICE_MILLI:-0}
BUDGET_WARN=${BUDGET_WARN:-80}; CKPT_GLOB=${CKPT_GLOB:-'*.pth *.pt *.ckpt *.safetensors'}
PUSH_URL=${PUSH_URL:-}; PUSH_AUTH_HEADER=${PUSH_AUTH_HEADER:-Authorization}; PUSH_TOKEN_FILE=${PUSH_TOKEN_FILE:-}
case $PUSH_TOKEN_FILE in ''|/*) ;; *) PUSH_TOKEN_FILE="$STATE/$PUSH_TOKEN_FILE";; esac     # relative: in STATE
mkdir -p "$STATE" || exit 2
LOGF="$STATE/watchdog.log"

utc() { date -u +%Y-%m-%dT%H:%M:%SZ; }
log() {
  # bounded: keep the last ~256 KiB of history
  if [ -f "$LOGF" ] && [ "$(wc -c < "$LOGF")" -gt 262144 ]; then mv -f "$LOGF" "$LOGF.1"; fi
  printf '%s %s\n' "$(utc)" "$*" >> "$LOGF"
}
put() { cat > "$1.tmp.$$" && mv -f "$1.tmp.$$" "$1"; }     # atomic replace from stdin
is_uint() { case "$1" in ''|*[!0-9]*) return 1;; esac; return 0; }
have() { command -v "$1" >/dev/null 2>&1; }
starttime() { sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f20; }

echo "$$ $(starttime $$)" | put "$STATE/pid"
SLEEPER=
on_signal() { [ -n "$SLEEPER" ] && kill "$SLEEPER" 2>/dev/null; log "watchdog $$ ended by a signal"; exit 0; }
trap on_signal TERM HUP INT

# ---- readings ------------------------------------------------------------------

# GPU: GPU_OK=1 with GPU_TEXT "u0,u1" when every line is an integer 0..100;
# anything else (no nvidia-smi, an exit code, a timeout, garbage) is GPU_OK=0.
read_gpu() {
  GPU_OK=0; GPU_BUSY=0; GPU_TEXT=
  if ! have nvidia-smi; then GPU_TEXT="unreadable: nvidia-smi not found"; return; fi
  if have timeout; then
    out=$(timeout "$GPU_TIMEOUT" nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits 2>&1); rc=$?
  else
    out=$(nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits 2>&1); rc=$?
  fi
  first=$(printf '%s\n' "$out" | head -n 1 | cut -c1-80)
  if [ "$rc" -eq 124 ]; then GPU_TEXT="unreadable: nvidia-smi timed out after ${GPU_TIMEOUT}s"; return; fi
  if [ "$rc" -ne 0 ]; then GPU_TEXT="unreadable: nvidia-smi exit $rc: $first"; return; fi
  vals=; n=0
  while IFS= read -r line; do
    v=$(printf '%s' "$line" | tr -d ' \t\r')
    [ -z "$v" ] && continue
    if ! is_uint "$v" || [ ${#v} -gt 3 ] || [ "$v" -gt 100 ]; then
      GPU_TEXT="unreadable: garbage '$(printf '%s' "$line" | cut -c1-40)'"; return
    fi
    n=$((n + 1)); vals="$vals${vals:+,}$v"
    [ "$v" -gt "$THRESHOLD" ] && GPU_BUSY=1
  done <<EOF
$out
EOF
  if [ "$n" -eq 0 ]; then GPU_TEXT="unreadable: no utilisation lines"; return; fi
  GPU_OK=1; GPU_TEXT=$vals
}

# Jobs of ours: the lifecycle's run dirs (JOB_GLOB matches each run's .gpurent meta
# dir; gpurent.detach writes current, aN/pid, aN/started, aN/DONE|FAILED there).
# Sets RUNNING, RUN_IDS, JOB_SESSIONS, JOB_DOUBT, LAST_ID, LAST_STATE, STALL_IDS, QUIET.
scan_jobs() {
  RUNNING=0; RUN_IDS=; RUN_METAS=; JOB_SESSIONS=; JOB_DOUBT=; LAST_ID=; LAST_STATE=none; last_at=-1
  STALL_IDS=; QUIET=
  for M in $JOB_GLOB; do
    [ -f "$M/current" ] || continue                       # installed, never started
    cur=$(cat "$M/current" 2>/dev/null)
    A=${M%/*}; id=${A##*/}
    if ! is_uint "$cur"; then JOB_DOUBT="$JOB_DOUBT${JOB_DOUBT:+, }$id (unreadable $M/current)"; continue; fi
    D="$M/a$cur"
    S="$SESSION_PREFIX$(printf '%s' "$id" | tr '.:' '__')"
    JOB_SESSIONS="$JOB_SESSIONS $S"
    alive=0
    if have tmux && tmux has-session -t "=$S" 2>/dev/null; then alive=1; fi
    pid=$(cat "$D/pid" 2>/dev/null)
    if is_uint "$pid" && kill -0 "$pid" 2>/dev/null &&
       tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$M/run-v"; then alive=1; fi
    started=$(cat "$D/started" 2>/dev/null)
    is_uint "$started" || started=$(stat -c %Y "$M/current" 2>/dev/null)
    is_uint "$started" || started=0
    if [ "$alive" = 1 ]; then
      st="running"
      RUNNING=$((RUNNING + 1)); RUN_IDS="$RUN_IDS${RUN_IDS:+ }$id"; RUN_METAS="$RUN_METAS${RUN_METAS:+ }$M"
      # stalled: no new log line or artifact for STALL seconds (the GPU part is the caller's)
      newest=$started
      lm=$(stat -c %Y "$A/$LOG_REL" 2>/dev/null); is_uint "$lm" && [ "$lm" -gt "$newest" ] && newest=$lm
      am=$(find "$A/$OUT_REL" -type f -printf '%T@\n' 2>/dev/null | sort -n | tail -n 1 | cut -d. -f1)
      is_uint "$am" && [ "$am" -gt "$newest" ] && newest=$am
      q=$((NOW - newest))
      if [ "$q" -ge "$STALL" ]; then STALL_IDS="$STALL_IDS${STALL_IDS:+ }$id"; QUIET="$QUIET${QUIET:+ }$id:${q}s"; fi
    elif [ -f "$D/DONE" ]; then st="DONE $(head -n 1 "$D/DONE" 2>/dev/null)"
    elif [ -f "$D/FAILED" ]; then st="FAILED $(head -n 1 "$D/FAILED" 2>/dev/null)"
    else st="vanished (no session, no process, no marker)"; fi
    if [ "$started" -gt "$last_at" ]; then last_at=$started; LAST_ID=$id; LAST_STATE=$st; fi
  done
}

# The last job's durable sync is verified: its wrapper wrote DONE only after the
# checked sync (stage=done). No job at all has nothing to lose.
synced() {
  case "$LAST_STATE" in none|"DONE exit=0 stage=done"*) return 0;; esac
  return 1
}

# Interactive sessions: distinct sshd pts sessions (a person in a shell or a REPL
# with a terminal), plus utmp (`who`) when it has entries. Exec sessions (notty:
# gpurent's own probes, scp/sftp) are not a person.
read_sessions() {
  PTYS=
  for p in /proc/[0-9]*; do
    c=$(tr '\0' ' ' < "$p/cmdline" 2>/dev/null) || continue
    case "$c" in
      "sshd: "*@pts/*|"sshd-session: "*@pts/*)
        t=${c##*@}; t=${t%% *}
        case " $PTYS " in *" $t "*) ;; *) PTYS="$PTYS${PTYS:+ }$t";; esac;;
    esac
  done
  WHO=0
  if have who; then WHO=$(who 2>/dev/null | wc -l); is_uint "$WHO" || WHO=0; fi
}

# tmux sessions that are neither this watchdog's nor a job's: someone's work.
read_tmux() {
  TMUX_OTHER=
  have tmux || return 0
  if ! out=$(tmux list-sessions -F '#{session_name}' 2>&1); then
    case "$out" in *"no server running"*|*"error connecting"*|*"No such file"*) return 0;; esac
    TMUX_OTHER="(tmux unreadable: $(printf '%s' "$out" | head -n 1 | cut -c1-60))"; return 0
  fi
  old_ifs=$IFS; IFS='
'
  for s in $out; do
    [ "$s" = "$SESSION" ] && continue
    case " $JOB_SESSIONS " in *" $s "*) continue;; esac
    TMUX_OTHER="$TMUX_OTHER${TMUX_OTHER:+ }$s"
  done
  IFS=$old_ifs
}

# ---- the budget -------------------------------------------------------------------

yuan() { printf '%d.%02d' $(($1 / 1000)) $(($1 % 1000 / 10)); }

# Sets SPENT_NOW (thousandths) and BUDGET_TEXT; BUDGET_MILLI=0 is no budget.
read_budget() {
  SPENT_NOW=0; BUDGET_TEXT=
  [ "$BUDGET_MILLI" -gt 0 ] || return 0
  SPENT_NOW=$((SPENT_MILLI + PRICE_MILLI * (NOW - ARMED_AT) / 3600))
  BUDGET_TEXT="spent $(yuan "$SPENT_NOW") of $(yuan "$BUDGET_MILLI") yuan ($((SPENT_NOW * 100 / BUDGET_MILLI))%) at $(yuan "$PRICE_MILLI")/h"
}

jtext() { printf '%s' "$1" | tr -d '"\134' | tr '\n\t' '  '; }     # safe inside a JSON string

# The platform's push, when the person put its token on the box (never copied by gpurent).
push() {
  [ -n "$PUSH_URL" ] && [ -n "$PUSH_TOKEN_FILE" ] && [ -r "$PUSH_TOKEN_FILE" ] || return 1
  have curl || { log "push skipped: no curl"; return 1; }
  body=$(printf '{"title": "gpurent: %s", "name": "%s", "content": "%s"}' "$(jtext "$1")" "$(jtext "$INSTANCE")" \
    "$(jtext "$2")")
  if out=$(curl -sS -m 20 -X POST -H "Content-Type: application/json" \
      -H "$PUSH_AUTH_HEADER: $(tr -d ' \r\n' < "$PUSH_TOKEN_FILE")" -d "$body" "$PUSH_URL" 2>&1); then
    log "push sent ($1): $(printf '%s' "$out" | head -c 200)"
  else
    log "push failed ($1): $(printf '%s' "$out" | head -c 200)"
  fi
}

BUDGET_WARNED=
warn_budget() {
  BUDGET_WARNED=$NOW
  log "BUDGET WARNING: $BUDGET_TEXT; the box is parked at $(yuan "$BUDGET_MILLI") yuan"
  [ -n "$DURABLE" ] && mkdir -p "$DURABLE" 2>/dev/null &&
    printf '%s BUDGET WARNING %s\n' "$(utc)" "$BUDGET_TEXT" >> "$DURABLE/events.log" 2>/dev/null
  push "budget warning" "$INSTANCE: $BUDGET_TEXT; parked at $(yuan "$BUDGET_MILLI") yuan"
}

# Each running job's newest checkpoint to its durable dir, re-read before trusting it.
BUDGET_SYNCED=
budget_sync() {
  BUDGET_SYNCED=
  for M in $RUN_METAS; do
    A=${M%/*}
    for w in "$M"/run-v*.sh; do :; done                   # any version: DURABLE_DIR is the run's
    dst=$(sed -n "s/^DURABLE_DIR='\([^']*\)'.*/\1/p" "$w" 2>/dev/null | head -n 1)
    set -f
    # shellcheck disable=SC2086 # CKPT_GLOB: words, kept literal by set -f
    set -- $CKPT_GLOB
    set +f
    names=
    for g in "$@"; do names="$names${names:+ -o }-name $g"; done
    set -f
    # shellcheck disable=SC2086 # names: find's -name tests, globs kept literal by set -f
    f=$(find "$A/$OUT_REL" -type f \( $names \) -printf '%T@ %p\n' 2>/dev/null | sort -n | tail -n 1 | cut -d' ' -f2-)
    set +f
    if [ -z "$f" ]; then log "budget sync: ${A##*/}: no checkpoint ($CKPT_GLOB) under $A/$OUT_REL"; continue; fi
    if [ -z "$dst" ]; then log "budget sync: ${A##*/}: no durable dir in $w"; continue; fi
    b=${f##*/}
    if mkdir -p "$dst" && cp "$f" "$dst/$b.part" && mv -f "$dst/$b.part" "$dst/$b" &&
       [ "$(sha256sum < "$f")" = "$(sha256sum < "$dst/$b")" ]; then
      log "budget sync: $f -> $dst/$b ($(wc -c < "$dst/$b") bytes, sha256 verified)"
      BUDGET_SYNCED="$BUDGET_SYNCED${BUDGET_SYNCED:+ }$dst/$b"
    else
      rm -f "$dst/$b.part" 2>/dev/null
      log "budget sync FAILED: $f -> $dst/$b (parking anyway: the power-off keeps every disk)"
    fi
  done
}

# ---- stopping ---------------------------------------------------------------------

STOP_TRIES=0
power_off() {
  kind=$1; why=$2
  {
    echo "gpurent autostop powered off $INSTANCE ($(hostname)) with '$STOP_VERB' at $(utc)"
    echo "reason=$kind"
    echo "why=$why"
    echo "at=$NOW"
    echo "armed_at=$ARMED_AT idle_window=$IDLE ttl=$TTL stop_stalled=$STOP_STALLED"
    echo "idle_since=$IDLE_SINCE"
    echo "gpu=$GPU_TEXT"
    echo "last_job=$LAST_ID $LAST_STATE"
    echo "running=$RUN_IDS"
    echo "stalled=$STALL_IDS $QUIET"
    echo "budget=$BUDGET_TEXT"
    echo "budget_synced=$BUDGET_SYNCED"
    echo "sessions=$PTYS who=$WHO tmux_other=$TMUX_OTHER"
    echo "watchdog_pid=$$"
    echo "note=reversible power-off (disks kept); nothing was released"
  } > "$STATE/last-stop.tmp.$$"
  mv -f "$STATE/last-stop.tmp.$$" "$STATE/last-stop"
  if [ -n "$DURABLE" ] && mkdir -p "$DURABLE" 2>/dev/null &&
     put "$DURABLE/last-stop" < "$STATE/last-stop" 2>/dev/null; then
    printf '%s stop reason=%s %s\n' "$(utc)" "$kind" "$why" >> "$DURABLE/events.log" 2>/dev/null
  else
    log "could not write the reason to the durable tier $DURABLE (kept in $STATE/last-stop)"
  fi
  sync
  log "POWER OFF ($kind): $why; running '$STOP_VERB'"
  write_readings stopping "$kind: $why"
  if have timeout; then timeout 60 sh -c "$STOP_VERB" >> "$LOGF" 2>&1; else sh -c "$STOP_VERB" >> "$LOGF" 2>&1; fi
  rc=$?
  STOP_TRIES=$((STOP_TRIES + 1))
  log "'$STOP_VERB' exited $rc (attempt $STOP_TRIES); waiting for the power-off"
  i=0
  while [ $i -lt 120 ]; do sleep 1; i=$((i + 1)); done       # the power-off ends this process
  log "still up 120 s after '$STOP_VERB' (attempt $STOP_TRIES)"
}

write_readings() {
  {
    echo "at=$NOW"
    echo "verdict=$1"
    echo "why=$2"
    echo "gpu=$GPU_TEXT"
    echo "gpu_idle_since=$GPU_IDLE_SINCE"
    echo "idle_since=$IDLE_SINCE"
    echo "running=$RUN_IDS"
    echo "job_doubt=$JOB_DOUBT"
    echo "last_job=$LAST_ID"
    echo "last_job_state=$LAST_STATE"
    echo "stalled=$STALL_IDS"
    echo "sessions=$PTYS"
    echo "who=$WHO"
    echo "tmux_other=$TMUX_OTHER"
    echo "budget=$BUDGET_TEXT"
    echo "budget_warned=$BUDGET_WARNED"
    echo "ticks=$TICK"
  } | put "$STATE/readings"
}

# ---- the loop ---------------------------------------------------------------------

add() { act="$act${act:+; }$*"; }

log "watchdog $$ armed: idle=${IDLE}s ttl=${TTL}s interval=${INTERVAL}s stall=${STALL}s stop_stalled=$STOP_STALLED verb='$STOP_VERB' budget=${BUDGET_MILLI} spent=${SPENT_MILLI} price=${PRICE_MILLI}/h (thousandths)"
IDLE_SINCE=; GPU_IDLE_SINCE=; LAST_VERDICT=; STALL_REPORTED=
MAX_TICKS=$((LIFETIME / INTERVAL + 1))
TICK=0
while [ "$TICK" -lt "$MAX_TICKS" ]; do
  TICK=$((TICK + 1))
  NOW=$(date +%s)
  read_gpu; scan_jobs; read_sessions; read_tmux; read_budget
  if [ "$GPU_OK" = 1 ] && [ "$GPU_BUSY" = 0 ]; then GPU_IDLE_SINCE=${GPU_IDLE_SINCE:-$NOW}; else GPU_IDLE_SINCE=; fi

  act=
  [ "$RUNNING" -gt 0 ] && add "job running: $RUN_IDS"
  [ -n "$JOB_DOUBT" ] && add "job state unreadable: $JOB_DOUBT"
  [ "$GPU_OK" = 1 ] || add "GPU $GPU_TEXT"
  [ "$GPU_BUSY" = 1 ] && add "GPU busy ($GPU_TEXT %)"
  [ -n "$PTYS" ] && add "interactive SSH session: $PTYS"
  [ "$WHO" -gt 0 ] && add "logged in (who): $WHO"
  [ -n "$TMUX_OTHER" ] && add "tmux session not ours: $TMUX_OTHER"
  if [ -z "$act" ]; then IDLE_SINCE=${IDLE_SINCE:-$NOW}; else IDLE_SINCE=; fi

  # stalled: alive, GPU idle for the stall window, nothing new on disk for it
  STALLED=
  if [ -n "$STALL_IDS" ] && [ -n "$GPU_IDLE_SINCE" ] && [ $((NOW - GPU_IDLE_SINCE)) -ge "$STALL" ]; then
    STALLED=$STALL_IDS
    if [ "$STALL_REPORTED" != "$STALLED" ]; then
      STALL_REPORTED=$STALLED
      log "STALLED: $STALLED alive but GPU idle and no new log line or artifact ($QUIET)"
      [ -n "$DURABLE" ] && mkdir -p "$DURABLE" 2>/dev/null &&
        printf '%s STALLED %s (%s)%s\n' "$(utc)" "$STALLED" "$QUIET" \
          "$([ "$STOP_STALLED" = 1 ] && echo ': stop-stalled armed' || echo ': not stopping (no --stop-stalled)')" \
          >> "$DURABLE/events.log" 2>/dev/null
    fi
  else
    STALL_REPORTED=
  fi

  verdict=active; why=$act; stop=; stop_why=
  if [ -z "$act" ]; then
    verdict=idle; why="idle for $((NOW - IDLE_SINCE))s"
    if [ "$IDLE" -gt 0 ]; then why="$why of ${IDLE}s"; else why="$why (no idle window: TTL only)"; fi
  fi
  if [ "$IDLE" -gt 0 ] && [ -n "$IDLE_SINCE" ] && [ $((NOW - IDLE_SINCE)) -ge "$IDLE" ]; then
    if synced; then
      stop=idle; stop_why="idle for $((NOW - IDLE_SINCE))s (window ${IDLE}s): no job running, last job ${LAST_ID:-none} ${LAST_STATE}, GPU $GPU_TEXT %, no session"
    else
      verdict=blocked; why="idle for $((NOW - IDLE_SINCE))s but the last job $LAST_ID is $LAST_STATE: its durable sync is not verified"
    fi
  fi
  if [ -z "$stop" ] && [ "$TTL" -gt 0 ] && [ "$NOW" -ge $((ARMED_AT + TTL)) ]; then
    if [ "$RUNNING" -eq 0 ] && [ -z "$JOB_DOUBT" ] && synced; then
      stop=ttl; stop_why="TTL ${TTL}s expired (armed at $ARMED_AT): no job running, last job ${LAST_ID:-none} ${LAST_STATE}"
    else
      verdict=blocked; why="TTL expired, but ${act:-the last job $LAST_ID is $LAST_STATE (durable sync not verified)}"
    fi
  fi
  if [ -z "$stop" ] && [ -n "$STALLED" ]; then
    # stop only when every live job is stalled and nobody is logged in
    others=0
    for r in $RUN_IDS; do case " $STALLED " in *" $r "*) ;; *) others=1;; esac; done
    if [ "$STOP_STALLED" = 1 ] && [ "$others" = 0 ] && [ -z "$JOB_DOUBT" ] && [ -z "$PTYS" ] &&
       [ "$WHO" -eq 0 ] && [ -z "$TMUX_OTHER" ]; then
      stop=stalled; stop_why="stalled: $STALLED ($QUIET), GPU idle $((NOW - GPU_IDLE_SINCE))s; --stop-stalled was armed"
    else
      verdict=stalled; why="STALLED: $STALLED ($QUIET); $why"
    fi
  fi
  if [ "$BUDGET_MILLI" -gt 0 ]; then
    [ -z "$BUDGET_WARNED" ] && [ $((SPENT_NOW * 100)) -ge $((BUDGET_MILLI * BUDGET_WARN)) ] && warn_budget
    if [ "$SPENT_NOW" -ge "$BUDGET_MILLI" ] && [ "$STOP_TRIES" -lt 3 ]; then
      push "budget spent" "$INSTANCE: $BUDGET_TEXT; parking it (reversible power-off, disks kept)"
      budget_sync
      stop=budget; stop_why="budget: $BUDGET_TEXT${RUN_IDS:+; running $RUN_IDS}${BUDGET_SYNCED:+; synced $BUDGET_SYNCED}"
    fi
  fi
  if [ -n "$stop" ]; then
    if [ "$STOP_TRIES" -lt 3 ]; then
      power_off "$stop" "$stop_why"           # returns only when the box stayed up
      NOW=$(date +%s)
    fi
    verdict=error; why="'$STOP_VERB' did not power the box off ($STOP_TRIES attempts); would stop: $stop_why"
  fi
  write_readings "$verdict" "$why"
  if [ "$verdict $why" != "$LAST_VERDICT" ]; then
    case "$verdict" in idle) [ "${LAST_VERDICT%% *}" = idle ] || log "$verdict: $why";; *) log "$verdict: $why";; esac
    LAST_VERDICT="$verdict $why"
  fi
  sleep "$INTERVAL" & SLEEPER=$!
  wait "$SLEEPER"; SLEEPER=
done
log "watchdog $$ reached its lifetime (${LIFETIME}s): exiting; re-arm to keep autostop"
write_readings expired "lifetime ${LIFETIME}s reached; not armed any more"

# shellcheck shell=sh
# gpurent's on-box sweep queue (lua/gpurent/remote/run_queue.sh): filled by
# lua/gpurent/lifecycle/queue.lua, written once as <queue run>/.gpurent/queue-v1.sh
# (never rewritten under a live queue) and started detached by queue_start.sh, under
# the one detach starter. LIFECYCLE.md's run_queue semantics, on the box, so that a
# closed laptop or a killed gpurent does not stop the sweep:
#   - the cells wait as files QDIR/pending/cell.N (N: the cell's number in the queue
#     file, blank and # lines not counted; start=N left the cells before N out);
#   - before each cell the disk-budget gate: free bytes and free inodes of every tier
#     the cell writes; a tier below a floor stops this box taking cells, and the
#     line names the tier and the dimension (bytes or inodes) that is short;
#   - a cell is claimed by renaming it to QDIR/claimed/HOST/ (rename(2) on one
#     filesystem: when QDIR is on the region-shared FS, a free box takes the next cell
#     and two boxes never run the same one);
#   - each cell runs through its own run wrapper (run_wrapper.sh, installed by
#     queue_cell.sh as the cell's run-v1.sh): DONE/FAILED markers and the durable
#     sync, as a single run; a failed cell is recorded and the queue goes on;
#   - before each cell the budget (the box has no API token: the laptop hands the
#     queue BUDGET_MILLI, SPENT_MILLI at SPENT_AT and PRICE_MILLI per hour, money in
#     thousandths, from the provider's price and the ledger it refreshed at launch):
#     spent now = SPENT_MILLI + PRICE_MILLI x (now - SPENT_AT) / 3600. A live autostop
#     watchdog armed with --budget (its config in ST, remote/autostop_lib.sh) is read
#     the same way, and its `stopping` verdict for the budget too. Over budget, the
#     next cell is not started: the cells left are recorded as not started (budget),
#     never as failed cells of the trainer (on a shared queue they stay pending for
#     the other boxes), and the queue ends;
#   - the end: a `QUEUE DONE` line in the log and the QDONE file; exit 3 when the
#     budget stopped the queue (the reason is in the line), else exit 1 when a cell
#     failed, the gate stopped the queue, or (not SHARED) no cell ran.
# Events for the watcher (queue_status.sh) go to META/cells.log, one a line:
#   start N ID EPOCH | end N ID ok|failed MARKER | gate N WHY | budget N WHY |
#   notrun N budget   (one line per cell left unstarted by the budget)
RUN_ID=@RUN_ID@; HOST=@HOST@; M=@META@; LOG=@LOG@; QDIR=@QDIR@; ACTIVE=@ACTIVE@
SHARED=@SHARED@   # 1: QDIR is shared with other boxes (a box that found no cell left is fine)
GATE=@GATE@       # "tier<TAB>min free bytes<TAB>min free inodes<TAB>path", one a line
BUDGET_MILLI=@BUDGET_MILLI@; SPENT_MILLI=@SPENT_MILLI@; SPENT_AT=@SPENT_AT@; PRICE_MILLI=@PRICE_MILLI@  # 0: no budget
# gpurent-include: autostop_lib.sh
# gpurent-include: disk_gate_lib.sh
EVENTS="$M/cells.log"
say() { echo "[queue] $(date -u +%H:%M:%S) $*" >> "$LOG"; }
event() { echo "$*" >> "$EVENTS"; }
mkdir -p "$QDIR/claimed/$HOST" || { say "cannot create $QDIR/claimed/$HOST"; exit 1; }
echo $$ > "$M/queue.pid.tmp" && mv -f "$M/queue.pid.tmp" "$M/queue.pid"
: >> "$EVENTS"
say "queue $RUN_ID started on $HOST (pid $$), cells from $QDIR"

# gate: 0 when every tier the cell writes is above its floors; else SHORT says which
# tier and which dimension is short (disk_gate_lib.sh, the same gate a Slurm array task runs)
gate() {
  disk_gate "$GATE"; g_rc=$?
  [ -n "$GATE_NOTE" ] && say "$GATE_NOTE"
  SHORT=$GATE_SHORT
  return "$g_rc"
}

# money in thousandths as yuan with two decimals
yuan() { printf '%d.%02d' $(($1 / 1000)) $((($1 % 1000) / 10)); }
# cfg KEY: a value of the watchdog's config (KEY='value' lines, autostop.config_text)
wd_cfg() { sed -n "s/^$1='\{0,1\}\([^']*\)'\{0,1\}\$/\1/p" "$ST/config" 2>/dev/null | tail -n 1; }

# budget_ok: 0 when the next cell may start; else OVER says whose budget is spent
budget_ok() {
  OVER=; b_now=$(date +%s)
  if is_uint "$BUDGET_MILLI" && [ "$BUDGET_MILLI" -gt 0 ]; then
    b_el=$((b_now - SPENT_AT)); [ "$b_el" -lt 0 ] && b_el=0
    b_spent=$((SPENT_MILLI + PRICE_MILLI * b_el / 3600))
    if [ "$b_spent" -ge "$BUDGET_MILLI" ]; then
      OVER="the budget is spent: $(yuan "$b_spent") of $(yuan "$BUDGET_MILLI") yuan at $(yuan "$PRICE_MILLI") yuan/h"
      return 1
    fi
  fi
  # the autostop watchdog armed with --budget on this box, while it lives
  WPID=; WST=
  [ -f "$ST/pid" ] && read -r WPID WST < "$ST/pid"
  wd_alive "$WPID" "$WST" || return 0
  if grep -q '^verdict=stopping' "$ST/readings" 2>/dev/null && grep -q '^why=budget' "$ST/readings" 2>/dev/null; then
    OVER="the autostop watchdog is parking the box: $(sed -n 's/^why=//p' "$ST/readings" | head -n 1)"
    return 1
  fi
  w_b=$(wd_cfg BUDGET_MILLI); w_s=$(wd_cfg SPENT_MILLI); w_p=$(wd_cfg PRICE_MILLI); w_a=$(wd_cfg ARMED_AT)
  if is_uint "$w_b" && [ "$w_b" -gt 0 ] && is_uint "$w_s" && is_uint "$w_p" && is_uint "$w_a"; then
    w_el=$((b_now - w_a)); [ "$w_el" -lt 0 ] && w_el=0
    w_spent=$((w_s + w_p * w_el / 3600))
    if [ "$w_spent" -ge "$w_b" ]; then
      OVER="the autostop watchdog's budget is spent: $(yuan "$w_spent") of $(yuan "$w_b") yuan at $(yuan "$w_p") yuan/h"
      return 1
    fi
  fi
  return 0
}

# next_cell: NEXT = the lowest pending cell number; 1 when none is left
next_cell() {
  NEXT=
  for f in "$QDIR"/pending/cell.*; do
    [ -e "$f" ] || continue
    k=${f##*/cell.}
    case $k in ''|*[!0-9]*) continue ;; esac
    if [ -z "$NEXT" ] || [ "$k" -lt "$NEXT" ]; then NEXT=$k; fi
  done
  [ -n "$NEXT" ]
}

ran=0; ok=0; nfail=0; failed=; stopped=
end_cell() {
  event "end $1 $2 $3 $4"
  if [ "$3" = ok ]; then
    ok=$((ok + 1)); say "cell $1: run $2 DONE ($4)"
  else
    nfail=$((nfail + 1)); failed="$failed${failed:+; }cell $1 ($2: $4)"
    say "cell $1: run $2 FAILED ($4); the queue goes on"
  fi
}

# run_cell N ID: one attempt of the cell's wrapper, in the foreground of this queue
run_cell() {
  c_a="$ACTIVE/$2"; c_m="$c_a/.gpurent"; c_w="$c_m/run-v1.sh"
  ran=$((ran + 1))
  event "start $1 $2 $(date +%s)"
  say "cell $1: run $2 started"
  if [ ! -f "$c_w" ]; then end_cell "$1" "$2" failed "exit=1 stage=install (no wrapper $c_w on $HOST)"; return; fi
  mkdir -p "$c_m/a1" && echo 1 > "$c_m/current.tmp" && mv -f "$c_m/current.tmp" "$c_m/current"
  cut -d' ' -f22 /proc/1/stat > "$c_m/a1/boot" 2>/dev/null
  oom=$(awk '/^oom_kill /{print $2}' /sys/fs/cgroup/memory.events /sys/fs/cgroup/memory/memory.oom_control 2>/dev/null | head -n 1)
  echo "${oom:-0}" > "$c_m/a1/oom0"
  echo "$c_w" > "$c_m/a1/script"
  cat "$M/mode" > "$c_m/a1/mode" 2>/dev/null
  # its own process group (setsid -w waits for it): stopping the cell (run_stop.sh, by its
  # exact process group) stops its training, never this queue
  if command -v setsid >/dev/null 2>&1; then
    setsid -w bash "$c_w" 1 >> "$c_a/train.log" 2>&1 < /dev/null
  else
    bash "$c_w" 1 >> "$c_a/train.log" 2>&1 < /dev/null
  fi
  c_rc=$?
  if [ -f "$c_m/a1/DONE" ]; then end_cell "$1" "$2" ok "$(cat "$c_m/a1/DONE")"
  elif [ -f "$c_m/a1/FAILED" ]; then end_cell "$1" "$2" failed "$(cat "$c_m/a1/FAILED")"
  else end_cell "$1" "$2" failed "exit=$c_rc stage=vanished (the wrapper left no marker)"
  fi
}

budget_stop=; notrun=
while next_cell; do
  if ! budget_ok; then
    budget_stop="cell $NEXT: $OVER"
    event "budget $NEXT $OVER"
    say "BUDGET: cell $NEXT not started: $OVER; this box takes no more cells"
    if [ "$SHARED" != 1 ]; then
      # the cells left, in number order, recorded as not started (they stay pending: start=N resumes)
      for f in "$QDIR"/pending/cell.*; do
        [ -e "$f" ] || continue
        k=${f##*/cell.}
        case $k in ''|*[!0-9]*) continue ;; esac
        echo "$k"
      done | sort -n > "$M/notrun.tmp"
      while read -r k; do event "notrun $k budget"; notrun="$notrun${notrun:+, }$k"; done < "$M/notrun.tmp"
      rm -f "$M/notrun.tmp"
    fi
    break
  fi
  if ! gate; then
    stopped="disk gate before cell $NEXT: $SHORT"
    event "gate $NEXT $SHORT"
    say "GATE: cell $NEXT not run: $SHORT; this box takes no more cells"
    break
  fi
  # another box may take it first: then it is not ours, and the next one is tried
  mv "$QDIR/pending/cell.$NEXT" "$QDIR/claimed/$HOST/cell.$NEXT" 2>/dev/null || continue
  run_cell "$NEXT" "$(sed -n 1p "$QDIR/claimed/$HOST/cell.$NEXT")"
done

rc=0
if [ "$nfail" -gt 0 ] || [ -n "$stopped" ]; then rc=1; fi
if [ "$ran" -eq 0 ] && [ "$SHARED" != 1 ] && [ -z "$budget_stop" ]; then rc=1; fi
if [ "$ran" -gt 0 ] && [ "$ok" -eq 0 ]; then rc=1; fi
[ -n "$budget_stop" ] && rc=3      # distinct: the budget, not the trainer, ended the queue
line="QUEUE DONE $RUN_ID on $HOST: $ran cell(s) run, $ok ok, $nfail failed${failed:+: $failed}${stopped:+; stopped at the $stopped}"
[ -n "$budget_stop" ] && line="$line; stopped by the budget before $budget_stop${notrun:+; not started (budget): cell(s) $notrun}"
[ "$ran" -eq 0 ] && line="$line; no cell ran here"
say "$line (exit $rc)"
printf 'exit=%s ran=%s ok=%s failed=%s at=%s\n%s\n' "$rc" "$ran" "$ok" "$nfail" "$(date +%s)" "$line" > "$M/QDONE.tmp" &&
  mv -f "$M/QDONE.tmp" "$M/QDONE"
exit "$rc"

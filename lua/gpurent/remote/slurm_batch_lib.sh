# shellcheck shell=sh
# The batch script both Slurm submitters write (a library, included by
# slurm_submit.sh: one run's job, and slurm_queue_submit.sh: a sweep's job array, one
# task a cell): its #SBATCH lines, its values as quoted words, and the batch shell's
# body, the same for a run and for a cell:
#   batch_q WORD            WORD as one single-quoted shell word
#   batch_head OPTIONS      "#!/bin/bash" and one #SBATCH line per option (one a line)
#   batch_vars NAME VALUE.. one line "NAME='VALUE'; ..." of the batch script
#   batch_body              the body (bash on the compute node). It wants, set above it:
#     W N      the run wrapper and its attempt number (bash "$W" "$N")
#     D        the attempt's meta dir (markers, jobid, requeue)
#     LOG      the log the [gpurent] lines go to; OUT: the wrapper's output appended
#              there (empty: the batch shell's own, Slurm's --output)
#     SIG REQUEUE GRACE CKPTS   the profile's signal, requeue ("1" or ""), the seconds
#              from the signal to the requeue, the checkpoints (one a line) to resume from
#     JOB WHAT the id `scontrol requeue` takes (a job, or an array task JOB_TASK) and
#              its name in the log ("Slurm job 12", "Slurm array task 11_1")
#   The body runs the wrapper in its own process group and forwards the signal Slurm
#   sends before the limit (--signal=B:SIG@N) to it; with REQUEUE set it then waits for
#   the checkpoint and requeues JOB (Slurm never requeues a TIMEOUT by itself). A
#   restarted job (SLURM_RESTART_COUNT > 0, whatever requeued it) archives the killed
#   run's markers under D/restart-K/, writes D/requeue and exports GPURENT_RESUME (the
#   newest of CKPTS) and GPURENT_RESTART to the trainer.

batch_q() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"; }

batch_head() {
  echo '#!/bin/bash'
  while IFS= read -r o; do [ -n "$o" ] && printf '#SBATCH %s\n' "$o"; done <<EOF_OPTS
$1
EOF_OPTS
}

batch_vars() {
  bv_sep=
  while [ "$#" -ge 2 ]; do
    printf '%s%s=%s' "$bv_sep" "$1" "$(batch_q "$2")"
    bv_sep='; '
    shift 2
  done
  echo
}

batch_body() {
  cat <<'EOF_BODY'
say() { echo "[gpurent] $*" >> "$LOG"; }
# the newest checkpoint the trainer resumes from (the profile's checkpoints.scratch)
newest_ckpt() {
  best=; bt=0
  while IFS= read -r c; do
    [ -n "$c" ] && [ -f "$c" ] || continue
    t=$(stat -c %Y "$c" 2>/dev/null || echo 0)
    if [ -z "$best" ] || [ "$t" -gt "$bt" ]; then best=$c; bt=$t; fi
  done <<EOF_CK
$CKPTS
EOF_CK
  printf '%s' "$best"
}
R=${SLURM_RESTART_COUNT:-0}
if [ "$R" -gt 0 ]; then
  # requeued (by us after the signal, a pre-emption, a node failure or an admin): the
  # killed run's markers are history, not this run's verdict
  mkdir -p "$D/restart-$R"
  for f in DONE FAILED pid started; do [ -e "$D/$f" ] && mv -f "$D/$f" "$D/restart-$R/$f"; done
  ck=$(newest_ckpt)
  printf 'restart=%s at=%s job=%s ckpt=%s\n' "$R" "$(date +%s)" "$SLURM_JOB_ID" "$ck" > "$D/requeue.tmp" &&
    mv -f "$D/requeue.tmp" "$D/requeue"
  say "requeued (attempt $((R + 1)) of $WHAT): resuming from ${ck:-no checkpoint (starting over)}"
  export GPURENT_RESUME="$ck"
fi
export GPURENT_RESTART="$R"
# gpurent: the run wrapper in its own process group (set -m); the signal Slurm sends the
# batch shell before the limit (--signal=B:SIG@N) goes on to that group. The wrapper's
# shells ignore it (a trainer's own handler still takes it: only shells cannot), so it
# reaches the trainer without killing the completion chain around it.
set -m
run_wrapper() {
  if [ -n "$OUT" ]; then exec bash "$W" "$N" >> "$OUT" 2>&1 < /dev/null; fi
  exec bash "$W" "$N"
}
if [ -n "$SIG" ]; then ( trap '' "$SIG"; run_wrapper ) & else ( run_wrapper ) & fi
child=$!
on_signal() {
  say "SIG$SIG from Slurm (restart $R): forwarded to the job"
  kill -"$SIG" -- -"$child" 2>/dev/null
  [ -n "$REQUEUE" ] || return 0
  # the trainer writes its checkpoint and exits (or keeps going until the grace is over)
  i=0
  while kill -0 "$child" 2>/dev/null && [ "$i" -lt "$GRACE" ]; do sleep 1; i=$((i + 1)); done
  [ -f "$D/DONE" ] && return 0   # it finished meanwhile: nothing to requeue
  ck=$(newest_ckpt)
  printf 'restart=%s at=%s job=%s ckpt=%s requested\n' "$((R + 1))" "$(date +%s)" "$SLURM_JOB_ID" "$ck" \
    > "$D/requeue.tmp" && mv -f "$D/requeue.tmp" "$D/requeue"
  say "requeue: $WHAT back to the queue before its limit (attempt $((R + 2))); it resumes from ${ck:-no checkpoint}"
  scontrol requeue "$JOB" >> "$LOG" 2>&1 || say "scontrol requeue $JOB failed: the job ends at its limit"
}
[ -n "$SIG" ] && trap on_signal "$SIG"
while :; do wait "$child"; rc=$?; kill -0 "$child" 2>/dev/null || break; done
# a wait a trap interrupted returned 128+signal: ask once more for the wrapper's own code
wait "$child" 2>/dev/null; last=$?
[ "$last" != 127 ] && rc=$last
exit "$rc"
EOF_BODY
}

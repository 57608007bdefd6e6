# shellcheck shell=sh
# Submit a run's wrapper as a Slurm batch job (lua/gpurent/platform/slurm.lua:
# slurm.start_detached). The guard + the batch script + sbatch in one round trip:
# refuses (exit 3) while the current attempt's job is still known to squeue, or when
# squeue cannot say (the controller does not answer). Writes
# aN/batch.sh (one #SBATCH line per option; the batch shell forwards SIGNAL to the
# wrapper's process group, so the trainer can checkpoint before a time limit or a
# pre-emption) and records the job id in aN/jobid. Prints "attempt N", "job ID".
# With REQUEUE set, the batch shell requeues its own job after the signal (scontrol
# requeue: Slurm never requeues a TIMEOUT by itself), and a restarted job (Slurm's
# SLURM_RESTART_COUNT > 0, whatever requeued it) archives the killed run's markers
# under aN/restart-K/, writes aN/requeue and exports GPURENT_RESUME (the newest of
# CKPTS) and GPURENT_RESTART to the trainer.
M=@META@; W=@SCRIPT@; LOG=@LOG@; OPTIONS=@OPTIONS@; SIGNAL=@SIGNAL@
REQUEUE=@REQUEUE@; GRACE=@GRACE@; CKPTS=@CKPTS@
mkdir -p "$M" || exit 1
cur=$(cat "$M/current" 2>/dev/null || echo 0)
if [ "$cur" != 0 ] && [ -s "$M/a$cur/jobid" ]; then
  j=$(cat "$M/a$cur/jobid")
  if st=$(squeue -h -j "$j" -o %T 2>&1); then
    st=$(printf '%s\n' "$st" | head -n 1)
    if [ -n "$st" ]; then echo "refuse Slurm job $j (attempt $cur) is $st"; exit 3; fi
  else
    case $st in
      *"Invalid job id"*) ;;
      *) echo "refuse cannot tell whether Slurm job $j (attempt $cur) is still live: squeue: $(printf '%s' "$st" | head -n 1)"; exit 3 ;;
    esac
  fi
fi
n=$((cur + 1))
mkdir -p "$M/a$n" || exit 1
B="$M/a$n/batch.sh"
q() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"; }
{
  echo '#!/bin/bash'
  while IFS= read -r o; do [ -n "$o" ] && printf '#SBATCH %s\n' "$o"; done <<EOF_OPTS
$OPTIONS
EOF_OPTS
  printf 'W=%s; N=%s; LOG=%s; SIG=%s\n' "$(q "$W")" "$n" "$(q "$LOG")" "$(q "$SIGNAL")"
  printf 'D=%s; REQUEUE=%s; GRACE=%s; CKPTS=%s\n' "$(q "$M/a$n")" "$(q "$REQUEUE")" "$(q "$GRACE")" "$(q "$CKPTS")"
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
  say "requeued (attempt $((R + 1)) of Slurm job $SLURM_JOB_ID): resuming from ${ck:-no checkpoint (starting over)}"
  export GPURENT_RESUME="$ck"
fi
export GPURENT_RESTART="$R"
# gpurent: the run wrapper in its own process group (set -m); the signal Slurm sends the
# batch shell before the limit (--signal=B:SIG@N) goes on to that group. The wrapper's
# shells ignore it (a trainer's own handler still takes it: only shells cannot), so it
# reaches the trainer without killing the completion chain around it.
set -m
if [ -n "$SIG" ]; then ( trap '' "$SIG"; exec bash "$W" "$N" ) & else bash "$W" "$N" & fi
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
  say "requeue: Slurm job $SLURM_JOB_ID back to the queue before its limit (attempt $((R + 2))); it resumes from ${ck:-no checkpoint}"
  scontrol requeue "$SLURM_JOB_ID" >> "$LOG" 2>&1 || say "scontrol requeue $SLURM_JOB_ID failed: the job ends at its limit"
}
[ -n "$SIG" ] && trap on_signal "$SIG"
while :; do wait "$child"; rc=$?; kill -0 "$child" 2>/dev/null || break; done
# a wait a trap interrupted returned 128+signal: ask once more for the wrapper's own code
wait "$child" 2>/dev/null; last=$?
[ "$last" != 127 ] && rc=$last
exit "$rc"
EOF_BODY
} > "$B.tmp" && mv -f "$B.tmp" "$B" || exit 1
echo "$W" > "$M/a$n/script"
echo sbatch > "$M/a$n/mode"
{ echo "$n" > "$M/current.tmp" && mv -f "$M/current.tmp" "$M/current"; } || exit 1
out=$(sbatch --parsable "$B" 2>&1); rc=$?
job=$(printf '%s\n' "$out" | head -n 1 | cut -d';' -f1)
case $job in ''|*[!0-9]*) echo "sbatch: $out" >&2; exit "${rc:-1}";; esac
echo "$job" > "$M/a$n/jobid"
echo "attempt $n"
echo "job $job"

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
# CKPTS) and GPURENT_RESTART to the trainer (the body: slurm_batch_lib.sh, shared with
# a sweep's job array, slurm_queue_submit.sh).
# gpurent-include: slurm_batch_lib.sh
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
{
  batch_head "$OPTIONS"
  batch_vars W "$W" N "$n" LOG "$LOG" SIG "$SIGNAL"
  batch_vars D "$M/a$n" REQUEUE "$REQUEUE" GRACE "$GRACE" CKPTS "$CKPTS"
  # the job itself: requeued by its own id, its output is Slurm's (--output, the run's log)
  cat <<'EOF_JOB'
JOB=$SLURM_JOB_ID; WHAT="Slurm job $SLURM_JOB_ID"; OUT=
EOF_JOB
  batch_body
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

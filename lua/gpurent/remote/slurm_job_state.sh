# shellcheck shell=sh
# The Slurm state of a run's current job (lua/gpurent/platform/slurm.lua:
# slurm.job_state): squeue while slurmctld knows the job, else sacct's record.
# Prints "gr_job ID STATE REASON", nothing when the attempt has no job id. When
# neither can say (squeue fails for another reason than an unknown job id: the
# controller is slow or down; or sacct has no record yet), the state is UNKNOWN with
# the reason: a job nobody can see is not a dead job, and must not be launched twice;
# and "gr_requeue restart=K ... ckpt=PATH" once the batch shell requeued the job.
M=@META@
cur=$(cat "$M/current" 2>/dev/null || echo 0)
j=$(cat "$M/a$cur/jobid" 2>/dev/null)
[ -n "$j" ] || exit 0
if out=$(squeue -h -j "$j" -o '%T %r' 2>&1); then
  line=$(printf '%s\n' "$out" | head -n 1)
else
  case $out in
    *"Invalid job id"*) line= ;;
    *) echo "gr_job $j UNKNOWN squeue: $(printf '%s' "$out" | head -n 1)"; exit 0 ;;
  esac
fi
if [ -z "$line" ]; then
  line=$(sacct -n -X -P -j "$j" -o State,Reason 2>/dev/null | tail -n 1 | tr '|' ' ')
fi
echo "gr_job $j ${line:-UNKNOWN not in squeue, and sacct has no record of it (yet)}"
[ -f "$M/a$cur/requeue" ] && echo "gr_requeue $(head -n 1 "$M/a$cur/requeue")"
true

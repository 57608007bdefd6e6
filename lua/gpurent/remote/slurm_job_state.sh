# shellcheck shell=sh
# The Slurm state of a run's current job (lua/gpurent/platform/slurm.lua:
# slurm.job_state): squeue while slurmctld knows the job, else sacct's record.
# Prints "gr_job ID STATE REASON", nothing when the attempt has no job id, and
# "gr_requeue restart=K ... ckpt=PATH" once the batch shell requeued the job.
M=@META@
cur=$(cat "$M/current" 2>/dev/null || echo 0)
j=$(cat "$M/a$cur/jobid" 2>/dev/null)
[ -n "$j" ] || exit 0
line=$(squeue -h -j "$j" -o '%T %r' 2>/dev/null | head -n 1)
if [ -z "$line" ]; then
  line=$(sacct -n -X -P -j "$j" -o State,Reason 2>/dev/null | tail -n 1 | tr '|' ' ')
fi
[ -n "$line" ] && echo "gr_job $j $line"
[ -f "$M/a$cur/requeue" ] && echo "gr_requeue $(head -n 1 "$M/a$cur/requeue")"
true

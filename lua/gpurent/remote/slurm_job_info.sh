# shellcheck shell=sh
# The Slurm state of one job by its id (lua/gpurent/platform/slurm.lua: slurm.job_info,
# for `gpurent billing cancel`): squeue while slurmctld knows the job, else sacct's
# record. Prints "gr_job ID STATE NAME|REASON", nothing when the scheduler knows no such job.
J=@JOB@
line=$(squeue -h -j "$J" -o '%T %j|%r' 2>/dev/null | head -n 1)
if [ -z "$line" ]; then
  # sacct says "CANCELLED by 0": the state's first word, then the name and the reason
  line=$(sacct -n -X -P -j "$J" -o State,JobName,Reason 2>/dev/null | tail -n 1 |
    awk -F'|' '{ split($1, s, " "); printf "%s %s|%s\n", s[1], $2, $3 }')
fi
[ -n "$line" ] && echo "gr_job $J $line"
true

# shellcheck shell=sh
# A scheduler's accounting of jobs (lua/gpurent/platform/slurm.lua: slurm.accounting):
# the job ids of a run's attempts (META/a*/jobid, when META is given; a sweep's array
# submissions: META/s*/jobid) and JOBS (one
# a line: job ids, array job ids, array tasks 123_4), read by one sacct call: each
# job's allocations (-X: no steps; -D: a requeued job's earlier runs too). Prints
# "gr_ids ID,ID..." (or "gr_ids -" when there is none), "gr_arrays ID,..." (the sweep's
# array ids, or -), "gr_expect ID N" per array submission (its task count), then one
# "gr_acct JOBID|STATE|ELAPSEDRAW|ALLOCTRES" per allocation; "gr_error ..." and exit 1
# when sacct fails (no accounting storage on the cluster).
M=@META@; JOBS=@JOBS@
ids=$( { if [ -n "$M" ]; then cat "$M"/a*/jobid "$M"/s*/jobid 2>/dev/null; fi; printf '%s\n' "$JOBS"; } |
  grep -E '^[0-9]+(_[0-9]+)?$' | sort -u | paste -sd, -)
if [ -z "$ids" ]; then echo "gr_ids -"; exit 0; fi
echo "gr_ids $ids"
arrays=$(if [ -n "$M" ]; then cat "$M"/s*/jobid 2>/dev/null; fi | grep -E '^[0-9]+$' | sort -u | paste -sd, -)
echo "gr_arrays ${arrays:--}"
# each array submission's task count, from its #SBATCH --array=SPEC (1-3%2, 3,7):
# "gr_expect ARRAY_ID N" (slurmdbd may list an array's tasks some time after they end)
if [ -n "$M" ]; then
  for s in "$M"/s*; do
    if [ ! -f "$s/jobid" ] || [ ! -f "$s/batch.sh" ]; then continue; fi
    n=$(sed -n 's/^#SBATCH --array=\([^%]*\).*/\1/p' "$s/batch.sh" | head -n 1 |
      awk -F, '{ n = 0; for (i = 1; i <= NF; i++) { if (split($i, r, "-") == 2) n += r[2] - r[1] + 1; else n++ } print n }')
    echo "gr_expect $(cat "$s/jobid") ${n:-0}"
  done
fi
if ! out=$(sacct -X -D -n -P -j "$ids" --format=JobID,State,ElapsedRaw,AllocTRES 2>&1); then
  printf 'gr_error sacct -j %s: %s\n' "$ids" "$(printf '%s' "$out" | head -n 3 | tr '\n' ' ')"
  exit 1
fi
printf '%s\n' "$out" | sed -n 's/^./gr_acct &/p'

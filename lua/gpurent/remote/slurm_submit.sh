# shellcheck shell=sh
# Submit a run's wrapper as a Slurm batch job (lua/gpurent/platform/slurm.lua:
# slurm.start_detached). The guard + the batch script + sbatch in one round trip:
# refuses (exit 3) while the current attempt's job is still known to squeue, or when
# squeue cannot say (the controller does not answer). Writes
# aN/batch.sh (one #SBATCH line per option; the batch shell forwards SIGNAL to the
# wrapper's process group, so the trainer can checkpoint before a time limit or a
# pre-emption) and records the job id in aN/jobid. Prints "attempt N", "job ID".
M=@META@; W=@SCRIPT@; LOG=@LOG@; OPTIONS=@OPTIONS@; SIGNAL=@SIGNAL@
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
  cat <<'EOF_BODY'
# gpurent: the run wrapper in its own process group (set -m); the signal Slurm sends the
# batch shell before the limit (--signal=B:SIG@N) goes on to that group: the trainer
# checkpoints, and the batch shell waits for the wrapper's own exit code.
set -m
bash "$W" "$N" &
child=$!
if [ -n "$SIG" ]; then
  trap 'echo "[gpurent] SIG$SIG from Slurm (restart ${SLURM_RESTART_COUNT:-0}): forwarded to the job" >> "$LOG"; kill -"$SIG" -- -"$child" 2>/dev/null' "$SIG"
fi
while :; do wait "$child"; rc=$?; kill -0 "$child" 2>/dev/null || break; done
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

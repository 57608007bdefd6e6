# shellcheck shell=sh
# Submit a sweep's cells as ONE Slurm job array (lua/gpurent/platform/slurm.lua:
# slurm.start_queue). The cells are installed already (queue_cell.sh: each cell's
# wrapper <cell>/.gpurent/run-v1.sh and run.json); the array index of a cell is its
# number in the queue file, so a resubmission names the failed ones (--array=3,7).
# In one round trip: refuses (exit 3) while the sweep's last array job still has a
# task in squeue; writes the cell table (first submission only) and the commands;
# gives every cell of this submission its next attempt (aN made, `current` moved)
# before sbatch, so a watcher sees it waiting, never its old marker; writes
# sN/batch.sh (the profile's #SBATCH lines, --array among them) and submits it.
# Prints "submission N" and "job ID". Each task's batch shell is a single run's
# (slurm_batch_lib.sh): with REQUEUE set, a task the signal reaches before its limit
# requeues itself (JOB_TASK) and its restart resumes from the cell's newest checkpoint
# (CKPT_NAMES in the cell's out dir), its killed markers under the cell's aN/restart-K/.
# Before the cell's wrapper, each task runs the sweep's disk-budget gate on the compute
# node (disk_gate_lib.sh, as the on-box queue before each cell): a tier the cell writes
# below a floor (GATE) ends the cell FAILED, stage=gate, its marker naming the tier, its
# path and the dimension that is short; the trainer never starts. Each task gates itself
# when it starts, so the other cells still run, and every later cell a short shared
# tier holds back is gated the same way; resubmit=SWEEP reruns them as failed cells.
# gpurent-include: slurm_batch_lib.sh
M=@META@; ACTIVE=@ACTIVE@; OPTIONS=@OPTIONS@; SIGNAL=@SIGNAL@
GATE=@GATE@           # "tier<TAB>min free bytes<TAB>min free inodes<TAB>path", one a line
REQUEUE=@REQUEUE@; GRACE=@GRACE@; CKPT_NAMES=@CKPT_NAMES@
TABLE=@TABLE@         # "N<TAB>ID<TAB>config task [epochs]", one cell a line; empty: a resubmission
COMMANDS=@COMMANDS@   # "N<TAB>command", one cell a line (with TABLE)
CELLS=@CELLS@         # the cell numbers this submission runs, one a line
mkdir -p "$M" || exit 1
cur=$(cat "$M/array_current" 2>/dev/null || echo 0)
if [ "$cur" != 0 ] && [ -s "$M/s$cur/jobid" ]; then
  j=$(cat "$M/s$cur/jobid")
  st=$(squeue -h -r -j "$j" -o '%K %T' 2>/dev/null | head -n 1)
  if [ -n "$st" ]; then echo "refuse Slurm array job $j (submission $cur) still has task $st"; exit 3; fi
fi
if [ -n "$TABLE" ]; then
  if [ -f "$M/cells" ]; then echo "refuse the sweep's cells were submitted before ($M/cells): resubmit its failed cells"; exit 3; fi
  printf '%s\n' "$COMMANDS" > "$M/commands.tmp" && mv -f "$M/commands.tmp" "$M/commands" || exit 1
  printf '%s\n' "$TABLE" > "$M/cells.tmp" && mv -f "$M/cells.tmp" "$M/cells" || exit 1
fi
[ -f "$M/cells" ] || { echo "bad no cell table $M/cells: this sweep was never submitted"; exit 1; }
n=$((cur + 1))
S="$M/s$n"
mkdir -p "$S" || exit 1
while IFS= read -r k; do
  [ -n "$k" ] || continue
  id=$(awk -F'\t' -v k="$k" '$1 == k {print $2}' "$M/cells")
  [ -n "$id" ] || { echo "bad cell $k is not in $M/cells"; exit 1; }
  cm="$ACTIVE/$id/.gpurent"
  [ -f "$cm/run-v1.sh" ] || { echo "bad cell $k has no wrapper $cm/run-v1.sh"; exit 1; }
  a=$(cat "$cm/current" 2>/dev/null || echo 0); a=$((a + 1))
  mkdir -p "$cm/a$a" && echo "$cm/run-v1.sh" > "$cm/a$a/script" && echo sbatch > "$cm/a$a/mode" &&
    echo "$a" > "$cm/current.tmp" && mv -f "$cm/current.tmp" "$cm/current" || exit 1
done <<EOF_CELLS
$CELLS
EOF_CELLS
B="$S/batch.sh"
{
  batch_head "$OPTIONS"
  batch_vars M "$M" ACTIVE "$ACTIVE" SIG "$SIGNAL"
  batch_vars REQUEUE "$REQUEUE" GRACE "$GRACE" CKPT_NAMES "$CKPT_NAMES"
  batch_vars GATE "$GATE"
  cat <<'EOF_CELL'
# gpurent: one array task = one cell (its number is the array index), run by the cell's
# own wrapper (DONE/FAILED markers, the durable sync) in the cell's own directory; the
# batch body (slurm_batch_lib.sh) is a single run's: the signal forwarded, the task
# requeued (JOB_TASK: only this cell), a restart resuming from the cell's checkpoint.
IDX=${SLURM_ARRAY_TASK_ID:?gpurent: not an array task}
id=$(awk -F'\t' -v k="$IDX" '$1 == k {print $2}' "$M/cells")
[ -n "$id" ] || { echo "[gpurent] array task $IDX: no cell $IDX in $M/cells"; exit 1; }
A="$ACTIVE/$id"; CM="$A/.gpurent"
N=$(cat "$CM/current"); D="$CM/a$N"; W="$CM/run-v1.sh"
JOB="${SLURM_ARRAY_JOB_ID}_$IDX"; WHAT="Slurm array task $JOB"
echo "$SLURM_JOB_ID" > "$D/jobid"
echo "$JOB" > "$D/array_task"
LOG="$A/train.log"; OUT=$LOG
# the cell's own checkpoints (the profile's checkpoints.scratch in the cell's out dir)
CKPTS=
while IFS= read -r c; do [ -n "$c" ] && CKPTS="$CKPTS$A/out/$c
"; done <<EOF_CK
$CKPT_NAMES
EOF_CK
echo "[gpurent] Slurm array task $JOB (job $SLURM_JOB_ID): cell $IDX, run $id, attempt $N" >> "$LOG"
# gpurent: the disk-budget gate, on this compute node, before the cell's wrapper runs
# gpurent-include: disk_gate_lib.sh
if ! disk_gate "$GATE"; then
  # a restart's killed markers are history (as the batch body keeps them), not this verdict
  R=${SLURM_RESTART_COUNT:-0}
  if [ "$R" -gt 0 ]; then
    mkdir -p "$D/restart-$R"
    for f in DONE FAILED pid started; do [ -e "$D/$f" ] && mv -f "$D/$f" "$D/restart-$R/$f"; done
  fi
  printf 'exit=1 stage=gate at=%s (disk gate: %s; the trainer was not started)\n' "$(date +%s)" "$GATE_SHORT" \
    > "$D/FAILED.tmp" && mv -f "$D/FAILED.tmp" "$D/FAILED"
  echo "[gpurent] disk gate: cell $IDX not run on $(hostname): $GATE_SHORT" >> "$LOG"
  exit 1
fi
[ -n "$GATE_NOTE" ] && echo "[gpurent] disk gate: $GATE_NOTE" >> "$LOG"
EOF_CELL
  batch_body
} > "$B.tmp" && mv -f "$B.tmp" "$B" || exit 1
printf '%s\n' "$CELLS" > "$S/cells"
{ echo "$n" > "$M/array_current.tmp" && mv -f "$M/array_current.tmp" "$M/array_current"; } || exit 1
out=$(sbatch --parsable "$B" 2>&1); rc=$?
job=$(printf '%s\n' "$out" | head -n 1 | cut -d';' -f1)
case $job in ''|*[!0-9]*) echo "sbatch: $out" >&2; [ "$rc" = 0 ] && rc=1; exit "$rc";; esac
echo "$job" > "$S/jobid"
echo "submission $n"
echo "job $job"

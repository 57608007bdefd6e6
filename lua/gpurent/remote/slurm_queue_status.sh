# shellcheck shell=sh
# A Slurm sweep's state in one round trip (lua/gpurent/platform/slurm.lua:
# slurm.queue_status): the array job of its last submission as slurmctld sees it (one
# line per task, ended ones too for MinJobAge; squeue first, so a task that ended since
# wrote its marker before), each cell's current attempt and marker, and sacct's record
# of the tasks (slurmdbd: it may lag a finished task by a moment).
#   gs_job N ID|none          the last submission and its array job
#   gs_task IDX|STATE|REASON  a task slurmctld knows (pending, running, or ended)
#   gs_unknown WHY            squeue could not answer (a slow or paused controller): no
#                             task's state is known this time (not: the tasks ended)
#   gs_cell N<TAB>ID<TAB>ATTEMPT<TAB>STARTED|-<TAB>DONE|FAILED|-<TAB>MARKER<TAB>DESC
#   gs_requeue N<TAB>LINE     the cell's current attempt was requeued: its aN/requeue
#                             ("restart=K at=T job=J ckpt=PATH [requested]", slurm_batch_lib.sh)
#   gs_cmd N<TAB>COMMAND      the cell's command line
#   gs_acct JOBID|STATE|EXITCODE
M=@META@; ACTIVE=@ACTIVE@
TAB=$(printf '\t')
cur=$(cat "$M/array_current" 2>/dev/null || echo 0)
j=$(cat "$M/s$cur/jobid" 2>/dev/null)
echo "gs_job $cur ${j:-none}"
if [ -n "$j" ]; then
  if out=$(squeue -h -r -t all -j "$j" -o '%K|%T|%r' 2>&1); then
    printf '%s\n' "$out" | sed -n 's/^\([0-9][0-9]*|\)/gs_task \1/p'
  else
    case $out in
      *"Invalid job id"*) ;;   # slurmctld forgot the array (MinJobAge): its tasks ended
      *) echo "gs_unknown squeue: $(printf '%s' "$out" | head -n 1)" ;;
    esac
  fi
fi
if [ -f "$M/cells" ]; then
  while IFS=$TAB read -r n id desc; do
    [ -n "$n" ] || continue
    cm="$ACTIVE/$id/.gpurent"
    a=$(cat "$cm/current" 2>/dev/null || echo 0); d="$cm/a$a"
    started=$(cat "$d/started" 2>/dev/null); mark=-; text=
    if [ -f "$d/DONE" ]; then mark=DONE; text=$(head -n 1 "$d/DONE")
    elif [ -f "$d/FAILED" ]; then mark=FAILED; text=$(head -n 1 "$d/FAILED"); fi
    printf 'gs_cell %s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$n" "$id" "$a" "${started:--}" "$mark" "$text" "$desc"
    [ -f "$d/requeue" ] && printf 'gs_requeue %s\t%s\n' "$n" "$(head -n 1 "$d/requeue")"
  done < "$M/cells"
fi
[ -f "$M/commands" ] && sed -n 's/^./gs_cmd &/p' "$M/commands"
[ -n "$j" ] && sacct -n -X -P -j "$j" -o JobID,State,ExitCode 2>/dev/null | sed 's/^/gs_acct /'
true

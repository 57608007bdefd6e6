# shellcheck shell=sh
# A sweep queue's state on this box, in one round trip (lua/gpurent/lifecycle/queue.lua):
#   gq_alive 1|0 PID   the queue's tmux session or its exact PID (cmdline holds SCRIPT)
#   gq_cell LINE       the cell table (N, run id, the queue line)
#   gq_event LINE      cells.log: start / end / gate events, in order
#   gq_pending N NEXT  cells still waiting in the queue directory, the lowest one
#   gq_done LINE       the QDONE file, once the queue ended
M=@META@; S=@SESSION@; Q=@SCRIPT@
alive=0
if command -v tmux >/dev/null 2>&1 && tmux has-session -t "=$S" 2>/dev/null; then alive=1; fi
pid=$(cat "$M/queue.pid" 2>/dev/null)
if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$Q"; then alive=1; fi
echo "gq_alive $alive ${pid:-none}"
[ -f "$M/cells" ] && sed 's/^/gq_cell /' "$M/cells"
[ -f "$M/cells.log" ] && sed 's/^/gq_event /' "$M/cells.log"
qdir=$(cat "$M/qdir" 2>/dev/null)
n=0; next=
if [ -n "$qdir" ]; then
  for f in "$qdir"/pending/cell.*; do
    [ -e "$f" ] || continue
    n=$((n + 1)); k=${f##*/cell.}
    case $k in ''|*[!0-9]*) continue ;; esac
    if [ -z "$next" ] || [ "$k" -lt "$next" ]; then next=$k; fi
  done
fi
echo "gq_pending $n ${next:-none}"
[ -f "$M/QDONE" ] && sed 's/^/gq_done /' "$M/QDONE"
true

# shellcheck shell=sh
# Start a sweep's on-box queue detached (lua/gpurent/lifecycle/queue.lua): write the
# queue's cell table and queue directory beside it, then the guard + start in one
# round trip with the one detach starter (detach.sh): never a second copy of a live
# queue. Prints "mode M" and "pid P"; "refuse ..." with exit 3 (a live or ended
# queue) or 4 (tmux asked, not installed).
M=@META@; S=@SESSION@; Q=@SCRIPT@; LOG=@LOG@; MODE=@MODE@; QDIR=@QDIR@
TABLE=@TABLE@   # "N<TAB>ID<TAB>config task [epochs]", one cell a line
# gpurent-include: detach.sh
mkdir -p "$M" || exit 1
if command -v tmux >/dev/null 2>&1 && tmux has-session -t "=$S" 2>/dev/null; then echo "refuse tmux session $S is alive"; exit 3; fi
pid=$(cat "$M/queue.pid" 2>/dev/null)
if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$Q"; then
  echo "refuse the queue (PID $pid) is alive"; exit 3
fi
[ -f "$M/QDONE" ] && { echo "refuse the queue already ended: $(tail -n 1 "$M/QDONE")"; exit 3; }
printf '%s\n' "$TABLE" > "$M/cells.tmp" && mv -f "$M/cells.tmp" "$M/cells" || exit 1
printf '%s\n' "$QDIR" > "$M/qdir" || exit 1
detach_start "$S" "$MODE" "$LOG" sh "$Q"; rc=$?
[ "$rc" = 4 ] && { echo "refuse tmux is not installed"; exit 4; }
[ "$rc" = 0 ] || exit 1
echo "$DETACH_MODE" > "$M/mode"; echo "mode $DETACH_MODE"
i=0; while [ ! -s "$M/queue.pid" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
echo "pid $(cat "$M/queue.pid" 2>/dev/null)"

# shellcheck shell=sh
# Stop a run's job (detach.stop): its exact tmux session, then its wrapper's exact
# process group (checked by the wrapper path in /proc/PID/cmdline), never a name pattern.
M=@META@; S=@SESSION@
cur=$(cat "$M/current" 2>/dev/null || echo 0)
if command -v tmux >/dev/null 2>&1 && tmux has-session -t "=$S" 2>/dev/null; then
  tmux kill-session -t "=$S" && echo "stopped tmux session $S"
fi
pid=$(cat "$M/a$cur/pid" 2>/dev/null)
if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$M/run-v"; then
  pg=$(cut -d' ' -f5 "/proc/$pid/stat")
  if [ "$pg" = "$pid" ]; then kill -TERM -- "-$pg" 2>/dev/null; else kill -TERM "$pid" 2>/dev/null; fi
  echo "stopped wrapper PID $pid (process group $pg)"
fi
true

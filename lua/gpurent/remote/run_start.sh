# shellcheck shell=sh
# Start a run's wrapper detached (lua/gpurent/lifecycle/detach.lua: detach.start).
# The guard + start in one round trip, so a second launcher racing us on the box sees
# the same facts: never a second copy of a live job. Prints "mode M", "attempt N",
# "pid P"; "refuse ..." with exit 3 (a live copy) or 4 (tmux asked, not installed).
M=@META@; S=@SESSION@; W=@SCRIPT@; LOG=@LOG@; MODE=@MODE@
# gpurent-include: detach.sh
mkdir -p "$M"
cur=$(cat "$M/current" 2>/dev/null || echo 0)
if [ "$cur" != 0 ]; then
  if command -v tmux >/dev/null 2>&1 && tmux has-session -t "=$S" 2>/dev/null; then echo "refuse tmux session $S is alive"; exit 3; fi
  pid=$(cat "$M/a$cur/pid" 2>/dev/null)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$M/run-v"; then
    echo "refuse wrapper PID $pid (attempt $cur) is alive"; exit 3
  fi
fi
n=$((cur + 1))
mkdir -p "$M/a$n" || exit 1
{ echo "$n" > "$M/current.tmp" && mv -f "$M/current.tmp" "$M/current"; } || exit 1
cut -d' ' -f22 /proc/1/stat > "$M/a$n/boot" 2>/dev/null
oom=$(awk '/^oom_kill /{print $2}' /sys/fs/cgroup/memory.events /sys/fs/cgroup/memory/memory.oom_control 2>/dev/null | head -n 1)
echo "${oom:-0}" > "$M/a$n/oom0"
echo "$W" > "$M/a$n/script"
detach_start "$S" "$MODE" "$LOG" bash "$W" "$n"; rc=$?
[ "$rc" = 4 ] && { echo "refuse tmux is not installed"; exit 4; }
[ "$rc" = 0 ] || exit 1
echo "$DETACH_MODE" > "$M/a$n/mode"; echo "mode $DETACH_MODE"
echo "attempt $n"
i=0; while [ ! -s "$M/a$n/pid" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
echo "pid $(cat "$M/a$n/pid" 2>/dev/null)"

# shellcheck shell=sh
# What a running job is doing, from live facts, in one round trip (monitor.probe):
# the storage tiers and cgroup (measure_lib.sh), then gr_* lines parsed by
# monitor.parse: the exact tmux session and wrapper PID, the current attempt's
# markers, log and artifact times, GPU use, and the log's tail only when nothing is alive.
M=@META@; S=@SESSION@; LOG=@LOG@; OUT=@OUT@
# gpurent-include: measure_lib.sh
measure_tiers @TIERS@
measure_cgroup
cur=$(cat "$M/current" 2>/dev/null || echo 0); D="$M/a$cur"
echo "gr_attempt $cur"
alive=0
if command -v tmux >/dev/null 2>&1; then
  if tmux has-session -t "=$S" 2>/dev/null; then echo "gr_session 1"; alive=1; else echo "gr_session 0"; fi
else echo "gr_session none"; fi
pid=$(cat "$D/pid" 2>/dev/null)
if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$M/run-v"; then
  echo "gr_proc 1 $pid"; alive=1
else echo "gr_proc 0 ${pid:-none}"; fi
[ -f "$D/DONE" ] && echo "gr_done $(cat "$D/DONE")"
[ -f "$D/FAILED" ] && echo "gr_failed $(cat "$D/FAILED")"
echo "gr_now $(date +%s)"
echo "gr_started $(cat "$D/started" 2>/dev/null)"
echo "gr_boot $(cut -d' ' -f22 /proc/1/stat 2>/dev/null) $(cat "$D/boot" 2>/dev/null)"
echo "gr_oom0 $(cat "$D/oom0" 2>/dev/null)"
if [ -f "$LOG" ]; then
  echo "gr_logmtime $(stat -c %Y "$LOG")"
  echo "gr_last $(tail -n 20 "$LOG" | grep -v '^\[gpurent\]' | tail -n 1 | cut -c1-200)"
fi
a=$(find "$OUT" -type f -printf '%T@ %P\n' 2>/dev/null | sort -n | tail -n 1)
[ -n "$a" ] && echo "gr_artifact $a"
if command -v nvidia-smi >/dev/null 2>&1; then
  echo "gr_gpu $(nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits 2>&1 | head -n 4 | tr '\n' ' ')"
fi
if [ "$alive" = 0 ] && [ -f "$LOG" ]; then tail -n 40 "$LOG" | cut -c1-300 | sed 's/^/gr_tail /'; fi
true

# shellcheck shell=sh
# Restart the platform's pinned TensorBoard (commands/tensorboard.lua, seed AD7): a run
# once loaded is never dropped, so deleted or renamed runs stay listed until the server
# restarts. Finds the exact process serving LOGDIR on PORT (its argv holds --logdir
# LOGDIR and --port PORT), stops that PID (TERM, then KILL after 5 s), starts the same
# argv again, detached, and waits up to WAIT s for /data/runs. Prints "before ...",
# "pid OLD", "restarted NEW", "after ..." (tb_runs lines prefixed), or "bad WHY".
LOGDIR=@LOGDIR@; PORT=@PORT@; WAIT=@WAIT@; LOG=@LOG@
# gpurent-include: tb_lib.sh
# gpurent-include: detach.sh
tb_runs "$PORT" | sed 's/^/before /'
pid=
for d in /proc/[0-9]*; do
  [ -r "$d/cmdline" ] || continue
  args=$(tr '\0' '\n' < "$d/cmdline" 2>/dev/null) || continue
  # the program itself (argv 0, or the script an interpreter runs), not a shell whose script mentions it
  case $(printf '%s\n' "$args" | head -n 2) in *tensorboard*) ;; *) continue ;; esac
  has_logdir=; has_port=; prev=
  while IFS= read -r a; do
    { [ "$prev" = --logdir ] && [ "$a" = "$LOGDIR" ]; } || [ "$a" = "--logdir=$LOGDIR" ] && has_logdir=1
    { [ "$prev" = --port ] && [ "$a" = "$PORT" ]; } || [ "$a" = "--port=$PORT" ] && has_port=1
    prev=$a
  done <<EOF_ARGS
$args
EOF_ARGS
  if [ -n "$has_logdir" ] && [ -n "$has_port" ]; then pid=${d#/proc/}; break; fi
done
[ -n "$pid" ] || { echo "bad no tensorboard process serving $LOGDIR on port $PORT"; exit 0; }
echo "pid $pid"
args=$(tr '\0' '\n' < "/proc/$pid/cmdline")
cwd=$(readlink "/proc/$pid/cwd" 2>/dev/null || echo /)
kill -TERM "$pid" 2>/dev/null
i=0
while kill -0 "$pid" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
i=0
while kill -0 "$pid" 2>/dev/null && [ $i -lt 20 ]; do sleep 0.1; i=$((i + 1)); done
kill -0 "$pid" 2>/dev/null && { echo "bad pid $pid did not stop"; exit 0; }
set --
while IFS= read -r a; do set -- "$@" "$a"; done <<EOF_ARGS
$args
EOF_ARGS
cd "$cwd" 2>/dev/null || cd /
detach_start "" nohup "$LOG" "$@" || { echo "bad the restart failed"; exit 0; }
echo "restarted $!"
i=0
while [ $i -lt $((WAIT * 10)) ]; do
  curl -s --noproxy '*' --max-time 2 -o /dev/null "http://127.0.0.1:$PORT/data/runs" 2>/dev/null && break
  sleep 0.1; i=$((i + 1))
done
tb_runs "$PORT" | sed 's/^/after /'

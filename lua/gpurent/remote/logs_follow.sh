# shellcheck shell=sh
# Follow a run's log (`gpurent logs -f`, commands/logs.lua): tail -F from LINES back;
# poll the current attempt's markers every POLL seconds and stop the tail once one is
# written, printing "gpurent-logs-end attempt N DONE|FAILED <marker>" on stderr.
L=@LOG@; M=@META@; LINES=@LINES@; POLL=@POLL@
[ -f "$L" ] || { echo "no log at $L (yet): waiting for it" >&2; }
tail -n "$LINES" -F -- "$L" 2>/dev/null & T=$!
while :; do
  a=$(cat "$M/current" 2>/dev/null)
  for m in DONE FAILED; do
    if [ -n "$a" ] && [ -f "$M/a$a/$m" ]; then sleep 1; kill $T 2>/dev/null; wait $T 2>/dev/null
      echo "gpurent-logs-end attempt $a $m $(cat "$M/a$a/$m")" >&2; exit 0; fi
  done
  sleep "$POLL"
done

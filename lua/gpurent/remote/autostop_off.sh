# shellcheck shell=sh
# Disarm (autostop.off): stop the live watchdog (exact session, exact PID), remove
# the state dir, note it in the durable tier's events.log.
SESSION=@SESSION@; D=@DURABLE@
# gpurent-include: autostop_lib.sh
wd_stop "$SESSION"
if [ -d "$ST" ]; then
  case "$ST" in */.gpurent/autostop) rm -rf -- "$ST" && echo "gr_removed $ST";; esac
fi
if [ -n "$D" ] && [ -d "$D" ]; then
  printf '%s disarmed by gpurent billing autostop --off\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >> "$D/events.log" 2>/dev/null
fi
true

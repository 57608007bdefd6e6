# shellcheck shell=sh
# Arm the watchdog (autostop.arm), one round trip: stop the live one (exact PID),
# replace the config from stdin (plus ARMED_AT), start $ST/autostop-SHORT.sh with the
# one detach starter. Prints gr_pid PID STARTTIME, gr_mode, gr_armed_at.
SESSION=@SESSION@; SHORT=@SHORT@; MODE=@MODE@
# gpurent-include: autostop_lib.sh
# gpurent-include: detach.sh
wd_stop "$SESSION"
F="$ST/autostop-$SHORT.sh"; C="$ST/config"
[ -f "$F" ] || { echo "gr_error $F is missing"; exit 1; }
{ { cat && echo "ARMED_AT=$(date +%s)"; } > "$C.tmp" && mv -f "$C.tmp" "$C"; } || exit 1
rm -f "$ST/pid" "$ST/readings" "$ST/mode"
detach_start "$SESSION" "$MODE" "$ST/nohup.out" sh "$F" "$C"; rc=$?
[ "$rc" = 4 ] && { echo "gr_refuse tmux is not installed on this box"; exit 3; }
[ "$rc" = 0 ] || { echo "gr_error tmux new-session failed"; exit 1; }
echo "$DETACH_MODE" > "$ST/mode"
i=0; while [ ! -s "$ST/pid" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
[ -s "$ST/pid" ] || { echo "gr_error the watchdog wrote no PID within 10 s; see $ST/watchdog.log"; exit 1; }
read -r p s < "$ST/pid"
echo "gr_pid $p $s"; echo "gr_mode $(cat "$ST/mode")"; echo "gr_armed_at $(sed -n 's/^ARMED_AT=//p' "$C")"

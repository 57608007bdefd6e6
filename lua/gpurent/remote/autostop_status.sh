# shellcheck shell=sh
# The watchdog's state (autostop.status), read only: gr_* lines parsed by
# autostop.parse_status.
D=@DURABLE@
# gpurent-include: autostop_lib.sh
echo "gr_now $(date +%s)"
if [ -d "$ST" ]; then echo "gr_dir 1"; else echo "gr_dir 0"; fi
if wd_alive "$WPID" "$WST"; then echo "gr_alive 1 $WPID"; else echo "gr_alive 0 ${WPID:-none}"; fi
[ -f "$ST/mode" ] && echo "gr_mode $(cat "$ST/mode")"
[ -f "$ST/config" ] && sed -n 's/^\([A-Z_]*\)=/gr_cfg \1 /p' "$ST/config"
[ -f "$ST/readings" ] && sed 's/^\([a-z_]*\)=/gr_read \1 /' "$ST/readings"
for f in "$ST"/autostop-*.sh; do [ -f "$f" ] && echo "gr_script $f"; done
if [ -n "$D" ] && [ -f "$D/last-stop" ]; then sed 's/^/gr_stop /' "$D/last-stop"
elif [ -f "$ST/last-stop" ]; then sed 's/^/gr_stop /' "$ST/last-stop"; fi
[ -f "$ST/watchdog.log" ] && tail -n 5 "$ST/watchdog.log" | sed 's/^/gr_log /'
true

# shellcheck shell=sh
# The current attempt's wrapper and mode (detach.current), for a relaunch of the
# identical command. Prints "attempt N", "script PATH", "mode M".
M=@META@
cur=$(cat "$M/current" 2>/dev/null || echo 0)
echo "attempt $cur"
echo "script $(cat "$M/a$cur/script" 2>/dev/null)"
echo "mode $(cat "$M/a$cur/mode" 2>/dev/null)"

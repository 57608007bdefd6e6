# shellcheck shell=sh
# S-PARTITION (gotchas/slurm.lua): the partition's availability, time limit, GRES and
# its nodes' states, one sinfo line per node state (PARTITION empty: the default one,
# marked * by sinfo). Prints "part NAME|AVAIL|TIMELIMIT|GRES|NODES|STATE|REASON" lines,
# "sinfo_rc N" and "sinfo_err ..." when sinfo fails.
PARTITION=@PARTITION@
if ! command -v sinfo >/dev/null 2>&1; then echo "sinfo_rc 127"; echo "done"; exit 0; fi
if [ -n "$PARTITION" ]; then out=$(sinfo -h -p "$PARTITION" -o '%P|%a|%l|%G|%D|%T|%E' 2>&1); rc=$?
else out=$(sinfo -h -o '%P|%a|%l|%G|%D|%T|%E' 2>&1); rc=$?; fi
echo "sinfo_rc $rc"
if [ "$rc" = 0 ]; then printf '%s\n' "$out" | sed -n 's/^/part /p'; else printf '%s\n' "$out" | head -n 3 | sed 's/^/sinfo_err /'; fi
echo "done"

# shellcheck shell=sh
# `gpurent clean HOST --delete PATH ...` (commands/clean.lua), after the listing was
# re-read and the person approved: remove each exact PATHS entry (one a line) and
# nothing else. Prints "deleted PATH" or "bad PATH: WHY".
PATHS=@PATHS@
while IFS= read -r p; do
  [ -n "$p" ] || continue
  if [ ! -e "$p" ] && [ ! -L "$p" ]; then echo "bad $p: no longer exists"; continue; fi
  if rm -rf -- "$p" 2>/dev/null && [ ! -e "$p" ]; then echo "deleted $p"; else echo "bad $p: rm -rf failed"; fi
done <<EOF_PATHS
$PATHS
EOF_PATHS
true

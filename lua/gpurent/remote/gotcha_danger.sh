# shellcheck shell=sh
# AD-DANGER (the platform gotcha module): for every run dir under LIVE_ROOT, each SYNC file
# (one a line) and its durable copy's size under DURABLE_ROOT: "ck RUN/FILE SIZE SIZE|none".
LIVE_ROOT=@LIVE_ROOT@; DURABLE_ROOT=@DURABLE_ROOT@; SYNC=@SYNC@
# gpurent-include: home_path.sh
live=$(home_path "$LIVE_ROOT"); durable=$(home_path "$DURABLE_ROOT")
for d in "$live"/*/; do
  [ -d "$d" ] || continue
  n=$(basename "$d")
  while IFS= read -r f; do
    [ -n "$f" ] || continue
    if [ -f "$d/$f" ]; then
      s=$(wc -c < "$d/$f" | tr -d ' '); t="$durable/$n/$f"; ds=none
      [ -f "$t" ] && ds=$(wc -c < "$t" | tr -d ' ')
      echo "ck $n/$f $s $ds"
    fi
  done <<EOF_SYNC
$SYNC
EOF_SYNC
done
echo "done"

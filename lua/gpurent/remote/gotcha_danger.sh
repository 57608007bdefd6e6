# shellcheck shell=sh
# AD-DANGER (the platform gotcha module): every live checkpoint that a 15-day release
# would delete, with its durable copy's size under DURABLE_ROOT/<name>/ (or "none"):
# each SYNC file (one a line) in every dir under LIVE_ROOT (the seed's layout), and in
# every gpurent run's out dir and sealed export under RUN_PARENT/*RUN_SUFFIX (the
# profile's run_root with its {project} as *). Prints "ck PATH SIZE SIZE|none", "done".
LIVE_ROOT=@LIVE_ROOT@; DURABLE_ROOT=@DURABLE_ROOT@; SYNC=@SYNC@
RUN_PARENT=@RUN_PARENT@; RUN_SUFFIX=@RUN_SUFFIX@
# gpurent-include: home_path.sh
live=$(home_path "$LIVE_ROOT"); durable=$(home_path "$DURABLE_ROOT")
# check_dir DIR NAME: each SYNC file in DIR against $durable/NAME/FILE
check_dir() {
  while IFS= read -r f; do
    [ -n "$f" ] || continue
    if [ -f "$1/$f" ]; then
      s=$(wc -c < "$1/$f" | tr -d ' '); t="$durable/$2/$f"; ds=none
      [ -f "$t" ] && ds=$(wc -c < "$t" | tr -d ' ')
      echo "ck ${1%/}/$f $s $ds"
    fi
  done <<EOF_SYNC
$SYNC
EOF_SYNC
}
for d in "$live"/*/; do
  [ -d "$d" ] || continue
  check_dir "${d%/}" "$(basename "$d")"
done
if [ -n "$RUN_PARENT" ]; then
  parent=$(home_path "$RUN_PARENT")
  for p in "$parent"/*/; do
    root="${p%/}$RUN_SUFFIX"
    [ -d "$root/active" ] || [ -d "$root/export" ] || continue
    for d in "$root"/active/*/; do
      [ -d "$d/out" ] && check_dir "${d%/}/out" "$(basename "$d")"
    done
    for d in "$root"/export/*/; do
      [ -d "$d" ] && check_dir "${d%/}" "$(basename "$d")"
    done
  done
fi
echo "done"

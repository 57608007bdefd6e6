# shellcheck shell=sh
# `gpurent clean HOST` (commands/clean.lua): the deletable hogs beside the ones
# storage.hogs measures. "many N PATH": a directory under a TIERS path (one a line)
# holding at least MIN_FILES entries (an inode hog, AD4); "stale<TAB>BYTES<TAB>PATH<TAB>WHY": a
# scratch file (SCRATCH names) of a run no wrapper is running anymore, or a checkpoint
# in a quarantined capsule, under RUN_PARENT/*RUN_SUFFIX or LIVE_ROOT/*. Then "done".
TIERS=@TIERS@; MIN_FILES=@MIN_FILES@; SCRATCH=@SCRATCH@
RUN_PARENT=@RUN_PARENT@; RUN_SUFFIX=@RUN_SUFFIX@; LIVE_ROOT=@LIVE_ROOT@
# gpurent-include: home_path.sh
LC_ALL=C; export LC_ALL
while IFS= read -r t; do
  [ -n "$t" ] || continue
  t=$(home_path "$t")
  [ -d "$t" ] || continue
  find "$t" -xdev -mindepth 1 -maxdepth 6 -type d 2>/dev/null | while IFS= read -r d; do
    n=$(find "$d" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l | tr -d ' ')
    [ "$n" -ge "$MIN_FILES" ] && echo "many $n $d"
  done
done <<EOF_TIERS
$TIERS
EOF_TIERS
size() { wc -c < "$1" | tr -d ' '; }
# scratch DIR WHY: each scratch name present in DIR
scratch() {
  while IFS= read -r s; do
    [ -n "$s" ] && [ -f "$1/$s" ] && printf 'stale\t%s\t%s\t%s\n' "$(size "$1/$s")" "$1/$s" "$2"
  done <<EOF_SCRATCH
$SCRATCH
EOF_SCRATCH
}
# a run is over when its current attempt wrote DONE or FAILED and its wrapper is gone
over() {
  a=$(cat "$1/.gpurent/current" 2>/dev/null) || return 0
  [ -e "$1/.gpurent/a$a/DONE" ] || [ -e "$1/.gpurent/a$a/FAILED" ] || return 1
  pid=$(cat "$1/.gpurent/a$a/pid" 2>/dev/null) || return 0
  ! kill -0 "$pid" 2>/dev/null
}
if [ -n "$RUN_PARENT" ]; then
  parent=$(home_path "$RUN_PARENT")
  for p in "$parent"/*/; do
    root="${p%/}$RUN_SUFFIX"
    for d in "$root"/active/*/; do
      [ -d "$d/out" ] && over "${d%/}" && scratch "${d%/}/out" "scratch of a finished run"
    done
    for d in "$root"/quarantine/*/; do
      [ -d "$d" ] || continue
      find "${d%/}" -type f \( -name '*.pth' -o -name '*.pt' -o -name '*.ckpt' \) 2>/dev/null | while IFS= read -r f; do
        printf 'stale\t%s\t%s\t%s\n' "$(size "$f")" "$f" "checkpoint of a quarantined capsule"
      done
    done
  done
fi
if [ -n "$LIVE_ROOT" ]; then
  live=$(home_path "$LIVE_ROOT")
  for d in "$live"/*/; do [ -d "$d" ] && scratch "${d%/}" "scratch checkpoint"; done
fi
echo "done"

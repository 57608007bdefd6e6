# shellcheck shell=sh
# AD7 (the platform gotcha module): TensorBoard event files inside and outside the pinned
# LOGDIR, its links (and dangling ones), the runs on disk, and the pinned server's
# /data/runs on PORT.
logdir=@LOGDIR@; PORT=@PORT@
# gpurent-include: tb_lib.sh
for l in "$logdir"/* "$logdir"/.[!.]*; do [ -L "$l" ] && echo "link $(readlink -f "$l")"; done
find "$HOME" -maxdepth 8 \( -path "$HOME/miniconda3" -o -path "$HOME/.cache" -o -path "$logdir" \) -prune \
  -o -type f -name 'events.out.tfevents.*' -print 2>/dev/null | head -n 500 | sed 's/^/ev /'
find "$logdir" -maxdepth 8 -type f -name 'events.out.tfevents.*' 2>/dev/null | head -n 1 | sed 's/^/in /'
for e in "$logdir"/* "$logdir"/.[!.]*; do
  n=${e##*/}
  if [ -L "$e" ] && [ ! -e "$e" ]; then printf 'dangling %s\t%s\n' "$n" "$(readlink "$e")"; continue; fi
  [ -d "$e" ] || continue
  find -L "$e" -maxdepth 8 -type f -name 'events.out.tfevents.*' 2>/dev/null | head -n 1 | grep -q . && echo "run $n"
done
find "$logdir" -maxdepth 1 -type f -name 'events.out.tfevents.*' 2>/dev/null | head -n 1 | grep -q . && echo "run ."
tb_runs "$PORT"
echo "done"

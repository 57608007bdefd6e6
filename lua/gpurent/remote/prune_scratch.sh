# shellcheck shell=sh
# Free space for a run (phases/watch.lua prune_scratch): in every OTHER run of the
# project whose current attempt wrote DONE, remove the scratch files (NAMES, one a
# line) from its out/. Prints "pruned PATH".
ROOT=@ROOT@; ACTIVE=@ACTIVE@; NAMES=@NAMES@
for a in "$ROOT"/active/*/; do
  a=${a%/}
  [ "$a" = "$ACTIVE" ] && continue
  c=$(cat "$a/.gpurent/current" 2>/dev/null) || continue
  [ -f "$a/.gpurent/a$c/DONE" ] || continue
  while IFS= read -r n; do
    [ -n "$n" ] && [ -f "$a/out/$n" ] && rm -f "$a/out/$n" && echo "pruned $a/out/$n"
  done <<EOF_NAMES
$NAMES
EOF_NAMES
done
true

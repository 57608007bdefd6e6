# shellcheck shell=sh
# Install one sweep cell on this box (lua/gpurent/lifecycle/queue.lua): its run
# wrapper as <cell>/.gpurent/run-v1.sh (the same wrapper a single run gets) and its
# run.json, before the queue starts. An existing wrapper is kept when identical and
# refused when different (a live job's script is never rewritten). Prints "cell ID".
A=@CELL_ACTIVE@; ID=@ID@; WRAPPER=@WRAPPER@; RUN_JSON=@RUN_JSON@
M="$A/.gpurent"; W="$M/run-v1.sh"
mkdir -p "$M" "$A/out" || exit 1
if [ -f "$W" ]; then
  [ "$(cat "$W")" = "$(printf '%s' "$WRAPPER")" ] || { echo "refuse $W exists with another text"; exit 3; }
else
  rm -f "$W.tmp" && printf '%s' "$WRAPPER" > "$W.tmp" && chmod 755 "$W.tmp" && mv -f "$W.tmp" "$W" || exit 1
fi
printf '%s\n' "$RUN_JSON" > "$A/run.json.tmp" && mv -f "$A/run.json.tmp" "$A/run.json" || exit 1
echo "cell $ID"

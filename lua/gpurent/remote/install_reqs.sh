# shellcheck shell=sh
# The remote install (lifecycle/phases/install.lua, seed AD9): copy CODE/REQ to OUT
# without the lines whose package matches a FILTER glob (one a line: the framework
# pins whose build the image matches to its GPU), then install the rest with PY's pip,
# and report the torch version before and after. Prints "torch_before V", "filtered
# LINE" per removed line, "kept N", "pip_exit N" (when something was left to install),
# "torch_after V". Option lines (-r, -e, --index-url ...) are kept as they are.
CODE=@CODE@; REQ=@REQ@; FILTER=@FILTER@; PY=@PY@; OUT=@OUT@
torch_version() { "$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null || echo none; }
echo "torch_before $(torch_version)"
mkdir -p "$(dirname "$OUT")" || exit 1
: > "$OUT.tmp" || exit 1
kept=0
while IFS= read -r line || [ -n "$line" ]; do
  bare=$(printf '%s' "$line" | sed -e 's/[[:space:]]*#.*$//' -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//')
  if [ -z "$bare" ]; then continue; fi
  case $bare in
    -*) printf '%s\n' "$line" >> "$OUT.tmp"; continue ;;
  esac
  name=$(printf '%s' "$bare" | sed -E 's/^([A-Za-z0-9_.-]+).*/\1/' | tr 'A-Z_.' 'a-z--')
  drop=
  while IFS= read -r g; do
    [ -n "$g" ] || continue
    # shellcheck disable=SC2254 # the filter entries are globs on purpose
    case $name in $g) drop=1 ;; esac
  done <<EOF_FILTER
$FILTER
EOF_FILTER
  if [ -n "$drop" ]; then echo "filtered $bare"; else printf '%s\n' "$line" >> "$OUT.tmp"; kept=$((kept + 1)); fi
done < "$CODE/$REQ"
mv -f "$OUT.tmp" "$OUT" || exit 1
echo "kept $kept"
if [ "$kept" -gt 0 ]; then
  "$PY" -m pip install -r "$OUT" > "$OUT.log" 2>&1
  rc=$?
  tail -n 20 "$OUT.log" | sed 's/^/pip| /'
  echo "pip_exit $rc"
fi
echo "torch_after $(torch_version)"

# shellcheck shell=sh
# The checkpoint load check before the seal (phases/close.lua): run CHECK (shell code
# reading the checkpoint's path from $CKPT; empty: the one launch kept in
# META/load_check) in CODE on each checkpoint FILES (one a line) of the partial
# capsule P. Prints "loaded PATH" or "bad does not load: PATH: LAST OUTPUT LINE".
P=@PARTIAL@; CODE=@CODE@; META=@META@; FILES=@FILES@; CHECK=@CHECK@
if [ -z "$CHECK" ]; then
  CHECK=$(cat "$META/load_check" 2>/dev/null) || { echo "bad no load check: none given and $META/load_check is missing"; exit 0; }
fi
[ -d "$CODE" ] || CODE=$P
while IFS= read -r f; do
  [ -n "$f" ] || continue
  out=$(cd "$CODE" && CKPT="$P/$f" && export CKPT && eval "$CHECK" 2>&1 < /dev/null)
  rc=$?
  if [ "$rc" -eq 0 ]; then echo "loaded $f"
  else echo "bad does not load: $f (exit $rc): $(printf '%s\n' "$out" | grep -v '^[[:space:]]*$' | tail -n 1)"; fi
done <<EOF_FILES
$FILES
EOF_FILES
true

# shellcheck shell=sh
# Build a run's capsule (phases/close.lua): copy each roster file (FILES, one a line;
# run.json from ACTIVE, the rest from OUT) into PARTIAL, re-hash each copy, refuse
# scratch (SCRATCH, one name a line), temp files and caches. Prints "file BYTES SHA256
# PATH" and "bad WHY" lines; "already EXPORT" when the export is sealed (never rebuilt).
A=@ACTIVE@; OUT=@OUT@; P=@PARTIAL@; E=@EXPORT@; FILES=@FILES@; SCRATCH=@SCRATCH@
hash() { sha256sum < "$1" | cut -d' ' -f1; }
if [ -e "$E" ]; then
  echo "already $E"
  while IFS= read -r f; do
    [ -n "$f" ] || continue
    if [ -f "$E/$f" ]; then echo "file $(wc -c < "$E/$f") $(hash "$E/$f") $f"; else echo "bad missing from the sealed export: $f"; fi
  done <<EOF_FILES
$FILES
EOF_FILES
  exit 0
fi
{ rm -rf "$P" && mkdir -p "$P"; } || { echo "bad cannot create $P"; exit 1; }
src_of() { if [ "$1" = run.json ]; then echo "$A/run.json"; else echo "$OUT/$1"; fi; }
while IFS= read -r f; do
  [ -n "$f" ] || continue
  s=$(src_of "$f")
  if [ ! -f "$s" ]; then echo "bad missing: $f (expected at $s)"; continue; fi
  if [ ! -s "$s" ]; then echo "bad empty: $f"; continue; fi
  { mkdir -p "$P/$(dirname "$f")" && cp -p "$s" "$P/$f.tmp" && mv -f "$P/$f.tmp" "$P/$f"; } || { echo "bad copy failed: $f"; continue; }
  hs=$(hash "$s"); hp=$(hash "$P/$f")
  if [ "$hs" != "$hp" ]; then echo "bad sha256 differs after the copy: $f"; continue; fi
  echo "file $(wc -c < "$P/$f") $hp $f"
done <<EOF_FILES
$FILES
EOF_FILES
# find's name tests: the temp suffixes, then each scratch name
set -- -name '*.tmp' -o -name '*.part'
while IFS= read -r s; do [ -n "$s" ] && set -- "$@" -o -name "$s"; done <<EOF_SCRATCH
$SCRATCH
EOF_SCRATCH
extra=$(cd "$P" && find . -type f \( "$@" \) | head -n 5)
[ -n "$extra" ] && echo "bad not allowed in an export: $extra"
true

# shellcheck shell=sh
# Facts about a result root on the durable tier (phases/pull.lua): one line per roster
# file (FILES, one relative path a line): "file BYTES SHA256 PATH", "missing PATH" or
# "bad symlink PATH"; then "entry PATH" for every entry present.
R=@ROOT@; FILES=@FILES@
cd "$R" || { echo "bad no result root $R"; exit 1; }
while IFS= read -r f; do
  [ -n "$f" ] || continue
  if [ -L "$f" ]; then echo "bad symlink $f"
  elif [ -f "$f" ]; then echo "file $(wc -c < "$f") $(sha256sum < "$f" | cut -d' ' -f1) $f"
  else echo "missing $f"; fi
done <<EOF_FILES
$FILES
EOF_FILES
find . -mindepth 1 | sed 's|^\./|entry |'

# shellcheck shell=sh
# AD9 (the platform gotcha module): the installed builds of PINS (one package a line) and the
# pins of them in every requirements*.txt under ROOT (~ is $HOME).
PREFIX=@PREFIX@; PINS=@PINS@; ROOT=@ROOT@
# gpurent-include: dist_lib.sh
# gpurent-include: home_path.sh
dists "$PREFIX" "$PINS"
alt=$(printf '%s\n' "$PINS" | grep -v '^$' | paste -sd '|' -)
find "$(home_path "$ROOT")" -maxdepth 4 \( -path "$HOME/miniconda3" -o -path "$HOME/.cache" \) -prune -o -type f -name 'requirements*.txt' -print 2>/dev/null | head -n 50 | while IFS= read -r f; do
  echo "file $f"
  grep -inE "^[[:space:]]*($alt)[[:space:]]*(\[[^]]*\])?[[:space:]]*(===|==|~=|!=|<=|>=|<|>)" "$f" | sed "s|^|pin $f:|"
done
echo "done"

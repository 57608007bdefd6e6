# shellcheck shell=sh
# U-CRLF (gotchas/universal.lua): every *.sh under ROOTS (one path a line, ~ is $HOME)
# as "crlf PATH" or "lf PATH".
ROOTS=@ROOTS@
# gpurent-include: home_path.sh
set --
while IFS= read -r r; do [ -n "$r" ] && set -- "$@" "$(home_path "$r")"; done <<EOF_ROOTS
$ROOTS
EOF_ROOTS
cr=$(printf '\r')
find "$@" -maxdepth 4 \( -path "$HOME/miniconda3" -o -path "$HOME/.cache" -o -name .git \) -prune -o -type f -name '*.sh' -print 2>/dev/null | sort -u | head -n 500 | while IFS= read -r f; do
  if grep -q "$cr" "$f"; then echo "crlf $f"; else echo "lf $f"; fi
done
echo "done"

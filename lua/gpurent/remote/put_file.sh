# shellcheck shell=sh
# Replace FILE with stdin atomically (FILE.tmp, then a rename).
F=@FILE@
cat > "$F.tmp" && mv -f "$F.tmp" "$F"

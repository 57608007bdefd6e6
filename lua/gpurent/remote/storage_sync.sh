# shellcheck shell=sh
# Checked sync on the box (storage.checked_sync): copy SRC to DST (in DIR, on the tier
# at TIER) through DST.part and a rename, then print both sizes and SHA-256s for the
# caller to compare. On failure: "step NAME", "err TEXT", the tier's df lines, exit 20-25.
# Paths of ~ or ~/x are the box's $HOME.
# gpurent-include: home_path.sh
LC_ALL=C; export LC_ALL
src=$(home_path @SRC@); dir=$(home_path @DIR@); dst=$(home_path @DST@); tierp=$(home_path @TIER@)
hash() { if command -v sha256sum >/dev/null 2>&1; then sha256sum < "$1" | cut -d' ' -f1
  elif command -v openssl >/dev/null 2>&1; then openssl dgst -sha256 < "$1" | sed 's/^.*= *//'
  else return 1; fi; }
size() { wc -c < "$1" | tr -d ' '; }
state() { echo "df_bytes $(df -P -B1 "$1" 2>&1 | tail -n 1)"; echo "df_inodes $(df -P -i "$1" 2>&1 | tail -n 1)"; }
[ -f "$src" ] || { echo "step src-missing"; exit 20; }
sh_src=$(hash "$src") || { echo "step no-hash-tool"; exit 21; }
echo "src $(size "$src") $sh_src"
if ! err=$(mkdir -p "$dir" 2>&1); then echo "step mkdir"; echo "err $err"; state "$tierp"; exit 22; fi
if ! err=$(cp "$src" "$dst.part" 2>&1); then rm -f "$dst.part"; echo "step cp"; echo "err $err"; state "$tierp"; exit 23; fi
if ! err=$(mv -f "$dst.part" "$dst" 2>&1); then rm -f "$dst.part"; echo "step rename"; echo "err $err"; state "$tierp"; exit 24; fi
sync 2>/dev/null
[ -f "$dst" ] || { echo "step dst-missing"; state "$tierp"; exit 25; }
echo "dst $(size "$dst") $(hash "$dst")"

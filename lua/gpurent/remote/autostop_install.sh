# shellcheck shell=sh
# Install the watchdog from stdin as $ST/autostop-SHORT.sh (autostop.arm). Content-
# addressed: an existing file with the same SHA-256 is reused, one with other content
# is never rewritten (gr_refuse, exit 3); a new one is checked against HASH first.
SHORT=@SHORT@; HASH=@HASH@
# gpurent-include: autostop_lib.sh
F="$ST/autostop-$SHORT.sh"
mkdir -p "$ST" || exit 1
if [ -f "$F" ]; then
  cat > /dev/null
  if [ "$(sha256sum < "$F" | cut -d' ' -f1)" = "$HASH" ]; then echo "gr_script reused $F"; exit 0; fi
  echo "gr_refuse $F exists with other content (never rewritten)"; exit 3
fi
T="$F.tmp.$$"
rm -f "$T"
(set -C; cat > "$T") || exit 1
if [ "$(sha256sum < "$T" | cut -d' ' -f1)" != "$HASH" ]; then rm -f "$T"; echo "gr_refuse the pushed script does not hash to $HASH"; exit 3; fi
chmod 755 "$T" && ln "$T" "$F" && rm -f "$T" && echo "gr_script installed $F"

# shellcheck shell=sh
# Seal a validated capsule (phases/close.lua): rename PARTIAL to EXPORT on one
# filesystem, never over an existing export. Prints "sealed EXPORT" or "bad WHY".
P=@PARTIAL@; E=@EXPORT@
sync
[ -e "$E" ] && { echo "bad $E appeared meanwhile: not overwritten"; exit 1; }
{ mv -T -n "$P" "$E" && [ -d "$E" ] && [ ! -e "$P" ] && echo "sealed $E"; } || { echo "bad rename failed"; exit 1; }

# shellcheck shell=sh
# The SHA-256 of each file named on stdin (NUL-separated; billing/inventory.lua):
# "SHA256<TAB>PATH" records, each ended by a NUL. POSIX: xargs -0 does the NUL split.
# shellcheck disable=SC2016 # the inner script is expanded by the inner sh, per file
xargs -0 -r sh -c 'for f do h=$(sha256sum < "$f" | cut -c1-64) || h=ERROR; printf "%s\t%s\0" "$h" "$f"; done' sh

#!/usr/bin/env bash
# bench/run.sh: `make bench`. Prints, side by side in one run, gpurent against the
# peer tools: SHA-256 throughput (gpurent, openssl dgst, sha256sum) on a 512 MiB
# file, and start-up of an empty recipe (wall and peak RSS). Other benchmarks
# (bench/*_bench.sh) run after, each printing its own table.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${GPURENT_BIN:-./gpurent}
M="/usr/bin/python3 bench/measure.py"
work=$(mktemp -d /tmp/gpurent-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT

# Files in /tmp may sit on disk; the page cache holds them after the first read,
# and each tool is given a warm-up pass, so all three read from memory.
file=$work/blob
head -c $((512 * 1024 * 1024)) /dev/urandom > "$file"
size_mib=512

cat > "$work/sha.lua" <<'LUA'
local hex = require("gpurent.util.hash").sha256_file(arg[1]); print(hex)
LUA
want=$(sha256sum "$file" | cut -d' ' -f1)
got=$($BIN run "$work/sha.lua" -- "$file")
[ "$want" = "$got" ] || { echo "bench: gpurent hash differs from sha256sum" >&2; exit 1; }

t_gr=$($M 3 $BIN run "$work/sha.lua" -- "$file")
t_ossl=$($M 3 openssl dgst -sha256 "$file")
t_core=$($M 3 sha256sum "$file")
rate() { awk -v s="$1" -v m="$size_mib" 'BEGIN { printf "%.0f", m / s }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b / a }'; }

echo "SHA-256 of a 512 MiB file (best of 3)"
printf '  %-22s %10s %12s\n' tool seconds MiB/s
printf '  %-22s %10.3f %12s\n' "gpurent" "$t_gr" "$(rate "$t_gr")"
printf '  %-22s %10.3f %12s\n' "openssl dgst -sha256" "$t_ossl" "$(rate "$t_ossl")"
printf '  %-22s %10.3f %12s\n' "sha256sum (coreutils)" "$t_core" "$(rate "$t_core")"
echo "  gpurent vs openssl: $(ratio "$t_gr" "$t_ossl")x (target >= 0.9x)"
echo "  gpurent vs sha256sum: $(ratio "$t_gr" "$t_core")x (target >= 3x)"
echo

: > "$work/empty.lua"
# peak RSS as the process itself sees it at its end (VmHWM)
echo 'for l in io.lines("/proc/self/status") do local k = l:match("^VmHWM:%s*(%d+)") if k then print(k) end end' \
  > "$work/hwm.lua"
s_gr=$($M 50 $BIN run "$work/empty.lua")
s_lua=$($M 50 lua5.4 "$work/empty.lua")
rss_gr=$($BIN run "$work/hwm.lua")
rss_lua=$(lua5.4 "$work/hwm.lua")
ms() { awk -v s="$1" 'BEGIN { printf "%.2f", s * 1000 }'; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
echo "Start-up, empty recipe (best of 50 wall; peak RSS)"
printf '  %-22s %10s %12s\n' tool ms "RSS MiB"
printf '  %-22s %10s %12s\n' "gpurent run" "$(ms "$s_gr")" "$(mib "$rss_gr")"
printf '  %-22s %10s %12s\n' "lua5.4 (reference)" "$(ms "$s_lua")" "$(mib "$rss_lua")"
echo "  targets: gpurent under 10 ms wall and under 5 MiB peak RSS"

for b in bench/*_bench.sh; do
  [ -e "$b" ] || continue
  echo
  bash "$b"
done

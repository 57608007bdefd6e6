#!/usr/bin/env bash
# bench/tree_bench.sh (run by `make bench`): a results tree (1000 files of 4 KiB and
# 10 of 8 MiB) moved both ways over an emulated long link (bench/relay.c: RTT 50 ms,
# unbounded buffers) in front of a loopback sshd, by sftp -r, scp -r, rsync -a (over
# ssh through the same relay) and gpurent get/put, side by side in one run.
# TREE_RTT_MS, TREE_SMALL (count of 4 KiB files), TREE_BIG (count of 8 MiB files),
# TREE_TOOLS (e.g. "rsync gpurent") narrow it; GPURENT_BASELINE_BIN adds another gpurent build.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${GPURENT_BIN:-./gpurent}
exec "$BIN" run bench/tree_bench.lua -- "$BIN"

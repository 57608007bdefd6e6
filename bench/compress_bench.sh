#!/usr/bin/env bash
# bench/compress_bench.sh (run by `make bench`): a text-heavy results tree (training
# logs and JSON metrics, bench/text_tree.lua: 200 files, 20 MiB) moved both ways over
# an emulated long link (bench/relay.c: RTT 50 ms) in front of a loopback sshd, by
# gpurent put/get with and without --compress and by rsync -a and rsync -az (over ssh
# through the same relay), side by side in one run, with the bytes each put sent over
# the link; once with unlimited bandwidth and once paced to COMPRESS_RATE_MIBPS (4;
# 0 skips it) each way. COMPRESS_RTT_MS, COMPRESS_FILES, COMPRESS_MIB narrow it.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${GPURENT_BIN:-./gpurent}
exec "$BIN" run bench/compress_bench.lua -- "$BIN"

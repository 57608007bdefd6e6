#!/usr/bin/env bash
# bench/file_bench.sh (run by `make bench`): one large file moved both ways over an
# emulated long link (bench/relay.py in front of a loopback sshd) by gpurent put/get
# (several streams: the count gpurent picks, shown), sftp, scp and rsync, side by
# side in one run, at RTT 50 ms (256 MiB) and 200 ms (64 MiB: the peer tools move
# about 6 MiB/s there, and 256 MiB would take 4 minutes per tool); then 512 MiB over
# loopback (no relay), gpurent against sftp.
# FILE_RTTS (e.g. "50"), FILE_MIB_50, FILE_MIB_200, FILE_LOOPBACK_MIB (0: skip),
# FILE_TOOLS (e.g. "gpurent sftp") narrow it.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${GPURENT_BIN:-./gpurent}
exec "$BIN" run bench/file_bench.lua -- "$BIN"

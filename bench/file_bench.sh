#!/usr/bin/env bash
# bench/file_bench.sh (run by `make bench`): one large file moved both ways over an
# emulated long link (bench/relay.c in front of a loopback sshd) by gpurent put/get
# (several streams: the count gpurent picks, shown), sftp, scp and rsync, side by
# side in one run, at RTT 50 ms and 200 ms (256 MiB each; at 200 ms the peer tools
# move about 8 MiB/s, so scp and rsync add 2 minutes: FILE_TOOLS_200="gpurent sftp"
# leaves them out); then 512 MiB over loopback (no relay), gpurent (--no-verify,
# as the peers check nothing) against sftp.
# FILE_RTTS (e.g. "50"), FILE_MIB_50, FILE_MIB_200, FILE_LOOPBACK_MIB (0: skip),
# FILE_TOOLS, FILE_TOOLS_200 (e.g. "gpurent sftp") narrow it; GPURENT_BASELINE_BIN adds another
# gpurent build as the row "baseline" (before/after in one run).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${GPURENT_BIN:-./gpurent}
exec "$BIN" run bench/file_bench.lua -- "$BIN"

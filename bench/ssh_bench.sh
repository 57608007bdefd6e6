#!/usr/bin/env bash
# bench/ssh_bench.sh (run by `make bench`): gpurent's SSH primitives side by side
# with OpenSSH (ssh, ssh ControlMaster, scp, sftp), rsync, parallel-ssh and
# `ansible -m raw`, against loopback sshd daemons (tests/helpers/sshd.lua: root's
# shell is /bin/sh inside the daemon's namespace; two daemons for 127.0.0.1-32).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${GPURENT_BIN:-./gpurent}
exec "$BIN" run bench/ssh_bench.lua -- "$BIN"

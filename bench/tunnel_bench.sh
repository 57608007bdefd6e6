#!/usr/bin/env bash
# bench/tunnel_bench.sh: bytes per second through `gpurent tunnel` against `ssh -L`
# (issue 16), both to the same loopback sshd through the same emulated long link
# (bench/relay.c: RTT/2 each way, unbounded buffers), side by side in one run, plus
# the raw TCP ceiling of the link (the relay straight to the data server, no SSH).
# A data server on 127.0.0.1 (as the box sees it) sends or swallows TUNNEL_MIB MiB
# per connection; each row is one connection down (server -> client, TensorBoard's
# direction), one up, and the median time of 20 sequential 1-byte requests (a
# new connection each: a direct-tcpip channel open per request).
# TUNNEL_RTT_MS (default 50), TUNNEL_MIB (default 64), TUNNEL_REPS (best of, default 1).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${GPURENT_BIN:-./gpurent}
exec "$BIN" run bench/tunnel_bench.lua -- "$BIN"

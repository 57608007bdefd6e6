#!/usr/bin/env python3
"""bench/relay.py: a long link emulated in user space (the kernel here has no netem).

    python3 bench/relay.py --rtt-ms 50 --target 127.0.0.1:2222 [--listen 127.0.0.1:0] [--rate-mibps R]
                           [--count FILE]

Listens on --listen (port 0: any free port), prints "PORT\\n" on stdout once it
accepts, and relays every connection to --target, delaying each direction by
RTT/2. Buffering is unbounded: bytes read are queued with their delivery time
and the reader never waits for the writer, so what is in flight is bounded only
by the tools' own windows (SSH channel windows, TCP windows of the two loopback
legs are never the limit). --rate-mibps paces each direction of each connection to
R MiB/s (tests use it to stop a transfer midway). --count FILE keeps in FILE the
bytes delivered so far, both directions of every connection (rewritten at most every
20 ms: tests count what crossed the link). Loopback only; runs until
killed (SIGTERM/SIGINT).
Used by bench/tree_bench.sh and usable by tests (tests/spec/transfer_tree_spec.lua).
"""
import argparse
import asyncio
import signal
import socket
import sys

CHUNK = 256 * 1024
delivered = [0]  # bytes written to either side, for --count


def hostport(s):
    host, _, port = s.rpartition(":")
    return host or "127.0.0.1", int(port)


async def pipe(reader, writer, delay, rate):
    loop = asyncio.get_running_loop()
    queue = asyncio.Queue()  # unbounded: (deliver_at, bytes); b"" marks EOF
    free_at = [0.0]  # --rate-mibps: when the bytes written so far have gone out

    async def pump_in():
        try:
            while True:
                data = await reader.read(CHUNK)
                queue.put_nowait((loop.time() + delay, data))
                if not data:
                    return
        except (ConnectionError, OSError):
            queue.put_nowait((loop.time() + delay, b""))

    async def pump_out():
        try:
            while True:
                at, data = await queue.get()
                wait = at - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    await writer.drain()
                    return
                writer.write(data)
                delivered[0] += len(data)
                # drain only paces this writer; the reader above never waits for it
                await writer.drain()
                if rate:
                    # a token bucket: small packets accrue their time and the sleep comes
                    # once it is worth one (asyncio's timers round up to 1 ms, so a sleep
                    # per small packet would pace far below the rate)
                    free_at[0] = max(free_at[0], loop.time()) + len(data) / rate
                    wait = free_at[0] - loop.time()
                    if wait > 0.005:
                        await asyncio.sleep(wait)
        except (ConnectionError, OSError):
            pass

    await asyncio.gather(pump_in(), pump_out())


async def handle(creader, cwriter, target, delay, rate):
    try:
        sreader, swriter = await asyncio.open_connection(*target)
    except OSError:
        cwriter.close()
        return
    for w in (cwriter, swriter):
        sock = w.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        await asyncio.gather(pipe(creader, swriter, delay, rate), pipe(sreader, cwriter, delay, rate))
    finally:
        for w in (cwriter, swriter):
            try:
                w.close()
            except OSError:
                pass


async def keep_count(path):
    import os
    last = None
    while True:
        if delivered[0] != last:
            last = delivered[0]
            with open(path + ".tmp", "w") as f:
                f.write("%d\n" % last)
            os.replace(path + ".tmp", path)
        await asyncio.sleep(0.02)


async def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rtt-ms", type=float, required=True)
    ap.add_argument("--target", required=True, help="HOST:PORT (loopback)")
    ap.add_argument("--listen", default="127.0.0.1:0")
    ap.add_argument("--rate-mibps", type=float, default=0.0, help="pace each direction (0: unpaced)")
    ap.add_argument("--count", help="FILE: keep the bytes delivered so far in it")
    a = ap.parse_args()
    target, listen = hostport(a.target), hostport(a.listen)
    for h in (target[0], listen[0]):
        if not h.startswith("127.") and h not in ("localhost", "::1"):
            sys.exit("relay: loopback only, not " + h)
    delay = a.rtt_ms / 2000.0
    rate = a.rate_mibps * 1048576
    server = await asyncio.start_server(lambda r, w: handle(r, w, target, delay, rate), *listen)
    port = server.sockets[0].getsockname()[1]
    print(port, flush=True)
    counter = asyncio.ensure_future(keep_count(a.count)) if a.count else None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
    if counter:
        counter.cancel()


if __name__ == "__main__":
    asyncio.run(main())

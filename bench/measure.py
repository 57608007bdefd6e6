#!/usr/bin/python3
"""measure.py: run a command N times with stdout discarded; print the best wall
time in seconds. Usage: measure.py N cmd [args...]
(Peak RSS is read by the measured program itself from /proc/self/status VmHWM:
a parent's rusage would count the parent's own pages copied at fork/vfork.)
"""
import os
import sys
import time


def run_once(argv):
    devnull = os.open(os.devnull, os.O_WRONLY)
    t0 = time.perf_counter()
    pid = os.posix_spawnp(argv[0], argv, os.environ,
                          file_actions=[(os.POSIX_SPAWN_DUP2, devnull, 1)])
    _, status = os.waitpid(pid, 0)
    wall = time.perf_counter() - t0
    os.close(devnull)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"measure.py: {' '.join(argv)} failed with status {status}")
    return wall


def main():
    n = int(sys.argv[1])
    print(f"{min(run_once(sys.argv[2:]) for _ in range(n)):.6f}")


if __name__ == "__main__":
    main()

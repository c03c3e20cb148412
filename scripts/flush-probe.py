#!/usr/bin/env python3
"""Flush probe for docs/benchmarks.md (eni-pool, pool_warm): do slow fdatasyncs belong to one
file or to the whole device?

Two threads each overwrite 3,000 bytes of their own zero-filled file and fdatasync it, N times.
For every flush over 500 us it asks whether a flush the other thread started later finished
sooner and in under 400 us (what a second journal acknowledged out of order could gain).

usage: scripts/flush-probe.py [DIR] [N]   (DIR defaults to a new temporary directory)
"""
import bisect
import os
import sys
import tempfile
import threading
import time

FILE_BYTES = 4 << 20
WRITE = b"x" * 3000


def zero_filled(path):
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, b"\0" * FILE_BYTES)
    os.fsync(fd)
    return fd


def flush_loop(fd, n, out):
    for k in range(n):
        os.pwrite(fd, WRITE, (k * len(WRITE)) % (FILE_BYTES - 4096))
        start = time.monotonic_ns()
        os.fdatasync(fd)
        out.append((start, time.monotonic_ns()))


def main():
    base = sys.argv[1] if len(sys.argv) > 1 else None
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 6000
    with tempfile.TemporaryDirectory(dir=base) as d:
        fds = [zero_filled(os.path.join(d, f"f{i}")) for i in range(2)]
        outs = [[], []]
        threads = [threading.Thread(target=flush_loop, args=(fds[i], n, outs[i])) for i in range(2)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - t0
        for fd in fds:
            os.close(fd)
    for a, b in ((0, 1), (1, 0)):
        mine, other = outs[a], outs[b]
        starts = [s for s, _ in other]
        slow = [(s, e) for s, e in mine if e - s > 500_000]
        bypassed = 0
        for s, e in slow:
            i = bisect.bisect_left(starts, s)
            bypassed += any(
                other[j][0] < e and other[j][1] < e and other[j][1] - other[j][0] < 400_000
                for j in range(i, min(i + 20, len(other)))
            )
        durations = sorted(e - s for s, e in mine)
        print(
            f"BENCH flush_probe thread={a} flushes={len(mine)} "
            f"p50_us={durations[len(durations) // 2] / 1e3:.0f} "
            f"p99_us={durations[int(len(durations) * 0.99)] / 1e3:.0f} "
            f"over_500us={len(slow)} bypassed_by_other_file={bypassed} "
            f"flushes_per_s={2 * n / elapsed:.0f}"
        )


if __name__ == "__main__":
    main()

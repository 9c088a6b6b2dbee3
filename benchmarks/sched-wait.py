#!/usr/bin/env python3
"""sched-wait.py PID SECONDS [--client COMM]: how long a server's threads and the client's processes wait for a CPU.

Samples /proc/PID/task/*/schedstat (and /proc/*/schedstat of every process named COMM, default fio) every 100 ms
for SECONDS and prints, per thread name (cut to 15 characters as the kernel keeps it), the time spent running,
the time spent runnable but waiting in a run queue, the number of times it got a CPU ("slices", about one per
wake-up for a thread that blocks per request) and the wait per slice. Threads that start and end between two
samples are not seen; a thread's counters are taken from its first to its last sample.

Used for issue 27 (benchmarks/RESULTS.md, "What stops the four-connection rows"): run it while a fio job of
compare-peers.sh runs against one server.
"""
import argparse
import glob
import os
import time


def read(path):
    try:
        with open(path + '/schedstat') as f:
            run, wait, slices = map(int, f.read().split()[:3])
        with open(path + '/comm') as f:
            return f.read().strip(), (run, wait, slices)
    except (OSError, ValueError):
        return None


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('pid')
    p.add_argument('seconds', type=float)
    p.add_argument('--client', default='fio', help='process name of the client (default fio)')
    a = p.parse_args()
    first, last = {}, {}
    end = time.monotonic() + a.seconds
    while time.monotonic() < end:
        paths = [('server', t) for t in glob.glob(f'/proc/{a.pid}/task/*')]
        for d in os.listdir('/proc'):
            if d.isdigit():
                try:
                    with open(f'/proc/{d}/comm') as f:
                        if f.read().strip() == a.client:
                            paths.append(('client', f'/proc/{d}'))
                except OSError:
                    pass
        for side, path in paths:
            r = read(path)
            if r:
                key = (side, path, r[0])
                first.setdefault(key, r[1])
                last[key] = r[1]
        time.sleep(0.1)
    groups = {}
    for key, v in last.items():
        side, _, name = key
        g = groups.setdefault((side, name if side == 'server' else a.client), [0, 0, 0])
        for i in range(3):
            g[i] += v[i] - first[key][i]
    print(f"{'side':7s} {'thread':15s} {'run ms':>9s} {'wait ms':>9s} {'slices':>8s} {'wait/slice µs':>14s}")
    for (side, name), (run, wait, slices) in sorted(groups.items()):
        if slices:
            print(f'{side:7s} {name:15s} {run / 1e6:9.1f} {wait / 1e6:9.1f} {slices:8d} {wait / slices / 1e3:14.1f}')


if __name__ == '__main__':
    main()

#!/usr/bin/env python3
"""Markdown report of a benchmarks/latency.sh run, from the load generator's JSON files.

Usage: latency-report.py OUT ROUNDS DEPTH RATE          → the report on stdout
       latency-report.py --pick OUT ROUNDS ROW          → file stem of ROW's median round
With several rounds, each row shows its median round (by write p99), so every number in a line comes from
one measured run; ratios are taken between those rows.
"""
import json
import os
import statistics
import sys


def load(out, stem):
    path = os.path.join(out, stem + ".json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def op(doc, name):
    for r in doc["results"]:
        if r["op"] == name:
            return r
    return None


def pick(out, rounds, row):
    """The stem whose write p99 is the median over the rounds of ROW."""
    if rounds == 1:
        return row
    stems = [f"{row}@{r}" for r in range(1, rounds + 1)]
    docs = [(s, load(out, s)) for s in stems]
    docs = [(s, d) for s, d in docs if d is not None]
    if not docs:
        return row
    key = lambda sd: (op(sd[1], "write") or op(sd[1], "read"))["p99_us"]
    docs.sort(key=key)
    return docs[(len(docs) - 1) // 2][0]


def main():
    if sys.argv[1] == "--pick":
        print(pick(sys.argv[2], int(sys.argv[3]), sys.argv[4]))
        return
    out, rounds, depth, rate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    rows = {}

    def get(row, name="write"):
        if (row, name) not in rows:
            d = load(out, pick(out, rounds, row))
            rows[(row, name)] = op(d, name) if d else None
        return rows[(row, name)]

    def iops_spread(row):
        vals = []
        for r in range(1, rounds + 1):
            d = load(out, f"{row}@{r}" if rounds > 1 else row)
            if d and op(d, "write"):
                vals.append(op(d, "write")["iops"])
        return f"{min(vals):,.0f}–{max(vals):,.0f}" if len(vals) > 1 else ""

    lines = []
    with open(os.path.join(out, "machine.txt")) as f:
        lines.append("```text\n" + f.read().rstrip() + "\n```\n")
    lines.append(f"Rows with several rounds show the median round (by write p99). Latency in µs, from the"
                 f" load generator (client side, HdrHistogram); `server` columns are snapbd's own measurement of the same"
                 f" rows (`bin/snapbd stats`: from reading a request to sending its reply). `×` columns: row / no-snapshot (IOPS: higher"
                 f" is better; latency: lower is better).\n")

    def server(row):
        """The server's own write latency for the row (snapbd stats, µs), or None."""
        path = os.path.join(out, pick(out, rounds, row) + ".server.json")
        if not os.path.exists(path):
            return None
        with open(path) as f:
            d = json.load(f)
        lat = d.get("ops", {}).get("write", {}).get("latencyMicros")
        return lat

    def table(title, names, base):
        b = get(base)
        lines.append(f"**{title}**\n")
        lines.append("| row | IOPS | IOPS range | p50 | p99 | p99.9 | p99.99 | max | IOPS × | p99 × | p99.9 × |"
                     " server p50 | server p99 | server p99.9 |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for n in names:
            w = get(n)
            if not w:
                continue
            sv = server(n)
            sv_cols = (f" {sv['p50']:,.1f} | {sv['p99']:,.1f} | {sv['p99.9']:,.1f} |" if sv else " – | – | – |")
            lines.append(f"| {n} | {w['iops']:,.0f} | {iops_spread(n)} | {w['p50_us']:,.1f} | {w['p99_us']:,.1f} |"
                         f" {w['p99_9_us']:,.1f} | {w['p99_99_us']:,.1f} |"
                         f" {w['max_us']:,.1f} | {w['iops'] / b['iops']:.2f} | {w['p99_us'] / b['p99_us']:.2f} |"
                         f" {w['p99_9_us'] / b['p99_9_us']:.2f} |" + sv_cols)
        lines.append("")

    table(f"4 KiB random writes, closed loop, depth {depth}",
          ["no-snapshot", "after-snapshot", "after-snapshot-cold", "8-snapshots", "all-copied", "no-snapshot-late", "lun-tracking",
           "histograms-on",
           "histograms-off", "nbdkit", "qemu-nbd"], "no-snapshot")
    table("4 KiB random writes, closed loop, depth 1 (service time without queueing)",
          ["no-snapshot-qd1", "after-snapshot-qd1"], "no-snapshot-qd1")
    table(f"4 KiB random writes, open loop at {rate:,.0f} IOPS (latency from each request's due time)",
          ["no-snapshot-rate", "after-snapshot-rate", "all-copied-rate", "no-snapshot-rate-late", "nbdkit-rate",
           "qemu-nbd-rate"],
          "no-snapshot-rate")

    if get("randrw"):
        lines.append(f"**Other workloads, closed loop** (randrw: depth {depth}; seqwrite 64 KiB: depth 8)\n")
        lines.append("| row | op | IOPS | p50 | p99 | p99.9 | p99.99 | max |")
        lines.append("|---|---|---:|---:|---:|---:|---:|---:|")
        for n in ["randrw", "nbdkit-randrw", "qemu-nbd-randrw", "seqwrite", "nbdkit-seqwrite", "qemu-nbd-seqwrite"]:
            for o in ["read", "write"]:
                w = get(n, o)
                if w:
                    lines.append(f"| {n} | {o} | {w['iops']:,.0f} | {w['p50_us']:,.1f} | {w['p99_us']:,.1f} |"
                                 f" {w['p99_9_us']:,.1f} | {w['p99_99_us']:,.1f} | {w['max_us']:,.1f} |")
        lines.append("")

    # Targets (issue 7). On a shared machine the same row varies by 2x between rounds, so each ratio is taken
    # between rows of the same round (run minutes apart) and the median over the rounds is reported.
    def paired(a, b, key):
        vals = []
        for r in range(1, rounds + 1):
            x = load(out, f"{a}@{r}" if rounds > 1 else a)
            y = load(out, f"{b}@{r}" if rounds > 1 else b)
            x, y = (op(x, "write") if x else None), (op(y, "write") if y else None)
            if x and y:
                vals.append(x[key] / y[key])
        if not vals:
            return float("nan"), ""
        detail = f" (rounds: {', '.join(f'{v:.2f}' for v in vals)})" if len(vals) > 1 else ""
        return statistics.median(vals), detail

    checks = []
    for suffix, mode in [("", f"closed loop, depth {depth}"), ("-qd1", "closed loop, depth 1"),
                         ("-rate", f"open loop, {rate:,.0f} IOPS")]:
        for row, label in [("after-snapshot-cold", "right after a snapshot, cold (no first writes before)"),
                           ("after-snapshot", "right after a snapshot"),
                           ("all-copied", "after all blocks were copied")]:
            limit = 1.1 if row == "all-copied" else 2.0
            # Each row against the no-snapshot row measured next to it (all-copied: the one right after it).
            base = "no-snapshot" + suffix
            if row == "all-copied" and load(out, pick(out, rounds, base + "-late")):
                base += "-late"
            r, detail = paired(row + suffix, base, "p99_us")
            if r == r:
                checks.append((f"p99 {label} ≤ {limit}× {base} ({mode})", f"{r:.2f}×{detail}", r <= limit))
    r, detail = paired("no-snapshot", "nbdkit", "p99_9_us")
    if r == r:
        checks.append((f"snapbd p99.9 ≤ nbdkit file plugin p99.9 at depth {depth}", f"{r:.2f}×{detail}", r <= 1.0))
    r, detail = paired("histograms-on", "histograms-off", "iops")
    if r == r:
        checks.append(("server-side histograms cost ≤ 3% IOPS (on vs off, adjacent runs)",
                       f"{(1 - r) * 100:+.1f}%{detail}", 1 - r <= 0.03))
    lines.append("**Targets**\n")
    lines.append("| target | measured | |")
    lines.append("|---|---|---|")
    for name, val, ok in checks:
        lines.append(f"| {name} | {val} | {'PASS' if ok else 'FAIL'} |")
    lines.append("")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

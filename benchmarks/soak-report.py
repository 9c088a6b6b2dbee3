#!/usr/bin/env python3
"""The report of benchmarks/soak.sh: reads its output directory, writes latency.csv, soak.svg and
summary.json there, prints a table (or, with --json, the summary on stdout and the table on stderr) and
exits 1 on any violation.

usage: soak-report.py OUT --duration S --fio-status N --fsck-status N --server-errors N
                      --server-warnings N [--final-heap-kb KB] [--attach TEXT] [--json]
                      [--kernel-io-errors N] [--title TEXT]

Inputs in OUT: fio.json / fio.stderr (the verified load), soak_clat_hist.N.log (fio histogram logs, one
per job, one line per 10 s window and direction), samples.csv (soak.sh's 10 s samples), churn.tsv (the
churn loop's steps).

The kernel soak (soak-guest.sh, inside User-Mode Linux) passes --kernel-io-errors (lines of I/O errors in
the guest's kernel log): then any such line, and no attach/detach cycle completed (a `released` step in
churn.tsv: the snapshot attached, read whole, detached and its device let go), are violations too.

Leak check, per sampled value (after a warm-up of a quarter of the run, at most 60 s): a leak is a value
that rose at every one of at least 8 samples (by more than RISE_MIN in total), or whose floor (minimum)
over the last third of the samples exceeds the floor over the first third by more than LIMIT. A flat
value, or one that steps up and stays below the limit (heap sizing, a connection pool), passes.
"""
import argparse
import json
import math
import os
import re
import sys
from collections import defaultdict

# name in samples.csv: (label, unit divisor to print, RISE_MIN, LIMIT) in the CSV's unit (kB or count)
LEAK_CHECKS = {
    "threads": ("threads", 1, 4, 16),
    "fds": ("open fds", 1, 8, 64),
    "heap_after_gc_kb": ("heap after GC (MiB)", 1024, 8 * 1024, 64 * 1024),
    "rss_anon_kb": ("RssAnon (MiB)", 1024, 64 * 1024, 256 * 1024),
}
DDIRS = {0: "read", 1: "write", 2: "trim"}
# Back to idle (--settle >= 61 s): limits over the first sample, and on the live heap.
SETTLE_THREADS, SETTLE_FDS, SETTLE_HEAP_KB = 16, 64, 64 * 1024
PLAT_BITS, PLAT_VAL, PLAT_NR = 6, 64, 29 * 64


def plat_idx_to_ns(idx):
    """fio's stat.c plat_idx_to_val: the value (ns) a histogram bucket stands for."""
    if idx < (PLAT_VAL << 1):
        return idx
    error_bits = (idx >> PLAT_BITS) - 1
    base = 1 << (error_bits + PLAT_BITS)
    k = idx % PLAT_VAL
    return base + (k + 0.5) * (1 << error_bits)


def latency_windows(out, window_ms=10000):
    """{window index: {ddir: bucket counts}} summed over every job's histogram log."""
    wins = defaultdict(dict)
    stride = None
    logs = sorted(f for f in os.listdir(out) if re.fullmatch(r"soak_clat_hist\.\d+\.log", f))
    for name in logs:
        with open(os.path.join(out, name)) as f:
            for line in f:
                cols = [c.strip() for c in line.split(",")]
                if len(cols) < 4:
                    continue
                nums = [int(c) for c in cols]
                t, ddir = nums[0], nums[1]
                bins = nums[3:]
                if PLAT_NR % len(bins):      # a priority column (newer fio)
                    bins = nums[4:]
                stride = PLAT_NR // len(bins)
                w = int(round(t / window_ms))
                acc = wins[w].setdefault(ddir, [0] * len(bins))
                for i, c in enumerate(bins):
                    acc[i] += c
    return wins, stride, len(logs)


def percentile_us(counts, stride, q):
    total = sum(counts)
    if total == 0:
        return None
    need = math.ceil(total * q)
    run = 0
    for i, c in enumerate(counts):
        run += c
        if run >= need:
            return plat_idx_to_ns(i * stride + stride - 1) / 1000.0
    return None


def read_samples(path):
    rows = []
    if not os.path.exists(path):
        return rows
    with open(path) as f:
        head = f.readline().strip().split(",")
        for line in f:
            vals = line.strip().split(",")
            if len(vals) != len(head):
                continue
            rows.append({k: (int(v) if v.strip().isdigit() else None) for k, v in zip(head, vals)})
    return rows


def leak_check(rows, duration):
    warm = min(60, duration // 4)
    res = {}
    for key, (label, div, rise_min, limit) in LEAK_CHECKS.items():
        vals = [r[key] for r in rows if r["seconds"] >= warm and r.get(key) is not None]
        entry = {"samples": len(vals), "limit": limit / div, "leak": False}
        if vals:
            entry.update(first=vals[0] / div, last=vals[-1] / div, min=min(vals) / div, max=max(vals) / div)
        if len(vals) >= 8 and all(b > a for a, b in zip(vals, vals[1:])) and vals[-1] - vals[0] > rise_min:
            entry["leak"] = True
            entry["why"] = f"rose at every one of {len(vals)} samples, {vals[0] / div:g} -> {vals[-1] / div:g}"
        if len(vals) >= 3:
            third = max(1, len(vals) // 3)
            rise = min(vals[-third:]) - min(vals[:third])
            entry["floorRise"] = rise / div
            if rise > limit:
                entry["leak"] = True
                entry["why"] = f"floor rose by {rise / div:g} (limit {limit / div:g})"
        res[key] = entry
    return res


def svg_plot(path, lat_rows, samples, title):
    """Two panels: p99 latency per 10 s window; threads/fds and RssAnon/heap after GC per sample."""
    W, H, L, R, T, B = 900, 560, 70, 70, 40, 40
    ph = (H - T - B - 40) // 2
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W / 2}" y="20" text-anchor="middle" font-size="14">{title}</text>']
    xmax = max([r[0] for r in lat_rows] + [s["seconds"] for s in samples] + [10])

    def panel(y0, series, ylabel, right=None):
        vals = [v for _, pts, _ in series for _, v in pts if v is not None]
        ymax = max(vals + [1]) * 1.1
        out.append(f'<rect x="{L}" y="{y0}" width="{W - L - R}" height="{ph}" fill="none" stroke="#888"/>')
        out.append(f'<text x="15" y="{y0 + ph / 2}" transform="rotate(-90 15 {y0 + ph / 2})" text-anchor="middle">{ylabel}</text>')
        for k in range(5):
            yv = ymax * k / 4
            y = y0 + ph - ph * k / 4
            out.append(f'<text x="{L - 5}" y="{y + 4}" text-anchor="end">{yv:.0f}</text>')
            out.append(f'<line x1="{L}" x2="{W - R}" y1="{y}" y2="{y}" stroke="#eee"/>')
        for k in range(6):
            xv = xmax * k / 5
            x = L + (W - L - R) * k / 5
            out.append(f'<text x="{x}" y="{y0 + ph + 14}" text-anchor="middle">{xv:.0f} s</text>')
        scale2 = None
        if right:
            rvals = [v for _, pts, _ in right for _, v in pts if v is not None]
            r_max = max(rvals + [1]) * 1.1
            scale2 = r_max
            for k in range(5):
                out.append(f'<text x="{W - R + 5}" y="{y0 + ph - ph * k / 4 + 4}">{r_max * k / 4:.0f}</text>')
        ly = y0 + 12
        for group, top, dash in ((series, ymax, ""), (right or [], scale2, ' stroke-dasharray="5,3"')):
            for name, pts, colour in group:
                p = " ".join(f"{L + (W - L - R) * x / xmax:.1f},{y0 + ph - ph * v / top:.1f}" for x, v in pts if v is not None)
                if p:
                    out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5"{dash} points="{p}"/>')
                out.append(f'<text x="{L + 8}" y="{ly}" fill="{colour}">{name}</text>')
                ly += 13

    panel(T, [("p99 read (µs)", [(r[0], r[1]) for r in lat_rows], "#1f77b4"),
              ("p99 write (µs)", [(r[0], r[2]) for r in lat_rows], "#d62728"),
              ("p99 trim (µs)", [(r[0], r[3]) for r in lat_rows], "#2ca02c")], "p99 completion latency (µs)")
    mib = lambda k: None if k is None else k / 1024
    panel(T + ph + 40, [("threads", [(s["seconds"], s["threads"]) for s in samples], "#9467bd"),
                        ("open fds", [(s["seconds"], s["fds"]) for s in samples], "#8c564b")], "threads, fds",
          right=[("RssAnon MiB (dashed, right)", [(s["seconds"], mib(s["rss_anon_kb"])) for s in samples], "#ff7f0e"),
                 ("heap after GC MiB (dashed, right)", [(s["seconds"], mib(s["heap_after_gc_kb"])) for s in samples], "#17becf")])
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--duration", type=int, required=True)
    ap.add_argument("--fio-status", type=int, required=True)
    ap.add_argument("--fsck-status", type=int, required=True)
    ap.add_argument("--server-errors", type=int, required=True)
    ap.add_argument("--server-warnings", type=int, default=0)
    ap.add_argument("--final-heap-kb", default="")
    ap.add_argument("--attach", default="")
    ap.add_argument("--settle", type=int, default=0)
    ap.add_argument("--settled-threads", type=int)
    ap.add_argument("--settled-fds", type=int)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--kernel-io-errors", type=int, default=None)
    ap.add_argument("--title", default=None)
    a = ap.parse_args()
    out = a.out
    violations = []

    # ---- fio (the verified volume)
    fio = {"status": a.fio_status}
    try:
        text = open(os.path.join(out, "fio.json")).read()
        d = json.loads(text[text.find("{"):])
        jobs = d["jobs"]
        fio["jobs"] = len(jobs)
        fio["jobErrors"] = sum(1 for j in jobs if j["error"])
        for k in ("read", "write", "trim"):
            fio[k + "s"] = sum(j[k]["total_ios"] for j in jobs)
        fio["flushes"] = sum(j.get("sync", {}).get("total_ios", 0) for j in jobs)
    except (OSError, ValueError, KeyError) as e:
        fio["jobErrors"] = None
        violations.append(f"fio's JSON output is missing or unreadable: {e}")
    stderr = open(os.path.join(out, "fio.stderr"), errors="replace").read() if os.path.exists(os.path.join(out, "fio.stderr")) else ""
    verify_lines = [l for l in stderr.splitlines() if re.search(r"verify:|bad magic|bad header|verify failed", l, re.I)]
    fio["verifyErrors"] = len(verify_lines)
    if verify_lines:
        violations.append(f"fio verify: {len(verify_lines)} error line(s), first: {verify_lines[0]}")
    if fio.get("jobErrors"):
        violations.append(f"fio: {fio['jobErrors']} job(s) ended with an error (fio.stderr)")
    if a.fio_status != 0:
        violations.append(f"fio exited with status {a.fio_status}")
    if fio.get("writes") == 0:
        violations.append("fio wrote nothing")

    # ---- churn loop
    steps = defaultdict(lambda: defaultdict(int))
    problems = []
    cycles = 0
    attach_note = None
    if os.path.exists(os.path.join(out, "churn.tsv")):
        for line in open(os.path.join(out, "churn.tsv")):
            f = line.rstrip("\n").split("\t")
            if len(f) < 4:
                continue
            t, step, obj, status = f[:4]
            detail = f[4] if len(f) > 4 else ""
            steps[step][status] += 1
            if status in ("FAIL", "VIOLATION"):
                problems.append(f"{t}s {step} {obj}: {status} {detail}")
            if step == "end" and status == "ok":
                cycles = int(detail.split()[0])
            if step == "attach" and status == "skipped":
                attach_note = detail
    churn = {"cycles": cycles, "steps": {k: dict(v) for k, v in sorted(steps.items())}, "problems": problems[:50]}
    violations += [f"churn: {p}" for p in problems]
    if cycles == 0:
        violations.append("the churn loop did not complete a cycle")
    attach_cycles = steps["released"]["ok"] if "released" in steps else 0
    churn["attachDetachCycles"] = attach_cycles
    if a.kernel_io_errors is not None:
        if attach_cycles == 0:
            violations.append("no attach/detach cycle completed (no snapshot attached, read and released)")
        if a.kernel_io_errors:
            violations.append(f"kernel log: {a.kernel_io_errors} I/O error line(s) (dmesg-io.txt)")

    # ---- server, fsck
    if a.server_errors:
        violations.append(f"server log: {a.server_errors} ERROR/exception line(s) (server.log)")
    if a.fsck_status != 0:
        violations.append(f"fsck after the run: exit {a.fsck_status} (fsck.txt)")

    # ---- resources
    samples = read_samples(os.path.join(out, "samples.csv"))
    leaks = leak_check(samples, a.duration)
    for k, e in leaks.items():
        if e["leak"]:
            violations.append(f"leak? {LEAK_CHECKS[k][0]}: {e['why']}")
    # Back to idle after --settle seconds without load (only then are the sync pool's threads gone).
    settled = {"seconds": a.settle, "threads": a.settled_threads, "fds": a.settled_fds,
               "heapAfterFullGcKb": int(a.final_heap_kb) if a.final_heap_kb.isdigit() else None}
    if a.settle >= 61 and samples:
        first = samples[0]
        if a.settled_threads is not None and first.get("threads") is not None and a.settled_threads > first["threads"] + SETTLE_THREADS:
            violations.append(f"threads after {a.settle} s idle: {a.settled_threads}, at the start {first['threads']} (limit +{SETTLE_THREADS})")
        if a.settled_fds is not None and first.get("fds") is not None and a.settled_fds > first["fds"] + SETTLE_FDS:
            violations.append(f"fds after {a.settle} s idle: {a.settled_fds}, at the start {first['fds']} (limit +{SETTLE_FDS})")
        if settled["heapAfterFullGcKb"] is not None and settled["heapAfterFullGcKb"] > SETTLE_HEAP_KB:
            violations.append(f"heap after a full GC, {a.settle} s idle: {settled['heapAfterFullGcKb'] // 1024} MiB (limit {SETTLE_HEAP_KB // 1024} MiB)")
    if len(samples) < 3:
        violations.append(f"only {len(samples)} resource samples")

    # ---- latency per 10 s window
    wins, stride, nlogs = latency_windows(out)
    lat_rows = []
    with open(os.path.join(out, "latency.csv"), "w") as f:
        f.write("seconds,read_p99_us,write_p99_us,trim_p99_us,reads,writes,trims\n")
        for w in sorted(wins):
            p = [percentile_us(wins[w][d], stride, 0.99) if d in wins[w] else None for d in (0, 1, 2)]
            n = [sum(wins[w][d]) if d in wins[w] else 0 for d in (0, 1, 2)]
            lat_rows.append((w * 10, *p))
            f.write(f"{w * 10}," + ",".join("" if v is None else f"{v:.0f}" for v in p) + "," + ",".join(map(str, n)) + "\n")
    def stat(col):
        v = sorted(r[col] for r in lat_rows if r[col] is not None)
        return {"median": v[len(v) // 2], "max": v[-1]} if v else None
    latency = {"windows": len(lat_rows), "histogramLogs": nlogs, "p99ReadUs": stat(1), "p99WriteUs": stat(2), "p99TrimUs": stat(3)}
    if not lat_rows:
        violations.append("no latency windows (fio histogram logs missing)")
    svg = os.path.join(out, "soak.svg")
    svg_plot(svg, lat_rows, samples, a.title or f"snapbd soak: {a.duration} s, 16 connections x depth 32 (verify) + churn")

    summary = {
        "ok": not violations, "violations": violations, "duration": a.duration, "fio": fio, "churn": churn,
        "server": {"errors": a.server_errors, "warnings": a.server_warnings}, "fsck": a.fsck_status,
        "resources": leaks, "heapAfterFinalGcKb": int(a.final_heap_kb) if a.final_heap_kb.isdigit() else None,
        "latency": latency, "attach": attach_note or a.attach, "settled": settled, "kernelIoErrors": a.kernel_io_errors,
        "files": {"latencyCsv": os.path.join(out, "latency.csv"), "samplesCsv": os.path.join(out, "samples.csv"), "plot": svg},
    }
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)

    lines = [f"soak: {'PASS' if not violations else 'FAIL'} ({a.duration} s, {cycles} churn cycles)",
             f"  fio verify errors     {fio['verifyErrors']}   job errors {fio.get('jobErrors')}   "
             f"reads {fio.get('reads')} writes {fio.get('writes')} trims {fio.get('trims')} flushes {fio.get('flushes')}",
             f"  server errors         {a.server_errors}   warnings {a.server_warnings}   fsck exit {a.fsck_status}"
             + ("" if a.kernel_io_errors is None else f"   kernel I/O errors {a.kernel_io_errors}"),
             "  churn steps           " + ", ".join(f"{k} {sum(v.values())}" + ("" if set(v) <= {"ok"} else f" {dict(v)}")
                                                     for k, v in sorted(steps.items())),
             f"  attach/detach         {attach_note or a.attach}" + (f" ({attach_cycles} cycles)" if attach_cycles else ""),
             f"  after {a.settle} s idle     heap after full GC {summary['heapAfterFinalGcKb']} kB, threads {a.settled_threads}, fds {a.settled_fds}",
             "  resource              first     last      min       max       floor rise  limit  leak"]
    if a.kernel_io_errors is not None and not a.settle:     # the kernel soak has no back-to-idle phase
        del lines[-2]
    for k, e in leaks.items():
        if "first" in e:
            lines.append(f"  {LEAK_CHECKS[k][0]:<21} {e['first']:<9.0f} {e['last']:<9.0f} {e['min']:<9.0f} {e['max']:<9.0f} "
                         f"{e.get('floorRise', 0):<11.0f} {e['limit']:<6.0f} {'YES' if e['leak'] else 'no'}")
    for name, col in (("read", "p99ReadUs"), ("write", "p99WriteUs"), ("trim", "p99TrimUs")):
        if latency[col]:
            lines.append(f"  p99 {name:<5} per 10 s     median {latency[col]['median']:.0f} µs, worst window {latency[col]['max']:.0f} µs")
    lines += [f"  latency CSV {out}/latency.csv, plot {svg}"] + [f"  VIOLATION {v}" for v in violations[:20]]
    text = "\n".join(lines)
    if a.json:
        print(text, file=sys.stderr)
        print(json.dumps(summary, indent=2))
    else:
        print(text)
    return 0 if not violations else 1


if __name__ == "__main__":
    sys.exit(main())

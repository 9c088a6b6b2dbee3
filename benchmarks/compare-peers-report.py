#!/usr/bin/env python3
"""compare-peers.sh's report: the runs (one line per run: round, job, server, then the fields of
fio-summary.py --tsv FILE ddir iops bw_bytes p50_ns p99_ns p999_ns mean_ns ios, then optionally the server's CPU
µs after the ramp) as a table of medians and ratios to the better peer, Markdown and JSON.

The peers are nbdkit and qemu-nbd; on each row the better peer is the one with more IOPS. 'IOPS ×' is
server / better peer, latency '×' is better peer / server (> 1 is better for both), 'CPU ×' is the server's CPU µs
per request / the lower of the peers' (< 1 is better). With a snapbd-base server (--baseline), '× base' is
snapbd's IOPS / snapbd-base's. The bar (--strict) stays snapbd >= BAR × nbdkit's IOPS.

usage: compare-peers-report.py TSV SERVERS JOBS ROUNDS BAR MARKDOWN-FILE JSON-FILE MARKDOWN-HEADER
"""
import json, statistics, sys

FIELDS = ("round", "job", "server", "ddir", "iops", "bw_bytes", "p50_ns", "p99_ns", "p999_ns", "mean_ns", "ios",
          "cpu_us")
PEERS = ("nbdkit", "qemu-nbd")
TARGET = 1.0        # issue 27: snapbd >= the better peer on every row
BASE_LOSS = 0.95    # issue 27: no write row loses more than 5 % against main


def report(tsv, servers, jobs, rounds, bar, md_path, json_path, md_header):
    servers = servers.split(",")
    jobs = jobs.split(",")
    runs = []
    with open(tsv, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                r = dict(zip(FIELDS, line.rstrip("\n").split("\t")))
                for k in FIELDS[4:]:
                    if k in r:
                        r[k] = float(r[k])
                runs.append(r)
    rows = {}
    for job in jobs:
        for srv in servers:
            rs = [r for r in runs if r["job"] == job and r["server"] == srv]
            if not rs:
                continue
            med = lambda k: statistics.median(r[k] for r in rs)
            row = rows[(job, srv)] = {
                "job": job, "server": srv, "rounds": len(rs),
                "iops": med("iops"), "mib_s": med("bw_bytes") / 2**20,
                "iops_min": min(r["iops"] for r in rs), "iops_max": max(r["iops"] for r in rs),
                "p50_us": med("p50_ns") / 1e3, "p99_us": med("p99_ns") / 1e3,
                "p999_us": med("p999_ns") / 1e3,
            }
            cpu = [r["cpu_us"] / r["ios"] for r in rs if "cpu_us" in r and r["ios"]]
            if cpu:
                row["cpu_us_per_request"] = statistics.median(cpu)
                # CPU time / measured wall time (ios / iops): how much CPU the server got, 100 = one CPU.
                row["cpu_percent"] = statistics.median(r["cpu_us"] / 1e4 * r["iops"] / r["ios"] for r in rs
                                                       if "cpu_us" in r and r["ios"])
    for job in jobs:
        base, row = rows.get((job, "snapbd-base")), rows.get((job, "snapbd"))
        if base and row:
            row["ratio_base"] = row["iops"] / base["iops"]
        peers = [rows[(job, p)] for p in PEERS if (job, p) in rows]
        if not peers:
            continue
        best = max(peers, key=lambda p: p["iops"])
        cpus = [p["cpu_us_per_request"] for p in peers if "cpu_us_per_request" in p]
        for srv in servers:
            row = rows.get((job, srv))
            if not row:
                continue
            row["best_peer"] = best["server"]
            row["ratio_iops"] = row["iops"] / best["iops"]
            for k in ("p50", "p99", "p999"):
                row[f"ratio_{k}"] = best[f"{k}_us"] / row[f"{k}_us"]
            if cpus and "cpu_us_per_request" in row:
                row["ratio_cpu"] = row["cpu_us_per_request"] / min(cpus)
            ref = rows.get((job, "nbdkit"))
            if ref:
                row["ratio_nbdkit"] = row["iops"] / ref["iops"]
    verdict = []
    if "snapbd" in servers and "nbdkit" in servers:
        for job in jobs:
            row = rows.get((job, "snapbd"))
            if row and "ratio_nbdkit" in row:
                verdict.append({"job": job, "ratio_iops": row["ratio_nbdkit"], "pass": row["ratio_nbdkit"] >= bar})

    def fnum(x, nd=0):
        return f"{x:,.{nd}f}"
    def fr(row, k):
        return f"{row[k]:.2f}" if k in row else "-"

    has_cpu = any("cpu_us_per_request" in r for r in rows.values())
    has_base = "snapbd-base" in servers
    cols = ["job", "server", "IOPS", "IOPS min-max", "MiB/s"] + (["CPU µs/req", "CPU %"] if has_cpu else []) + \
           ["p50 µs", "p99 µs", "p99.9 µs", "IOPS ×"] + (["CPU ×"] if has_cpu else []) + \
           ["p50 ×", "p99 ×", "p99.9 ×"] + (["× base"] if has_base else [])
    table = []
    for job in jobs:
        for srv in servers:
            row = rows.get((job, srv))
            if not row:
                continue
            t = [job, srv, fnum(row["iops"]), f"{fnum(row['iops_min'])}-{fnum(row['iops_max'])}",
                 fnum(row["mib_s"], 1)]
            if has_cpu:
                t.append(fnum(row["cpu_us_per_request"], 1) if "cpu_us_per_request" in row else "-")
                t.append(fnum(row["cpu_percent"]) if "cpu_percent" in row else "-")
            t += [fnum(row["p50_us"], 1), fnum(row["p99_us"], 1), fnum(row["p999_us"], 1), fr(row, "ratio_iops")]
            if has_cpu:
                t.append(fr(row, "ratio_cpu"))
            t += [fr(row, "ratio_p50"), fr(row, "ratio_p99"), fr(row, "ratio_p999")]
            if has_base:
                t.append(fr(row, "ratio_base"))
            table.append(t)
    present = [p for p in PEERS if p in servers]
    peer_text = " and ".join(present)
    convention = "Medians over {r} round(s). Latency = fio completion latency (clat) in µs.".format(r=rounds)
    if present:
        convention += (" Ratios vs the better peer of the row ({p}: the one with more IOPS): 'IOPS ×' = server/peer, "
                       "latency '×' = peer/server; > 1 means better than that peer.").format(p=peer_text)
    if has_cpu:
        convention += (" 'CPU µs/req' = the server process's user+system CPU time after fio's ramp / requests "
                       "completed, 'CPU %' = that CPU time / the measured time (100 = one CPU busy)")
        convention += ("; 'CPU ×' = server / the lower of the peers' CPU µs/req (< 1 means less CPU per request)."
                       if present else ".")
    if has_base:
        convention += " '× base' = snapbd IOPS / snapbd-base IOPS (the --baseline jar, the jobs that write)."
    widths = [max(len(c), *(len(t[i]) for t in table)) if table else len(c) for i, c in enumerate(cols)]
    def line(cells):
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    out = [convention, "", line(cols), line(["-" * w for w in widths])]
    prev = None
    for t in table:
        if prev is not None and t[0] != prev:
            out.append("")
        out.append(line(t))
        prev = t[0]
    summary = []
    if verdict:
        bad = [v for v in verdict if not v["pass"]]
        summary.append(f"Bar: snapbd IOPS >= {bar}x nbdkit on every row: " + ("PASS" if not bad else
                       "FAIL (" + ", ".join(f"{v['job']} {v['ratio_iops']:.2f}x" for v in bad) + ")"))
    target = [rows[(j, "snapbd")] for j in jobs if (j, "snapbd") in rows and "ratio_iops" in rows[(j, "snapbd")]]
    if target and len(present) > 1:
        short = [r for r in target if r["ratio_iops"] < TARGET]
        summary.append(f"Target: snapbd IOPS >= {TARGET}x the better peer on {len(target) - len(short)} of "
                       f"{len(target)} rows" + ("" if not short else "; short: " + ", ".join(
                           f"{r['job']} {r['ratio_iops']:.2f}x ({r['best_peer']})" for r in short)))
    based = [rows[(j, "snapbd")] for j in jobs if "ratio_base" in rows.get((j, "snapbd"), {})]
    if based:
        lost = [r for r in based if r["ratio_base"] < BASE_LOSS]
        summary.append(f"Against snapbd-base (rows that write): {len(based)} rows, snapbd/base "
                       f"{min(r['ratio_base'] for r in based):.2f}-{max(r['ratio_base'] for r in based):.2f}; "
                       + ("none below " if not lost else "below ") + f"{BASE_LOSS}" +
                       ("" if not lost else ": " + ", ".join(f"{r['job']} {r['ratio_base']:.2f}" for r in lost)))
    if summary:
        out.append("")
        out += summary
    print("\n".join(out))

    if md_path:
        md = [md_header.rstrip("\n"), "", convention, "",
              "| " + " | ".join(cols) + " |",
              "|" + "|".join(["---", "---"] + ["---:"] * (len(cols) - 2)) + "|"]
        md += ["| " + " | ".join(t) + " |" for t in table]
        if summary:
            md.append("")
            md += [s + "  " if i < len(summary) - 1 else s for i, s in enumerate(summary)]
        with open(md_path, "w", encoding="utf-8") as f:
            f.write("\n".join(md) + "\n")

    result = {"rounds": rounds, "servers": servers, "jobs": jobs, "bar": bar,
              "latency": "clat", "rows": list(rows.values()), "bar_check": verdict, "runs": runs}
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    return 0 if all(v["pass"] for v in verdict) else 3

if __name__ == "__main__":
    a = sys.argv[1:]
    sys.exit(report(a[0], a[1], a[2], int(a[3]), float(a[4]), a[5], a[6], a[7]))

#!/usr/bin/env python3
"""compare-peers.sh's report: the runs (one line per run: round, job, server, then the fields of
fio-summary.py --tsv FILE ddir iops bw_bytes p50_ns p99_ns p999_ns mean_ns ios) as a table of medians
and ratios to nbdkit, Markdown and JSON.

usage: compare-peers-report.py TSV SERVERS JOBS ROUNDS BAR MARKDOWN-FILE JSON-FILE MARKDOWN-HEADER
"""
import json, statistics, sys

FIELDS = ("round", "job", "server", "ddir", "iops", "bw_bytes", "p50_ns", "p99_ns", "p999_ns", "mean_ns", "ios")

def report(tsv, servers, jobs, rounds, bar, md_path, json_path, md_header):
    servers = servers.split(",")
    jobs = jobs.split(",")
    runs = []
    with open(tsv, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                r = dict(zip(FIELDS, line.rstrip("\n").split("\t")))
                for k in FIELDS[4:]:
                    r[k] = float(r[k])
                runs.append(r)
    rows = {}
    for job in jobs:
        for srv in servers:
            rs = [r for r in runs if r["job"] == job and r["server"] == srv]
            if not rs:
                continue
            med = lambda k: statistics.median(r[k] for r in rs)
            rows[(job, srv)] = {
                "job": job, "server": srv, "rounds": len(rs),
                "iops": med("iops"), "mib_s": med("bw_bytes") / 2**20,
                "iops_min": min(r["iops"] for r in rs), "iops_max": max(r["iops"] for r in rs),
                "p50_us": med("p50_ns") / 1e3, "p99_us": med("p99_ns") / 1e3,
                "p999_us": med("p999_ns") / 1e3,
            }
    for (job, srv), row in rows.items():
        ref = rows.get((job, "nbdkit"))
        if ref:
            row["ratio_iops"] = row["iops"] / ref["iops"]
            for k in ("p50", "p99", "p999"):
                row[f"ratio_{k}"] = ref[f"{k}_us"] / row[f"{k}_us"]
    verdict = []
    if "snapbd" in servers and "nbdkit" in servers:
        for job in jobs:
            row = rows.get((job, "snapbd"))
            if row and "ratio_iops" in row:
                verdict.append({"job": job, "ratio_iops": row["ratio_iops"], "pass": row["ratio_iops"] >= bar})

    def fnum(x, nd=0):
        return f"{x:,.{nd}f}"
    def fr(row, k):
        return f"{row[k]:.2f}" if k in row else "-"

    cols = ["job", "server", "IOPS", "IOPS min-max", "MiB/s", "p50 µs", "p99 µs", "p99.9 µs",
            "IOPS ×", "p50 ×", "p99 ×", "p99.9 ×"]
    table = []
    for job in jobs:
        for srv in servers:
            row = rows.get((job, srv))
            if not row:
                continue
            table.append([job, srv, fnum(row["iops"]),
                          f"{fnum(row['iops_min'])}-{fnum(row['iops_max'])}",
                          fnum(row["mib_s"], 1), fnum(row["p50_us"], 1), fnum(row["p99_us"], 1),
                          fnum(row["p999_us"], 1), fr(row, "ratio_iops"), fr(row, "ratio_p50"),
                          fr(row, "ratio_p99"), fr(row, "ratio_p999")])
    convention = ("Medians over {r} round(s). Latency = fio completion latency (clat) in µs. "
                  "Ratios vs nbdkit's file plugin: 'IOPS ×' = server/nbdkit, latency '×' = nbdkit/server; "
                  "> 1 means better than nbdkit.").format(r=rounds)
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
    if verdict:
        out.append("")
        bad = [v for v in verdict if not v["pass"]]
        out.append(f"Bar: snapbd IOPS >= {bar}x nbdkit on every row: " + ("PASS" if not bad else
                   "FAIL (" + ", ".join(f"{v['job']} {v['ratio_iops']:.2f}x" for v in bad) + ")"))
    print("\n".join(out))

    if md_path:
        md = [md_header.rstrip("\n"), "", convention, "",
              "| " + " | ".join(cols) + " |",
              "|" + "|".join(["---", "---"] + ["---:"] * (len(cols) - 2)) + "|"]
        md += ["| " + " | ".join(t) + " |" for t in table]
        if verdict:
            md.append("")
            md.append(out[-1])
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

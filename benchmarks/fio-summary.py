#!/usr/bin/env python3
"""The one reader of fio's JSON output for the benchmark scripts: prints the named fields of one run.

usage: fio-summary.py [--ddir read|write|busiest] [--tsv] [--lenient] FILE [FIELD ...]

FIELD: iops, bw_bytes, ios, ddir, mean_ns, p50_ns, p99_ns, p999_ns, p50_us, p99_us, p999_us
(default: iops p50_us p99_us p999_us). Latencies are fio's completion latency (clat); the percentiles
need --percentile_list=50:99:99.9 (or fio's default list). --ddir picks the direction (default: the one
that moved the most bytes; "mixed" for a job with unified_rw_reporting=mixed, which reports reads and writes
together). Values are printed as Python prints them, space separated (--tsv: tab).
Strict by default: exactly one job, no job error, some I/O, every percentile present; else exit 1 with
a message naming FILE. --lenient reads the first job and takes a missing percentile as 0.
"""
import json
import sys

FIELDS = ("iops", "bw_bytes", "ios", "ddir", "mean_ns", "p50_ns", "p99_ns", "p999_ns", "p50_us", "p99_us", "p999_us")
PCT = {"p50": "50.000000", "p99": "99.000000", "p999": "99.900000"}


def load(path):
    text = open(path, encoding="utf-8", errors="replace").read()
    # fio's nbd engine may print "fio: connected to NBD server" before the JSON.
    start = text.find("{")
    if start < 0:
        raise SystemExit(f"{path}: no JSON in fio output")
    return json.loads(text[start:])


def summary(path, ddir="busiest", fields=("iops", "p50_us", "p99_us", "p999_us"), lenient=False):
    """The values of FIELDS for the one job in fio's JSON output at PATH."""
    jobs = load(path).get("jobs") or []
    if not jobs or (len(jobs) != 1 and not lenient):
        raise SystemExit(f"{path}: expected one fio job, found {len(jobs)}")
    j = jobs[0]
    if j.get("error") and not lenient:
        raise SystemExit(f"{path}: fio job error {j['error']}")
    if ddir == "busiest":
        # "mixed": a job with unified_rw_reporting=mixed reports reads and writes together.
        ddir = max((k for k in ("read", "write", "mixed") if k in j), key=lambda k: j[k]["io_bytes"])
    st = j[ddir]
    if st["io_bytes"] == 0 and not lenient:
        raise SystemExit(f"{path}: fio did no I/O")
    pct = st["clat_ns"].get("percentile") or {}

    def p(key):
        if key in pct:
            return pct[key]
        if lenient:
            return 0
        raise SystemExit(f"{path}: no clat percentile {key} (percentile_list=50:99:99.9 missing?)")

    values = []
    for f in fields:
        if f == "ddir":
            values.append(ddir)
        elif f == "ios":
            values.append(st["total_ios"])
        elif f == "mean_ns":
            values.append(st["clat_ns"]["mean"])
        elif f in ("iops", "bw_bytes"):
            values.append(st[f])
        elif f[:-3] in PCT and f.endswith("_ns"):
            values.append(p(PCT[f[:-3]]))
        elif f[:-3] in PCT and f.endswith("_us"):
            values.append(p(PCT[f[:-3]]) / 1000)
        else:
            raise SystemExit(f"fio-summary: unknown field {f} ({', '.join(FIELDS)})")
    return values


def main(argv):
    ddir, sep, lenient, rest = "busiest", " ", False, []
    while argv:
        a = argv.pop(0)
        if a == "--ddir" and argv:
            ddir = argv.pop(0)
        elif a == "--tsv":
            sep = "\t"
        elif a == "--lenient":
            lenient = True
        elif a in ("-h", "--help"):
            print(__doc__.strip())
            return 0
        else:
            rest.append(a)
    if not rest or ddir not in ("read", "write", "busiest"):
        raise SystemExit("usage: fio-summary.py [--ddir read|write|busiest] [--tsv] [--lenient] FILE [FIELD ...]")
    values = summary(rest[0], ddir, rest[1:] or ("iops", "p50_us", "p99_us", "p999_us"), lenient)
    print(sep.join(str(v) for v in values))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

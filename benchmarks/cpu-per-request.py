#!/usr/bin/env python3
"""Helpers of benchmarks/cpu-per-request.sh (issue 27: CPU, system calls and context switches per request).

usage:
  cpu-per-request.py cpu PID                 utime and stime of the process (all threads, exited ones too), in µs
  cpu-per-request.py ctxsample PID STOPFILE  polls /proc/PID/task/*/status every 50 ms until STOPFILE exists,
                                             prints the voluntary and involuntary context switches made
                                             meanwhile, summed over all threads (threads that exit in between
                                             count up to their last sample)
  cpu-per-request.py strace FILE             total calls and the top 5 system calls of an `strace -c` summary,
                                             as JSON
  cpu-per-request.py report TSV MDFILE JSONFILE HEADER
                                             the table (Markdown on stdout and in MDFILE) and the JSON
"""
import glob
import json
import os
import sys
import time

TICK_US = 1e6 / os.sysconf("SC_CLK_TCK")


def cpu_us(pid):
    # Fields after the ")" of comm: state is field 3, utime 14, stime 15 (1-based, man 5 proc).
    text = open(f"/proc/{pid}/stat").read()
    rest = text[text.rindex(")") + 2:].split()
    return int(rest[11]) * TICK_US, int(rest[12]) * TICK_US


def task_switches(pid):
    out = {}
    for path in glob.glob(f"/proc/{pid}/task/*/status"):
        tid = path.split("/")[4]
        vol = invol = None
        try:
            with open(path) as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        vol = int(line.split()[1])
                    elif line.startswith("nonvoluntary_ctxt_switches:"):
                        invol = int(line.split()[1])
        except OSError:
            continue  # the thread exited meanwhile
        if vol is not None and invol is not None:
            out[tid] = (vol, invol)
    return out


def ctxsample(pid, stopfile):
    base = task_switches(pid)
    last = dict(base)
    print("ready", flush=True)
    while not os.path.exists(stopfile) and os.path.exists(f"/proc/{pid}"):
        time.sleep(0.05)
        last.update(task_switches(pid))
    last.update(task_switches(pid))
    vol = sum(v - base.get(t, (0, 0))[0] for t, (v, _) in last.items())
    invol = sum(i - base.get(t, (0, 0))[1] for t, (_, i) in last.items())
    print(vol, invol)


def strace_summary(path):
    """strace -c table: '% time seconds usecs/call calls errors syscall'; errors may be blank."""
    rows, total = [], 0
    for line in open(path, errors="replace"):
        parts = line.split()
        if len(parts) < 5 or not parts[0].replace(".", "").isdigit():
            continue
        name = parts[-1]
        calls = int(parts[3])
        if name == "total":
            total = calls
        else:
            rows.append((calls, name))
    rows.sort(reverse=True)
    return {"calls": total, "top": [[n, c] for c, n in rows[:5]]}


def report(tsv, mdfile, jsonfile, header):
    rows = []
    for line in open(tsv):
        f = line.rstrip("\n").split("\t")
        if len(f) < 12:
            continue
        server, job, ios, secs, iops, cpu, vol, invol, ios_s, calls, top, sys_us = f[:12]
        ios, ios_s = int(ios), int(ios_s)
        top = json.loads(top)
        rows.append({
            "server": server, "job": job, "requests": ios, "wall_seconds": float(secs),
            "iops": float(iops),
            "cpu_us": float(cpu), "cpu_us_per_request": float(cpu) / ios if ios else None,
            "system_cpu_share": float(sys_us) / float(cpu) if float(cpu) else None,
            "voluntary_ctxt_switches": int(vol), "involuntary_ctxt_switches": int(invol),
            "ctxt_switches_per_request": (int(vol) + int(invol)) / ios if ios else None,
            "strace_requests": ios_s, "syscalls": int(calls),
            "syscalls_per_request": int(calls) / ios_s if ios_s else None,
            "top_syscalls_per_request": [[n, c / ios_s if ios_s else None] for n, c in top],
        })
    md = [header, "",
          "| job | server | requests | IOPS (loaded machine) | CPU µs / request (system share) | syscalls / request "
          "| ctx switches / request (vol+invol) | top 5 syscalls / request (strace pass) |",
          "|---|---|---:|---:|---:|---:|---:|---|"]
    fmt = lambda v, p=1: "n/a" if v is None else f"{v:.{p}f}"
    for r in rows:
        top = ", ".join(f"{n} {fmt(c, 2)}" for n, c in r["top_syscalls_per_request"])
        ctx = r["ctxt_switches_per_request"]
        md.append(f"| {r['job']} | {r['server']} | {r['requests']} | {r['iops']:.0f} | {fmt(r['cpu_us_per_request'])} ({fmt(None if r['system_cpu_share'] is None else 100 * r['system_cpu_share'], 0)}%) "
                  f"| {fmt(r['syscalls_per_request'], 2)} | {fmt(ctx, 2)} "
                  f"({r['voluntary_ctxt_switches']}+{r['involuntary_ctxt_switches']}) | {top} |")
    text = "\n".join(md) + "\n"
    sys.stdout.write(text)
    if mdfile:
        open(mdfile, "w").write(text)
    json.dump(rows, open(jsonfile, "w"), indent=2)


def main(argv):
    if len(argv) >= 2 and argv[0] == "cpu":
        print("%.0f %.0f" % cpu_us(argv[1]))
    elif len(argv) == 3 and argv[0] == "ctxsample":
        ctxsample(argv[1], argv[2])
    elif len(argv) == 2 and argv[0] == "strace":
        print(json.dumps(strace_summary(argv[1])))
    elif len(argv) == 5 and argv[0] == "report":
        report(*argv[1:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])

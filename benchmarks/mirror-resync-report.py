#!/usr/bin/env python3
"""mirror-resync-report.py OUT [options]: the table and plot of benchmarks/mirror-resync.sh.

Reads, per round R, OUT/round-R.trace (bench trace-load: seq conn offset length issue_ns ack_ns status),
OUT/round-R.kill (epoch ns of the SIGKILL), OUT/round-R.dead (epoch ns when the killed process was reaped: "the
kill" below means this moment when the file exists) and OUT/round-R.status.json (snapbd's `mirror status --json` after the
restart) and computes from the trace:

  in flight  bytes of the writes sent before the kill and never acknowledged (the writes a crash may leave on
             some legs and not others; writes sent after the kill reached no server and are not counted; a write sent
             between the signal and the death did reach it, hence the cut at the death)
  snapbd     lastReconciliation.bytesCopied of the reconciliation at open after the restart (and bytesCompared:
             the unmatched ranges it compared first; only the blocks where the legs differ are copied)
  DRBD AL    DRBD's activity log: 4 MiB extents, an LRU of --al-extents (default 1237) extents, every write
             (in send order) makes its extents the most recent; after a primary crash every extent in the log is
             resynced: extents in the log at the kill x 4 MiB. The log starts empty each round (in favour of DRBD:
             a real log also holds the extents of earlier rounds)
  md bitmap  md's write-intent bitmap with 64 MiB regions: a region's bit is set when a write to it starts and
             cleared by the bitmap daemon once no write touched it for --md-delay s (default 5): regions with a
             write sent, or acknowledged, within that time before the kill, or still in flight, x 64 MiB

Prints the table (Markdown) and writes an SVG bar chart (log scale). Exit 3 when a round's snapbd copy is above
--factor x in flight (a round with nothing in flight must copy nothing), 0 otherwise.
"""
import argparse
import json
import math
import os
import sys
from collections import OrderedDict

EXTENT = 4 << 20
REGION = 64 << 20


def read_trace(path):
    rows = []
    with open(path) as f:
        for line in f:
            if line.startswith('#'):
                continue
            seq, conn, off, length, issue, ack, status = line.split()
            rows.append((int(seq), int(off), int(length), int(issue), int(ack), int(status)))
    rows.sort()
    return rows


def analyse(rows, kill_ns, size, al_extents, md_delay_ns):
    in_flight = 0
    writes = acked = 0
    al = OrderedDict()
    region_last = {}
    for seq, off, length, issue, ack, status in rows:
        if issue > kill_ns:
            continue  # sent after the server was dead (kill_ns here is its death, see main): reached no server
        writes += 1
        if status == 0:
            acked += 1
        else:
            in_flight += length
        for e in range(off // EXTENT, (off + length - 1) // EXTENT + 1):
            al.pop(e, None)
            al[e] = True
            if len(al) > al_extents:
                al.popitem(last=False)
        last = kill_ns if status != 0 else max(issue, ack)
        for g in range(off // REGION, (off + length - 1) // REGION + 1):
            region_last[g] = max(region_last.get(g, 0), last)
    drbd = sum(min(EXTENT, size - e * EXTENT) for e in al)
    md = sum(min(REGION, size - g * REGION) for g, t in region_last.items() if t >= kill_ns - md_delay_ns)
    return dict(writes=writes, acknowledged=acked, inFlightBytes=in_flight, drbdAlBytes=drbd, mdBitmapBytes=md,
                drbdAlExtents=len(al))


def human(n):
    for unit, shift in (('GiB', 30), ('MiB', 20), ('KiB', 10)):
        if n >= 1 << shift:
            return '%.1f %s' % (n / (1 << shift), unit)
    return '%d B' % n


def svg(rounds, path, title):
    series = [('in flight', 'inFlightBytes', '#7f7f7f'), ('snapbd copied', 'copiedBytes', '#2ca02c'),
              ('DRBD AL (4 MiB extents)', 'drbdAlBytes', '#d62728'), ('md bitmap (64 MiB regions)', 'mdBitmapBytes', '#1f77b4')]
    vals = [r[k] for r in rounds for _, k, _ in series if r[k] > 0]
    # grid lines every factor of 32 (1 KiB, 32 KiB, 1 MiB, ...), so the labels are round binary units
    lo = 2 ** (5 * math.floor(math.log2(min(vals)) / 5)) if vals else 1024
    hi = 2 ** (5 * math.ceil(math.log2(max(vals)) / 5)) if vals else 1 << 30
    if hi <= lo:
        hi = lo * 32
    w, h, left, top, bottom = 120 + 110 * len(rounds), 380, 80, 40, 70
    ph = h - top - bottom
    def y(v):
        if v <= 0:
            return top + ph
        return top + ph - ph * (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">' % (w + 180, h),
           '<rect width="100%" height="100%" fill="white"/>',
           '<text x="%d" y="20" font-size="13">%s</text>' % (left, title)]
    d = lo
    while d <= hi:
        out.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/>' % (left, w, y(d), y(d)))
        out.append('<text x="%d" y="%.1f" text-anchor="end">%s</text>' % (left - 4, y(d) + 4, human(int(d)).replace('.0 ', ' ')))
        d *= 32
    bw = 22
    for i, r in enumerate(rounds):
        x0 = left + 20 + i * 110
        for j, (_, k, color) in enumerate(series):
            v = r[k]
            yy = y(v)
            out.append('<rect x="%d" y="%.1f" width="%d" height="%.1f" fill="%s"><title>%s</title></rect>'
                       % (x0 + j * bw, yy, bw - 2, top + ph - yy, color, human(v)))
            out.append('<text x="%d" y="%.1f" font-size="8" text-anchor="middle">%s</text>'
                       % (x0 + j * bw + bw // 2 - 1, yy - 3, human(v).replace('.0 ', ' ').replace(' ', '')))
        out.append('<text x="%d" y="%d" text-anchor="middle">round %d</text>' % (x0 + 2 * bw, top + ph + 16, r['round']))
    for j, (name, _, color) in enumerate(series):
        out.append('<rect x="%d" y="%d" width="12" height="12" fill="%s"/>' % (w + 10, top + j * 20, color))
        out.append('<text x="%d" y="%d">%s</text>' % (w + 28, top + j * 20 + 10, name))
    out.append('<text x="%d" y="%d">bytes (log scale) resynced after kill -9 under random writes</text>' % (left, h - 20))
    out.append('</svg>')
    with open(path, 'w') as f:
        f.write('\n'.join(out) + '\n')


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('out')
    ap.add_argument('--size', type=int, required=True, help='volume size in bytes')
    ap.add_argument('--al-extents', type=int, default=1237)
    ap.add_argument('--md-delay', type=float, default=5.0)
    ap.add_argument('--factor', type=float, default=1.5)
    ap.add_argument('--svg')
    ap.add_argument('--markdown')
    ap.add_argument('--json', action='store_true')
    a = ap.parse_args()
    rounds = []
    r = 1
    while os.path.exists(os.path.join(a.out, 'round-%d.trace' % r)):
        p = lambda ext: os.path.join(a.out, 'round-%d.%s' % (r, ext))
        kill_ns = int(open(p('kill')).read())
        # Writes sent between the SIGKILL and the process's death reached it: cut at the death when it was recorded.
        if os.path.exists(p('dead')):
            kill_ns = int(open(p('dead')).read())
        st = json.load(open(p('status.json')))
        rec = st.get('lastReconciliation') or {}
        row = analyse(read_trace(p('trace')), kill_ns, a.size, a.al_extents, int(a.md_delay * 1e9))
        row['round'] = r
        row['reconciledAtOpen'] = bool(rec.get('atOpen'))
        row['copiedBytes'] = int(rec.get('bytesCopied', 0)) if rec else 0
        row['comparedBytes'] = int(rec.get('bytesCompared', 0)) if rec else 0
        row['rangesCopied'] = int(rec.get('rangesCopied', 0)) if rec else 0
        row['entriesMatched'] = int(rec.get('entriesMatched', 0)) if rec else 0
        row['entriesUnmatched'] = int(rec.get('entriesUnmatched', 0)) if rec else 0
        row['ratio'] = row['copiedBytes'] / row['inFlightBytes'] if row['inFlightBytes'] else None
        chk = p('check.json')
        row['check'] = json.load(open(chk)) if os.path.exists(chk) else None
        row['delaySeconds'] = float(open(p('delay')).read()) if os.path.exists(p('delay')) else None
        rounds.append(row)
        r += 1
    if not rounds:
        print('mirror-resync-report: no round-1.trace in %s' % a.out, file=sys.stderr)
        return 1
    over = [x['round'] for x in rounds
            if not x['reconciledAtOpen'] or x['copiedBytes'] > a.factor * x['inFlightBytes']]
    lines = ['| round | kill after s | writes sent | bytes in flight | snapbd compared | snapbd copied | ratio | DRBD AL (%d x 4 MiB) | md bitmap (64 MiB, %g s) |'
             % (a.al_extents, a.md_delay),
             '|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
    for x in rounds:
        lines.append('| %d | %s | %d | %s (%d) | %s | %s (%d) | %s | %s | %s |' % (
            x['round'], '%.2f' % x['delaySeconds'] if x['delaySeconds'] is not None else '?', x['writes'],
            human(x['inFlightBytes']), x['inFlightBytes'], human(x['comparedBytes']), human(x['copiedBytes']), x['copiedBytes'],
            '%.2f' % x['ratio'] if x['ratio'] is not None else '-', human(x['drbdAlBytes']), human(x['mdBitmapBytes'])))
    tin = sum(x['inFlightBytes'] for x in rounds)
    tcp = sum(x['copiedBytes'] for x in rounds)
    tal = sum(x['drbdAlBytes'] for x in rounds)
    tmd = sum(x['mdBitmapBytes'] for x in rounds)
    tcm = sum(x['comparedBytes'] for x in rounds)
    lines.append('| all | | %d | %s | %s | %s | %s | %s | %s |' % (sum(x['writes'] for x in rounds), human(tin), human(tcm), human(tcp),
                 '%.2f' % (tcp / tin) if tin else '-', human(tal), human(tmd)))
    md = '\n'.join(lines) + '\n'
    if a.markdown:
        with open(a.markdown, 'w') as f:
            f.write(md)
    if a.svg:
        svg(rounds, a.svg, 'Resync after kill -9: snapbd tag tables vs DRBD activity log vs md bitmap (%s volume)' % human(a.size))
    summary = dict(rounds=len(rounds), factor=a.factor, inFlightBytes=tin, comparedBytes=tcm, copiedBytes=tcp, drbdAlBytes=tal, mdBitmapBytes=tmd,
                   roundsOverFactor=over, perRound=rounds)
    if a.json:
        print(json.dumps(summary, indent=1))
    else:
        sys.stdout.write(md)
    if over:
        print('mirror-resync-report: rounds %s copied more than %g x the bytes in flight (or did not reconcile at open)'
              % (over, a.factor), file=sys.stderr)
        return 3
    return 0


if __name__ == '__main__':
    sys.exit(main())

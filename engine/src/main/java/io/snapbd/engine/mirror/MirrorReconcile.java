package io.snapbd.engine.mirror;

import io.snapbd.engine.io.WriteGate;
import io.snapbd.engine.mirror.MirrorSet.LocalCopyListener;
import io.snapbd.engine.mirror.MirrorSet.Reconciliation;

import java.io.IOException;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Reconciliation and resync of a {@link MirrorSet}'s legs (docs/mirrors.md, "Reconciliation", "Degraded mode"):
 * at open after an unclean stop or with a degraded leg, on demand (changes held back at the write gate meanwhile)
 * and at a clean close. Opens failed legs again, runs the {@link Reconciler} over the legs that are open (degraded
 * ones as targets only, with their region maps' ranges), drops a resynced leg's region map, reports copies into
 * leg 0 to the volume, and keeps the figures of the last run for status.
 */
final class MirrorReconcile {

    private final MirrorLegs set;
    private final WriteGate gate;
    private final AtomicLong bytesCopiedTotal = new AtomicLong();
    private final AtomicLong bytesComparedTotal = new AtomicLong();
    private final AtomicLong reconciliations = new AtomicLong();
    private volatile Reconciliation last;
    private volatile boolean reconciling;
    private volatile long copyDone;
    private volatile long copyTotal;
    private volatile LocalCopyListener localCopies = (o, l) -> {
    };

    private final DataForcer forcer;

    private final HotRegions hot;

    MirrorReconcile(MirrorLegs set, WriteGate gate, DataForcer forcer, HotRegions hot) {
        this.set = set;
        this.hot = hot;
        this.gate = gate;
        this.forcer = forcer;
    }

    /** Where copies reconciliation makes into leg 0 from other legs are reported (set by the volume at open). */
    void onLocalCopies(LocalCopyListener l) throws IOException {
        localCopies = l;
        Reconciliation r = last;
        if (r != null && r.atOpen()) {
            reportLocal(r.report());
        }
    }

    private void reportLocal(Reconciler.Report r) throws IOException {
        for (Reconciler.Copy c : r.copies()) {
            if (c.into(0)) {
                localCopies.copied(c.offset(), c.length());
            }
        }
    }

    /**
     * {@link MirrorSet#reconcile(Reconciler.Progress)}: holds changes back at the gate meanwhile; throws, naming it,
     * when a degraded leg stays degraded.
     */
    Reconciliation reconcile(Reconciler.Progress progress) throws IOException {
        if (!gate.pause()) {
            throw new IOException("changes in flight on the mirrored volume did not finish in time; nothing reconciled");
        }
        Reconciliation r;
        try {
            r = runReconcile(false, progress);
        } finally {
            gate.resume();
        }
        for (Leg l : set.legs) {
            if (l.stale && !l.joining) {
                throw new IOException(l.failure + "; the leg stays degraded (its missed writes recorded in "
                        + DegradedLegs.mapFile(set.dir, l.id).getFileName() + "), the other legs were reconciled: " + r.report());
            }
        }
        return r;
    }

    /**
     * Opens failed legs again (not at open: they were just tried). With a degraded leg that still cannot be reached,
     * when only leg 0 is current, or on demand (and at a clean close) with no other degraded leg back: changes
     * nothing (the live entries stay the exact record of what it missed). Else folds every live entry into the
     * region map of each degraded leg that cannot be reached (so the current legs' tables can be emptied), then reconciles
     * the legs that are open, degraded ones as targets only, with their region maps' ranges; deletes the region
     * map of every degraded leg that took part once its copies are durable and the tables retired.
     */
    Reconciliation runReconcile(boolean atOpen, Reconciler.Progress progress) throws IOException {
        return runReconcile(atOpen, !atOpen, progress);
    }

    synchronized Reconciliation runReconcile(boolean atOpen, boolean reopen, Reconciler.Progress progress)
            throws IOException {
        reconciling = true;
        copyDone = 0;
        copyTotal = 0;
        try {
            try {
                // answered changes' data forces, DONE and RETIRE first, so that no batch retires behind the reconciliation
                forcer.forceAll();
                // every hot region's changes are forced now and none is in flight: retire their region entries, so
                // that the reconciliation (on demand, at a clean close) does not compare them
                forcer.coolNow();
            } catch (IOException e) {
                // a batch failed on leg 0: its entries stay live and are reconciled below
            }
            if (reopen) {
                reopenFailed();
            }
            Leg[] legs = set.legs;
            List<Leg> part = new ArrayList<>();
            List<Leg> away = new ArrayList<>();
            for (Leg l : legs) {
                if (l.joining) {
                    continue;       // an online add fills it; not listed yet: never a source nor a target
                }
                (l.index == 0 || l.failure == null ? part : away).add(l);
            }
            for (Leg l : away) {
                if (!l.stale) {
                    IOException x = set.degrade(l, l.failure);
                    if (x != null) {
                        throw x;
                    }
                }
            }
            boolean resyncing = false;
            for (Leg l : part) {
                resyncing |= l.stale;
            }
            if (!away.isEmpty() && !set.failed && (part.size() < 2 || !atOpen && !resyncing)) {
                // Nothing to reconcile among the current legs (only leg 0, or no crash to recover from): the live
                // entries stay as they are, the exact record of what the unreachable legs missed.
                legs[0].depth.set(legs[0].table.live().size());
                return new Reconciliation(System.currentTimeMillis(), atOpen,
                        new Reconciler.Report(0, 0, 0, 0, 0, List.of()), 1L);
            }
            if (!away.isEmpty()) {
                List<long[]> ranges = new ArrayList<>();
                for (Leg l : part) {
                    for (TagTable.Entry e : l.table.live()) {
                        ranges.add(new long[]{e.offset(), e.length()});
                    }
                }
                for (Leg l : away) {
                    l.map.markMissed(ranges);
                }
            }
            List<TagTable> tables = new ArrayList<>();
            List<LegIo> ios = new ArrayList<>();
            boolean[] stale = new boolean[part.size()];
            List<long[]> missed = new ArrayList<>();
            long mask = 0;
            for (int i = 0; i < part.size(); i++) {
                Leg l = part.get(i);
                tables.add(l.table);
                ios.add(l.leg.data());
                stale[i] = l.stale;
                if (l.stale) {
                    missed.addAll(l.map.missedRanges());
                }
                mask |= 1L << l.index;
            }
            Reconciler.Progress p = (done, total) -> {
                copyDone = done;
                copyTotal = total;
                progress.copied(done, total);
            };
            Reconciler.Report r;
            if (part.size() >= 2) {
                Reconciler.Report pr;
                try {
                    pr = Reconciler.reconcile(tables, ios, stale, missed, p);
                } catch (IOException | RuntimeException e) {
                    // which leg failed is not known: the degraded ones are opened anew next time (their records
                    // are intact: nothing was retired or cleared)
                    String names = "";
                    for (Leg l : part) {
                        if (l.stale) {
                            l.failure = "mirror leg " + l.index + " (" + l.uri + "): resync failed: " + e.getMessage();
                            names += (names.isEmpty() ? "" : ", ") + l.index + " (" + l.uri + ")";
                        }
                    }
                    throw new IOException((names.isEmpty() ? "reconciliation" : "resync of degraded mirror leg "
                            + names) + " failed: " + e.getMessage() + "; nothing was retired, it can run again", e);
                }
                List<Reconciler.Copy> copies = new ArrayList<>();
                for (Reconciler.Copy c : pr.copies()) {
                    long to = 0;
                    for (int i = 0; i < part.size(); i++) {
                        if (c.into(i)) {
                            to |= 1L << part.get(i).index;
                        }
                    }
                    copies.add(new Reconciler.Copy(c.tag(), c.offset(), c.length(), part.get(c.from()).index, to));
                }
                r = new Reconciler.Report(pr.entriesMatched(), pr.entriesUnmatched(), pr.rangesCopied(),
                        pr.bytesCopied(), pr.bytesCompared(), List.copyOf(copies));
            } else {
                // only leg 0 is open: its entries are in every absent leg's region map now
                List<Long> live = new ArrayList<>();
                for (TagTable.Entry e : legs[0].table.live()) {
                    live.add(e.tag());
                }
                legs[0].table.retireAll(live);
                r = new Reconciler.Report(0, live.size(), 0, 0, 0, List.of());
            }
            hot.reset();        // every region entry was retired with the rest: no region is hot any more
            Reconciliation rec = new Reconciliation(System.currentTimeMillis(), atOpen, r, mask);
            for (Leg l : part) {
                l.bytesCopiedIn.addAndGet(rec.bytesTo(l.index));
                if (l.stale) {
                    set.degraded.resynced(l);
                }
                l.depth.set(0);
                l.failure = null;
            }
            for (Leg l : away) {
                l.depth.set(0);
            }
            last = rec;
            reconciliations.incrementAndGet();
            bytesCopiedTotal.addAndGet(r.bytesCopied());
            bytesComparedTotal.addAndGet(r.bytesCompared());
            set.failed = false;
            if (!atOpen) {
                reportLocal(r);
            }
            return rec;
        } finally {
            reconciling = false;
        }
    }

    /**
     * Opens every failed extra leg again (no change is in flight): a leg whose connection was lost (an NBD server
     * that went away and came back) fails every later call until it is opened anew. The table is read again from
     * the leg, so whatever the failed change left there is what reconciliation sees. A leg that still cannot be
     * opened keeps its failure (and is, or becomes, degraded).
     */
    private void reopenFailed() {
        for (Leg l : set.legs) {
            if (l.index == 0 || l.failure == null || l.joining) {
                continue;
            }
            try {
                l.reopen(set.size, set.owner);
                l.failure = null;
            } catch (IOException | RuntimeException e) {
                l.failure = e.getMessage();
            }
        }
    }

    Reconciliation last() {
        return last;
    }

    /** A reconciliation or resync is running now. */
    boolean running() {
        return reconciling;
    }

    long reconciliations() {
        return reconciliations.get();
    }

    long bytesCopiedTotal() {
        return bytesCopiedTotal.get();
    }

    long bytesComparedTotal() {
        return bytesComparedTotal.get();
    }

    long[] copyProgress() {
        return new long[]{copyDone, copyTotal};
    }
}

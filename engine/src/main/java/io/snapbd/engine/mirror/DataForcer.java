package io.snapbd.engine.mirror;

import java.io.IOException;
import java.io.InterruptedIOException;

/**
 * The data forces of a mirror's answered changes, in batches behind the answers (docs/mirrors.md, "Write order",
 * step 5): a change is answered once its ENTRY is durable on every current leg and its data written to every leg;
 * it is then {@link #add}ed here. This thread forces the legs' data (leg 0's range here, every extra leg's on its
 * {@link LegForcer} at the same time), appends DONE for the batch on every leg, then retires the batch on every
 * leg (or, while a leg is degraded, keeps the entries live and folds them when the tables fill). A batch starts
 * when {@link #BATCH_TAGS} changes or {@link #BATCH_BYTES} bytes wait, when the oldest waiting change is
 * {@link #BATCH_NANOS} old, or when a client's FLUSH (or FUA) waits in {@link #forceAll}. At most
 * {@link #MAX_TAGS} strict-path changes (a quarter of a small table's half, if less) or {@link #MAX_BYTES} bytes are
 * answered and not yet forced: more wait in {@link #add}. That, plus the hot regions, is what a crash can leave
 * unmatched beyond the changes in flight. Changes in hot regions do not count: their regions' entries cover them, so
 * their fine entries are retired without a data force (in passes, or with the next batch). Allocates nothing
 * per change (rings of preallocated arrays).
 */
final class DataForcer implements AutoCloseable {

    /**
     * Answered changes not yet forced at most: 1024, or {@code -Dsnapbd.mirror.unforced.changes} (16 … 8192; never
     * more than a quarter of leg 0's table half). Strict-path changes only (their own forced ENTRY is their record);
     * changes in hot regions do not count (docs/mirrors.md, "Hot regions").
     */
    static final int MAX_TAGS = (int) Math.max(16, Math.min(8192, Long.getLong("snapbd.mirror.unforced.changes", 1024)));
    /**
     * Changes that start a batch: 768, or {@code -Dsnapbd.mirror.batch.changes} (1 … {@link #MAX_TAGS}). Large and
     * rare batches, because a batch's data forces slow down the ENTRY forces on the answer path (measured:
     * docs/mirrors.md, "Cost").
     */
    static final int BATCH_TAGS = (int) Math.max(1, Math.min(MAX_TAGS, Long.getLong("snapbd.mirror.batch.changes", 768)));
    static final long BATCH_BYTES = 16L << 20;
    static final long MAX_BYTES = 64L << 20;
    /** Age of the oldest waiting change that starts a batch: 1 s, or {@code -Dsnapbd.mirror.batch.millis} (1 … 1000). */
    static final long BATCH_NANOS = Math.max(1, Math.min(1000, Long.getLong("snapbd.mirror.batch.millis", 1000))) * 1_000_000L;
    /**
     * Hot-path changes (regions all hot, ENTRY unforced) whose fine entries wait to be retired at most: 4096 (never
     * more than a quarter of leg 0's table half). They are retired without a data force (their regions' entries cover
     * them), by the forcer thread in passes of half this, or with the next batch; a writer waits only when this many
     * wait while the thread is busy (a batch's data forces).
     */
    static final int HOT_TAGS = 4096;
    /**
     * Age of the oldest change no batch covers yet that starts a batch when only hot-path changes wait: 30 s (the
     * kernel's own write-back age, {@code vm.dirty_expire_centisecs}), or {@code -Dsnapbd.mirror.hotBatch.millis}
     * (1 … 3,600,000). Their regions' entries cover them (compared whole after a crash whether or not their data
     * was forced), so forcing them every {@link #BATCH_NANOS} bought nothing but a scattered write-back of every leg
     * each second, which an unmirrored volume never pays; a FLUSH or FUA still forces them at once, and a strict
     * change still starts a batch {@link #BATCH_NANOS} after it.
     */
    static final long HOT_BATCH_NANOS = Math.max(1, Math.min(3_600_000, Long.getLong("snapbd.mirror.hotBatch.millis", 30_000)))
            * 1_000_000L;
    /**
     * How long a hot region must see no change before it cools while the cap has room: 60 s, or
     * {@code -Dsnapbd.mirror.coolIdle.millis} (1 … 3,600,000). Re-making a region hot costs a forced region entry on
     * every leg before its next change; keeping it hot costs at most its bytes compared after a crash, within the
     * cap's bound either way. Short idle gaps (a client between bursts) therefore keep their regions hot; under
     * pressure (changes sent to the strict path for want of room) regions idle for one batch cool at once.
     */
    static final long COOL_IDLE_NANOS = Math.max(1, Math.min(3_600_000, Long.getLong("snapbd.mirror.coolIdle.millis", 60_000)))
            * 1_000_000L;

    private final MirrorLegs set;
    private final HotRegions hot;
    /** Region entries' tags of the regions a batch cools (DONE + RETIRE with the batch). */
    private final long[] cooling;
    /** {@link #seqCompleted} as of the last batch: under pressure a region cools once idle for a whole batch. */
    private long completedBefore;
    private long fallbacksBefore;
    /**
     * Idle marks (the forcer thread's): {@link #idleMark} was the last sequence number given when the mark was set,
     * at {@link #idleMarkNanos}; once {@link #COOL_IDLE_NANOS} passed since, it moves to {@link #idleUpTo}: a region
     * whose last change's sequence number is at or below {@link #idleUpTo} saw no change for at least that long.
     */
    private long idleMark;
    private long idleMarkNanos = System.nanoTime();
    private long idleUpTo;
    private long lastCoolNanos = System.nanoTime();
    /** An idle cooling pass runs (guarded by this): {@link #forceAll} waits for it, so a drained forcer writes nothing. */
    private boolean coolRunning;
    /** True while the write gate is paused (a reconciliation, a leg change): no idle cooling pass starts then. */
    volatile java.util.function.BooleanSupplier holdCooling = () -> false;
    /** Unforced changes allowed: {@link #MAX_TAGS}, less for small tag tables (a quarter of leg 0's half). */
    private final int capTags;
    private final int batchTags;
    private final long[] ringTag = new long[MAX_TAGS];
    private final long[] ringOff = new long[MAX_TAGS];
    private final long[] ringLen = new long[MAX_TAGS];
    private final long[] ringNanos = new long[MAX_TAGS];
    private final long[] batch = new long[MAX_TAGS + HOT_TAGS];
    /** Hot-path changes' tags to retire (a ring; {@link #hotAdded}, {@link #hotTaken}; guarded by this). */
    private final long[] hotRing = new long[HOT_TAGS];
    private final long[] hotBatch = new long[HOT_TAGS];
    private final int hotCap;
    private long hotAdded;
    /** Hot-path changes that appended no ENTRY (hotEntries=none; guarded by this). */
    private long hotWithoutEntry;
    private long hotTaken;
    /** Hot-path fine entries retired before any data force covered them (tests, statistics). */
    private final java.util.concurrent.atomic.AtomicLong retiredEarly = new java.util.concurrent.atomic.AtomicLong();
    /**
     * Data-force sequence numbers (every change, hot or strict; guarded by this): {@link #seq} the last one given,
     * {@link #seqTaken} the last one a batch's data forces cover (the batch started after it was given),
     * {@link #seqCompleted} the last one whose batch completed on every leg.
     */
    private long seq;
    private long seqTaken;
    private long seqCompleted;
    /** Range of leg 0 changed since the last batch started (hot and strict changes), and when the oldest was added. */
    private long pendLo = Long.MAX_VALUE;
    private long pendHi;
    private long pendNanos;
    private long lastAddNanos;
    private final long[] dataTickets;
    /** Changes added, taken into a batch, and whose batch completed (sequence numbers; guarded by this). */
    private long added;
    private long taken;
    private long completed;
    private long waitingBytes;      // added, not yet taken
    private long unforcedBytes;     // added, batch not completed
    private long wantUpTo;          // a forceAll waits for the batches up to here
    private long failures;          // batches that failed on leg 0
    private IOException lastFailure;
    private long batches;
    private boolean closed;
    /** Closed as a crash ({@link #close(boolean)} without join): a batch still running changes no state. */
    private volatile boolean abandoned;
    /** How leg 0's range is forced (the volume's mapping); null: leg 0's file is forced whole. */
    volatile MirrorSet.LocalForce localForce;
    private final Thread thread;

    DataForcer(MirrorLegs set, HotRegions hot) {
        this.set = set;
        this.hot = hot;
        this.cooling = new long[Math.max(1, hot.cap)];
        // the leg set changes online (mirror add/remove) only with the gate paused and this forcer drained
        this.dataTickets = new long[MirrorConfig.MAX_EXTRA_LEGS + 1];
        this.capTags = (int) Math.max(1, Math.min(MAX_TAGS, set.legs[0].table.halfRecords() / 4));
        this.batchTags = Math.min(BATCH_TAGS, capTags);
        this.hotCap = (int) Math.max(2, Math.min(HOT_TAGS, set.legs[0].table.halfRecords() / 4));
        this.thread = new Thread(this::run, "snapbd mirror data forcer " + set.dir.getFileName());
        thread.setDaemon(true);
        thread.start();
    }

    /**
     * An answered change (ENTRY durable on every current leg, data written to every leg): its data is forced, DONE
     * appended and the tag retired in a later batch. Waits while {@link #MAX_TAGS} changes or {@link #MAX_BYTES}
     * bytes are unforced. After {@link #close} the tag is left live (reconciliation handles it). Returns the change's
     * sequence number: once a batch completed up to it, the change's data is forced on every current leg
     * ({@link HotRegions#SEQ_NEVER} after close).
     */
    long add(long tag, long offset, long length) throws IOException {
        return add(tag, offset, length, false);
    }

    /**
     * As {@link #add(long, long, long)}; with {@code hotPath} (a change whose regions were all hot: their region
     * entries, live until a data force that started after its end completed, cover every byte it can make differ)
     * the change does not count against the unforced bound, and its fine entry is retired (RETIRE, no DONE: its data
     * is not known durable) without waiting for a data force. Its data is still forced by the next batch (a FLUSH's,
     * strict changes', or the periodic one {@link #HOT_BATCH_NANOS} after it), which its sequence number tells.
     */
    long add(long tag, long offset, long length, boolean hotPath) throws IOException {
        synchronized (this) {
            while (!closed && (hotPath ? hotAdded - hotTaken >= hotCap
                    : added - completed >= capTags || unforcedBytes >= MAX_BYTES && added > completed)) {
                try {
                    wait();
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    throw new InterruptedIOException("interrupted while waiting for the mirror's data forces");
                }
            }
            if (closed) {
                return HotRegions.SEQ_NEVER;
            }
            long now = nextSeq(offset, length);
            if (hotPath) {
                hotRing[(int) (hotAdded % HOT_TAGS)] = tag;
                hotAdded++;
                if (seq - seqTaken == 1 || hotAdded - hotTaken == hotCap / 2) {
                    notifyAll();
                }
                return seq;
            }
            int i = (int) (added % MAX_TAGS);
            ringTag[i] = tag;
            ringOff[i] = offset;
            ringLen[i] = length;
            ringNanos[i] = now;
            added++;
            waitingBytes += length;
            unforcedBytes += length;
            if (added - taken == 1 || added - taken >= batchTags || waitingBytes >= BATCH_BYTES) {
                notifyAll();
            }
            return seq;
        }
    }

    /**
     * A hot-path change that appended no ENTRY ({@code -Dsnapbd.mirror.hotEntries=none}): it only takes a sequence
     * number (its regions cool once a batch completed up to it) and widens leg 0's range for the next batch's data
     * force; nothing to retire, never waits.
     */
    long addWithoutEntry(long offset, long length) {
        synchronized (this) {
            if (closed) {
                return HotRegions.SEQ_NEVER;
            }
            nextSeq(offset, length);
            hotWithoutEntry++;
            if (seq - seqTaken == 1) {
                notifyAll();        // the thread times the periodic batch from the oldest change not yet covered
            }
            return seq;
        }
    }

    /**
     * Gives the change [offset, offset+length) the next sequence number (guarded by this): times the periodic batch
     * from the oldest change no batch covers yet and widens leg 0's range for the next data force. Returns now.
     */
    private long nextSeq(long offset, long length) {
        long now = System.nanoTime();
        if (seq == seqTaken) {
            pendNanos = now;
        }
        lastAddNanos = now;
        seq++;
        if (length > 0) {
            pendLo = Math.min(pendLo, offset);
            pendHi = Math.max(pendHi, offset + length);
        }
        return now;
    }

    /**
     * Forces every change added so far on every leg (a client's FLUSH or FUA): returns once their batches
     * completed; throws when one of them failed on leg 0 (an extra leg that fails is degraded instead).
     */
    void forceAll() throws IOException {
        synchronized (this) {
            long target = seq;
            long f0 = failures;
            awaitCoolingPass();
            if (seqCompleted >= target) {
                return;
            }
            if (target > wantUpTo) {
                wantUpTo = target;
                notifyAll();
            }
            while (seqCompleted < target) {
                if (closed) {
                    throw new IOException("mirror of " + set.dir.getFileName() + " closed before its data was forced");
                }
                try {
                    wait();
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    throw new InterruptedIOException("interrupted while waiting for the mirror's data forces");
                }
            }
            if (failures != f0) {
                throw new IOException(lastFailure.getMessage(), lastFailure);
            }
        }
    }

    /** Waits (holding this) until no idle cooling pass runs, so what the caller reads next is not mid-pass. */
    private void awaitCoolingPass() throws InterruptedIOException {
        while (coolRunning && !closed) {
            try {
                wait();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new InterruptedIOException("interrupted while waiting for the mirror's data forces");
            }
        }
    }

    /**
     * Cools every hot region now (DONE + RETIRE of their region entries on every leg, forced), for a reconciliation
     * or a clean close after {@link #forceAll} with no change in flight: their changes are all forced, so the
     * reconciliation then compares nothing for them. Nothing while a leg is degraded or leg 0 failed (the entries
     * are records then). Returns the failure, if any (the entries then stay live: compared, never lost).
     */
    IOException coolNow() throws IOException {
        long upTo;
        synchronized (this) {
            awaitCoolingPass();
            if (closed || seq != seqCompleted || set.staleLegs.get() > 0 || set.failed) {
                return null;
            }
            coolRunning = true;
            upTo = seqCompleted;
        }
        IOException failed = null;
        try {
            int k = hot.cool(upTo, cooling);
            failed = k > 0 ? retire(set.legs, null, 0, k) : null;
        } finally {
            synchronized (this) {
                coolRunning = false;
                notifyAll();
            }
        }
        return failed;
    }

    /** Batches completed (tests, statistics). */
    synchronized long batches() {
        return batches;
    }

    /** Changes answered whose data force has not completed yet (hot-path ones included). */
    synchronized long unforced() {
        return seq - seqCompleted;
    }

    /** Hot-path fine entries retired on leg 0 before a data force covered them (without waiting for one). */
    long retiredEarly() {
        return retiredEarly.get();
    }

    /** Hot-path changes that appended no ENTRY on any leg ({@code -Dsnapbd.mirror.hotEntries=none}). */
    synchronized long hotWithoutEntry() {
        return hotWithoutEntry;
    }

    /** Strict-path changes answered whose data force has not completed yet (what {@link #MAX_TAGS} bounds). */
    synchronized long unforcedStrict() {
        return added - completed;
    }

    /**
     * A data-force batch is due: a FLUSH waits, enough strict changes or bytes wait, the oldest waiting strict change
     * is {@link #BATCH_NANOS} old, or the oldest change (hot or strict) not yet covered by a batch is
     * {@link #HOT_BATCH_NANOS} old (so that idle hot regions can cool).
     */
    private boolean due(long now) {
        return seq > seqTaken && (wantUpTo > seqTaken || added - taken >= batchTags || waitingBytes >= BATCH_BYTES
                || now >= nextDue());
    }

    /** When the periodic batch is due (guarded by this; {@code seq > seqTaken}): see {@link #due}. */
    private long nextDue() {
        long d = pendNanos + HOT_BATCH_NANOS;
        return added > taken ? Math.min(d, ringNanos[(int) (taken % MAX_TAGS)] + BATCH_NANOS) : d;
    }

    /** Hot-path fine entries to retire without a data force: half the hot ring waits. */
    private boolean hotDue() {
        return hotAdded - hotTaken >= hotCap / 2;
    }

    /**
     * Idle hot regions to cool: nothing added for {@link #COOL_IDLE_NANOS} (every change's data forced), no leg
     * degraded. A shorter gap keeps them hot: the next burst would pay a forced region entry per region again.
     */
    private boolean coolDue(long now) {
        return seq == seqTaken && !coolRunning && hot.hot() > 0 && set.staleLegs.get() == 0 && !set.failed
                && !holdCooling.getAsBoolean()
                && now - lastCoolNanos >= BATCH_NANOS
                && (seq == 0 || now - lastAddNanos >= COOL_IDLE_NANOS);
    }

    private void run() {
        while (true) {
            long start;
            long end;
            long seqEnd;
            long lo = Long.MAX_VALUE;
            long hi = 0;
            long bytes = 0;
            boolean cool = false;
            int nh = 0;
            boolean hotOnly = false;
            synchronized (this) {
                while (!closed && !due(System.nanoTime()) && !(hotOnly = hotDue())
                        && !(cool = coolDue(System.nanoTime()))) {
                    try {
                        if (seq > seqTaken) {
                            long left = Math.min(nextDue() - System.nanoTime(), BATCH_NANOS);
                            wait(Math.max(1, left / 1_000_000), 0);
                        } else if (hot.hot() > 0) {
                            wait(Math.max(1, BATCH_NANOS / 1_000_000), 0);     // idle hot regions cool
                        } else {
                            wait();
                        }
                    } catch (InterruptedException e) {
                        closed = true;
                    }
                }
                if (closed) {
                    notifyAll();
                    return;
                }
                start = taken;
                end = added;
                seqEnd = seq;
                if (hotOnly) {
                    // the fine entries of hot-path changes: retired without a data force (their regions' entries
                    // stay live until a batch that started after their last change completed)
                    for (long s = hotTaken; s < hotAdded; s++) {
                        hotBatch[nh++] = hotRing[(int) (s % HOT_TAGS)];
                    }
                    hotTaken = hotAdded;
                    notifyAll();
                } else if (cool) {
                    lastCoolNanos = System.nanoTime();
                    coolRunning = true;
                } else {
                    taken = end;
                    seqTaken = seqEnd;
                    waitingBytes = 0;
                    lo = pendLo;
                    hi = pendHi;
                    pendLo = Long.MAX_VALUE;
                    pendHi = 0;
                    for (long s = start; s < end; s++) {
                        int i = (int) (s % MAX_TAGS);
                        batch[(int) (s - start)] = ringTag[i];
                        bytes += ringLen[i];
                    }
                    // hot-path fine entries waiting: retired with this batch's RETIRE (riding its table force)
                    int n = (int) (end - start);
                    for (long s = hotTaken; s < hotAdded; s++) {
                        batch[n + nh++] = hotRing[(int) (s % HOT_TAGS)];
                    }
                    hotTaken = hotAdded;
                    notifyAll();
                }
            }
            if (hotOnly) {
                IOException failed = retireHot(nh);
                synchronized (this) {
                    if (failed != null && !abandoned) {
                        lastFailure = failed;
                    }
                }
                continue;
            }
            if (cool) {
                // every change added so far is forced (seqCompleted == seq): idle regions cool
                int k = hot.cool(seqEnd, cooling);
                IOException failed = k > 0 ? retire(set.legs, null, 0, k) : null;
                synchronized (this) {
                    coolRunning = false;
                    if (failed != null && !abandoned) {
                        lastFailure = failed;
                    }
                    notifyAll();
                }
                continue;
            }
            IOException failed = runBatch((int) (end - start), nh, lo, hi, seqEnd);
            if (abandoned) {
                return;     // the legs were closed under the batch (a crash): nothing of it is recorded anywhere
            }
            synchronized (this) {
                completed = end;
                seqCompleted = seqEnd;
                unforcedBytes -= bytes;
                batches++;
                if (failed != null) {
                    failures++;
                    lastFailure = failed;
                }
                notifyAll();
            }
        }
    }

    /**
     * One batch: every leg's data forced (at the same time), then DONE on each for the {@code n} strict changes, then
     * RETIRE on each for them and the {@code nh} hot-path changes after them in {@link #batch} (or, with a degraded
     * leg, the entries stay live: the record of what it missed). Returns the failure of leg 0, if any.
     */
    private IOException runBatch(int n, int nh, long lo, long hi, long end) {
        Leg[] legs = set.legs;      // fixed for the batch: legs change only while this forcer is drained
        for (int i = 1; i < legs.length; i++) {
            Leg l = legs[i];
            dataTickets[i] = 0;
            if (l.stale || l.forcer == null) {
                continue;
            }
            dataTickets[i] = l.dataWrites.incrementAndGet();
            l.forcer.request(LegForcer.DATA, dataTickets[i]);
        }
        IOException leg0 = null;
        try {
            MirrorSet.LocalForce f = localForce;
            if (hi > lo) {
                if (f != null) {
                    f.force(lo, hi - lo);
                } else {
                    legs[0].leg.data().force();
                }
            }
            legs[0].table.markDone(batch, n);
        } catch (IOException | RuntimeException e) {
            if (abandoned) {
                return null;
            }
            leg0 = set.fail(legs[0], "the volume's data", e);
        }
        for (int i = 1; i < legs.length; i++) {
            Leg l = legs[i];
            if (dataTickets[i] == 0 || l.stale) {
                continue;
            }
            try {
                l.forcer.await(LegForcer.DATA, dataTickets[i]);
                l.table.markDone(batch, n);
            } catch (IOException | RuntimeException e) {
                if (abandoned) {
                    return null;
                }
                IOException x = set.degrade(l, MirrorLegs.why(l, "its data", e));
                if (x != null && leg0 == null) {
                    leg0 = x;
                }
            }
        }
        if (leg0 != null) {
            return leg0;        // the entries stay live: reconciliation copies their ranges
        }
        if (set.staleLegs.get() > 0) {
            try {
                set.degraded.fold(false);
            } catch (IOException | RuntimeException e) {
                if (abandoned) {
                    return null;
                }
                return set.fail(legs[0], "a degraded leg's region map", e);
            }
            return null;
        }
        // Hot regions with no change in flight whose changes are all forced now (by this batch or earlier) and that
        // saw no change for COOL_IDLE_NANOS cool: their region entries are retired with this batch. Under pressure
        // (changes sent to the strict path for want of room since the last batch) those idle since the last batch
        // cool too. Regions in use, or idle for a short gap, stay hot: re-making them hot would cost a force each.
        long now = System.nanoTime();
        if (now - idleMarkNanos >= COOL_IDLE_NANOS) {
            idleUpTo = idleMark;
            idleMark = end;
            idleMarkNanos = now;
        }
        long fallbacks = hot.strictChanges();
        long coolUpTo = fallbacks != fallbacksBefore && hot.hot() >= hot.cap ? Math.max(completedBefore, idleUpTo) : idleUpTo;
        fallbacksBefore = fallbacks;
        completedBefore = end;
        int k = hot.enabled() ? hot.cool(coolUpTo, cooling) : 0;
        return retire(legs, batch, n + nh, k);
    }

    /**
     * RETIRE (appended, not forced: durable with the next force of the table; a lost one only costs a compare) on
     * every current leg for the {@code n} hot-path tags in {@link #hotBatch}. With a degraded leg (or leg 0 failed)
     * they stay live, like a batch's: the record of what it missed.
     */
    private IOException retireHot(int n) {
        Leg[] legs = set.legs;
        if (set.staleLegs.get() > 0 || set.failed) {
            return null;
        }
        IOException first = null;
        for (Leg l : legs) {
            if (l.stale) {
                continue;
            }
            try {
                l.table.retireAppend(hotBatch, n);
                l.depth.addAndGet(-n);
                if (l.index == 0) {
                    retiredEarly.addAndGet(n);
                }
            } catch (IOException | RuntimeException e) {
                first = retireFailed(l, e, first);
            }
        }
        return first;
    }

    /**
     * RETIRE on every leg for the batch's {@code n} tags and DONE + RETIRE for the {@code k} region entries in
     * {@link #cooling}: appended, then every leg's table forced at the same time (extra legs on their forcers).
     */
    private IOException retire(Leg[] legs, long[] tags, int n, int k) {
        IOException first = null;
        for (Leg l : legs) {
            dataTickets[l.index] = -1;
            if (l.stale) {
                continue;
            }
            try {
                long t = n > 0 ? l.table.retireAppend(tags, n) : 0;
                if (k > 0) {
                    l.table.markDone(cooling, k);
                    t = l.table.retireAppend(cooling, k);     // its force covers the batch's RETIRE too (0: compacted, durable)
                }
                dataTickets[l.index] = t;
                if (l.index > 0 && dataTickets[l.index] > 0) {
                    l.forcer.request(LegForcer.TABLE, dataTickets[l.index]);
                }
            } catch (IOException | RuntimeException e) {
                first = retireFailed(l, e, first);
            }
        }
        for (Leg l : legs) {
            if (dataTickets[l.index] < 0 || l.stale) {
                continue;
            }
            try {
                if (dataTickets[l.index] > 0) {
                    if (l.index == 0) {
                        l.table.commit(dataTickets[0]);
                    } else {
                        l.forcer.await(LegForcer.TABLE, dataTickets[l.index]);
                    }
                }
                l.depth.addAndGet(-n - k);
            } catch (IOException | RuntimeException e) {
                first = retireFailed(l, e, first);
            }
        }
        return first;
    }

    private IOException retireFailed(Leg l, Exception e, IOException first) {
        if (abandoned) {
            return first;
        }
        IOException f = l.index == 0 ? set.fail(l, "its tag table", e) : set.degrade(l, MirrorLegs.why(l, "its tag table", e));
        return first == null ? f : first;
    }

    /** Stops the thread after the batch it runs, if any, and waits for it; changes not forced stay live. */
    @Override
    public void close() {
        close(true);
    }

    /**
     * Stops the thread; with {@code join}, waits for the batch it runs. Without (a crash: {@link MirrorSet#abandon}),
     * returns at once: a batch still running fails on the closed legs, and what it did not retire stays live.
     */
    void close(boolean join) {
        abandoned = !join;
        synchronized (this) {
            closed = true;
            notifyAll();
        }
        if (join && Thread.currentThread() != thread) {
            try {
                thread.join(60_000);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
    }
}

package io.snapbd.server.export;

import io.snapbd.server.protocol.Nbd;
import org.HdrHistogram.Histogram;
import org.junit.jupiter.api.Test;

import java.lang.management.ManagementFactory;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicReference;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

class ExportStatsTest {

    @Test
    void countsBytesAndErrorsPerType() {
        ExportStats s = new ExportStats();
        s.record(Nbd.CMD_WRITE, 4096, 40_000, true);
        s.record(Nbd.CMD_WRITE, 4096, 50_000, true);
        s.record(Nbd.CMD_WRITE, 8192, 3_000_000, false);      // failed: no bytes
        s.record(Nbd.CMD_WRITE, 4096, 60_000_000_000L, true);
        s.record(Nbd.CMD_READ, 512, 1_000, true);
        s.record(Nbd.CMD_FLUSH, 0, 2_000_000, true);
        assertEquals(3 * 4096, s.bytesWritten());
        assertEquals(512, s.bytesRead());
        ExportStats.Snapshot snap = s.snapshot(false, false);
        ExportStats.OpStats w = snap.op(ExportStats.Op.WRITE);
        assertEquals(4, w.requests());
        assertEquals(1, w.errors());
        assertEquals(3 * 4096, w.bytes());
        assertEquals(40_000 + 50_000 + 3_000_000 + 60_000_000_000L, w.sumNanos());
        assertEquals(4, w.latency().getTotalCount());
        assertEquals(60_000_000_000L, w.latency().getMaxValue(), 60_000_000_000L * 0.001);
        assertEquals(1, snap.op(ExportStats.Op.FLUSH).requests());
        assertEquals(0, snap.op(ExportStats.Op.TRIM).requests());
        assertNull(snap.op(ExportStats.Op.TRIM).latency(), "a type never seen has no latency");
        assertNull(s.cumulative(ExportStats.Op.TRIM));
        assertEquals(new ArrayList<>(List.of(1L, 0L, 512L, 1_000L)), toList(s.counters(ExportStats.Op.READ)));
    }

    private static List<Long> toList(long[] a) {
        List<Long> l = new ArrayList<>();
        for (long v : a) {
            l.add(v);
        }
        return l;
    }

    @Test
    void outOfRangeValuesAreClampedNotThrown() {
        ExportStats s = new ExportStats();
        s.record(Nbd.CMD_READ, 1, -5, true);                    // a clock step backwards
        s.record(Nbd.CMD_READ, 1, Long.MAX_VALUE, true);        // beyond one hour
        Histogram h = s.cumulative(ExportStats.Op.READ);
        assertEquals(2, h.getTotalCount());
        assertEquals(0, h.getMinValue());
        assertTrue(h.getMaxValue() >= ExportStats.HIGHEST_NANOS * 0.999, "clamped to the top: " + h.getMaxValue());
    }

    /**
     * Several threads record at once while a reader keeps taking snapshots: every request is counted exactly
     * once, in the counters and in the histograms, and the percentiles match the known distribution.
     */
    @Test
    void concurrentRecordersAddUpExactly() throws Exception {
        ExportStats s = new ExportStats();
        int threads = 6;
        int perThread = 100_000;
        CountDownLatch go = new CountDownLatch(1);
        AtomicBoolean done = new AtomicBoolean();
        AtomicReference<Throwable> failure = new AtomicReference<>();
        List<Thread> writers = new ArrayList<>();
        for (int t = 0; t < threads; t++) {
            int id = t;
            Thread w = new Thread(() -> {
                try {
                    go.await();
                    for (int i = 0; i < perThread; i++) {
                        // write latencies uniform over 1..1000 us; every 10th one a read of 5 us; thread 0 fails 1 in 1000
                        if (i % 10 == 9) {
                            s.record(Nbd.CMD_READ, 4096, 5_000, true);
                        } else {
                            s.record(Nbd.CMD_WRITE, 512, (i % 1000 + 1) * 1_000L, !(id == 0 && i % 1000 == 0));
                        }
                    }
                } catch (Throwable e) {
                    failure.set(e);
                }
            }, "writer-" + t);
            w.start();
            writers.add(w);
        }
        Thread reader = new Thread(() -> {
            long last = 0;
            while (!done.get()) {
                ExportStats.Snapshot snap = s.snapshot(false, false);
                Histogram h = snap.op(ExportStats.Op.WRITE).latency();
                long n = h == null ? 0 : h.getTotalCount();
                if (n < last) {
                    failure.set(new AssertionError("cumulative count went back: " + last + " -> " + n));
                }
                last = n;
            }
        }, "reader");
        reader.start();
        go.countDown();
        for (Thread w : writers) {
            w.join();
        }
        done.set(true);
        reader.join();
        if (failure.get() != null) {
            throw new AssertionError(failure.get());
        }
        // every writer has ended: their recorders are still counted
        ExportStats.Snapshot snap = s.snapshot(false, false);
        long writes = (long) threads * perThread * 9 / 10;
        long reads = (long) threads * perThread / 10;
        ExportStats.OpStats w = snap.op(ExportStats.Op.WRITE);
        ExportStats.OpStats r = snap.op(ExportStats.Op.READ);
        assertEquals(writes, w.requests());
        assertEquals(perThread / 1000, w.errors());
        assertEquals((writes - perThread / 1000) * 512, w.bytes());
        assertEquals(writes, w.latency().getTotalCount());
        assertEquals(reads, r.requests());
        assertEquals(reads * 4096, r.bytes());
        assertEquals(reads, r.latency().getTotalCount());
        assertEquals(5_000, r.latency().getValueAtPercentile(99.99), 5);
        Histogram h = w.latency();
        // 9 of every 10 values of 1..1000 us in order: close to uniform
        assertEquals(500_000, h.getValueAtPercentile(50), 500_000 * 0.01);
        assertEquals(990_000, h.getValueAtPercentile(99), 990_000 * 0.01);
        assertEquals(1_000_000, h.getMaxValue(), 1_000_000 * 0.001);
        assertTrue(h.getValueAtPercentile(50) <= h.getValueAtPercentile(90)
                && h.getValueAtPercentile(90) <= h.getValueAtPercentile(99)
                && h.getValueAtPercentile(99) <= h.getValueAtPercentile(99.9)
                && h.getValueAtPercentile(99.9) <= h.getValueAtPercentile(99.99)
                && h.getValueAtPercentile(99.99) <= h.getMaxValue(), "percentiles in order");
        assertTrue(s.slotCount() <= threads, "one slot per recording thread at most: " + s.slotCount());
    }

    /**
     * A connection's slot: its two reader threads take turns writing it (ordered, as the reading role orders them),
     * so the connection holds one recorder per request type, not one per thread; closed, its counts stay and the
     * slot is retired at the next read (or reused by the next thread that registers).
     */
    @Test
    void aConnectionSlotIsWrittenByTwoThreadsInTurnAndRetiredWhenClosed() throws Exception {
        ExportStats s = new ExportStats();
        ExportStats.Slot slot = s.openSlot();
        for (int i = 0; i < 10; i++) {
            int turn = i;
            Thread t = new Thread(() -> slot.record(turn % 2 == 0 ? Nbd.CMD_READ : Nbd.CMD_WRITE, 4096, 10_000, true));
            t.start();
            t.join();       // one writer at a time
        }
        assertEquals(1, s.slotCount(), "one slot for the connection, however many threads wrote it");
        ExportStats.Snapshot open = s.snapshot(false, false);
        assertEquals(5, open.op(ExportStats.Op.READ).requests());
        assertEquals(1, s.slotCount(), "an open connection's slot is kept although its writers have ended");
        slot.close();
        ExportStats.Snapshot closed = s.snapshot(false, false);
        assertEquals(5, closed.op(ExportStats.Op.READ).latency().getTotalCount());
        assertEquals(5, closed.op(ExportStats.Op.WRITE).requests());
        assertEquals(0, s.slotCount(), "retired at the read after close");
        ExportStats.Slot reused = s.openSlot();
        reused.close();
        s.record(Nbd.CMD_FLUSH, 0, 1_000, true);            // a thread registers: takes the closed slot
        assertEquals(1, s.slotCount());
        assertEquals(5, s.snapshot(false, false).op(ExportStats.Op.WRITE).requests());
    }

    /** A thread that has ended leaves its counts behind and its slot to the next thread: connections come and go. */
    @Test
    void deadThreadsAreCountedAndTheirSlotsReused() throws Exception {
        ExportStats s = new ExportStats();
        for (int i = 0; i < 20; i++) {
            Thread t = new Thread(() -> {
                for (int j = 0; j < 1000; j++) {
                    s.record(Nbd.CMD_WRITE, 4096, 10_000 + j, true);
                    s.record(Nbd.CMD_FLUSH, 0, 100_000, true);
                }
            });
            t.start();
            t.join();
        }
        assertEquals(1, s.slotCount(), "threads one after the other share one slot");
        ExportStats.Snapshot snap = s.snapshot(false, false);
        assertEquals(20_000, snap.op(ExportStats.Op.WRITE).requests());
        assertEquals(20_000, snap.op(ExportStats.Op.WRITE).latency().getTotalCount());
        assertEquals(20_000, snap.op(ExportStats.Op.FLUSH).latency().getTotalCount());
        assertEquals(20_000L * 4096, s.bytesWritten());
        assertEquals(0, s.slotCount(), "a read retires the slot of the last thread, which has ended too");
    }

    /**
     * Many threads alive at once (a burst of FLUSH/FUA work on the unbounded sync pool), then gone: their slots
     * (two recorders of about 270 KB each here) are dropped at the next registration or read, their counts kept.
     * Before, every slot stayed for the server's lifetime: soak.sh saw 150 MB of heap held after the clients left.
     */
    @Test
    void slotsOfEndedThreadsAreRetiredNotKeptAtThePeak() throws Exception {
        ExportStats s = new ExportStats();
        int burst = 24;
        CountDownLatch allRecorded = new CountDownLatch(burst);
        CountDownLatch release = new CountDownLatch(1);
        List<Thread> threads = new ArrayList<>();
        for (int i = 0; i < burst; i++) {
            Thread t = new Thread(() -> {
                s.record(Nbd.CMD_FLUSH, 0, 100_000, true);
                s.record(Nbd.CMD_WRITE, 4096, 20_000, true);
                allRecorded.countDown();
                try {
                    release.await();
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
            });
            threads.add(t);
            t.start();
        }
        allRecorded.await();
        assertEquals(burst, s.slotCount(), "one slot per thread alive at the same time");
        release.countDown();
        for (Thread t : threads) {
            t.join();
        }
        s.record(Nbd.CMD_READ, 512, 1_000, true);     // a new thread (this one) registers
        assertEquals(1, s.slotCount(), "the ended threads' slots are retired when a thread registers");
        ExportStats.Snapshot snap = s.snapshot(false, false);
        assertEquals(burst, snap.op(ExportStats.Op.FLUSH).requests());
        assertEquals(burst, snap.op(ExportStats.Op.FLUSH).latency().getTotalCount());
        assertEquals(burst, snap.op(ExportStats.Op.WRITE).latency().getTotalCount());
        assertEquals((long) burst * 4096, s.bytesWritten());
        assertEquals(1, snap.op(ExportStats.Op.READ).requests());

        // The same through a read alone: a second burst ends, nobody registers, the next snapshot retires them.
        Thread[] more = new Thread[8];
        CountDownLatch both = new CountDownLatch(more.length);
        CountDownLatch go = new CountDownLatch(1);
        for (int i = 0; i < more.length; i++) {
            more[i] = new Thread(() -> {
                s.record(Nbd.CMD_FLUSH, 0, 200_000, true);
                both.countDown();
                try {
                    go.await();
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
            });
            more[i].start();
        }
        both.await();
        go.countDown();
        for (Thread t : more) {
            t.join();
        }
        snap = s.snapshot(false, false);
        assertEquals(1, s.slotCount(), "only the live thread's slot is left after a read");
        assertEquals(burst + more.length, snap.op(ExportStats.Op.FLUSH).requests());
        assertEquals(burst + more.length, snap.op(ExportStats.Op.FLUSH).latency().getTotalCount());
        assertEquals(burst + more.length, s.snapshot(false, false).op(ExportStats.Op.FLUSH).latency().getTotalCount(),
                "a retired slot's interval is counted once");
    }

    @Test
    void offRecordsNoLatency() {
        ExportStats s = new ExportStats();
        s.setHistograms(false);
        for (int i = 0; i < 100; i++) {
            s.record(Nbd.CMD_WRITE, 4096, 10_000, true);
        }
        assertNull(s.cumulative(ExportStats.Op.WRITE), "nothing recorded while off");
        ExportStats.Snapshot snap = s.snapshot(true, false);
        assertEquals(false, snap.histograms());
        assertEquals(100, snap.op(ExportStats.Op.WRITE).requests(), "counts go on");
        assertEquals(0, snap.op(ExportStats.Op.WRITE).sumNanos());
        assertNull(snap.op(ExportStats.Op.WRITE).latency());
        s.setHistograms(true);
        s.record(Nbd.CMD_WRITE, 4096, 10_000, true);
        assertEquals(1, s.cumulative(ExportStats.Op.WRITE).getTotalCount(), "on again: recorded from then on");
    }

    @Test
    void resetStartsANewPeriodButNotForMetrics() {
        ExportStats s = new ExportStats();
        for (int i = 0; i < 10; i++) {
            s.record(Nbd.CMD_WRITE, 4096, 10_000, true);
        }
        ExportStats.Snapshot before = s.snapshot(true, true);
        assertEquals(10, before.op(ExportStats.Op.WRITE).requests());
        ExportStats.Snapshot empty = s.snapshot(true, false);
        assertEquals(0, empty.op(ExportStats.Op.WRITE).requests());
        assertNull(empty.op(ExportStats.Op.WRITE).latency());
        s.record(Nbd.CMD_WRITE, 4096, 20_000, true);
        s.record(Nbd.CMD_READ, 4096, 30_000, true);
        ExportStats.Snapshot after = s.snapshot(true, false);
        assertEquals(1, after.op(ExportStats.Op.WRITE).requests());
        assertEquals(1, after.op(ExportStats.Op.WRITE).latency().getTotalCount());
        assertEquals(4096, after.op(ExportStats.Op.WRITE).bytes());
        assertEquals(1, after.op(ExportStats.Op.READ).latency().getTotalCount());
        assertEquals(11, s.snapshot(false, false).op(ExportStats.Op.WRITE).requests());
        assertEquals(11, s.cumulative(ExportStats.Op.WRITE).getTotalCount(), "metrics count since the start");
        assertEquals(11 * 4096, s.bytesWritten());
    }

    /** After warm-up, recording allocates nothing: the I/O path must not feed the garbage collector. */
    @Test
    void recordingAllocatesNothingInSteadyState() {
        java.lang.management.ThreadMXBean mx = ManagementFactory.getThreadMXBean();
        if (!(mx instanceof com.sun.management.ThreadMXBean sun) || !sun.isThreadAllocatedMemorySupported()) {
            org.junit.jupiter.api.Assumptions.abort("per-thread allocation counters not available");
            return;
        }
        sun.setThreadAllocatedMemoryEnabled(true);
        ExportStats s = new ExportStats();
        ExportStats off = new ExportStats();
        off.setHistograms(false);
        int[] cmds = {Nbd.CMD_READ, Nbd.CMD_WRITE, Nbd.CMD_FLUSH, Nbd.CMD_TRIM, Nbd.CMD_WRITE_ZEROES};
        for (int round = 0; round < 3; round++) {       // warm-up: slots, recorders, JIT
            loop(s, off, cmds, 200_000);
        }
        long before = sun.getCurrentThreadAllocatedBytes();
        loop(s, off, cmds, 100_000);
        long allocated = sun.getCurrentThreadAllocatedBytes() - before;
        assertTrue(allocated < 4096, "100k recordings allocated " + allocated + " bytes");
        assertNotNull(s.cumulative(ExportStats.Op.READ));
        assertEquals(700_000L / 5, s.counters(ExportStats.Op.READ)[0]);
    }

    private static void loop(ExportStats s, ExportStats off, int[] cmds, int n) {
        for (int i = 0; i < n; i++) {
            int c = cmds[i % cmds.length];
            long nanos = 1_000L + (i * 7919L) % 5_000_000L;
            s.record(c, 4096, nanos, true);
            off.record(c, 4096, nanos, (i & 1023) != 0);
        }
    }
}

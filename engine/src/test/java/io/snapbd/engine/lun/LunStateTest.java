package io.snapbd.engine.lun;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.List;
import java.util.UUID;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The durable ceilings of the LUN state, crossed on purpose with small leases. A crash is what the file
 * says at that moment: the old object is abandoned (never closed cleanly) and the state reopened from the
 * file, or from a copy of it taken while writers and GETs run. Every value a GET handed out before the
 * crash stays below what the state hands out after it: values never repeat, never go back.
 */
class LunStateTest {

    static final UUID OWNER = UUID.randomUUID();
    static final long HOUR = 3_600_000_000_000L;

    @TempDir
    Path dir;

    static long fileCounter(Path dir) throws IOException {
        return ByteBuffer.wrap(Files.readAllBytes(dir.resolve(LunState.FILE))).order(ByteOrder.LITTLE_ENDIAN).getLong(32);
    }

    @Test
    void crossingTheCounterLeaseRaisesTheCeilingBeforeTheValueIsHandedOut() throws IOException {
        LunState s = LunState.open(dir, OWNER, 8, HOUR);
        s.enable();
        long handedOut = -1;
        for (int i = 0; i < 50; i++) {        // crosses the 8-value lease six times
            s.onAlteringRequest();
            LunState.Value v = s.get();
            assertTrue(v.counter() > handedOut);
            handedOut = v.counter();
            assertTrue(fileCounter(dir) > handedOut, "the ceiling on disk is above the value handed out: "
                    + fileCounter(dir) + " <= " + handedOut);
        }
        assertEquals(50, handedOut);
        // Crash right after the last crossing: the state restarts at the ceiling, above everything handed out.
        LunState after = LunState.open(dir, OWNER, 8, HOUR);
        assertTrue(after.recoveredFromCrash());
        LunState.Value v = after.get();
        assertTrue(v.counter() > handedOut, "after the crash " + v + " must be above " + handedOut);
        assertTrue(v.enabled());
    }

    @Test
    void crossingTheTimeLeaseRaisesTheTimeCeiling() throws Exception {
        LunState s = LunState.open(dir, OWNER, 1L << 40, 20_000_000L);   // the counter lease is never reached
        s.enable();
        LunState.Value last = null;
        for (int i = 0; i < 5; i++) {
            Thread.sleep(30);                  // past the 20 ms time lease
            s.onAlteringRequest();
            LunState.Value v = s.get();
            if (last != null) {
                assertTrue(v.timestamp() > last.timestamp());
            }
            last = v;
        }
        LunState.Value after = LunState.open(dir, OWNER, 1L << 40, 20_000_000L).get();
        assertTrue(after.timestamp() > last.timestamp(), "after the crash the timestamp " + after.timestamp()
                + " must be above the last one handed out, " + last.timestamp());
        assertTrue(after.counter() > last.counter(), after + " after " + last);
    }

    @Test
    void aCleanCloseAfterCrossingsKeepsTheExactValues() throws IOException {
        LunState s = LunState.open(dir, OWNER, 4, HOUR);
        s.enable();
        for (int i = 0; i < 13; i++) {
            s.onAlteringRequest();
            s.get();
        }
        LunState.Value last = s.get();
        s.closeClean();
        LunState again = LunState.open(dir, OWNER, 4, HOUR);
        assertEquals(last, again.get());
        assertTrue(!again.recoveredFromCrash());
    }

    /**
     * Four writers and a GET loop, and meanwhile a crash: the file copied as it is at that moment. Every GET
     * that returned before the copy began is below what the copy opens at; repeated for many crash points.
     */
    @Test
    void concurrentWritersAndGetsDuringACrash() throws Exception {
        for (int round = 0; round < 20; round++) {
            Path live = Files.createDirectories(dir.resolve("live" + round));
            Path crashed = Files.createDirectories(dir.resolve("crashed" + round));
            LunState s = LunState.open(live, OWNER, 64, 2_000_000L);
            s.enable();
            AtomicBoolean stop = new AtomicBoolean();
            AtomicBoolean crashStarted = new AtomicBoolean();
            AtomicReference<Throwable> failure = new AtomicReference<>();
            AtomicLong seen = new AtomicLong();
            List<Thread> threads = new ArrayList<>();
            for (int w = 0; w < 4; w++) {
                threads.add(new Thread(() -> {
                    while (!stop.get()) {
                        s.onAlteringRequest();
                    }
                }));
            }
            List<LunState.Value> beforeCrash = new ArrayList<>();
            threads.add(new Thread(() -> {
                LunState.Value prev = null;
                try {
                    while (!stop.get()) {
                        LunState.Value v = s.get();
                        if (prev != null && (v.counter() < prev.counter() || v.timestamp() < prev.timestamp())) {
                            throw new AssertionError("GET went back: " + prev + " -> " + v);
                        }
                        prev = v;
                        seen.incrementAndGet();
                        if (!crashStarted.get()) {
                            beforeCrash.add(v);     // returned before the copy began
                        }
                    }
                } catch (Throwable t) {
                    failure.set(t);
                }
            }));
            threads.forEach(Thread::start);
            // The crash comes after a random number of GETs (each crosses the lease: the writers are faster),
            // whatever the machine's speed.
            long target = ThreadLocalRandom.current().nextLong(2, 60);
            while (seen.get() < target && failure.get() == null) {
                Thread.sleep(1);
            }
            crashStarted.set(true);
            Files.copy(live.resolve(LunState.FILE), crashed.resolve(LunState.FILE), StandardCopyOption.REPLACE_EXISTING);
            Thread.sleep(5);
            stop.set(true);
            for (Thread t : threads) {
                t.join();
            }
            if (failure.get() != null) {
                throw new AssertionError("round " + round, failure.get());
            }
            assertTrue(beforeCrash.size() > 1, "GETs ran before the crash: " + beforeCrash.size());
            LunState.Value max = beforeCrash.get(beforeCrash.size() - 1);
            assertTrue(max.counter() > 64, "the writers crossed the lease before the crash, round " + round + ": " + max);
            LunState.Value after = LunState.open(crashed, OWNER, 64, 2_000_000L).get();
            assertTrue(after.counter() > max.counter() && after.timestamp() > max.timestamp(),
                    "round " + round + ": after the crash " + after + " must be above the last GET before it, " + max);
        }
    }

    /**
     * A GET hands out a pair, never half of a bump: the same counter always with the same timestamp, a higher
     * counter always with a higher timestamp. The bump raises the counter before the timestamp, so a GET that
     * read the two fields apart once handed out counter 11 with two timestamps (LunStateIT saw it under 8 fio
     * connections). Bounded by the number of bumps, not by time.
     */
    @Test
    void aGetNeverHandsOutHalfABump() throws Exception {
        LunState s = LunState.open(dir, OWNER, 1L << 40, HOUR);
        s.enable();
        int writers = 3;
        int bumpsEach = 200_000;
        AtomicLong writersLeft = new AtomicLong(writers);
        List<Thread> threads = new ArrayList<>();
        for (int w = 0; w < writers; w++) {
            threads.add(new Thread(() -> {
                for (int i = 0; i < bumpsEach; i++) {
                    s.onAlteringRequest();
                    for (int k = 0; k < 20; k++) {
                        Thread.onSpinWait();     // a request's own work between two bumps
                    }
                }
                writersLeft.decrementAndGet();
            }));
        }
        threads.forEach(Thread::start);
        LunState.Value prev = s.get();
        long gets = 0;
        long moved = 0;
        while (writersLeft.get() > 0) {
            LunState.Value v = s.get();
            gets++;
            if (v.counter() == prev.counter()) {
                assertEquals(prev.timestamp(), v.timestamp(), "same counter, two timestamps after " + gets + " GETs: " + prev + " -> " + v);
            } else {
                assertTrue(v.counter() > prev.counter() && v.timestamp() > prev.timestamp(),
                        "counter and timestamp move together, after " + gets + " GETs: " + prev + " -> " + v);
                moved++;
            }
            prev = v;
        }
        for (Thread t : threads) {
            t.join();
        }
        assertEquals((long) writers * bumpsEach, s.get().counter());
        assertTrue(moved > 10, "the GETs saw the writers move: " + moved + " changes in " + gets + " GETs");
    }
}

package io.snapbd.engine.mirror;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicLongArray;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * {@link HotRegions}: the state word per region (docs/mirrors.md, "Hot regions"). The race that matters is cooling
 * against a change starting in the region: a region entry handed back for RETIRE must have no change inside it,
 * now or later, and every change that was ever inside it must have had its data forced (its sequence number at or
 * below the forced point the cooling pass was given).
 */
class HotRegionsTest {

    @Test
    void aChangeEntersFastOnlyOnceItsRegionEntryIsPublished() {
        HotRegions h = new HotRegions(8L << 20, 4);
        int[] heat = new int[HotRegions.MAX_REGIONS_PER_CHANGE];
        assertTrue(!h.enterHot(0, 1), "cold regions: no fast path");
        assertEquals(2, h.claim(0, 1, heat));
        assertEquals(-1, h.claim(1, 1, heat), "a region being made hot: strict path (its force shared, not skipped)");
        assertTrue(!h.enterHot(1, 1), "a region being made hot is not hot yet");
        h.published(0, 10);
        h.published(1, 11);
        assertTrue(h.enterHot(1, 1));
        assertEquals(2, h.hot());
        long[] tags = new long[4];
        h.exit(0, 5);
        h.exit(1, 6);
        assertEquals(0, h.cool(4, tags), "region 0's last change (5) is not forced yet, region 1 has a change in flight");
        h.exit(1, 7);
        assertEquals(1, h.cool(6, tags), "region 0's changes are forced; region 1's last change (7) is not");
        assertEquals(10, tags[0]);
        assertEquals(1, h.cool(7, tags));
        assertEquals(11, tags[0]);
        assertEquals(0, h.hot());
        assertEquals(2, h.made());
        assertEquals(2, h.cooled());
        assertEquals(1, h.claim(0, 0, heat), "a cooled region is cold: the next change makes it hot again");
    }

    @Test
    void theCapSendsChangesToTheStrictPath() {
        HotRegions h = new HotRegions(8L << 20, 2);
        int[] heat = new int[HotRegions.MAX_REGIONS_PER_CHANGE];
        assertEquals(2, h.claim(0, 1, heat));
        assertEquals(-1, h.claim(2, 2, heat), "no room under the cap");
        assertEquals(1, h.strictChanges());
        h.unclaim(1);
        assertEquals(1, h.hot());
        assertEquals(1, h.claim(2, 2, heat));
        h.published(0, 1);
        h.published(2, 2);
        h.exit(0, 1);
        h.exit(2, 1);
        h.reset();
        assertEquals(0, h.hot());
        assertTrue(!h.enterHot(0, 0), "after a reconciliation every region is cold");
    }

    @Test
    void regionsOfLargeVolumesGrowSoTheirNumberStaysBounded() {
        assertEquals(20, new HotRegions(1L << 40, 1).shift);
        assertEquals(21, new HotRegions((1L << 40) + 1, 1).shift);
        HotRegions h = new HotRegions(3L << 20 | 4096, 4);
        assertEquals(4096, h.regionLength(3), "the last region ends with the volume");
    }

    /**
     * Many threads run changes over a few regions (fast when hot, else making them hot with a new tag, or the strict
     * path) while a cooler cools with a forced point that lags behind. Fails if a cooled region entry has a change
     * inside it, or ever gets one later, or if a change under it was not forced.
     */
    @Test
    @Timeout(value = 120, unit = TimeUnit.SECONDS)
    void coolingRacesChangesStartingInTheRegion() throws Exception {
        int regions = 8;
        HotRegions h = new HotRegions((long) regions << 20, 4);     // fewer than the regions: claims hit the cap too
        AtomicLongArray modelTag = new AtomicLongArray(regions);
        AtomicLong tags = new AtomicLong();
        AtomicLong seqs = new AtomicLong();
        ConcurrentHashMap<Long, AtomicInteger> inside = new ConcurrentHashMap<>();
        ConcurrentHashMap<Long, Long> maxSeq = new ConcurrentHashMap<>();
        java.util.Set<Long> retired = ConcurrentHashMap.newKeySet();
        List<String> violations = java.util.Collections.synchronizedList(new ArrayList<>());
        AtomicBoolean stop = new AtomicBoolean();
        AtomicLong fastChanges = new AtomicLong();
        AtomicLong cooledTags = new AtomicLong();
        List<Thread> threads = new ArrayList<>();
        for (int t = 0; t < 4; t++) {
            int seed = t;
            threads.add(new Thread(() -> {
                Random rnd = new Random(seed);
                int[] heat = new int[HotRegions.MAX_REGIONS_PER_CHANGE];
                while (!stop.get()) {
                    int r0 = rnd.nextInt(regions);
                    int r1 = Math.min(regions - 1, r0 + rnd.nextInt(2));
                    boolean fast = h.enterHot(r0, r1);
                    int n = fast ? 0 : h.claim(r0, r1, heat);
                    if (n < 0) {
                        continue;       // strict: covered by its own forced entry, not by a region entry
                    }
                    for (int i = 0; i < n; i++) {
                        long tag = tags.incrementAndGet();
                        modelTag.set(heat[i], tag);
                        h.published(heat[i], tag);
                    }
                    long[] under = new long[r1 - r0 + 1];
                    for (int r = r0; r <= r1; r++) {
                        long tag = modelTag.get(r);
                        under[r - r0] = tag;
                        inside.computeIfAbsent(tag, k -> new AtomicInteger()).incrementAndGet();
                        if (retired.contains(tag)) {
                            violations.add("a change entered region " + r + " under retired region entry " + tag);
                        }
                    }
                    fastChanges.addAndGet(fast ? 1 : 0);
                    if (rnd.nextInt(8) == 0) {
                        Thread.yield();
                    }
                    if (rnd.nextInt(256) == 0) {
                        java.util.concurrent.locks.LockSupport.parkNanos(200_000);     // regions go idle now and then
                    }
                    long seq = seqs.incrementAndGet();      // its data handed to the data forcer
                    for (long tag : under) {
                        maxSeq.merge(tag, seq, Math::max);
                        inside.get(tag).decrementAndGet();
                    }
                    for (int r = r0; r <= r1; r++) {
                        h.exit(r, seq);
                    }
                }
            }));
        }
        Thread cooler = new Thread(() -> {
            long[] out = new long[8];
            long forced = 0;
            while (!stop.get()) {
                long next = seqs.get();         // a batch starts: everything handed over so far
                Thread.yield();
                int k = h.cool(forced, out);    // the previous batch completed up to 'forced'
                for (int i = 0; i < k; i++) {
                    long tag = out[i];
                    retired.add(tag);
                    cooledTags.incrementAndGet();
                    AtomicInteger in = inside.get(tag);
                    if (in != null && in.get() != 0) {
                        violations.add("region entry " + tag + " cooled with " + in.get() + " change(s) inside");
                    }
                    Long m = maxSeq.get(tag);
                    if (m != null && m > forced) {
                        violations.add("region entry " + tag + " cooled before its change " + m + " was forced (up to " + forced + ")");
                    }
                }
                forced = next;
            }
        });
        threads.forEach(Thread::start);
        cooler.start();
        long until = System.nanoTime() + TimeUnit.SECONDS.toNanos(3);
        while (System.nanoTime() < until && (cooledTags.get() < 2000 || fastChanges.get() < 20000)) {
            Thread.sleep(20);
        }
        stop.set(true);
        for (Thread t : threads) {
            t.join();
        }
        cooler.join();
        System.out.println("cooling race: " + cooledTags.get() + " region entries cooled, " + fastChanges.get() + " fast changes, " + violations.size() + " violations");
        assertEquals(List.of(), violations.subList(0, Math.min(5, violations.size())));
        assertTrue(cooledTags.get() > 0 && fastChanges.get() > 0,
                "the race ran: " + cooledTags.get() + " cooled, " + fastChanges.get() + " fast changes");
        // nothing is inside any region any more: each can cool now
        h.cool(Long.MAX_VALUE, new long[8]);
        assertEquals(0, h.hot());
    }
}

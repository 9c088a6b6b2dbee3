package io.snapbd.engine.bitmap;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.util.ArrayList;
import java.util.BitSet;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;

import static io.snapbd.engine.bitmap.PagedBitMap.PAGE_BITS;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class PagedBitMapTest {

    @Test
    void newMapIsAllClear() {
        PagedBitMap m = new PagedBitMap(3L * PAGE_BITS + 5);
        assertEquals(3L * PAGE_BITS + 5, m.size());
        assertEquals(4, m.pages());
        assertEquals(0, m.cardinality());
        assertFalse(m.get(0));
        assertFalse(m.get(m.size() - 1));
        assertEquals(m.size(), m.next(0, m.size(), true));
        assertEquals(0, m.next(0, m.size(), false));
        for (int p = 0; p < m.pages(); p++) {
            assertFalse(m.takeDirty(p), "page " + p + " is not dirty on a new map");
        }
    }

    @Test
    void pageCountRoundsUp() {
        assertEquals(0, PagedBitMap.pageCount(0));
        assertEquals(1, PagedBitMap.pageCount(1));
        assertEquals(1, PagedBitMap.pageCount(PAGE_BITS));
        assertEquals(2, PagedBitMap.pageCount(PAGE_BITS + 1));
        assertEquals(4096, PagedBitMap.PAGE_BYTES);
        assertEquals(512, PagedBitMap.PAGE_LONGS);
    }

    @Test
    void negativeSizeIsRefused() {
        assertThrows(IllegalArgumentException.class, () -> new PagedBitMap(-1));
    }

    @Test
    void setAndClearReportWhetherTheyChangedTheBit() {
        PagedBitMap m = new PagedBitMap(1000);
        assertTrue(m.set(63));
        assertFalse(m.set(63), "setting a set bit changes nothing");
        assertTrue(m.get(63));
        assertFalse(m.get(62));
        assertFalse(m.get(64));
        assertTrue(m.set(64));
        assertEquals(2, m.cardinality());
        assertTrue(m.clear(63));
        assertFalse(m.clear(63), "clearing a clear bit changes nothing");
        assertFalse(m.get(63));
        assertTrue(m.get(64));
        assertFalse(m.clear(500), "clear on a word that was never set");
        assertEquals(1, m.cardinality());
    }

    @Test
    void clearOnAnAbsentPageDoesNotAllocateOrDirtyIt() {
        PagedBitMap m = new PagedBitMap(2L * PAGE_BITS);
        assertFalse(m.clear(PAGE_BITS + 3));
        assertFalse(m.takeDirty(1));
        long[] out = new long[PagedBitMap.PAGE_LONGS];
        out[7] = 99;
        m.copyPage(1, out);
        assertArrayEquals(new long[PagedBitMap.PAGE_LONGS], out, "absent page copies as zeros");
    }

    @Test
    void firstAndLastBitOfEveryPage() {
        long size = 3L * PAGE_BITS;
        PagedBitMap m = new PagedBitMap(size);
        for (int p = 0; p < 3; p++) {
            long first = (long) p * PAGE_BITS;
            assertTrue(m.set(first));
            assertTrue(m.set(first + PAGE_BITS - 1));
        }
        assertEquals(6, m.cardinality());
        for (int p = 0; p < 3; p++) {
            long first = (long) p * PAGE_BITS;
            assertTrue(m.get(first));
            assertTrue(m.get(first + PAGE_BITS - 1));
            assertFalse(m.get(first + 1));
            assertFalse(m.get(first + PAGE_BITS - 2));
        }
    }

    @Test
    void outOfRangeBitsAreRefused() {
        PagedBitMap m = new PagedBitMap(100);     // the last (only) page has room past bit 99
        assertThrows(IndexOutOfBoundsException.class, () -> m.set(100));
        assertThrows(IndexOutOfBoundsException.class, () -> m.set(PAGE_BITS + 1));
        assertThrows(IndexOutOfBoundsException.class, () -> m.clear(100));
        assertThrows(IndexOutOfBoundsException.class, () -> m.get(-1));
        assertThrows(IndexOutOfBoundsException.class, () -> m.get(100));
        assertEquals(0, m.cardinality(), "a refused set leaves no ghost bit past the end");
        assertTrue(m.set(99));
        assertEquals(1, m.cardinality());
    }

    // ---- next() ------------------------------------------------------------------------------------------------

    @Test
    void nextSetBitAcrossWordAndPageBoundaries() {
        long size = 3L * PAGE_BITS + 100;
        PagedBitMap m = new PagedBitMap(size);
        long[] set = {0, 63, 64, 127, 128, PAGE_BITS - 1, PAGE_BITS, 2L * PAGE_BITS + 64, size - 1};
        for (long b : set) {
            m.set(b);
        }
        long b = m.next(0, size, true);
        List<Long> found = new ArrayList<>();
        while (b < size) {
            found.add(b);
            b = m.next(b + 1, size, true);
        }
        List<Long> expected = new ArrayList<>();
        for (long x : set) {
            expected.add(x);
        }
        assertEquals(expected, found);
        // from inside a word, past the set bits of that word
        assertEquals(127, m.next(65, size, true));
        // across an entirely absent page (page 1 has bit PAGE_BITS only; page 2 starts absent until 2*PAGE_BITS+64)
        assertEquals(2L * PAGE_BITS + 64, m.next(PAGE_BITS + 1, size, true));
        // limit cuts the search short and is what comes back
        assertEquals(PAGE_BITS - 10, m.next(129, PAGE_BITS - 10, true));
        assertEquals(64, m.next(64, 65, true));
        assertEquals(65, m.next(65, 65, true), "empty range answers limit");
    }

    @Test
    void nextClearBitAcrossWordAndPageBoundaries() {
        long size = 2L * PAGE_BITS + 70;
        PagedBitMap m = new PagedBitMap(size);
        // fill bits [0, PAGE_BITS + 130) completely
        for (long b = 0; b < PAGE_BITS + 130; b++) {
            m.set(b);
        }
        assertEquals(PAGE_BITS + 130, m.next(0, size, false));
        assertEquals(PAGE_BITS + 130, m.next(PAGE_BITS - 1, size, false));
        assertEquals(PAGE_BITS + 5, m.next(0, PAGE_BITS + 5, false), "none before limit: limit");
        m.clear(63);
        m.clear(64);
        assertEquals(63, m.next(0, size, false));
        assertEquals(64, m.next(64, size, false));
        assertEquals(PAGE_BITS + 130, m.next(65, size, false));
        // an absent page answers its first bit at once
        assertEquals(2L * PAGE_BITS, m.next(2L * PAGE_BITS, size, false));
    }

    @Test
    void nextAtTheEndOfAMapWhoseSizeIsNotAWholeWord() {
        PagedBitMap m = new PagedBitMap(100);
        for (long b = 0; b < 100; b++) {
            m.set(b);
        }
        // bits 100..127 of the last word exist in memory but not in the map: never reported as clear
        assertEquals(100, m.next(0, 100, false));
        assertEquals(100, m.next(99, 100, false));
        assertEquals(100, m.next(100, 100, false));
        m.clear(99);
        assertEquals(99, m.next(0, 100, false));
        assertEquals(100, m.next(99, 100, true), "bit 99 is clear: no set bit from 99");
        assertEquals(98, m.next(98, 100, true));
    }

    @Test
    void nextWithLimitPastTheEndAnswersLimitWhenNothingIsFound() {
        PagedBitMap m = new PagedBitMap(100);
        assertEquals(500, m.next(0, 500, true));
        for (long b = 0; b < 100; b++) {
            m.set(b);
        }
        assertEquals(500, m.next(0, 500, false), "the bits past the end are not clear bits of the map");
        m.clear(42);
        assertEquals(42, m.next(0, 500, false));
        assertEquals(50, m.next(50, 500, true));
    }

    @Test
    void nextOverAPageCountThatIsNotWhole() {
        long size = PAGE_BITS + 1;
        PagedBitMap m = new PagedBitMap(size);
        assertEquals(size, m.next(0, size, true));
        m.set(PAGE_BITS);
        assertEquals(PAGE_BITS, m.next(0, size, true));
        assertEquals(0, m.next(0, size, false));
        for (long b = 0; b < PAGE_BITS; b++) {
            m.set(b);
        }
        assertEquals(size, m.next(0, size, false));
        assertEquals(size, m.cardinality());
    }

    // ---- dirty flags -------------------------------------------------------------------------------------------

    @Test
    void changesDirtyTheirPageOnlyAndTakeDirtyClearsTheFlag() {
        PagedBitMap m = new PagedBitMap(4L * PAGE_BITS);
        m.set(5);
        m.set(3L * PAGE_BITS + 7);
        assertTrue(m.takeDirty(0));
        assertFalse(m.takeDirty(0), "takeDirty clears the flag");
        assertFalse(m.takeDirty(1));
        assertFalse(m.takeDirty(2));
        assertTrue(m.takeDirty(3));
        assertFalse(m.set(5), "no change");
        assertFalse(m.takeDirty(0), "a set that changed nothing does not dirty the page");
        assertFalse(m.clear(6));
        assertFalse(m.takeDirty(0), "a clear that changed nothing does not dirty the page");
        assertTrue(m.clear(5));
        assertTrue(m.takeDirty(0), "clearing dirties");
        m.markDirty(2);
        assertTrue(m.takeDirty(2));
    }

    @Test
    void copyAndLoadPageRoundTripAndLoadClearsBitsPastTheEnd() {
        PagedBitMap m = new PagedBitMap(PAGE_BITS + 10);
        long[] words = new long[PagedBitMap.PAGE_LONGS];
        words[0] = -1L;            // bits PAGE_BITS .. PAGE_BITS+63, of which only 10 exist
        words[100] = 1L;
        m.loadPage(1, words);
        assertEquals(10, m.cardinality());
        assertTrue(m.get(PAGE_BITS + 9));
        assertEquals(-1L, words[0], "loadPage copies, it does not keep the caller's array");
        long[] out = new long[PagedBitMap.PAGE_LONGS];
        m.copyPage(1, out);
        assertEquals(0x3FFL, out[0]);
        assertEquals(0, out[100]);
        assertFalse(m.takeDirty(1), "loading is not a change");
        m.loadPage(1, new long[PagedBitMap.PAGE_LONGS]);
        assertEquals(0, m.cardinality());
    }

    // ---- concurrency -------------------------------------------------------------------------------------------

    /** Threads own interleaved bits of the same few words and toggle them; a lost CAS would lose a bit. */
    @Test
    void concurrentSetAndClearOnSharedWordsLoseNothing() throws Exception {
        final int threads = 4;
        final int bitsPerThread = 64;          // threads * bitsPerThread = 256 bits = 4 shared words
        final int rounds = 2000;
        PagedBitMap m = new PagedBitMap(threads * bitsPerThread);
        AtomicReference<Throwable> failure = new AtomicReference<>();
        CountDownLatch start = new CountDownLatch(1);
        List<Thread> workers = new ArrayList<>();
        for (int t = 0; t < threads; t++) {
            final int id = t;
            Thread w = new Thread(() -> {
                try {
                    start.await();
                    for (int r = 0; r < rounds; r++) {
                        for (int i = 0; i < bitsPerThread; i++) {
                            long bit = (long) i * threads + id;
                            if (!m.set(bit)) {
                                throw new AssertionError("round " + r + ": own bit " + bit + " was already set");
                            }
                        }
                        for (int i = 0; i < bitsPerThread; i++) {
                            long bit = (long) i * threads + id;
                            if (!m.get(bit)) {
                                throw new AssertionError("round " + r + ": own bit " + bit + " was lost");
                            }
                        }
                        // leave the bits set on the last round
                        if (r < rounds - 1) {
                            for (int i = 0; i < bitsPerThread; i++) {
                                long bit = (long) i * threads + id;
                                if (!m.clear(bit)) {
                                    throw new AssertionError("round " + r + ": own bit " + bit + " was already clear");
                                }
                            }
                        }
                    }
                } catch (Throwable e) {
                    failure.compareAndSet(null, e);
                }
            });
            workers.add(w);
            w.start();
        }
        start.countDown();
        for (Thread w : workers) {
            w.join();
        }
        if (failure.get() != null) {
            throw new AssertionError(failure.get());
        }
        assertEquals(threads * bitsPerThread, m.cardinality());
        assertEquals(threads * bitsPerThread, m.next(0, m.size(), false));
    }

    /** Every thread tries to set (then clear) every bit, on pages that do not exist yet: exactly one wins each. */
    @Test
    void concurrentRacesOnTheSameBitsHaveExactlyOneWinner() throws Exception {
        final int threads = 4;
        final long size = 8L * PAGE_BITS;
        final long step = 97;                  // touches every page, many words, and pages are created under race
        PagedBitMap m = new PagedBitMap(size);
        AtomicLong setWins = new AtomicLong();
        AtomicLong clearWins = new AtomicLong();
        long targets = (size + step - 1) / step;
        CountDownLatch start = new CountDownLatch(1);
        CountDownLatch setDone = new CountDownLatch(threads);
        List<Thread> workers = new ArrayList<>();
        AtomicReference<Throwable> failure = new AtomicReference<>();
        for (int t = 0; t < threads; t++) {
            final int id = t;
            Thread w = new Thread(() -> {
                try {
                    start.await();
                    for (long k = 0; k < targets; k++) {
                        long bit = ((k + id * 13) % targets) * step;   // different orders per thread
                        if (m.set(bit)) {
                            setWins.incrementAndGet();
                        }
                    }
                    setDone.countDown();
                    setDone.await();
                    for (long k = 0; k < targets; k++) {
                        long bit = ((k + id * 7) % targets) * step;
                        if (m.clear(bit)) {
                            clearWins.incrementAndGet();
                        }
                    }
                } catch (Throwable e) {
                    failure.compareAndSet(null, e);
                }
            });
            workers.add(w);
            w.start();
        }
        start.countDown();
        for (Thread w : workers) {
            w.join();
        }
        if (failure.get() != null) {
            throw new AssertionError(failure.get());
        }
        assertEquals(targets, setWins.get());
        assertEquals(targets, clearWins.get());
        assertEquals(0, m.cardinality());
    }

    // ---- property test against java.util.BitSet ---------------------------------------------------------------

    @ParameterizedTest
    @ValueSource(longs = {1, 63, 64, 65, 130, PAGE_BITS - 1, PAGE_BITS, PAGE_BITS + 1, 3L * PAGE_BITS + 17})
    void behavesLikeBitSet(long size) {
        Random rnd = new Random(0xB17_5E7L ^ size);
        PagedBitMap m = new PagedBitMap(size);
        BitSet ref = new BitSet();
        for (int op = 0; op < 20_000; op++) {
            long bit = randomBit(rnd, size);
            switch (rnd.nextInt(8)) {
                case 0, 1, 2 -> {
                    assertEquals(!ref.get((int) bit), m.set(bit), "set " + bit);
                    ref.set((int) bit);
                }
                case 3, 4 -> {
                    assertEquals(ref.get((int) bit), m.clear(bit), "clear " + bit);
                    ref.clear((int) bit);
                }
                case 5 -> {
                    // a run of sets or clears, to build long runs that cross words and pages
                    boolean value = rnd.nextBoolean();
                    long len = Math.min(size - bit, rnd.nextInt(200));
                    for (long b = bit; b < bit + len; b++) {
                        if (value) {
                            m.set(b);
                        } else {
                            m.clear(b);
                        }
                    }
                    ref.set((int) bit, (int) (bit + len), value);
                }
                default -> {
                    long from = randomBit(rnd, size + 1);
                    long limit = rnd.nextInt(4) == 0 ? size + rnd.nextInt(100) : from + rnd.nextInt((int) Math.min(size, 70_000) + 1);
                    boolean value = rnd.nextBoolean();
                    assertEquals(expectedNext(ref, size, from, limit, value), m.next(from, limit, value),
                            "next(" + from + ", " + limit + ", " + value + ")");
                }
            }
            if (value(ref, bit) != m.get(bit)) {
                throw new AssertionError("bit " + bit + " after op " + op);
            }
            if (op % 1000 == 0) {
                assertEquals(ref.cardinality(), m.cardinality(), "cardinality after op " + op);
            }
        }
        assertEquals(ref.cardinality(), m.cardinality());
        for (long b = 0; b < size; b++) {
            if (ref.get((int) b) != m.get(b)) {
                throw new AssertionError("bit " + b + " differs at the end");
            }
        }
        long[] words = new long[PagedBitMap.PAGE_LONGS];
        for (int p = 0; p < m.pages(); p++) {
            m.copyPage(p, words);
            long[] expected = new long[PagedBitMap.PAGE_LONGS];
            long[] refWords = ref.get(p * PAGE_BITS, (p + 1) * PAGE_BITS).toLongArray();
            System.arraycopy(refWords, 0, expected, 0, refWords.length);
            assertArrayEquals(expected, words, "page " + p);
        }
    }

    private static boolean value(BitSet ref, long bit) {
        return ref.get((int) bit);
    }

    private static long randomBit(Random rnd, long bound) {
        // favour boundaries: word and page edges and the map end
        return switch (rnd.nextInt(6)) {
            case 0 -> Math.max(0, Math.min(bound - 1, (rnd.nextLong() & Long.MAX_VALUE) % Math.max(1, bound / 64 + 1) * 64 + (rnd.nextBoolean() ? 0 : 63)));
            case 1 -> Math.max(0, bound - 1 - rnd.nextInt(3));
            case 2 -> Math.max(0, Math.min(bound - 1, (long) rnd.nextInt((int) (bound / PAGE_BITS) + 1) * PAGE_BITS - rnd.nextInt(2)));
            default -> (rnd.nextLong() & Long.MAX_VALUE) % bound;
        };
    }

    /** The documented contract: first index in [from, min(limit, size)) with that value, else limit. */
    private static long expectedNext(BitSet ref, long size, long from, long limit, boolean value) {
        long end = Math.min(limit, size);
        if (from >= end) {
            return limit;
        }
        long found = value ? ref.nextSetBit((int) from) : ref.nextClearBit((int) from);
        return found >= 0 && found < end ? found : limit;
    }

    @Test
    void emptyMap() {
        PagedBitMap m = new PagedBitMap(0);
        assertEquals(0, m.pages());
        assertEquals(0, m.cardinality());
        assertEquals(0, m.next(0, 0, true));
        assertEquals(0, m.next(0, 0, false));
        assertEquals(10, m.next(0, 10, false));
    }
}

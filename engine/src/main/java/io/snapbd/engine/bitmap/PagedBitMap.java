package io.snapbd.engine.bitmap;

import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;
import java.util.concurrent.atomic.AtomicIntegerArray;

/**
 * A lock-free bit map over {@code bits} bits, stored as pages of {@link #PAGE_BITS} bits (EMC FIG. 43): a page
 * that was never set costs one null slot, so a sparse map is small. Bits are set and cleared with CAS, so
 * concurrent writers need no lock. Each page carries a dirty flag for incremental persistence.
 */
public final class PagedBitMap {

    public static final int PAGE_SHIFT = 15;
    public static final int PAGE_BITS = 1 << PAGE_SHIFT;        // 32768 bits = 4096 bytes
    public static final int PAGE_LONGS = PAGE_BITS / 64;        // 512
    public static final int PAGE_BYTES = PAGE_BITS / 8;

    private static final VarHandle PAGE_SLOT = MethodHandles.arrayElementVarHandle(long[][].class);
    private static final VarHandle WORD = MethodHandles.arrayElementVarHandle(long[].class);

    private final long bits;
    private final long[][] pages;
    private final AtomicIntegerArray dirty;

    public PagedBitMap(long bits) {
        if (bits < 0) {
            throw new IllegalArgumentException("negative size");
        }
        this.bits = bits;
        long pageCount = pageCount(bits);
        if (pageCount > Integer.MAX_VALUE - 8) {
            throw new IllegalArgumentException("bit map too large: " + bits + " bits");
        }
        this.pages = new long[(int) pageCount][];
        this.dirty = new AtomicIntegerArray((int) pageCount);
    }

    public static long pageCount(long bits) {
        return (bits + PAGE_BITS - 1) >>> PAGE_SHIFT;
    }

    public long size() {
        return bits;
    }

    public int pages() {
        return pages.length;
    }

    public boolean get(long bit) {
        long[] page = (long[]) PAGE_SLOT.getAcquire(pages, page(bit));
        if (page == null) {
            return false;
        }
        long word = (long) WORD.getVolatile(page, wordInPage(bit));
        return (word & (1L << bit)) != 0;
    }

    /** Sets the bit; true if it was clear before (this call changed it). */
    public boolean set(long bit) {
        int p = page(bit);
        long[] page = pageForWrite(p);
        int w = wordInPage(bit);
        long mask = 1L << bit;
        long old;
        do {
            old = (long) WORD.getVolatile(page, w);
            if ((old & mask) != 0) {
                return false;
            }
        } while (!WORD.compareAndSet(page, w, old, old | mask));
        dirty.lazySet(p, 1);
        return true;
    }

    /** Clears the bit; true if it was set before. */
    public boolean clear(long bit) {
        int p = page(bit);
        long[] page = (long[]) PAGE_SLOT.getAcquire(pages, p);
        if (page == null) {
            return false;
        }
        int w = wordInPage(bit);
        long mask = 1L << bit;
        long old;
        do {
            old = (long) WORD.getVolatile(page, w);
            if ((old & mask) == 0) {
                return false;
            }
        } while (!WORD.compareAndSet(page, w, old, old & ~mask));
        dirty.lazySet(p, 1);
        return true;
    }

    /** Index of the first bit at or after {@code from} whose value is {@code value}, or {@code limit} if none before it. */
    public long next(long from, long limit, boolean value) {
        long bit = from;
        long end = Math.min(limit, bits);
        while (bit < end) {
            int p = page(bit);
            long[] page = (long[]) PAGE_SLOT.getAcquire(pages, p);
            long pageEnd = Math.min(end, ((long) p + 1) << PAGE_SHIFT);
            if (page == null) {
                if (!value) {
                    return bit;
                }
                bit = pageEnd;
                continue;
            }
            while (bit < pageEnd) {
                long word = (long) WORD.getVolatile(page, wordInPage(bit));
                if (!value) {
                    word = ~word;
                }
                word &= -1L << bit;                    // ignore bits below 'bit' in this word
                if (word != 0) {
                    long found = (bit & ~63L) + Long.numberOfTrailingZeros(word);
                    return Math.min(found, end);
                }
                bit = (bit & ~63L) + 64;
            }
        }
        return Math.max(from, end);
    }

    /** Number of set bits. */
    public long cardinality() {
        long n = 0;
        for (long[] page : pages) {
            if (page != null) {
                for (int i = 0; i < PAGE_LONGS; i++) {
                    n += Long.bitCount((long) WORD.getVolatile(page, i));
                }
            }
        }
        return n;
    }

    // ---- persistence support -------------------------------------------------------------------------------

    /** Atomically reads and clears the dirty flag of page {@code p}. */
    public boolean takeDirty(int p) {
        return dirty.getAndSet(p, 0) != 0;
    }

    public void markDirty(int p) {
        dirty.set(p, 1);
    }

    /** Copies page {@code p} into {@code out} (little-endian longs); an absent page copies as zeros. */
    public void copyPage(int p, long[] out) {
        long[] page = (long[]) PAGE_SLOT.getAcquire(pages, p);
        for (int i = 0; i < PAGE_LONGS; i++) {
            out[i] = page == null ? 0 : (long) WORD.getVolatile(page, i);
        }
    }

    /** Replaces page {@code p} with {@code words} (used at load time, before the map is shared). */
    public void loadPage(int p, long[] words) {
        boolean any = false;
        for (long w : words) {
            any |= w != 0;
        }
        long[] page = any ? words.clone() : null;
        // Bits past the end of the map must stay clear.
        if (page != null && ((long) p + 1) << PAGE_SHIFT > bits) {
            for (long b = bits; b < ((long) p + 1) << PAGE_SHIFT; b++) {
                page[wordInPage(b)] &= ~(1L << b);
            }
        }
        PAGE_SLOT.setRelease(pages, p, page);
    }

    private long[] pageForWrite(int p) {
        long[] page = (long[]) PAGE_SLOT.getAcquire(pages, p);
        if (page != null) {
            return page;
        }
        long[] fresh = new long[PAGE_LONGS];
        if (PAGE_SLOT.compareAndSet(pages, p, (long[]) null, fresh)) {
            return fresh;
        }
        return (long[]) PAGE_SLOT.getAcquire(pages, p);
    }

    private static int page(long bit) {
        return (int) (bit >>> PAGE_SHIFT);
    }

    private static int wordInPage(long bit) {
        return (int) ((bit & (PAGE_BITS - 1)) >>> 6);
    }
}

package io.snapbd.engine.bitmap;

import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;
import java.util.Arrays;
import java.util.Objects;
import java.util.concurrent.atomic.AtomicIntegerArray;

/**
 * A lock-free bit map over {@code bits} bits, stored as pages of {@link #PAGE_BITS} bits (docs/engine.md): a page
 * that was never set costs one null slot, so a sparse map is small. Bits are set and cleared with CAS, so
 * concurrent writers need no lock. Each page carries a dirty flag for incremental persistence.
 *
 * <p>{@link #freeze()} returns a read-only copy in O(pages) pointer copies: both maps share every page, and the
 * writable map copies a page on its next change (copy-on-write). Each page array carries, in one extra slot,
 * the generation it was created in; a page from an older generation is shared and is never written again.
 * Callers must not change the map while {@code freeze()} runs (the volume pauses writers).
 */
public final class PagedBitMap {

    public static final int PAGE_SHIFT = 15;
    public static final int PAGE_BITS = 1 << PAGE_SHIFT;        // 32768 bits = 4096 bytes
    public static final int PAGE_LONGS = PAGE_BITS / 64;        // 512
    public static final int PAGE_BYTES = PAGE_BITS / 8;

    private static final VarHandle PAGE_SLOT = MethodHandles.arrayElementVarHandle(long[][].class);
    private static final VarHandle WORD = MethodHandles.arrayElementVarHandle(long[].class);

    /** Slot after the bit words holding the page's generation. */
    private static final int GEN = PAGE_LONGS;

    /** Told about every page copied because it was shared, before the copy is changed. */
    @FunctionalInterface
    public interface PageCopyListener {
        /** {@code frozen} is the shared page (never changed again), or null when the page was all zero. */
        void pageCopied(int page, long[] frozen);
    }

    private final long bits;
    private final long[][] pages;
    private final AtomicIntegerArray dirty;
    private final boolean readOnly;
    private volatile long generation;
    private volatile boolean shared;             // some frozen copy exists: null pages count as shared too
    private volatile PageCopyListener listener;

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
        this.readOnly = false;
    }

    private PagedBitMap(long bits, long[][] pages) {
        this.bits = bits;
        this.pages = pages;
        this.dirty = new AtomicIntegerArray(pages.length);
        this.readOnly = true;
    }

    /** A read-only map over the given page arrays (shared, never changed). */
    public static PagedBitMap view(long bits, long[][] pages) {
        return new PagedBitMap(bits, pages.clone());
    }

    /**
     * A read-only copy of the current content sharing every page; later changes to this map copy pages
     * first and report the frozen page to the listener.
     */
    public PagedBitMap freeze() {
        checkWritable();
        generation++;
        shared = true;
        long[][] copy = new long[pages.length][];
        for (int i = 0; i < pages.length; i++) {
            copy[i] = (long[]) PAGE_SLOT.getAcquire(pages, i);
        }
        return new PagedBitMap(bits, copy);
    }

    /** Marks whether frozen copies exist (false when the last snapshot is gone: copying stops). */
    public void setShared(boolean shared) {
        this.shared = shared;
        if (shared) {
            generation++;
        }
    }

    public void setCopyListener(PageCopyListener l) {
        this.listener = l;
    }

    /** The page array (with its generation slot), or null; for building views at load time. */
    public long[] pageRef(int p) {
        return (long[]) PAGE_SLOT.getAcquire(pages, p);
    }

    /** Makes page {@code p} refer to {@code ref} (load time only: builds a snapshot's view). */
    public void setPageRef(int p, long[] ref) {
        PAGE_SLOT.setRelease(pages, p, ref);
    }

    public boolean isReadOnly() {
        return readOnly;
    }

    private void checkWritable() {
        if (readOnly) {
            throw new IllegalStateException("frozen bit map is read-only");
        }
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
        Objects.checkIndex(bit, bits);
        long[] page = (long[]) PAGE_SLOT.getAcquire(pages, page(bit));
        if (page == null) {
            return false;
        }
        long word = (long) WORD.getVolatile(page, wordInPage(bit));
        return (word & (1L << bit)) != 0;
    }

    /** Sets the bit; true if it was clear before (this call changed it). */
    public boolean set(long bit) {
        Objects.checkIndex(bit, bits);    // slack bits of the last page must stay clear
        int p = page(bit);
        int w = wordInPage(bit);
        long mask = 1L << bit;
        long[] page = (long[]) PAGE_SLOT.getAcquire(pages, p);
        if (page != null && ((long) WORD.getVolatile(page, w) & mask) != 0) {
            return false;       // already set: nothing to change (and no shared page to copy)
        }
        page = pageForWrite(p);
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
        Objects.checkIndex(bit, bits);
        int p = page(bit);
        long[] page = (long[]) PAGE_SLOT.getAcquire(pages, p);
        int w = wordInPage(bit);
        long mask = 1L << bit;
        if (page == null || ((long) WORD.getVolatile(page, w) & mask) == 0) {
            return false;
        }
        checkWritable();
        if (page[GEN] != generation) {
            page = ownedCopy(p, page);
        }
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
                    return found < end ? found : limit;    // slack bits past the end are not bits of the map
                }
                bit = (bit & ~63L) + 64;
            }
        }
        return limit;
    }

    /** The 64 bits [64·w, 64·w+63] as one word (bit i of the word = bit 64·w+i); zero beyond the map. */
    public long word(long w) {
        long bit = w << 6;
        if (bit >= bits) {
            return 0;
        }
        long[] page = (long[]) PAGE_SLOT.getAcquire(pages, page(bit));
        return page == null ? 0 : (long) WORD.getVolatile(page, wordInPage(bit));
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
        checkWritable();
        boolean any = false;
        for (int i = 0; i < PAGE_LONGS; i++) {
            any |= words[i] != 0;
        }
        long[] page = null;
        if (any) {
            page = Arrays.copyOf(words, PAGE_LONGS + 1);
            page[GEN] = generation;
        }
        // Bits past the end of the map must stay clear.
        if (page != null && ((long) p + 1) << PAGE_SHIFT > bits) {
            for (long b = bits; b < ((long) p + 1) << PAGE_SHIFT; b++) {
                page[wordInPage(b)] &= ~(1L << b);
            }
        }
        PAGE_SLOT.setRelease(pages, p, page);
    }

    /**
     * The page to set a bit in, owned by this map: allocated if absent, copied if shared. Returns null when
     * the page is shared and the caller's bit is already set (callers recheck via {@link #get}).
     */
    private long[] pageForWrite(int p) {
        checkWritable();
        while (true) {
            long[] page = (long[]) PAGE_SLOT.getAcquire(pages, p);
            if (page != null) {
                return page[GEN] == generation ? page : ownedCopy(p, page);
            }
            long[] fresh = new long[PAGE_LONGS + 1];
            fresh[GEN] = generation;
            if (PAGE_SLOT.compareAndSet(pages, p, (long[]) null, fresh)) {
                if (shared) {
                    notifyCopied(p, null);
                }
                return fresh;
            }
        }
    }

    /** Replaces a shared page by a private copy (or the copy another thread installed first). */
    private long[] ownedCopy(int p, long[] sharedPage) {
        long[] copy = Arrays.copyOf(sharedPage, PAGE_LONGS + 1);
        copy[GEN] = generation;
        if (PAGE_SLOT.compareAndSet(pages, p, sharedPage, copy)) {
            notifyCopied(p, sharedPage);
            return copy;
        }
        long[] now = (long[]) PAGE_SLOT.getAcquire(pages, p);
        return now[GEN] == generation ? now : ownedCopy(p, now);
    }

    private void notifyCopied(int p, long[] frozen) {
        PageCopyListener l = listener;
        if (l != null) {
            l.pageCopied(p, frozen);
        }
    }

    private static int page(long bit) {
        return (int) (bit >>> PAGE_SHIFT);
    }

    private static int wordInPage(long bit) {
        return (int) ((bit & (PAGE_BITS - 1)) >>> 6);
    }
}

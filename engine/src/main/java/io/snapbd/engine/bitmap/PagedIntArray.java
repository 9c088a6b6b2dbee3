package io.snapbd.engine.bitmap;

import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;
import java.util.Arrays;

/**
 * A sparse array of ints indexed by block, in pages of {@link #PAGE} entries allocated on first store: the
 * block map (block → save-volume chunk) of a snapshot. Absent entries read as -1. Stores publish with
 * release semantics so a reader that sees the snapshot's bit also sees the chunk.
 */
public final class PagedIntArray {

    static final int SHIFT = 10;
    static final int PAGE = 1 << SHIFT;
    private static final VarHandle SLOT = MethodHandles.arrayElementVarHandle(int[][].class);
    private static final VarHandle INT = MethodHandles.arrayElementVarHandle(int[].class);

    private final int[][] pages;

    public PagedIntArray(long length) {
        long n = (length + PAGE - 1) >>> SHIFT;
        if (n > Integer.MAX_VALUE - 8) {
            throw new IllegalArgumentException("too many entries: " + length);
        }
        pages = new int[(int) n][];
    }

    public int get(long index) {
        int[] p = (int[]) SLOT.getAcquire(pages, (int) (index >>> SHIFT));
        return p == null ? -1 : (int) INT.getAcquire(p, (int) (index & (PAGE - 1)));
    }

    public void set(long index, int value) {
        int pi = (int) (index >>> SHIFT);
        int[] p = (int[]) SLOT.getAcquire(pages, pi);
        if (p == null) {
            int[] fresh = new int[PAGE];
            Arrays.fill(fresh, -1);
            p = SLOT.compareAndSet(pages, pi, (int[]) null, fresh) ? fresh : (int[]) SLOT.getAcquire(pages, pi);
        }
        INT.setRelease(p, (int) (index & (PAGE - 1)), value);
    }
}

package io.snapbd.engine.mirror;

import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicLongArray;
import java.util.concurrent.atomic.LongAdder;

/**
 * A mirror's hot regions (docs/mirrors.md, "Write order", "Hot regions"): the volume in regions of
 * {@code 2^shift} bytes (1 MiB; larger for volumes above 1 TiB so that at most 2^20
 * regions exist). A region is <em>hot</em> once a <em>region entry</em> {tag, regionStart, regionLength} is durable
 * on every current leg; a change whose regions are all hot appends its own ENTRY without forcing it, because the
 * region entry already covers every byte it can make differ between legs.
 *
 * <p>One atomic word per region: bits 0–1 the state ({@link #COLD}, {@link #HEATING}: its region entry is being
 * made durable by the change that claimed it, {@link #HOT}), bits 2–17 the changes in flight that entered it hot,
 * bits 18–63 the {@link DataForcer} sequence number of the last such change that ended. The fast path
 * ({@link #enterHot}, {@link #exit}) is a CAS per region and takes no lock; making a region hot ({@link #claim},
 * {@link #published}) and cooling ({@link #cool}) take this object's monitor, which also guards the list of hot
 * regions and their entries' tags. A region cools (HOT → COLD, its tag handed back for DONE + RETIRE) only by a CAS
 * that sees no change in flight and a last change whose data-force batch completed: a change that enters
 * afterwards sees COLD and makes the region hot again under a new region entry, so no change ever writes data
 * under a region entry that is being retired.
 */
final class HotRegions {

    static final int COLD = 0;
    static final int HEATING = 1;
    static final int HOT = 2;
    private static final long STATE = 3;
    private static final long IN_ONE = 1L << 2;
    private static final long IN_MASK = 0xffffL << 2;
    private static final int SEQ_SHIFT = 18;
    /** Largest sequence number a word holds: a change that ends with it never lets its region cool. */
    static final long SEQ_NEVER = (1L << (64 - SEQ_SHIFT)) - 1;
    /** Changes spanning more regions than this (restore runs, the clone copier's large writes) take the strict path. */
    static final int MAX_REGIONS_PER_CHANGE = 4;
    /**
     * Hot regions at most: 256 (256 MiB compared per leg at worst after a crash), or
     * {@code -Dsnapbd.mirror.hotRegions} (0 turns hot regions off).
     */
    static final int DEFAULT_CAP = (int) Math.max(0, Math.min(1 << 16, Long.getLong("snapbd.mirror.hotRegions", 256)));
    /**
     * {@code -Dsnapbd.mirror.entries=forced}: every change forces its own ENTRY (no hot regions), the order before
     * hot regions existed; {@code regions} (the default) uses them.
     */
    static volatile boolean FORCED_ENTRIES = "forced".equals(System.getProperty("snapbd.mirror.entries", "regions"));
    /**
     * What a hot-path change (its regions all hot) appends on the legs' tables: {@code -Dsnapbd.mirror.hotEntries=none}
     * (the default) nothing (its tag is still taken; the durable region entries are its record, and reconciliation
     * compares the whole region anyway), so no RETIRE either; {@code unforced} its own ENTRY, unforced, retired later
     * without a data force (docs/mirrors.md, "Hot regions").
     */
    static volatile boolean HOT_ENTRIES_NONE = !"unforced".equals(System.getProperty("snapbd.mirror.hotEntries", "none"));

    /** Test hook: when set, changes in cold regions skip the region entry (a broken write path the tests must catch). */
    static volatile boolean skipRegionEntriesForTest;

    final int shift;
    final long size;
    final int cap;
    private final AtomicLongArray words;
    /** The hot (and heating) regions and their region entries' tags (0 while heating); guarded by this. */
    private final int[] listRegion;
    private final long[] listTag;
    private int listed;
    private final AtomicLong made = new AtomicLong();
    private final AtomicLong cooled = new AtomicLong();
    private final LongAdder fast = new LongAdder();
    private final LongAdder strict = new LongAdder();

    HotRegions(long size, int cap) {
        this.size = size;
        int s = 20;
        while (((size - 1) >>> s) >= (1L << 20)) {
            s++;
        }
        this.shift = s;
        this.cap = cap;
        this.words = new AtomicLongArray(cap == 0 ? 0 : (int) ((size + (1L << s) - 1) >>> s));
        this.listRegion = new int[cap];
        this.listTag = new long[cap];
    }

    boolean enabled() {
        return cap > 0;
    }

    int first(long offset) {
        return (int) (offset >>> shift);
    }

    int last(long offset, long length) {
        return (int) ((offset + Math.max(1, length) - 1) >>> shift);
    }

    long regionStart(int r) {
        return (long) r << shift;
    }

    long regionLength(int r) {
        return Math.min(1L << shift, size - regionStart(r));
    }

    /**
     * The fast path: enters regions {@code r0 … r1} if every one is hot (one more change in flight on each); false
     * (and nothing entered) when one is not, or when its in-flight count is full.
     */
    boolean enterHot(int r0, int r1) {
        for (int r = r0; r <= r1; r++) {
            while (true) {
                long w = words.get(r);
                if ((w & STATE) != HOT || (w & IN_MASK) == IN_MASK) {
                    for (int u = r0; u < r; u++) {
                        exit(u, 0);
                    }
                    return false;
                }
                if (words.compareAndSet(r, w, w + IN_ONE)) {
                    break;
                }
            }
        }
        fast.increment();
        return true;
    }

    /**
     * Whether regions {@code r0 … r1} are all hot now (a hint: one may cool or fill its in-flight count before the
     * change enters it, which {@link #enterHot} then sees).
     */
    boolean allHot(int r0, int r1) {
        for (int r = r0; r <= r1; r++) {
            long w = words.get(r);
            if ((w & STATE) != HOT || (w & IN_MASK) == IN_MASK) {
                return false;
            }
        }
        return true;
    }

    /**
     * The slow path: claims regions {@code r0 … r1} for a change when each is hot or cold, none is being made hot by
     * another change and the cold ones fit under the cap. Enters the hot ones; marks the cold ones {@link #HEATING}
     * (entered too) and writes their indexes to {@code heat} (returns how many, ≥ 0); −1 when the change must take
     * the strict path (nothing claimed).
     */
    synchronized int claim(int r0, int r1, int[] heat) {
        int cold = 0;
        for (int r = r0; r <= r1; r++) {
            long w = words.get(r);
            int st = (int) (w & STATE);
            if (st == HEATING || st == HOT && (w & IN_MASK) == IN_MASK) {
                return -1;
            }
            cold += st == COLD ? 1 : 0;
        }
        if (listed + cold > cap) {
            strict.increment();     // for want of room: the data forcer cools idle regions sooner
            return -1;
        }
        int n = 0;
        for (int r = r0; r <= r1; r++) {
            while (true) {
                long w = words.get(r);
                if ((w & STATE) == COLD) {
                    // cold words change only under this monitor
                    words.set(r, HEATING | IN_ONE);
                    listRegion[listed] = r;
                    listTag[listed] = 0;
                    listed++;
                    heat[n++] = r;
                    break;
                }
                if (words.compareAndSet(r, w, w + IN_ONE)) {       // hot: in-flight count only (a fast path may race)
                    break;
                }
            }
        }
        return n;
    }

    /** Region {@code r}'s region entry {@code tag} is durable on every current leg: it is hot (its claimer still in it). */
    synchronized void published(int r, long tag) {
        for (int i = 0; i < listed; i++) {
            if (listRegion[i] == r) {
                listTag[i] = tag;
            }
        }
        long w = words.get(r);
        words.set(r, (w & ~STATE) | HOT);
        made.incrementAndGet();
    }

    /** A claim whose region entry could not be made durable: the region is cold again; its claimer left it. */
    synchronized void unclaim(int r) {
        unlist(r);
        words.set(r, COLD);
    }

    /** A change that entered region {@code r} ended; {@code seq} is its data-force sequence number (0: it changed nothing). */
    void exit(int r, long seq) {
        while (true) {
            long w = words.get(r);
            long last = w >>> SEQ_SHIFT;
            long nw = ((Math.max(last, Math.min(seq, SEQ_NEVER))) << SEQ_SHIFT) | ((w & IN_MASK) - IN_ONE) | (w & STATE);
            if (words.compareAndSet(r, w, nw)) {
                return;
            }
        }
    }

    /**
     * Cools every hot region with no change in flight whose last change's data-force batch completed (sequence
     * number ≤ {@code forcedUpTo}): each becomes cold by a CAS (which fails if a change entered meanwhile), leaves
     * the list, and its region entry's tag goes to {@code tags} for DONE + RETIRE. Returns how many.
     */
    synchronized int cool(long forcedUpTo, long[] tags) {
        int n = 0;
        for (int i = 0; i < listed; ) {
            int r = listRegion[i];
            long w = words.get(r);
            if ((w & STATE) == HOT && (w & IN_MASK) == 0 && (w >>> SEQ_SHIFT) <= forcedUpTo && n < tags.length
                    && words.compareAndSet(r, w, COLD)) {
                tags[n++] = listTag[i];
                listed--;
                listRegion[i] = listRegion[listed];
                listTag[i] = listTag[listed];
                cooled.incrementAndGet();
                continue;
            }
            i++;
        }
        return n;
    }

    /** Every region entry was retired (a reconciliation; no change in flight): every region is cold. */
    synchronized void reset() {
        for (int i = 0; i < listed; i++) {
            words.set(listRegion[i], COLD);
        }
        listed = 0;
    }

    private void unlist(int r) {
        for (int i = 0; i < listed; i++) {
            if (listRegion[i] == r) {
                listed--;
                listRegion[i] = listRegion[listed];
                listTag[i] = listTag[listed];
                return;
            }
        }
    }

    /** Regions hot (or being made hot) now. */
    synchronized int hot() {
        return listed;
    }

    /** Region entries made durable since the open. */
    long made() {
        return made.get();
    }

    /** Regions cooled (their region entries retired by a data-force batch) since the open. */
    long cooled() {
        return cooled.get();
    }

    /** Changes that entered only hot regions (their ENTRY unforced), and that took the strict path for want of room under the cap. */
    long fastChanges() {
        return fast.sum();
    }

    long strictChanges() {
        return strict.sum();
    }

    long regionBytes() {
        return 1L << shift;
    }
}

package io.snapbd.engine.snapshot;

import io.snapbd.engine.bitmap.PagedBitMap;

import java.io.IOException;

/**
 * The older→younger difference (docs/snapshots.md): block B is <em>changed</em> from snapshot L to the younger
 * snapshot M ⇔ meta_M[B] ∧ ∃ I ∈ [L, M−1] : bit_I[B] ∨ ¬meta_I[B]; a block with ¬meta_M[B] is
 * <em>unused</em> in M. Evaluated 64 blocks at a time: outer loop over words of blocks, inner loop over the
 * snapshots L..M−1, leaving the inner loop as soon as every in-use block of the word is known changed.
 * Conservative: a block reported unchanged really is unchanged; never a false negative.
 *
 * <p>{@link #scanDirty} answers qemu's question instead (its dirty bitmaps mark every block written or
 * discarded): block B is <em>dirty</em> ⇔ its content may differ between L and M ⇔ changed(B) ∨
 * (meta_L[B] ∧ ¬meta_M[B]), i.e. also the blocks that left use after L (TRIM, WRITE_ZEROES). A block in use in
 * neither reads as zeros in both and is not dirty. docs/snapshots.md has the proof.
 */
public final class Differential {

    public enum State { UNCHANGED, CHANGED, UNUSED }

    @FunctionalInterface
    public interface ExtentSink {
        /** A maximal run of blocks [first, first+count) in one state; return false to stop. */
        boolean accept(long firstBlock, long count, State state) throws IOException;
    }

    @FunctionalInterface
    public interface DirtySink {
        /** A maximal run of blocks [first, first+count), all dirty or all clean; return false to stop. */
        boolean accept(long firstBlock, long count, boolean dirty) throws IOException;
    }

    private final PagedBitMap[] bits;      // snapshots L..M-1
    private final PagedBitMap[] metas;     // snapshots L..M-1
    private final PagedBitMap younger;     // meta of M
    private final long blocks;

    Differential(PagedBitMap[] bits, PagedBitMap[] metas, PagedBitMap younger, long blocks) {
        this.bits = bits;
        this.metas = metas;
        this.younger = younger;
        this.blocks = blocks;
    }

    /** Scans blocks [first, end) and reports runs of equal state in ascending order (unchanged runs too). */
    public void scan(long first, long end, ExtentSink sink) throws IOException {
        end = Math.min(end, blocks);
        if (first >= end) {
            return;
        }
        State runState = null;
        long runStart = first;
        long w = first >>> 6;
        long lastWord = (end - 1) >>> 6;
        for (; w <= lastWord; w++) {
            long inUse = younger.word(w);
            long changed = changed(w, inUse);
            long base = w << 6;
            int from = (int) Math.max(0, first - base);
            int to = (int) Math.min(64, end - base);
            // Fast path: a whole word in the state of the current run extends it.
            State uniform = inUse == 0 ? State.UNUSED : inUse == -1L ? (changed == -1L ? State.CHANGED
                    : changed == 0 ? State.UNCHANGED : null) : null;
            if (uniform != null && uniform == runState) {
                continue;
            }
            for (int b = from; b < to; b++) {
                long mask = 1L << b;
                State s = (inUse & mask) == 0 ? State.UNUSED : (changed & mask) != 0 ? State.CHANGED : State.UNCHANGED;
                if (s != runState) {
                    if (runState != null && !sink.accept(runStart, base + b - runStart, runState)) {
                        return;
                    }
                    runState = s;
                    runStart = base + b;
                }
            }
        }
        if (runState != null) {
            sink.accept(runStart, end - runStart, runState);
        }
    }

    /** EMC's rule for the 64 blocks of word {@code w}: changed bits, a subset of {@code inUse} (meta_M). */
    private long changed(long w, long inUse) {
        long changed = 0;
        if (inUse != 0) {
            for (int i = 0; i < bits.length; i++) {
                changed |= bits[i].word(w) | ~metas[i].word(w);
                if ((changed & inUse) == inUse) {
                    break;              // early exit: every in-use block of this word is changed
                }
            }
            changed &= inUse;
        }
        return changed;
    }

    /**
     * Scans blocks [first, end) with qemu's rule (dirty ⇔ changed ∨ (meta_L ∧ ¬meta_M)) and reports maximal
     * runs of dirty and clean blocks in ascending order.
     */
    public void scanDirty(long first, long end, DirtySink sink) throws IOException {
        end = Math.min(end, blocks);
        if (first >= end) {
            return;
        }
        PagedBitMap olderMeta = metas[0];
        boolean runDirty = false;
        long runStart = first;
        boolean started = false;
        long lastWord = (end - 1) >>> 6;
        for (long w = first >>> 6; w <= lastWord; w++) {
            long inUse = younger.word(w);
            long dirty = changed(w, inUse) | (olderMeta.word(w) & ~inUse);
            long base = w << 6;
            int from = (int) Math.max(0, first - base);
            int to = (int) Math.min(64, end - base);
            if (started && (dirty == (runDirty ? -1L : 0L))) {
                continue;                   // the whole word extends the current run
            }
            for (int b = from; b < to; b++) {
                boolean d = (dirty & (1L << b)) != 0;
                if (!started) {
                    started = true;
                    runDirty = d;
                    runStart = base + b;
                } else if (d != runDirty) {
                    if (!sink.accept(runStart, base + b - runStart, runDirty)) {
                        return;
                    }
                    runDirty = d;
                    runStart = base + b;
                }
            }
        }
        sink.accept(runStart, end - runStart, runDirty);
    }
}

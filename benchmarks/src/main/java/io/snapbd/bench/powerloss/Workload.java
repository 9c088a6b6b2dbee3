package io.snapbd.bench.powerloss;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;

/**
 * The power-loss campaign's operation stream: a pure function of the seed and of the operations acknowledged
 * so far, so that the checker, replaying the log, regenerates every logged operation and the one that was in
 * flight when the power went (the next one). One operation at a time, block-aligned.
 */
final class Workload {

    enum Kind { LUN_ENABLE, WRITE, FLUSH, TRIM, ZERO, LUN_GET, SNAP_CREATE, SNAP_DELETE, RESTORE }

    /** At most this many snapshots live at once (keeps the save volume from filling, which would terminate one). */
    static final int MAX_SNAPSHOTS = 3;

    /**
     * One operation. {@code block}/{@code count} for WRITE, TRIM and ZERO; {@code fua} for those three;
     * {@code snapshot} names the snapshot of SNAP_*, RESTORE. A WRITE's value is {@code index + 1}.
     */
    record Op(long index, Kind kind, int block, int count, boolean fua, String snapshot) {
        long value() {
            return index + 1;
        }

        boolean altering() {
            return kind == Kind.WRITE || kind == Kind.TRIM || kind == Kind.ZERO || kind == Kind.RESTORE;
        }

        /** The text logged for this operation (the checker compares it with the regenerated one). */
        String describe() {
            return switch (kind) {
                case WRITE, TRIM, ZERO -> kind + " " + block + " " + count + (fua ? " fua" : "");
                case SNAP_CREATE, SNAP_DELETE, RESTORE -> kind + " " + snapshot;
                default -> kind.toString();
            };
        }
    }

    private final Random random;
    private final int blocks;
    private final List<String> live = new ArrayList<>();
    private long next;

    Workload(long seed, int blocks) {
        this.random = new Random(seed);
        this.blocks = blocks;
    }

    /** Snapshots live after the acknowledged operations, oldest first. */
    List<String> live() {
        return live;
    }

    /** The next operation; call {@link #acknowledged} once it is acknowledged, before asking for another. */
    Op next() {
        long i = next++;
        int pick = random.nextInt(100);
        int block = random.nextInt(blocks);
        int count = 1 + random.nextInt(16);
        count = Math.min(count, blocks - block);
        boolean fua = random.nextInt(5) == 0;
        int which = random.nextInt(1 << 20);
        if (i == 0) {
            return new Op(i, Kind.LUN_ENABLE, 0, 0, false, null);
        }
        Kind k;
        if (pick < 64) {
            k = Kind.WRITE;
        } else if (pick < 70) {
            k = Kind.FLUSH;
        } else if (pick < 77) {
            k = Kind.TRIM;
        } else if (pick < 84) {
            k = Kind.ZERO;
        } else if (pick < 90) {
            k = Kind.LUN_GET;
        } else if (pick < 95) {
            k = Kind.SNAP_CREATE;
        } else if (pick < 98) {
            k = Kind.SNAP_DELETE;
        } else {
            k = Kind.RESTORE;
        }
        if (k == Kind.SNAP_CREATE && live.size() >= MAX_SNAPSHOTS) {
            k = Kind.SNAP_DELETE;
        } else if ((k == Kind.SNAP_DELETE || k == Kind.RESTORE) && live.isEmpty()) {
            k = Kind.SNAP_CREATE;
        }
        return switch (k) {
            case WRITE, TRIM, ZERO -> new Op(i, k, block, count, fua, null);
            case SNAP_CREATE -> new Op(i, k, 0, 0, false, "s" + i);
            case SNAP_DELETE, RESTORE -> new Op(i, k, 0, 0, false, live.get(which % live.size()));
            default -> new Op(i, k, 0, 0, false, null);
        };
    }

    void acknowledged(Op op) {
        if (op.kind() == Kind.SNAP_CREATE) {
            live.add(op.snapshot());
        } else if (op.kind() == Kind.SNAP_DELETE) {
            live.remove(op.snapshot());
        }
    }

    // ---- block contents ------------------------------------------------------------------------------------

    /**
     * Fills {@code dst} (one block) with the content of value {@code value} at block {@code block}: the value,
     * the block and the seed in the first 24 bytes, then pseudo-random bytes derived from all three, so that
     * every (value, block) pair is distinct and a block names the write it came from. Value 0 is zeros.
     */
    static void fill(byte[] dst, int off, int blockSize, long seed, long value, int block) {
        if (value == 0) {
            Arrays.fill(dst, off, off + blockSize, (byte) 0);
            return;
        }
        long x = mix(seed ^ mix(value * 0x9E3779B97F4A7C15L + block));
        for (int p = 0; p < blockSize; p += 8) {
            long w;
            if (p == 0) {
                w = value;
            } else if (p == 8) {
                w = block;
            } else if (p == 16) {
                w = seed;
            } else {
                x = mix(x + 0x9E3779B97F4A7C15L);
                w = x;
            }
            for (int b = 0; b < 8; b++) {
                dst[off + p + b] = (byte) (w >>> (8 * b));
            }
        }
    }

    /** The value a block claims to hold (its first 8 bytes), for reports only. */
    static long claimedValue(byte[] src, int off) {
        long w = 0;
        for (int b = 7; b >= 0; b--) {
            w = (w << 8) | (src[off + b] & 0xFF);
        }
        return w;
    }

    private static long mix(long z) {
        z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
        z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
        return z ^ (z >>> 31);
    }
}

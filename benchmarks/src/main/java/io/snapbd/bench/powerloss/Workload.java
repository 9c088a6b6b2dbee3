package io.snapbd.bench.powerloss;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.EnumSet;
import java.util.List;
import java.util.Locale;
import java.util.Random;
import java.util.Set;

/**
 * The power-loss campaign's operation stream: a pure function of the seed, of the round's {@link Feature}s and
 * of the outcome of the administrative operations acknowledged so far, so that the checker, replaying the log,
 * regenerates every logged operation and those that may have been in flight when the power went. Data
 * operations (WRITE, TRIM, ZERO, FLUSH) change nothing here, so with several connections their order of
 * acknowledgement does not matter; administrative ones are sent only when nothing else is in flight.
 */
final class Workload {

    enum Kind { LUN_ENABLE, WRITE, FLUSH, TRIM, ZERO, LUN_GET, SNAP_CREATE, SNAP_DELETE, RESTORE, CLONE, MIRROR_ADD, MIRROR_REMOVE }

    /**
     * What a round adds to the basic workload: {@code CLONE} clones snapshots and writes to the clones;
     * {@code MIRROR} gives the volume a second file leg; {@code CONCURRENT} sends the volume's data operations
     * over two connections, two in flight; {@code FULL} gives it a small save volume, so copy-on-write runs out
     * and snapshots are terminated.
     */
    enum Feature { CLONE, MIRROR, CONCURRENT, FULL }

    /** At most this many snapshots live at once (without {@code FULL}, keeps the save volume from filling). */
    static final int MAX_SNAPSHOTS = 3;
    /** At most this many clones per round (each is a new volume on the guest's disk). */
    static final int MAX_CLONES = 2;
    /**
     * After a {@code mirror add} or {@code remove} is sent, the next 24 to 71 operations are data operations
     * (sent while the leg change runs: writes continue during the add's copy); the administrative operation
     * after them waits for it.
     */
    static final int LEG_WINDOW = 24;

    /** The second leg of a mirrored round: a file next to the data directory, or an export of a second snapbd. */
    enum LegKind { FILE, NBD }

    /**
     * The kind of leg a mirrored round's seed picks: NBD in half of the rounds, alternating with consecutive
     * seeds ({@code seed + seed / 16} odd), so that both kinds meet every feature combination of {@link #mixed}.
     * benchmarks/power-loss-guest.sh applies the same rule to start the leg's server.
     */
    static LegKind legKind(long seed) {
        return Math.floorMod(seed + Math.floorDiv(seed, 16), 2) == 1 ? LegKind.NBD : LegKind.FILE;
    }

    /** Whether a mirrored round adds and removes a third leg online: in three rounds of four. */
    static boolean legChanges(long seed) {
        return Math.floorMod(Math.floorDiv(seed + Math.floorDiv(seed, 16), 2), 4) != 3;
    }

    /**
     * One operation. {@code block}/{@code count} for WRITE, TRIM and ZERO; {@code fua} for those three;
     * {@code snapshot} names the snapshot of SNAP_*, RESTORE and CLONE; {@code target} is the clone a data
     * operation or a CLONE goes to (null: the round's volume). A WRITE's value is {@code index + 1}.
     */
    record Op(long index, Kind kind, int block, int count, boolean fua, String snapshot, String target) {
        Op(long index, Kind kind, int block, int count, boolean fua, String snapshot) {
            this(index, kind, block, count, fua, snapshot, null);
        }

        long value() {
            return index + 1;
        }

        /** MIRROR_ADD and MIRROR_REMOVE: sent while data operations continue (the next ones are data only). */
        boolean leg() {
            return kind == Kind.MIRROR_ADD || kind == Kind.MIRROR_REMOVE;
        }

        boolean altering() {
            return target == null && (kind == Kind.WRITE || kind == Kind.TRIM || kind == Kind.ZERO || kind == Kind.RESTORE);
        }

        /** WRITE, TRIM, ZERO and FLUSH: sent over an NBD connection, possibly alongside others. */
        boolean data() {
            return kind == Kind.WRITE || kind == Kind.TRIM || kind == Kind.ZERO || kind == Kind.FLUSH;
        }

        /** The text logged for this operation (the checker compares it with the regenerated one). */
        String describe() {
            String on = target == null ? "" : " @" + target;
            return switch (kind) {
                case WRITE, TRIM, ZERO -> kind + " " + block + " " + count + (fua ? " fua" : "") + on;
                case SNAP_CREATE, SNAP_DELETE, RESTORE -> kind + " " + snapshot;
                case CLONE -> kind + " " + snapshot + on;
                case FLUSH -> kind + on;
                case MIRROR_ADD, MIRROR_REMOVE -> kind + " leg2";
                default -> kind.toString();
            };
        }
    }

    private final Random random;
    private final int blocks;
    private final Set<Feature> features;
    private final List<String> live = new ArrayList<>();
    private final List<String> clones = new ArrayList<>();
    private final boolean legChanges;
    /** The index of the first {@code mirror add} (5 to 12): early, as a round with an NBD leg runs few operations. */
    private final long firstAdd;
    /** Whether the third leg is in the volume once the leg changes sent so far are done. */
    private boolean thirdLeg;
    /** Data operations still to come before the next administrative one (a leg change runs meanwhile). */
    private int legWindow;
    private long next;

    Workload(long seed, int blocks) {
        this(seed, blocks, EnumSet.noneOf(Feature.class));
    }

    Workload(long seed, int blocks, Set<Feature> features) {
        this.random = new Random(seed);
        this.blocks = blocks;
        this.features = features.isEmpty() ? EnumSet.noneOf(Feature.class) : EnumSet.copyOf(features);
        this.legChanges = features.contains(Feature.MIRROR) && legChanges(seed);
        this.firstAdd = 5 + Math.floorMod(seed, 8);
    }

    /** Whether this round adds and removes a third leg online (a mirrored round, {@link #legChanges(long)}). */
    boolean legChanges() {
        return legChanges;
    }

    /**
     * The features of a round whose features are left to the seed ({@code --features mix}): the default
     * campaign mixes them across rounds. Each of the 16 combinations comes once in 16 consecutive seeds, in an
     * order that the seed shuffles (seed mod 16 goes through a fixed permutation).
     */
    static Set<Feature> mixed(long seed) {
        int bits = (int) ((Math.floorMod(seed, 16) * 7 + 3) % 16);
        Set<Feature> f = EnumSet.noneOf(Feature.class);
        for (Feature x : Feature.values()) {
            if ((bits & (1 << x.ordinal())) != 0) {
                f.add(x);
            }
        }
        return f;
    }

    /** {@code none}, {@code mix} (by the seed) or a comma-separated list of feature names. */
    static Set<Feature> parse(String text, long seed) {
        String t = text.strip().toLowerCase(Locale.ROOT);
        if (t.equals("mix")) {
            return mixed(seed);
        }
        Set<Feature> f = EnumSet.noneOf(Feature.class);
        if (t.equals("none") || t.isEmpty()) {
            return f;
        }
        for (String w : t.split(",")) {
            try {
                f.add(Feature.valueOf(w.strip().toUpperCase(Locale.ROOT)));
            } catch (IllegalArgumentException e) {
                throw new IllegalArgumentException("unknown feature '" + w.strip() + "' (clone, mirror, concurrent, full, none, mix)");
            }
        }
        return f;
    }

    /** The features as logged: lower-case names separated by commas, or {@code none}. */
    static String format(Set<Feature> f) {
        if (f.isEmpty()) {
            return "none";
        }
        StringBuilder b = new StringBuilder();
        for (Feature x : f) {
            b.append(b.length() == 0 ? "" : ",").append(x.name().toLowerCase(Locale.ROOT));
        }
        return b.toString();
    }

    Set<Feature> features() {
        return features;
    }

    /** Snapshots live after the acknowledged operations, oldest first. */
    List<String> live() {
        return live;
    }

    /** Clones made by the acknowledged operations, oldest first. */
    List<String> clones() {
        return clones;
    }

    /**
     * The next operation; call {@link #acknowledged} once an administrative operation is acknowledged, before
     * asking for another (data operations may be asked for ahead of their acknowledgement).
     */
    Op next() {
        long i = next++;
        int pick = random.nextInt(100);
        int block = random.nextInt(blocks);
        int count = 1 + random.nextInt(16);
        if (features.contains(Feature.FULL)) {
            count *= 4;     // writes of up to 64 blocks: the volume's blocks come into use, and copy-on-write runs out, sooner
        }
        count = Math.min(count, blocks - block);
        boolean fua = random.nextInt(5) == 0;
        int which = random.nextInt(1 << 20);
        int onClone = random.nextInt(100);
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
        if (k == Kind.WRITE && pick < 2 && features.contains(Feature.CLONE) && !live.isEmpty() && clones.size() < MAX_CLONES) {
            k = Kind.CLONE;
        }
        if (legWindow > 0) {
            // A leg change runs: data operations only (an administrative pick becomes a write).
            legWindow--;
            if (k != Kind.WRITE && k != Kind.FLUSH && k != Kind.TRIM && k != Kind.ZERO) {
                k = Kind.WRITE;
            }
        } else if (legChanges && ((k == Kind.WRITE && pick >= 2 && pick < 4) || i == firstAdd)) {
            // Its outcome changes nothing here: an add or remove that fails ends the round as an error.
            k = thirdLeg ? Kind.MIRROR_REMOVE : Kind.MIRROR_ADD;
            thirdLeg = !thirdLeg;
            legWindow = LEG_WINDOW + which % 48;
        }
        if (k == Kind.SNAP_CREATE && live.size() >= MAX_SNAPSHOTS) {
            k = Kind.SNAP_DELETE;
        } else if ((k == Kind.SNAP_DELETE || k == Kind.RESTORE) && live.isEmpty()) {
            k = Kind.SNAP_CREATE;
        }
        // A third of the data operations go to the newest clone, once there is one.
        String target = !clones.isEmpty() && onClone < 33 ? clones.get(clones.size() - 1) : null;
        return switch (k) {
            case WRITE, TRIM, ZERO -> new Op(i, k, block, count, fua, null, target);
            case FLUSH -> new Op(i, k, 0, 0, false, null, target);
            case SNAP_CREATE -> new Op(i, k, 0, 0, false, "s" + i);
            case SNAP_DELETE, RESTORE -> new Op(i, k, 0, 0, false, live.get(which % live.size()));
            case CLONE -> new Op(i, k, 0, 0, false, live.get(which % live.size()), "c" + i);
            case MIRROR_ADD, MIRROR_REMOVE -> new Op(i, k, 0, 0, false, null);
            default -> new Op(i, k, 0, 0, false, null);
        };
    }

    /** An operation acknowledged as done. */
    void acknowledged(Op op) {
        acknowledged(op, true);
    }

    /**
     * An operation acknowledged; {@code applied} false when it was answered without effect (a snapshot found
     * invalid, so not restored or cloned; an operation refused with an error).
     */
    void acknowledged(Op op, boolean applied) {
        if (!applied) {
            return;
        }
        if (op.kind() == Kind.SNAP_CREATE) {
            live.add(op.snapshot());
        } else if (op.kind() == Kind.SNAP_DELETE) {
            live.remove(op.snapshot());
        } else if (op.kind() == Kind.CLONE) {
            clones.add(op.target());
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

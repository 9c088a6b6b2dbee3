package io.snapbd.engine.volume;

import io.snapbd.engine.BlockDevice;
import io.snapbd.engine.io.ByteSource;
import io.snapbd.engine.io.FileSpace;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicReference;

/**
 * Runs the copy-on-write write path on a scratch volume before a server takes clients.
 *
 * <p>Why: the first snapshot of a freshly started process otherwise pays for the JIT compiling (and, after the
 * no-snapshot traffic before it, recompiling) the copy, stage, force and apply code while clients wait: its
 * first writes measured several times the p99 of the same writes one snapshot later (benchmarks/RESULTS.md,
 * run 5 and its cold row). The scratch volume lives in its own directory, uses the same {@link FileSpace} as
 * the real volumes and the same calls a connection makes (prepare, commit, finish), from two threads so that writers meet pending
 * copies and staged blocks; it is deleted afterwards. It checks what it wrote: a snapshot that does not read
 * its before-images fails the warm-up (the caller logs it; serving is not affected).
 */
public final class CopyOnWriteWarmUp {

    /** Blocks written per round, in a region of their own (4 KiB each: 16 MiB). */
    static final int BLOCKS = 4096;
    static final int BLOCK_SIZE = 4096;
    static final int WRITERS = 2;

    /**
     * The scratch volume's overlay: small, so that the writers fill it, reach its batch target (a quarter) and
     * grow its arena past what a snapshot preallocates, the branches a real volume takes only under load;
     * otherwise the JIT would meet those branches for the first time on a client's write.
     */
    static final long OVERLAY_BYTES = 8L << 20;
    static final long OVERLAY_PREALLOCATE_BYTES = 1L << 20;
    /** Rounds that always run (when the budget allows), before the JIT's activity may end the warm-up. */
    static final int MIN_ROUNDS = 3;
    /** A round in which the JIT compiled for less than this found nothing new to compile: the path is warm. */
    static final long QUIET_COMPILE_MILLIS = 20;

    /** What one warm-up did. */
    public record Result(int rounds, long writes, long copies, long nanos) {
    }

    private CopyOnWriteWarmUp() {
    }

    /**
     * Creates a scratch volume in {@code dir} of one 16 MiB region per round, with a 16 MiB save volume (a
     * leftover of an interrupted warm-up is removed first; the volume is deleted afterwards, also on failure), and
     * per round: fills the round's region (no snapshot: in place), takes a snapshot, writes every block of the
     * region once (each write copies; a region no snapshot has touched, so the writes also meet the unallocated
     * map pages of a large volume), rewrites a quarter of them, forces with nothing pending, checks the snapshot,
     * deletes it. Runs at most {@code rounds} rounds; after {@link #MIN_ROUNDS}, stops at the first round in
     * which the JIT compiled next to nothing. No round starts once {@code budget} is spent (the first always
     * runs), so a slow host does not wait long for it; what budget is left waits for the JIT to finish the
     * compilations the rounds queued, so they do not run beside the first clients.
     */
    public static Result run(Path dir, FileSpace space, int rounds, Duration budget) throws IOException {
        long start = System.nanoTime();
        long deadline = start + budget.toNanos();
        Volume.deleteFiles(dir);
        try {
            Volume.create(dir, "warm-up", (long) rounds * BLOCKS * BLOCK_SIZE, BLOCK_SIZE, (long) BLOCKS * BLOCK_SIZE,
                    false, space);
            Volume v = Volume.open(dir, space,
                    VolumeTuning.system().withOverlay(OVERLAY_BYTES, OVERLAY_PREALLOCATE_BYTES));
            long writes = 0;
            long copies;
            int done = 0;
            try {
                while (done < rounds && (done == 0 || System.nanoTime() - deadline < 0)) {
                    long compiledBefore = JitActivity.compileMillis();
                    String snapshot = "warm-up-" + done;
                    fill(v, done);
                    v.createSnapshot(snapshot);
                    writes += writeConcurrently(v, done);
                    v.commitPrepared();     // a force with nothing pending: the committer meets it under load
                    check(v.snapshotView(snapshot), done, rounds);
                    v.deleteSnapshot(snapshot);
                    done++;
                    if (done >= MIN_ROUNDS && JitActivity.compileMillis() - compiledBefore < QUIET_COMPILE_MILLIS) {
                        break;
                    }
                }
                copies = v.cowCopies();
            } finally {
                v.close();
            }
            JitActivity.awaitQuiet(deadline);
            return new Result(done, writes, copies, System.nanoTime() - start);
        } finally {
            Volume.deleteFiles(dir);
        }
    }

    /** What round {@code round} writes into its region after the snapshot (regions not written yet read as zeros). */
    private static byte value(int round) {
        return (byte) (round + 1);
    }

    /** What a region holds before its round's snapshot. */
    private static final byte FILLED = 0x7f;

    /** Puts the round's region in use, without a snapshot: what the snapshot will have to keep. */
    private static void fill(Volume v, int round) throws IOException {
        Payload[] p = Payload.three(FILLED);
        try (BlockDevice.Session s = v.openSession()) {
            for (long b = (long) round * BLOCKS; b < (long) (round + 1) * BLOCKS; b++) {
                write(v, s, b, p[(int) (b % 3)]);
            }
        }
    }

    /**
     * Writer w owns the blocks b of the round's region with b % WRITERS == w and writes them in a scattered order
     * (first writes of blocks in use when the snapshot was taken: every one copies), then rewrites every fourth
     * of them (the before-image is saved already: the rewrite is restaged or goes in place).
     */
    private static long writeConcurrently(Volume v, int round) throws IOException {
        AtomicReference<Throwable> failure = new AtomicReference<>();
        long[] counts = new long[WRITERS];
        List<Thread> threads = new ArrayList<>();
        long base = (long) round * BLOCKS;
        for (int w = 0; w < WRITERS; w++) {
            int writer = w;
            threads.add(new Thread(() -> {
                try (BlockDevice.Session s = v.openSession()) {
                    Payload[] p = Payload.three(value(round));
                    int mine = BLOCKS / WRITERS;
                    for (int i = 0; i < mine; i++) {
                        write(v, s, base + scatter(i, mine) * WRITERS + writer, p[i % 3]);
                        counts[writer]++;
                    }
                    for (int i = 0; i < mine; i += 4) {
                        write(v, s, base + scatter(i, mine) * WRITERS + writer, p[i % 3]);
                        counts[writer]++;
                    }
                } catch (Throwable t) {
                    failure.compareAndSet(null, t);
                }
            }, "cow-warm-up-" + w));
        }
        threads.forEach(Thread::start);
        for (Thread t : threads) {
            try {
                t.join();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new IOException("copy-on-write warm-up interrupted", e);
            }
        }
        Throwable t = failure.get();
        if (t instanceof IOException e) {
            throw e;
        }
        if (t != null) {
            throw new IOException("copy-on-write warm-up failed: " + t, t);
        }
        long n = 0;
        for (long c : counts) {
            n += c;
        }
        return n;
    }

    /** A permutation of [0, n) for n a power of two: an odd multiplier visits every index once. */
    private static int scatter(int i, int n) {
        return (int) ((i * 2654435761L) & (n - 1));
    }

    /** The write a connection makes: prepare (copies), commit if asked, then the data. */
    private static void write(Volume v, BlockDevice.Session s, long block, Payload p) throws IOException {
        long offset = block * BLOCK_SIZE;
        if (v.prepareWrite(s, offset, BLOCK_SIZE)) {
            try {
                v.commitPrepared();
            } catch (IOException | RuntimeException e) {
                v.abortPrepared(s);
                throw e;
            }
        }
        v.finishWrite(s, offset, BLOCK_SIZE, p);
    }

    /**
     * Snapshot {@code round} holds what the volume held when it was taken: the regions of earlier rounds their
     * rounds' values, its own region {@link #FILLED} (overwritten since), the rest zeros.
     */
    private static void check(BlockDevice snapshot, int round, int rounds) throws IOException {
        ByteBuffer buf = ByteBuffer.allocate(BLOCK_SIZE * 64);
        long regionBytes = (long) BLOCKS * BLOCK_SIZE;
        try (BlockDevice.Session s = snapshot.openSession()) {
            for (long off = 0; off < rounds * regionBytes; off += buf.capacity()) {
                int region = (int) (off / regionBytes);
                byte expected = region < round ? value(region) : region == round ? FILLED : 0;
                buf.clear();
                snapshot.read(s, off, buf.capacity(), buf::put);
                for (int i = 0; i < buf.capacity(); i++) {
                    if (buf.get(i) != expected) {
                        throw new IOException("copy-on-write warm-up: snapshot " + snapshot.name() + " reads "
                                + buf.get(i) + " at byte " + (off + i) + ", expected " + expected);
                    }
                }
            }
        }
    }

    /**
     * Fills whatever it is given with one byte value. Writes take turns with three classes of it: the calls that
     * read a payload then see several classes, so the JIT compiles them as ordinary virtual calls instead of
     * betting on the warm-up's class and trapping at a connection's first copy-on-write write.
     */
    private abstract static class Payload implements ByteSource {
        byte value;

        @Override
        public final void readFully(ByteBuffer dst) {
            while (dst.hasRemaining()) {
                dst.put(value);
            }
        }

        static Payload[] three(byte value) {
            Payload[] p = {new First(), new Second(), new Third()};
            for (Payload x : p) {
                x.value = value;
            }
            return p;
        }
    }

    private static final class First extends Payload {
    }

    private static final class Second extends Payload {
    }

    private static final class Third extends Payload {
    }
}

package io.snapbd.engine.mirror;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.Set;
import java.util.UUID;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * Model-based reconciliation with 2 and 3 file-backed legs (docs/glossary.md: Symantec behaviours 12–23 and the
 * crash points of docs/mirrors.md, "Crash points"). A writer follows the documented write order through real
 * files; a crash is injected at every I/O boundary in turn (every write and force of every tag table and every
 * leg; the I/O hit by the crash is left torn: half written). Then the legs are reopened and reconciled, itself
 * crashed at every I/O boundary in turn and rerun. After each run: all legs byte-identical, every acknowledged
 * write present, every table empty, and bytes copied at most the bytes of the writes that were in flight.
 */
class ReconcilerModelTest {

    static final int SIZE = 64 * 1024;
    static final int HALF_RECORDS = 32;

    @TempDir
    Path tmp;

    /** Thrown where the simulated process dies. */
    static final class Crash extends RuntimeException {
        Crash() {
            super("simulated crash", null, false, false);
        }
    }

    /** How many more I/Os may complete; the next one after that is torn and the process dies. */
    static final class Budget {
        long left;

        Budget(long left) {
            this.left = left;
        }

        /** True: perform the I/O whole. False: tear it (the caller writes half and throws). */
        boolean take() {
            return left-- > 0;
        }

        /** Writes {@code src} at {@code pos} through {@code w}; or, out of budget, its first half, and dies. */
        void write(Writer w, ByteBuffer src, long pos) throws IOException {
            if (!take()) {
                ByteBuffer half = src.duplicate();
                half.limit(half.position() + half.remaining() / 2);
                w.write(half, pos);
                throw new Crash();
            }
            w.write(src, pos);
        }

        /** Runs {@code f}; or, out of budget, dies before it. */
        void force(Forcer f) throws IOException {
            if (!take()) {
                throw new Crash();
            }
            f.force();
        }
    }

    interface Writer {
        void write(ByteBuffer src, long pos) throws IOException;
    }

    interface Forcer {
        void force() throws IOException;
    }

    static final class CrashingStore extends ForwardingTagStore {
        final Budget budget;

        CrashingStore(TagStore in, Budget budget) {
            super(in);
            this.budget = budget;
        }

        @Override
        public void write(ByteBuffer src, long pos) throws IOException {
            budget.write(in::write, src, pos);
        }

        @Override
        public void force() throws IOException {
            budget.force(in::force);
        }
    }

    static final class CrashingLeg extends ForwardingLegIo {
        final Budget budget;

        CrashingLeg(LegIo in, Budget budget) {
            super(in);
            this.budget = budget;
        }

        @Override
        public void write(ByteBuffer src, long pos) throws IOException {
            budget.write(in::write, src, pos);
        }

        @Override
        public void force() throws IOException {
            budget.force(in::force);
        }
    }

    /** A write the workload issues: its tag once taken, range and bytes. */
    record Write(long off, byte[] data) {
    }

    /** One "process life" of a mirrored volume on real files in {@code dir}. */
    static final class Life implements AutoCloseable {
        final Path dir;
        final UUID owner;
        final int n;
        final Budget budget;
        final TagSource tags;
        final List<TagTable> tables = new ArrayList<>();
        final List<LegIo> legs = new ArrayList<>();

        Life(Path dir, UUID owner, int n, Budget budget) throws IOException {
            this.dir = dir;
            this.owner = owner;
            this.n = n;
            this.budget = budget;
            this.tags = TagSource.open(dir, owner, 4);
            try {
                openLegs();
            } catch (RuntimeException | IOException e) {
                close();   // a crash while opening (a compaction of a torn table): release what was opened
                throw e;
            }
        }

        private void openLegs() throws IOException {
            for (int i = 0; i < n; i++) {
                Path tf = dir.resolve("leg-" + i + ".tags");
                Path lf = dir.resolve("leg-" + i + ".img");
                if (!Files.exists(lf)) {
                    Files.write(lf, new byte[SIZE]);
                    TagTable.create(FileTagStore.create(tf, TagTable.areaBytes(HALF_RECORDS)), owner, i, HALF_RECORDS).close();
                }
                legs.add(new CrashingLeg(new FileLegIo(lf), budget));
                FileTagStore fs = FileTagStore.open(tf, true);
                try {
                    tables.add(TagTable.open(new CrashingStore(fs, budget), owner, i));
                } catch (RuntimeException | IOException e) {
                    fs.close();
                    throw e;
                }
            }
        }

        @Override
        public void close() throws IOException {
            for (TagTable t : tables) {
                t.close();
            }
            for (LegIo l : legs) {
                l.close();
            }
        }
    }

    /** What the test knows about the writes: acknowledged content, writes in flight, retirements attempted per tag and leg. */
    static final class Model {
        final byte[] acked = new byte[SIZE];
        final Map<Long, Write> issued = new HashMap<>();
        final Set<Long> ackedTags = new HashSet<>();
        final Map<Long, Set<Integer>> retiredOn = new HashMap<>();
        final Map<Long, Set<Integer>> retiredDone = new HashMap<>();
        final Map<Long, Set<Integer>> doneOn = new HashMap<>();

        /**
         * Bytes reconciliation may have to copy: writes not acknowledged, acknowledged but not yet DONE on every leg
         * (since the last data-force batch), or retired on some legs but not all.
         */
        long bytesInFlight(int legs) {
            long sum = 0;
            for (Map.Entry<Long, Write> w : issued.entrySet()) {
                int attempted = retiredOn.getOrDefault(w.getKey(), Set.of()).size();
                int done = retiredDone.getOrDefault(w.getKey(), Set.of()).size();
                int doneLegs = doneOn.getOrDefault(w.getKey(), Set.of()).size();
                if (!ackedTags.contains(w.getKey()) || (attempted == 0 && doneLegs < legs) || (attempted > 0 && done < legs)) {
                    sum += w.getValue().data().length;
                }
            }
            return sum;
        }
    }

    /**
     * The write order of docs/mirrors.md for a round of writes issued together: per leg, each write's entry
     * (forced) then its data, in tag order; then the round is acknowledged (its data written, not forced). Every
     * second round a data-force batch: every leg's data forced, DONE for the batch on every leg, then the batch
     * retired on every leg, except on leg {@code dropLeg} for round {@code dropRound} (a lost retirement batch).
     */
    static void workload(Life life, Model m, long seed, int rounds, int perRound, int dropRound, int dropLeg) throws IOException {
        Random rnd = new Random(seed);
        List<Long> toRetire = new ArrayList<>();
        for (int round = 0; round < rounds; round++) {
            long[] tags = new long[perRound];
            Write[] ws = new Write[perRound];
            for (int k = 0; k < perRound; k++) {
                int len = (1 + rnd.nextInt(8)) * 512;
                int off = rnd.nextInt((SIZE - len) / 512 + 1) * 512;
                byte[] data = new byte[len];
                rnd.nextBytes(data);
                tags[k] = life.tags.next();
                ws[k] = new Write(off, data);
                m.issued.put(tags[k], ws[k]);
            }
            for (int i = 0; i < life.n; i++) {
                for (int k = 0; k < perRound; k++) {
                    life.tables.get(i).record(tags[k], ws[k].off(), ws[k].data().length);
                    life.legs.get(i).write(ByteBuffer.wrap(ws[k].data()), ws[k].off());
                }
            }
            for (int k = 0; k < perRound; k++) {
                System.arraycopy(ws[k].data(), 0, m.acked, (int) ws[k].off(), ws[k].data().length);
                m.ackedTags.add(tags[k]);
                toRetire.add(tags[k]);
            }
            if (round % 2 == 1) {
                long[] batch = toRetire.stream().mapToLong(Long::longValue).toArray();
                for (LegIo l : life.legs) {
                    l.force();
                }
                for (int i = 0; i < life.n; i++) {
                    life.tables.get(i).markDone(batch, batch.length);
                    for (long t : batch) {
                        m.doneOn.computeIfAbsent(t, x -> new HashSet<>()).add(i);
                    }
                }
                for (int i = 0; i < life.n; i++) {
                    if (round == dropRound && i == dropLeg) {
                        continue;
                    }
                    for (long t : batch) {   // counted from the attempt on: a crash inside may or may not leave it
                        m.retiredOn.computeIfAbsent(t, x -> new HashSet<>()).add(i);
                    }
                    life.tables.get(i).retire(batch, batch.length);
                    for (long t : batch) {
                        m.retiredDone.computeIfAbsent(t, x -> new HashSet<>()).add(i);
                    }
                }
                toRetire.clear();
            }
        }
    }

    /** Reconciles in a fresh life; returns the report. */
    static Reconciler.Report reconcile(Life life) throws IOException {
        return Reconciler.reconcile(life.tables, life.legs);
    }

    /** The checks after a reconciliation ran to its end. */
    static void verify(Path dir, int n, Model m, Reconciler.Report report, String where) throws IOException {
        byte[] first = Files.readAllBytes(dir.resolve("leg-0.img"));
        for (int i = 1; i < n; i++) {
            assertArrayEquals(first, Files.readAllBytes(dir.resolve("leg-" + i + ".img")), where + ": leg " + i + " differs from leg 0");
        }
        // every byte holds the acknowledged content, or that of a write in flight covering it
        for (int b = 0; b < SIZE; b++) {
            if (first[b] == m.acked[b]) {
                continue;
            }
            boolean ok = false;
            for (Map.Entry<Long, Write> w : m.issued.entrySet()) {
                Write x = w.getValue();
                if (!m.ackedTags.contains(w.getKey()) && b >= x.off() && b < x.off() + x.data().length
                        && x.data()[(int) (b - x.off())] == first[b]) {
                    ok = true;
                }
            }
            if (!ok) {
                fail(where + ": byte " + b + " lost an acknowledged write");
            }
        }
        for (int i = 0; i < n; i++) {
            try (FileTagStore s = FileTagStore.open(dir.resolve("leg-" + i + ".tags"), false)) {
                assertEquals(List.of(), TagTable.read(s).live(), where + ": table of leg " + i + " not empty");
            }
        }
        if (report != null) {
            assertTrue(report.bytesCopied() <= m.bytesInFlight(n), where + ": copied " + report.bytesCopied()
                    + " bytes, more than the " + m.bytesInFlight(n) + " in flight");
        }
    }

    /** Runs the workload with a crash after {@code crashAfter} I/Os; returns the model (complete if no crash). */
    private Model crashedWorkload(Path dir, UUID owner, int n, long seed, long crashAfter, int dropRound) throws IOException {
        Files.createDirectories(dir);
        Model m = new Model();
        Life life = new Life(dir, owner, n, new Budget(Long.MAX_VALUE));
        life.budget.left = crashAfter;
        try {
            workload(life, m, seed, 6, 2, dropRound, n - 1);
        } catch (Crash expected) {
            // the process died here
        } finally {
            life.close();
        }
        return m;
    }

    /**
     * Symantec behaviours 14, 17–21 and every crash point: a crash at each I/O of the write path (between legs,
     * between an entry and its data, between data and DONE, between the retirements of two legs), then a
     * reconciliation itself crashed at each of its I/Os and rerun. Legs identical, acknowledged writes kept,
     * tables empty, bytes copied ≤ bytes in flight.
     */
    @Test
    void symantec14_21_everyCrashPointOfWritesAndReconciliation_twoLegs() throws IOException {
        everyCrashPoint(2, 7, -1, 3);
    }

    @Test
    void symantec14_21_everyCrashPointOfWritesAndReconciliation_threeLegs() throws IOException {
        everyCrashPoint(3, 11, -1, 10);
    }

    /**
     * Symantec behaviour 12: a lost retirement batch only costs a comparison of data already in sync (before compare
     * before copy: a copy of it), never a wrong result.
     */
    @Test
    void symantec12_droppedRetirementBatchCopiesOnlyThatBatchAndStaysCorrect() throws IOException {
        everyCrashPoint(2, 5, 1, 1000);
        // without any crash: the dropped batch is the only thing compared, and nothing is copied (the legs agree)
        Path dir = tmp.resolve("drop-nocrash");
        UUID owner = UUID.randomUUID();
        Model m = crashedWorkload(dir, owner, 2, 5, Long.MAX_VALUE, 1);
        Reconciler.Report r;
        try (Life life = new Life(dir, owner, 2, new Budget(Long.MAX_VALUE))) {
            r = reconcile(life);
        }
        long dropped = m.bytesInFlight(2);
        assertTrue(dropped > 0);
        assertTrue(r.bytesCompared() > 0 && r.bytesCompared() <= dropped, r.toString());
        assertEquals(0, r.bytesCopied(), r.toString());
        assertEquals(0, r.entriesMatched());
        verify(dir, 2, m, r, "dropped batch");
    }

    /**
     * Crashes the workload after each I/O in turn; for every {@code reconcileCrashEvery}-th crash point also
     * crashes reconciliation after each of its I/Os in turn (rerunning it until it completes).
     */
    private void everyCrashPoint(int n, long seed, int dropRound, int reconcileCrashEvery) throws IOException {
        Budget probe = new Budget(Long.MAX_VALUE);
        Path pdir = tmp.resolve("probe");
        Files.createDirectories(pdir);
        UUID powner = UUID.randomUUID();
        try (Life life = new Life(pdir, powner, n, probe)) {
            workload(life, new Model(), seed, 6, 2, dropRound, n - 1);
        }
        long total = Long.MAX_VALUE - probe.left;
        assertTrue(total > 40, "workload does " + total + " I/Os");
        long reconcileCrashes = 0;
        long copiedSomewhere = 0;
        long matchedSomewhere = 0;
        for (long k = 0; k <= total; k++) {
            Path dir = tmp.resolve("k" + k);
            UUID owner = UUID.randomUUID();
            Model m = crashedWorkload(dir, owner, n, seed, k, dropRound);
            // reconciliation crashed at its j-th I/O, rerun, until a run completes
            Reconciler.Report report = null;
            for (long j = 0; report == null; j++) {
                Budget b = new Budget(k % reconcileCrashEvery == 0 ? j : Long.MAX_VALUE);
                try (Life life = new Life(dir, owner, n, b)) {
                    report = reconcile(life);
                } catch (Crash c) {
                    reconcileCrashes++;
                }
                if (j > 10_000) {
                    fail("reconciliation never completes");
                }
            }
            verify(dir, n, m, report, "crash after I/O " + k);
            copiedSomewhere += report.bytesCopied();
            matchedSomewhere += report.entriesMatched();
            // a second reconciliation has nothing left to do
            try (Life life = new Life(dir, owner, n, new Budget(Long.MAX_VALUE))) {
                Reconciler.Report again = reconcile(life);
                assertEquals(0, again.bytesCopied() + again.entriesMatched() + again.entriesUnmatched(), "k " + k + ": " + again);
            }
        }
        assertTrue(reconcileCrashes > total / reconcileCrashEvery, "reconciliation crashes exercised: " + reconcileCrashes);
        assertTrue(copiedSomewhere > 0 && matchedSomewhere > 0, "the crash points include copies and matches: "
                + copiedSomewhere + " bytes copied, " + matchedSomewhere + " entries matched");
    }
}

package io.snapbd.engine.volume;

import io.snapbd.engine.BlockDevice;
import io.snapbd.engine.TestVolumes;
import io.snapbd.engine.fsck.VolumeChecker;
import io.snapbd.engine.io.FileSpace;
import io.snapbd.engine.snapshot.RestoreMarker;
import io.snapbd.engine.snapshot.SnapshotSet;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.TimeUnit;

import static io.snapbd.engine.TestVolumes.read;
import static io.snapbd.engine.TestVolumes.write;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * Crashes inside snapshot create, delete (head, middle with its merge, tail) and restore, at every step boundary
 * the engine reports through its step hook ({@link Volume.StepHook}): the hook throws, which stops the operation
 * there, the volume is abandoned as a kill -9 leaves it (the page cache survives, nothing more is written), fsck
 * runs on what is left, and the volume is reopened. Then every surviving snapshot must read exactly its content
 * at creation, a snapshot being deleted is gone or intact, one being created is absent or exact, production is
 * its old content or (restore) exactly the snapshot's once the marker was durable, and fsck is clean.
 */
@Timeout(value = 5, unit = TimeUnit.MINUTES)
class SnapshotCrashPointTest {

    static final int BS = 4096;
    static final int BLOCKS = 160;
    static final List<String> NAMES = List.of("a", "b", "c");

    @TempDir
    Path tmp;
    private int volumes;
    private final FileSpace space = TestVolumes.java();

    /** A simulated kill -9 at a step. */
    static final class Crash extends RuntimeException {
        Crash(String step, int index) {
            super("simulated crash at step " + index + " (" + step + ")");
        }
    }

    /** Records the steps reached; throws {@link Crash} at step number {@code crashAt} (never when negative). */
    static final class Injector implements Volume.StepHook {
        final int crashAt;
        final List<String> trace = new ArrayList<>();

        Injector(int crashAt) {
            this.crashAt = crashAt;
        }

        @Override
        public void reached(String step) {
            trace.add(step);
            if (trace.size() - 1 == crashAt) {
                throw new Crash(step, crashAt);
            }
        }
    }

    /** Production and each snapshot as the engine must show them. */
    static final class Model {
        byte[] prod = new byte[BLOCKS * BS];
        boolean[] used = new boolean[BLOCKS];
        final Map<String, byte[]> snaps = new LinkedHashMap<>();
        final Map<String, boolean[]> snapUsed = new LinkedHashMap<>();

        void snapshot(String name) {
            snaps.put(name, prod.clone());
            snapUsed.put(name, used.clone());
        }
    }

    private Path newDir() {
        return tmp.resolve("run" + (volumes++)).resolve("v");     // fsck wants the directory named as the volume
    }

    /** The same volume every time: random writes, trims and zeroing, with snapshots a, b, c in between. */
    private Volume build(Path dir, Model m) throws IOException {
        Volume.create(dir, "v", (long) BLOCKS * BS, BS, (long) BLOCKS * 4 * BS, false, space);
        Volume v = Volume.open(dir, space);
        Random rnd = new Random(21);
        try (BlockDevice.Session s = v.openSession()) {
            changes(v, s, m, rnd, 120);
            for (String name : NAMES) {
                v.createSnapshot(name);
                m.snapshot(name);
                changes(v, s, m, rnd, 40);
            }
        }
        return v;
    }

    /** {@code n} random changes, to the volume and the model alike. */
    private static void changes(Volume v, BlockDevice.Session s, Model m, Random rnd, int n) throws IOException {
        for (int i = 0; i < n; i++) {
            int op = rnd.nextInt(10);
            int b0 = rnd.nextInt(BLOCKS);
            int count = 1 + rnd.nextInt(Math.min(6, BLOCKS - b0));
            if (op < 7) {
                int off = b0 * BS + rnd.nextInt(BS);
                int len = 1 + rnd.nextInt(Math.min(3 * BS, BLOCKS * BS - off));
                byte[] data = new byte[len];
                rnd.nextBytes(data);
                write(v, s, off, data);
                System.arraycopy(data, 0, m.prod, off, len);
                for (int b = off / BS; b <= (off + len - 1) / BS; b++) {
                    m.used[b] = true;
                }
            } else if (op < 9) {
                v.trim(s, (long) b0 * BS, (long) count * BS, false);
                Arrays.fill(m.prod, b0 * BS, (b0 + count) * BS, (byte) 0);
                Arrays.fill(m.used, b0, b0 + count, false);
            } else {
                boolean noHole = rnd.nextBoolean();
                v.writeZeroes(s, (long) b0 * BS, (long) count * BS, noHole, false, false);
                Arrays.fill(m.prod, b0 * BS, (b0 + count) * BS, (byte) 0);
                Arrays.fill(m.used, b0, b0 + count, noHole);
            }
        }
    }

    private interface Op {
        void run(Volume v) throws IOException;
    }

    /** Runs {@code op} on a fresh volume with no crash and returns the steps it went through. */
    private List<String> trace(Op op) throws IOException {
        Path dir = newDir();
        Volume v = build(dir, new Model());
        Injector none = new Injector(-1);
        v.steps = none;
        op.run(v);
        v.close();
        return none.trace;
    }

    /** Builds a fresh volume, runs {@code op} with a crash at step {@code k}, abandons it, checks fsck, reopens. */
    private Volume crashAndReopen(Path dir, Model m, Op op, int k, String what) throws IOException {
        Volume v = build(dir, m);
        v.steps = new Injector(k);
        try {
            op.run(v);
            fail(what + ": the operation finished although a crash was injected at step " + k);
        } catch (Crash expected) {
            // the process "died" here
        }
        v.awaitStagedApplied();     // acknowledged writes are in the page cache, which a kill -9 keeps
        v.abandon();
        assertFsckClean(dir, what + ", on the crashed volume");
        return Volume.open(dir, space);
    }

    /**
     * Where to crash: every step except the per-run ones of a restore ("restore.discard", "restore.copy"), of which
     * the first, the last and evenly spaced others are taken, {@code perRun} in all (every crash costs a new volume).
     */
    static List<Integer> crashPoints(List<String> steps, int perRun) {
        java.util.TreeSet<Integer> out = new java.util.TreeSet<>();
        List<Integer> runs = new ArrayList<>();
        for (int i = 0; i < steps.size(); i++) {
            if (steps.get(i).equals("restore.discard") || steps.get(i).equals("restore.copy")) {
                runs.add(i);
            } else {
                out.add(i);
            }
        }
        for (String kind : List.of("restore.discard", "restore.copy")) {
            if (steps.contains(kind)) {
                out.add(steps.indexOf(kind));
                out.add(steps.lastIndexOf(kind));
            }
        }
        for (int i = 0; i < perRun && !runs.isEmpty(); i++) {
            out.add(runs.get((int) ((long) i * (runs.size() - 1) / Math.max(1, perRun - 1))));
        }
        return new ArrayList<>(out);
    }

    private static void assertFsckClean(Path dir, String what) {
        VolumeChecker.Report r = VolumeChecker.check(dir, true);
        assertTrue(r.ok(), what + ": fsck problems " + r.problems() + ", notes " + r.notes());
    }

    private static byte[] readAll(BlockDevice d) throws IOException {
        try (BlockDevice.Session s = d.openSession()) {
            return read(d, s, 0, BLOCKS * BS);
        }
    }

    /** Every snapshot in {@code expected} reads exactly its content and reports its in-use blocks; the accounting adds up. */
    private static void assertSnapshots(Volume v, Model m, List<String> expected, String what) throws IOException {
        for (String n : expected) {
            assertNotNull(v.snapshots().record(n), what + ": snapshot " + n + " exists");
            assertArrayEquals(m.snaps.get(n), readAll(v.snapshotView(n)), what + ": snapshot " + n + " reads its content at creation");
            boolean[] used = m.snapUsed.get(n);
            byte[] content = m.snaps.get(n);
            v.snapshotView(n).extents(0, (long) BLOCKS * BS, (off, len, inUse) -> {
                for (long b = off / BS; b < (off + len) / BS; b++) {
                    if (!inUse && used[(int) b] && !TestVolumes.isZero(content, (int) b * BS, (int) (b + 1) * BS)) {
                        fail(what + ": snapshot " + n + " reports block " + b + " (data) as a hole");
                    }
                }
                return true;
            });
        }
        long chunks = 0;
        for (SnapshotSet.Info i : v.snapshots().list()) {
            assertTrue(i.active(), what + ": nothing is terminated in these runs");
            chunks += i.chunksUsed();
        }
        assertEquals(chunks, v.snapshots().saveChunksUsed(), what + ": used chunks = map entries");
    }

    /** Production reads {@code content}; blocks holding data are in use; with {@code exact}, the map is exactly {@code used}. */
    private static void assertProduction(Volume v, byte[] content, boolean[] used, boolean exact, String what) throws IOException {
        assertArrayEquals(content, readAll(v), what + ": production");
        for (int b = 0; b < BLOCKS; b++) {
            boolean data = !TestVolumes.isZero(content, b * BS, (b + 1) * BS);
            if (exact) {
                assertEquals(used[b], v.inUse(b), what + ": block " + b + " in use as in the snapshot");
            } else if (data) {
                assertTrue(v.inUse(b), what + ": block " + b + " holds data and is in use");
            }
        }
    }

    /**
     * After the checks: the volume keeps working (writes with copy-on-write, a new snapshot, whose sequence number
     * an interrupted create may have used for a file already), closes cleanly, and fsck is clean.
     */
    private void assertStillWorks(Volume v, Path dir, Model m, List<String> snaps, String what) throws IOException {
        Random rnd = new Random(7);
        List<String> all = new ArrayList<>(snaps);
        try (BlockDevice.Session s = v.openSession()) {
            changes(v, s, m, rnd, 20);
            v.createSnapshot("z");
            m.snapshot("z");
            all.add("z");
            changes(v, s, m, rnd, 20);
        }
        assertArrayEquals(m.prod, readAll(v), what + ": production after more writes");
        assertSnapshots(v, m, all, what + ", after more writes and a snapshot");
        v.close();
        assertFalse(RestoreMarker.exists(dir), what + ": no restore marker is left");
        assertFsckClean(dir, what + ", after a clean close");
        VolumeChecker.Report r = VolumeChecker.check(dir, true);
        assertEquals(List.of(), r.notes().stream().filter(n -> n.contains(RestoreMarker.FILE)).toList(), what);
    }

    // ---- create ----------------------------------------------------------------------------------------------

    @Test
    void aCrashInsideCreateLeavesTheSnapshotAbsentOrExact() throws IOException {
        Op op = v -> v.createSnapshot("d");
        List<String> steps = trace(op);
        assertEquals(List.of("create.flushed", "create.meta-file", "create.table"), steps);
        for (int k = 0; k < steps.size(); k++) {
            String what = "create, crash at " + steps.get(k);
            Path dir = newDir();
            Model m = new Model();
            Volume v = crashAndReopen(dir, m, op, k, what);
            List<String> snaps = new ArrayList<>(NAMES);
            if (v.snapshots().record("d") != null) {
                m.snapshot("d");
                snaps.add("d");
            }
            assertEquals(k == steps.size() - 1, snaps.contains("d"), what + ": the snapshot exists once its table entry is durable");
            assertProduction(v, m.prod, m.used, false, what);
            assertSnapshots(v, m, snaps, what);
            assertStillWorks(v, dir, m, snaps, what);
        }
    }

    // ---- delete ----------------------------------------------------------------------------------------------

    @ParameterizedTest(name = "delete {0}")
    @ValueSource(strings = {"a", "b", "c"})
    void aCrashInsideDeleteLeavesTheSnapshotGoneOrIntactAndTheOthersExact(String victim) throws IOException {
        Op op = v -> v.deleteSnapshot(victim);
        List<String> steps = trace(op);
        assertTrue(steps.containsAll(List.of("delete.forced", "delete.table", "delete.log", "delete.file")), steps.toString());
        if (!victim.equals("a")) {
            assertTrue(steps.contains("delete.pages"), "a snapshot with an older neighbour hands it its meta pages: " + steps);
        }
        for (int k = 0; k < steps.size(); k++) {
            String what = "delete " + victim + ", crash at " + steps.get(k);
            Path dir = newDir();
            Model m = new Model();
            Volume v = crashAndReopen(dir, m, op, k, what);
            List<String> snaps = new ArrayList<>(NAMES);
            boolean gone = v.snapshots().record(victim) == null;
            if (gone) {
                snaps.remove(victim);
                assertThrows(IllegalArgumentException.class, () -> v.snapshotView(victim), what);
            }
            assertEquals(steps.indexOf("delete.table") <= k, gone, what + ": gone once the table without it is durable");
            assertProduction(v, m.prod, m.used, false, what);
            assertSnapshots(v, m, snaps, what);
            assertStillWorks(v, dir, m, snaps, what);
        }
    }

    // ---- restore ---------------------------------------------------------------------------------------------

    @ParameterizedTest(name = "restore {0}")
    @ValueSource(strings = {"a", "b", "c"})
    void aCrashInsideRestoreLeavesProductionOldOrRestoredAndTheSnapshotsExact(String target) throws IOException {
        Op op = v -> v.restore(target);
        List<String> steps = trace(op);
        int marker = steps.indexOf("restore.marker");
        int done = steps.indexOf("restore.done");
        assertEquals(0, steps.indexOf("restore.paused"), steps.toString());
        assertTrue(marker == 1 && steps.indexOf("restore.flushed") == done - 1 && done == steps.size() - 1, steps.toString());
        assertTrue(steps.contains("restore.copy") || steps.contains("restore.discard"), "the restore changes blocks: " + steps);
        for (int k : crashPoints(steps, 8)) {
            String what = "restore " + target + ", crash at step " + k + " (" + steps.get(k) + ")";
            Path dir = newDir();
            Model m = new Model();
            Volume v = crashAndReopen(dir, m, op, k, what);
            boolean restored = k >= marker;
            RestoreProgress resumed = v.resumedRestore();
            if (k >= marker && k < done) {
                assertNotNull(resumed, what + ": the open finished the restore");
                assertEquals(target, resumed.snapshot(), what);
                assertTrue(resumed.resumed(), what);
            } else {
                assertNull(resumed, what + ": nothing to resume");
            }
            assertNull(v.restoreProgress(), what + ": no restore in progress after the open");
            assertFalse(RestoreMarker.exists(dir), what + ": the marker is gone after the open");
            if (restored) {
                assertProduction(v, m.snaps.get(target), m.snapUsed.get(target), true, what);
                m.prod = m.snaps.get(target).clone();
                m.used = m.snapUsed.get(target).clone();
            } else {
                assertProduction(v, m.prod, m.used, false, what);
            }
            assertSnapshots(v, m, NAMES, what);
            assertStillWorks(v, dir, m, NAMES, what);
        }
    }

    /** A crash while the open resumes an interrupted restore: the next open resumes it again, and finishes it. */
    @Test
    void aCrashWhileResumingARestoreIsResumedAgain() throws IOException {
        Op op = v -> v.restore("a");
        List<String> steps = trace(op);
        int marker = steps.indexOf("restore.marker");
        // The resume's own steps, from a first crash right after the marker.
        Injector resumeTrace = new Injector(-1);
        Path probe2 = newDir();
        Volume pv = build(probe2, new Model());
        pv.steps = new Injector(marker);
        assertThrows(Crash.class, () -> pv.restore("a"));
        pv.awaitStagedApplied();
        pv.abandon();
        Volume.open(probe2, space, resumeTrace).close();
        List<String> resumeSteps = resumeTrace.trace;
        assertEquals(steps, resumeSteps, "the resume runs the same steps as the restore");
        for (int first : new int[]{marker, steps.size() / 2, steps.indexOf("restore.flushed")}) {
            for (int j : crashPoints(resumeSteps, 4)) {
                String what = "restore a, crash at " + steps.get(first) + " (" + first + "), then at resume step " + j + " ("
                        + resumeSteps.get(j) + ")";
                Path dir = newDir();
                Model m = new Model();
                Volume v = build(dir, m);
                v.steps = new Injector(first);
                assertThrows(Crash.class, () -> v.restore("a"), what);
                v.awaitStagedApplied();
                v.abandon();
                Injector second = new Injector(j);
                try {
                    Volume.open(dir, space, second).close();
                    // A resume from further on has fewer runs to redo: it may finish before step j.
                    assertTrue(second.trace.size() <= j, what + ": the resume ended without reaching the crash");
                } catch (Crash expected) {
                    what += " (" + second.trace.get(j) + " of the resume)";
                }
                assertFsckClean(dir, what + ", after the second crash");
                boolean marked = RestoreMarker.exists(dir);
                Volume again = Volume.open(dir, space);
                assertEquals(marked, again.resumedRestore() != null, what + ": resumed again while the marker exists");
                assertProduction(again, m.snaps.get("a"), m.snapUsed.get("a"), true, what);
                m.prod = m.snaps.get("a").clone();
                m.used = m.snapUsed.get("a").clone();
                assertSnapshots(again, m, NAMES, what);
                assertStillWorks(again, dir, m, NAMES, what);
            }
        }
    }

    // ---- a restore that fails without a crash ----------------------------------------------------------------

    @Test
    void aFailedRestoreIsReportedProtectsItsSnapshotAndIsFinishedByTheNextRestore() throws IOException {
        Path dir = newDir();
        Model m = new Model();
        Volume v = build(dir, m);
        List<String> seen = new ArrayList<>();
        v.steps = step -> {
            if (step.equals("restore.copy") || step.equals("restore.discard")) {
                RestoreProgress p = v.restoreProgress();
                assertNotNull(p, "a restore in progress is visible");
                seen.add(p.snapshot() + " " + p.phase() + " " + p.blocksChanged() + " " + p.error());
                if (step.equals("restore.copy")) {
                    throw new IOException("disk on fire");
                }
            }
        };
        IOException e = assertThrows(IOException.class, () -> v.restore("a"));
        assertTrue(e.getMessage().contains("partly restored"), e.getMessage());
        assertTrue(seen.get(0).startsWith("a "), seen.toString());
        assertTrue(seen.stream().allMatch(x -> x.endsWith(" null")), "no error while it runs: " + seen);
        RestoreProgress failed = v.restoreProgress();
        assertNotNull(failed, "the failed restore stays visible");
        assertEquals("a", failed.snapshot());
        assertEquals("copying", failed.phase());
        assertTrue(failed.error().contains("disk on fire"), failed.error());
        assertTrue(RestoreMarker.exists(dir), "the marker stays until a restore completes");
        IllegalArgumentException refused = assertThrows(IllegalArgumentException.class, () -> v.deleteSnapshot("a"));
        assertTrue(refused.getMessage().contains("restore"), refused.getMessage());

        v.steps = Volume.NO_STEPS;
        v.restore("b");                 // another snapshot: production becomes exactly b
        assertNull(v.restoreProgress());
        assertFalse(RestoreMarker.exists(dir));
        assertProduction(v, m.snaps.get("b"), m.snapUsed.get("b"), true, "after restoring b");
        m.prod = m.snaps.get("b").clone();
        m.used = m.snapUsed.get("b").clone();
        assertSnapshots(v, m, NAMES, "after restoring b");
        v.deleteSnapshot("a");          // no longer protected
        m.snaps.remove("a");
        m.snapUsed.remove("a");
        assertStillWorks(v, dir, m, List.of("b", "c"), "after the failed restore");
    }

    // ---- a marker that cannot be acted on ----------------------------------------------------------------------

    @Test
    void aMarkerNamingNoActiveSnapshotIsRefusedWithTheFileNamedAndFsckSaysSo() throws IOException {
        Path dir = newDir();
        Volume v = build(dir, new Model());
        long seqOfC = v.snapshots().seqOf("c");
        java.util.UUID uuid = v.header().uuid();
        v.close();
        RestoreMarker.write(dir, uuid, seqOfC + 5, "gone");
        IOException e = assertThrows(IOException.class, () -> Volume.open(dir, space));
        assertTrue(e.getMessage().contains(RestoreMarker.FILE) && e.getMessage().contains("gone"), e.getMessage());
        VolumeChecker.Report r = VolumeChecker.check(dir, true);
        assertFalse(r.ok(), r.toString());
        assertTrue(r.problems().stream().anyMatch(p -> p.contains(RestoreMarker.FILE)), r.toString());

        TestVolumes.flipByte(RestoreMarker.file(dir), 70);
        IOException corrupt = assertThrows(IOException.class, () -> Volume.open(dir, space));
        assertTrue(corrupt.getMessage().contains(RestoreMarker.FILE) && corrupt.getMessage().contains("checksum"), corrupt.getMessage());
        assertTrue(VolumeChecker.check(dir, true).problems().stream().anyMatch(p -> p.contains("checksum")));

        Files.delete(RestoreMarker.file(dir));
        Volume.open(dir, space).close();
    }
}

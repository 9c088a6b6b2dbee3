package io.snapbd.engine.volume;

import io.snapbd.engine.crash.CrashStates;
import io.snapbd.engine.crash.RecordingFileSpace;
import io.snapbd.engine.crash.RecordingFileSpace.CrashPoint;
import io.snapbd.engine.fsck.VolumeChecker;
import io.snapbd.engine.io.JavaFileSpace;
import io.snapbd.engine.lun.LunState;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Power-loss crash states at engine level (ALICE/CrashMonkey style, docs/power-loss.md#crash-states): each workload
 * runs on a {@link RecordingFileSpace}, which takes a crash point after every operation, at every step of snapshot
 * create/delete/restore and just before every force; {@link CrashStates} enumerates what a power loss there may
 * leave; each state is written to a directory, fsck'd, opened (recovery) and checked against the model of
 * {@code benchmarks/.../powerloss/Model}: FLUSHed and FUA writes exact, never-written blocks zero, created snapshots
 * exact, deleted ones gone or intact, the LUN state above everything handed out, fsck clean before and after.
 *
 * <p>Budget: {@code -Dsnapbd.crashStates.exhaustive=N} (all subsets up to N dirty pages, default 4) and
 * {@code -Dsnapbd.crashStates.cap=N} (states per crash point beyond that, default 12), and the mixed workload's
 * {@code -Dsnapbd.crashStates.ops=N} (default 16) and {@code .seed}; a long run: {@code -Dsnapbd.crashStates.exhaustive=10
 * -Dsnapbd.crashStates.cap=256 -Dsnapbd.crashStates.ops=300}.
 */
@Timeout(value = 30, unit = TimeUnit.MINUTES)
class CrashStateTest extends CrashStateSupport {

    /** The workload against a recorded volume, and the model (docs/power-loss.md's table) kept alongside. */
    final class Run extends BlockRun {
        final Path dir;
        final Map<String, int[]> snaps = new TreeMap<>();
        final Map<String, int[]> maybe = new TreeMap<>();
        final Set<String> gone = new TreeSet<>();
        boolean lunEnabled;
        long lunCounter = -1;
        long lunTime = -1;

        Run(String name) throws IOException {
            dir = tmp.resolve(name).resolve("v");
            Volume.create(dir, "v", (long) BLOCKS * BS, BS, (long) BLOCKS * 4 * BS, false, new JavaFileSpace());
            space = new RecordingFileSpace(dir, this::expect);
            space.start();
            v = Volume.open(dir, space);
            v.steps = space::crashPoint;
            s = v.openSession();
            point("open");
        }

        @Override
        synchronized Expect expect() {
            return new Expect(mayNow(), Map.copyOf(snaps), Map.copyOf(maybe), Set.copyOf(gone), lunEnabled, lunCounter, lunTime);
        }

        @Override
        void beforeChange() throws IOException {
            v.lunState().onAlteringRequest();
        }

        void snapshot(String name) throws IOException {
            synchronized (this) {
                maybe.put(name, latest.clone());
            }
            v.createSnapshot(name);
            synchronized (this) {
                snaps.put(name, maybe.remove(name));
            }
            durable();
            point("after snapshot create " + name);
        }

        void delete(String name) throws IOException {
            synchronized (this) {
                maybe.put(name, snaps.remove(name));
            }
            v.deleteSnapshot(name);
            synchronized (this) {
                maybe.remove(name);
                gone.add(name);
            }
            point("after snapshot delete " + name);
        }

        void restore(String name) throws IOException {
            s.close();
            int[] content = snaps.get(name);
            for (int b = 0; b < BLOCKS; b++) {
                set(b, 1, content[b], false);
            }
            v.restore(name);
            durable();
            s = v.openSession();
            point("after restore from " + name);
        }

        void lunEnable() throws IOException {
            LunState.Value x = v.lunState().enable();
            synchronized (this) {
                handedOut(x);
                lunEnabled = true;
            }
            point("after LUN state enable");
        }

        void lunGet() throws IOException {
            handedOut(v.lunState().get());
            point("after LUN state get");
        }

        private synchronized void handedOut(LunState.Value x) {
            lunCounter = Math.max(lunCounter, x.counter());
            lunTime = Math.max(lunTime, x.timestamp());
        }

        /** Enumerates and checks every crash point taken; fails with the first violations, each reproducible. */
        Tally check(String what) throws IOException {
            v.awaitStagedApplied();
            List<CrashPoint> points = space.drain();
            Tally t = enumerate(what, points, space.forces(), torn,
                    (files, e, tornState, n) -> verify(files, (Expect) e, tmp.resolve("state-" + n).resolve("v"), tornState));
            System.out.println(t);
            return t;
        }

        @Override
        public void close() throws IOException {
            s.close();
            v.close();
            space.close();
        }
    }

    /** Writes {@code files} to {@code out}, runs fsck, opens (recovery) and compares with {@code e}; null if all holds. */
    static String verify(Map<String, byte[]> files, Expect e, Path out, boolean torn) throws IOException {
        RecordingFileSpace.write(files, out);
        try {
            VolumeChecker.Report r = VolumeChecker.check(out, true);
            if (!r.ok()) {
                return "fsck before the open: " + r.problems();
            }
            try (Volume w = Volume.open(out, new JavaFileSpace())) {
                String bad = verifyOpen(w, e, torn);
                if (bad != null) {
                    return bad;
                }
            }
            r = VolumeChecker.check(out, true);
            return r.ok() ? null : "fsck after the open and a clean close: " + r.problems();
        } catch (IOException | RuntimeException x) {
            return "open failed: " + x;
        } finally {
            Volume.deleteFiles(out);
        }
    }

    // ---- workloads ------------------------------------------------------------------------------------------------

    @Test
    void writesFlushAndFua() throws IOException {
        try (Run r = new Run("writes")) {
            r.write(0, 2, false);
            r.write(5, 1, true);
            r.write(1, 3, false);
            r.flush();
            r.write(10, 4, false);
            r.write(2, 1, true);
            r.write(20, 2, false);
            r.flush();
            r.check("writes + FLUSH/FUA").assertClean();
        }
    }

    @Test
    void trimAndWriteZeroes() throws IOException {
        try (Run r = new Run("zeroes")) {
            r.write(0, 8, false);
            r.write(12, 8, false);
            r.flush();
            r.zero(2, 3, true, false);
            r.zero(13, 2, false, true);
            r.zero(6, 4, false, false);
            r.write(3, 1, false);
            r.zero(16, 2, true, true);
            r.flush();
            r.check("trim/write-zeroes").assertClean();
        }
    }

    @Test
    void snapshotCreate() throws IOException {
        try (Run r = new Run("create")) {
            r.write(0, 6, false);
            r.write(8, 2, true);
            r.snapshot("a");
            r.write(1, 2, false);
            r.write(9, 1, true);
            r.snapshot("b");
            r.write(0, 1, false);
            r.flush();
            r.check("snapshot create").assertClean();
        }
    }

    @Test
    void deleteMiddleSnapshot() throws IOException {
        try (Run r = new Run("delete")) {
            r.write(0, 8, false);
            r.snapshot("a");
            r.write(2, 3, false);
            r.snapshot("b");
            r.write(3, 3, false);
            r.write(12, 2, true);
            r.snapshot("c");
            r.write(4, 2, false);
            r.space.drain();          // the states up to here are the create test's
            r.delete("b");
            r.write(2, 1, false);
            r.flush();
            r.check("snapshot delete of a middle snapshot").assertClean();
        }
    }

    @Test
    void restoreWithMarker() throws IOException {
        try (Run r = new Run("restore")) {
            r.write(0, 6, false);
            r.snapshot("a");
            r.write(2, 6, false);
            r.zero(0, 1, true, false);
            r.snapshot("b");
            r.write(4, 4, false);
            r.space.drain();
            r.restore("a");
            r.write(1, 1, true);
            r.check("restore").assertClean();
        }
    }

    @Test
    void lunState() throws IOException {
        try (Run r = new Run("lun")) {
            r.lunEnable();
            r.write(0, 1, false);
            r.lunGet();
            r.write(1, 1, true);
            r.lunGet();
            r.flush();
            r.lunGet();
            r.check("LUN state enable/get").assertClean();
        }
    }

    /** Every kind of operation in a seeded random order; {@code snapbd.crashStates.ops} and {@code .seed} make a long run. */
    @Test
    void mixedWorkload() throws IOException {
        int ops = Integer.getInteger("snapbd.crashStates.ops", 16);
        long seed = Long.getLong("snapbd.crashStates.seed", 25);
        Random rnd = new Random(seed);
        try (Run r = new Run("mixed")) {
            r.lunEnable();
            for (int i = 0; i < ops; i++) {
                int op = rnd.nextInt(20);
                int b0 = rnd.nextInt(BLOCKS);
                int n = 1 + rnd.nextInt(Math.min(4, BLOCKS - b0));
                List<String> live = new ArrayList<>(r.snaps.keySet());
                String any = live.isEmpty() ? null : live.get(rnd.nextInt(live.size()));
                if (op < 8) {
                    r.write(b0, n, rnd.nextInt(4) == 0);
                } else if (op < 10) {
                    r.zero(b0, n, rnd.nextBoolean(), rnd.nextInt(4) == 0);
                } else if (op < 12) {
                    r.flush();
                } else if (op < 13) {
                    r.lunGet();
                } else if (op < 16 && live.size() < 3) {
                    r.snapshot("s" + i);
                } else if (op < 18 && any != null) {
                    r.delete(any);
                } else if (any != null) {
                    r.restore(any);
                }
            }
            r.check("mixed workload, " + ops + " operations, seed " + seed).assertClean();
        }
    }

    /**
     * Tearing within a page (docs/power-loss.md#crash-states): every state of a workload of writes, FUA, TRIM,
     * snapshot create, delete and restore, plus, at each crash point, states where one dirty 4 KiB page reached the
     * disk as only some of its 512-byte sectors: checksummed headers, bit-map pages and log records must catch a
     * torn one; a data block may be a mix of two writes only where nothing forced it yet.
     */
    @Test
    void tornPages() throws IOException {
        try (Run r = new Run("torn")) {
            r.torn = Math.max(TORN, CAP);
            r.lunEnable();
            r.write(0, 3, false);
            r.write(4, 2, true);
            r.snapshot("a");
            r.write(1, 2, false);
            r.zero(4, 1, true, false);
            r.snapshot("b");
            r.write(0, 1, true);
            r.delete("a");
            r.flush();
            r.restore("b");
            r.write(2, 1, false);
            r.flush();
            r.check("torn pages").assertClean();
        }
    }

    /** The enumerator can fail: a volume whose data-file forces do not happen loses FLUSHed and FUA writes. */
    @Test
    void selfCheckLostDataForces() throws IOException {
        try (Run r = new Run("broken-data")) {
            r.space.ignoreForcesOf(Volume.DATA_FILE);
            r.write(0, 2, true);
            r.write(3, 2, false);
            r.flush();
            Tally t = r.check("self-check: data.img never forced");
            assertFalse(t.violations.isEmpty(), "a broken engine must be caught");
            assertTrue(t.violations.get(0).contains("block"), t.violations.get(0));
        }
    }

    /** The enumerator can fail: before-images whose save volume force does not happen break the snapshot. */
    @Test
    void selfCheckLostBeforeImages() throws IOException {
        try (Run r = new Run("broken-cow")) {
            r.write(0, 4, false);
            r.snapshot("a");
            r.space.ignoreForcesOf(Volume.SAVE_FILE);
            r.write(0, 4, false);
            r.flush();
            Tally t = r.check("self-check: save.img never forced");
            assertFalse(t.violations.isEmpty(), "a broken engine must be caught");
            assertTrue(t.violations.stream().anyMatch(v -> v.contains("snapshot a")), t.violations.toString());
        }
    }
}

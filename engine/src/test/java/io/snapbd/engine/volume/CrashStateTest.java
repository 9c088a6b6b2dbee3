package io.snapbd.engine.volume;

import io.snapbd.engine.BlockDevice;
import io.snapbd.engine.TestVolumes;
import io.snapbd.engine.crash.CrashStates;
import io.snapbd.engine.crash.RecordingFileSpace;
import io.snapbd.engine.crash.RecordingFileSpace.CrashPoint;
import io.snapbd.engine.fsck.VolumeChecker;
import io.snapbd.engine.io.JavaFileSpace;
import io.snapbd.engine.lun.LunState;
import io.snapbd.engine.snapshot.SnapshotSet;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertEquals;
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
class CrashStateTest {

    static final int BS = 4096;
    static final int BLOCKS = 24;
    static final int EXHAUSTIVE = Integer.getInteger("snapbd.crashStates.exhaustive", 4);
    static final int CAP = Integer.getInteger("snapbd.crashStates.cap", 12);
    /** Torn-page states per crash point ({@link CrashStates#torn}) in every workload; 0: only where a test asks. */
    static final int TORN = Integer.getInteger("snapbd.crashStates.torn", 0);

    Path tmp;
    private boolean onShm;

    /** On tmpfs where there is one: the engine forces a lot and a force there costs nothing. */
    @BeforeEach
    void makeDir(@TempDir Path fallback) throws IOException {
        Path shm = Path.of("/dev/shm");
        onShm = Files.isDirectory(shm) && Files.isWritable(shm);
        tmp = onShm ? Files.createTempDirectory(shm, "crashstates") : fallback;
    }

    @AfterEach
    void removeDir() throws IOException {
        if (!onShm) {
            return;
        }
        try (var all = Files.walk(tmp)) {
            for (Path p : (Iterable<Path>) all.sorted(java.util.Comparator.reverseOrder())::iterator) {
                Files.deleteIfExists(p);
            }
        }
    }

    /** What the model allows at one moment (immutable): per block the values it may hold, the snapshots, the LUN state. */
    record Expect(List<Set<Integer>> may, Map<String, int[]> snaps, Map<String, int[]> maybe, Set<String> gone,
                  boolean lunEnabled, long lunCounter, long lunTime) {
        String key() {
            StringBuilder b = new StringBuilder(may.stream().map(TreeSet::new).toList().toString()).append(lunEnabled).append(lunCounter).append(lunTime).append(gone);
            snaps.forEach((k, v) -> b.append(k).append(Arrays.toString(v)));
            maybe.forEach((k, v) -> b.append('?').append(k).append(Arrays.toString(v)));
            return b.toString();
        }
    }

    /** The workload against a recorded volume, and the model (docs/power-loss.md's table) kept alongside. */
    final class Run implements AutoCloseable {
        final Path dir;
        final RecordingFileSpace space;
        final Volume v;
        BlockDevice.Session s;
        final int[] latest = new int[BLOCKS];
        final List<Set<Integer>> may = new ArrayList<>();
        final Map<String, int[]> snaps = new TreeMap<>();
        final Map<String, int[]> maybe = new TreeMap<>();
        final Set<String> gone = new TreeSet<>();
        boolean lunEnabled;
        long lunCounter = -1;
        long lunTime = -1;
        int value;
        /** Torn-page states per crash point checked besides the whole-page ones. */
        int torn = TORN;

        Run(String name) throws IOException {
            dir = tmp.resolve(name).resolve("v");
            Volume.create(dir, "v", (long) BLOCKS * BS, BS, (long) BLOCKS * 4 * BS, false, new JavaFileSpace());
            for (int b = 0; b < BLOCKS; b++) {
                may.add(new HashSet<>(Set.of(0)));
            }
            space = new RecordingFileSpace(dir, this::expect);
            space.start();
            v = Volume.open(dir, space);
            v.steps = space::crashPoint;
            s = v.openSession();
            point("open");
        }

        synchronized Expect expect() {
            List<Set<Integer>> m = new ArrayList<>();
            may.forEach(x -> m.add(Set.copyOf(x)));
            return new Expect(m, Map.copyOf(snaps), Map.copyOf(maybe), Set.copyOf(gone), lunEnabled, lunCounter, lunTime);
        }

        void point(String where) throws IOException {
            v.awaitStagedApplied();       // deterministic: the committer is idle (its own forces are crash points too)
            space.crashPoint(where);
        }

        /** Sets blocks [b0, b0+n) to {@code val} (0: zeros) in the model: a possible value now, the only one once durable. */
        private synchronized void set(int b0, int n, int val, boolean durable) {
            for (int b = b0; b < b0 + n; b++) {
                latest[b] = val;
                if (durable) {
                    may.get(b).clear();
                }
                may.get(b).add(val);
            }
        }

        void write(int b0, int n, boolean fua) throws IOException {
            v.lunState().onAlteringRequest();
            int val = ++value;
            set(b0, n, val, false);
            ByteBuffer data = ByteBuffer.allocate(n * BS);
            for (int b = b0; b < b0 + n; b++) {
                data.put(block(val, b));
            }
            TestVolumes.write(v, s, (long) b0 * BS, data.array(), fua);
            set(b0, n, val, fua);
            point("after write " + val + " of blocks " + b0 + "+" + n + (fua ? " FUA" : ""));
        }

        void zero(int b0, int n, boolean trim, boolean fua) throws IOException {
            v.lunState().onAlteringRequest();
            set(b0, n, 0, false);
            if (trim) {
                v.trim(s, (long) b0 * BS, (long) n * BS, fua);
            } else {
                v.writeZeroes(s, (long) b0 * BS, (long) n * BS, b0 % 2 == 0, false, fua);
            }
            set(b0, n, 0, fua);
            point("after " + (trim ? "trim" : "write-zeroes") + " of blocks " + b0 + "+" + n + (fua ? " FUA" : ""));
        }

        void flush() throws IOException {
            v.flush();
            durable();
            point("after flush");
        }

        private synchronized void durable() {
            for (int b = 0; b < BLOCKS; b++) {
                set(b, 1, latest[b], true);
            }
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
            Tally t = new Tally(what, points.size(), space.forces());
            Random rnd = new Random(25);
            Set<String> seen = new HashSet<>();
            for (CrashPoint p : points) {
                t.rewritten += (int) p.dirty().stream().filter(pg -> pg.version() > 0).count();
                List<CrashStates.State> states = new ArrayList<>(CrashStates.of(p, EXHAUSTIVE, CAP, rnd));
                if (torn > 0) {
                    states.addAll(CrashStates.torn(p, torn, rnd));
                }
                for (CrashStates.State st : states) {
                    t.states++;
                    t.torn += st.isTorn() ? 1 : 0;
                    Map<String, byte[]> files = st.files();
                    if (seen.add(digest(files) + ((Expect) p.expect()).key())) {
                        t.checked++;
                        String bad = verify(files, (Expect) p.expect(), tmp.resolve("state-" + t.checked).resolve("v"), st.isTorn());
                        if (bad != null && t.violations.size() < 5) {
                            t.violations.add(what + ": crash " + p.where() + ", state " + st.label() + ": " + bad);
                        } else if (bad != null) {
                            t.more++;
                        }
                    }
                }
            }
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

    /** How many crash points, states enumerated and distinct states checked; the violations found. */
    static final class Tally {
        final String what;
        final int points;
        final int forces;
        int states;
        int checked;
        int more;
        int rewritten;
        int torn;
        final List<String> violations = new ArrayList<>();

        Tally(String what, int points, int forces) {
            this.what = what;
            this.points = points;
            this.forces = forces;
        }

        void assertClean() {
            assertEquals(List.of(), violations, more + " more");
            assertTrue(checked > 0, what + ": no state checked");
        }

        @Override
        public String toString() {
            return "crash states " + what + ": " + points + " crash points (" + forces + " forces, " + rewritten
                    + " earlier page contents), " + states
                    + " states enumerated (" + torn + " with a torn page), " + checked + " distinct states checked, " + (violations.size() + more) + " violations";
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

    /**
     * Checks the open volume {@code w} against the model; with {@code torn} (a page written in part) a block may also
     * be a mix of the values it may hold, but only where it may hold more than one (nothing forced it yet).
     */
    static String verifyOpen(Volume w, Expect e, boolean torn) throws IOException {
        int[] prod = blocks(w);
        for (int b = 0; b < BLOCKS; b++) {
            if (!e.may().get(b).contains(prod[b]) && !(torn && prod[b] == -1 && e.may().get(b).size() > 1)) {
                return "block " + b + " holds " + describe(prod[b]) + ", allowed " + e.may().get(b);
            }
        }
        Set<String> present = new TreeSet<>();
        long chunks = 0;
        for (SnapshotSet.Info i : w.snapshots().list()) {
            present.add(i.record().name());
            chunks += i.chunksUsed();
            if (!i.active()) {
                return "snapshot " + i.record().name() + " is not active";
            }
        }
        if (chunks != w.snapshots().saveChunksUsed()) {
            return "save volume: " + w.snapshots().saveChunksUsed() + " chunks used, the maps hold " + chunks;
        }
        for (String n : present) {
            int[] want = e.snaps().containsKey(n) ? e.snaps().get(n) : e.maybe().get(n);
            if (want == null) {
                return "snapshot " + n + " exists" + (e.gone().contains(n) ? " after its delete was acknowledged" : " but was never created");
            }
            int[] got = blocks(w.snapshotView(n));
            if (!Arrays.equals(want, got)) {
                return "snapshot " + n + " reads " + Arrays.toString(got) + ", created as " + Arrays.toString(want);
            }
        }
        for (String n : e.snaps().keySet()) {
            if (!present.contains(n)) {
                return "snapshot " + n + " is missing although its creation was acknowledged";
            }
        }
        LunState.Value x = w.lunState().get();
        if (e.lunEnabled() && !x.enabled()) {
            return "LUN state disabled after its enable was acknowledged";
        }
        if (x.counter() <= e.lunCounter() || x.timestamp() <= e.lunTime()) {
            return "LUN state " + x + " not above what was handed out (counter " + e.lunCounter() + ", time " + e.lunTime() + ")";
        }
        return null;
    }

    /** The value each block of {@code d} holds: 0 zeros, v the block write v stored, -1 anything else (a mix). */
    static int[] blocks(BlockDevice d) throws IOException {
        int[] out = new int[BLOCKS];
        try (BlockDevice.Session s = d.openSession()) {
            byte[] all = TestVolumes.read(d, s, 0, BLOCKS * BS);
            for (int b = 0; b < BLOCKS; b++) {
                byte[] blk = Arrays.copyOfRange(all, b * BS, (b + 1) * BS);
                int val = ByteBuffer.wrap(blk).getInt();
                out[b] = TestVolumes.isZero(blk) ? 0 : Arrays.equals(blk, block(val, b)) ? val : -1;
            }
        }
        return out;
    }

    /** Block {@code b} as write {@code val} stores it: names the write and the block. */
    static byte[] block(int val, int b) {
        ByteBuffer bb = ByteBuffer.allocate(BS).putInt(val).putInt(b);
        while (bb.hasRemaining()) {
            bb.put((byte) (val * 31 + b + bb.position()));
        }
        return bb.array();
    }

    private static String describe(int val) {
        return val < 0 ? "a mix of writes" : val == 0 ? "zeros" : "write " + val;
    }

    static String digest(Map<String, byte[]> files) {
        try {
            MessageDigest md = MessageDigest.getInstance("SHA-256");
            files.forEach((k, v) -> {
                md.update(k.getBytes(java.nio.charset.StandardCharsets.UTF_8));
                if (v != null) {
                    md.update(v);
                }
            });
            return java.util.HexFormat.of().formatHex(md.digest());
        } catch (NoSuchAlgorithmException e) {
            throw new AssertionError(e);
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

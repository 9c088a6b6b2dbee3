package io.snapbd.engine.volume;

import io.snapbd.engine.BlockDevice;
import io.snapbd.engine.TestVolumes;
import io.snapbd.engine.crash.CrashStates;
import io.snapbd.engine.crash.RecordingFileSpace;
import io.snapbd.engine.crash.RecordingFileSpace.CrashPoint;
import io.snapbd.engine.lun.LunState;
import io.snapbd.engine.snapshot.SnapshotSet;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
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
import java.util.TreeSet;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * What {@link CrashStateTest} and {@link MirrorCrashStateTest} share: the scratch directory (on tmpfs where there is
 * one), the model of what each block may hold ({@link BlockRun}), the loop that enumerates and checks the states of
 * every crash point ({@link #enumerate}), and the checks of a reopened volume against the model.
 */
abstract class CrashStateSupport {

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
        if (onShm) {
            wipe(tmp);
        }
    }

    /** Deletes {@code p} and everything below it, if it exists. */
    static void wipe(Path p) throws IOException {
        if (!Files.exists(p)) {
            return;
        }
        try (var all = Files.walk(p)) {
            for (Path f : (Iterable<Path>) all.sorted(java.util.Comparator.reverseOrder())::iterator) {
                Files.deleteIfExists(f);
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

    /**
     * A workload against a recorded volume ({@link #space}, {@link #v}, {@link #s}, set up by the subclass) and the
     * model of what each block may hold (docs/power-loss.md's table) kept alongside: writes, TRIM, WRITE_ZEROES and
     * FLUSH, each followed by a crash point.
     */
    abstract static class BlockRun implements AutoCloseable {
        RecordingFileSpace space;
        Volume v;
        BlockDevice.Session s;
        final int[] latest = new int[BLOCKS];
        final List<Set<Integer>> may = new ArrayList<>();
        int value;
        /** Torn-page states per crash point checked besides the whole-page ones. */
        int torn = TORN;

        BlockRun() {
            for (int b = 0; b < BLOCKS; b++) {
                may.add(new HashSet<>(Set.of(0)));
            }
        }

        /** The model now, for the recorder to keep with each crash point. */
        abstract Expect expect();

        /** Called before each write, TRIM and WRITE_ZEROES is sent. */
        void beforeChange() throws IOException {
        }

        /** A copy of the values each block may hold now (call while holding this run's lock). */
        final List<Set<Integer>> mayNow() {
            List<Set<Integer>> m = new ArrayList<>();
            may.forEach(x -> m.add(Set.copyOf(x)));
            return m;
        }

        void point(String where) throws IOException {
            v.awaitStagedApplied();       // deterministic: the committer is idle (its own forces are crash points too)
            space.crashPoint(where);
        }

        /** Sets blocks [b0, b0+n) to {@code val} (0: zeros) in the model: a possible value now, the only one once durable. */
        final synchronized void set(int b0, int n, int val, boolean durable) {
            for (int b = b0; b < b0 + n; b++) {
                latest[b] = val;
                if (durable) {
                    may.get(b).clear();
                }
                may.get(b).add(val);
            }
        }

        /** Every block's latest value is now the only one it may hold. */
        final synchronized void durable() {
            for (int b = 0; b < BLOCKS; b++) {
                set(b, 1, latest[b], true);
            }
        }

        void write(int b0, int n, boolean fua) throws IOException {
            beforeChange();
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
            beforeChange();
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
    }

    /** Checks one state (its files, what the model allowed, whether a page is torn); null if all holds. */
    @FunctionalInterface
    interface StateCheck {
        String verify(Map<String, byte[]> files, Object expect, boolean torn, int checked) throws IOException;
    }

    /**
     * Enumerates the states of every crash point ({@code torn} torn-page states each besides the whole-page ones),
     * checks each distinct one (same files, same expectations: once) with {@code check} and tallies them; at most
     * five violations are kept, each naming its crash point and state.
     */
    static Tally enumerate(String what, List<CrashPoint> points, int forces, int torn, StateCheck check) throws IOException {
        Tally t = new Tally(what, points.size(), forces);
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
                String key = p.expect() instanceof Expect e ? e.key() : "";
                if (seen.add(digest(files) + key)) {
                    t.checked++;
                    String bad = check.verify(files, p.expect(), st.isTorn(), t.checked);
                    if (bad != null && t.violations.size() < 5) {
                        t.violations.add(what + ": crash " + p.where() + ", state " + st.label() + ": " + bad);
                    } else if (bad != null) {
                        t.more++;
                    }
                }
            }
        }
        return t;
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
}

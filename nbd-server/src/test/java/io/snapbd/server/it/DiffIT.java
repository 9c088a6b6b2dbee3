package io.snapbd.server.it;

import com.fasterxml.jackson.databind.JsonNode;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.TimeUnit;

import static io.snapbd.server.it.SnapshotSupport.JSON;
import static io.snapbd.server.it.SnapshotSupport.MiB;
import static io.snapbd.server.it.SnapshotSupport.copyOut;
import static io.snapbd.server.it.SnapshotSupport.createSnapshot;
import static io.snapbd.server.it.SnapshotSupport.json;
import static io.snapbd.server.it.SnapshotSupport.map;
import static io.snapbd.server.it.SnapshotSupport.nbdsh;
import static io.snapbd.server.it.SnapshotSupport.py;
import static io.snapbd.server.it.SnapshotSupport.show;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The snapshot differential (docs/snapshots.md) end to end: a scripted sequence of writes, trims and zero-writes
 * with nbdsh between snapshots s1, s2, s3, then {@code snapbd diff}, the meta contexts
 * {@code snapbd:changed:OLDER} and {@code qemu:dirty-bitmap:OLDER} read by nbdinfo and by qemu's own NBD
 * client, and a copy of s1 patched with the diff that must equal s3 byte for byte. Expectations come from a
 * block model of the script: block B is changed from L to M ⇔ B is in use in M and some request touched it
 * after L was taken and before M was; B is dirty (qemu's meaning) ⇔ some request touched it after L and before
 * M and B is in use in L or in M (a block that left use is dirty, one that reads as zeros in both is not).
 * An incremental backup done the way qemu-based tools do it (copy of OLDER, then only the dirty extents of
 * YOUNGER) must give YOUNGER byte for byte.
 */
@Timeout(value = 10, unit = TimeUnit.MINUTES)
@ExtendWith(ServerLiveness.class)
class DiffIT {

    static final int BLOCK = 4096;
    static final int SIZE = (int) (32 * MiB);
    static final int BLOCKS = SIZE / BLOCK;
    static final long K = 1024;
    static final long M = MiB;

    static final long UNCHANGED = -1;
    static final long CHANGED = 1;
    static final long UNUSED = 0;

    @TempDir
    static Path tmp;
    @RegisterExtension
    static final SnapbdServerExtension SNAPBD = SnapbdServerExtension.builder("DiffIT").volume("v", "32M", "32M").build();
    static final ServerProcess server = SNAPBD.server();
    /** The scenario run on volume "v" once for the read-only checks. */
    static Scenario main;

    @BeforeAll
    static void runScenario() {
        Tools.require("nbdsh");
        main = Scenario.run("v");
    }

    // ---- the scripted scenario and its block model ------------------------------------------------------------

    enum Kind { WRITE, TRIM, ZERO, ZERO_NO_HOLE, REWRITE_SAME }

    record Op(Kind kind, long offset, long length) {
        String python() {
            return switch (kind) {
                case WRITE -> "h.pwrite(rnd.randbytes(" + length + "), " + offset + ")";
                case TRIM -> "h.trim(" + length + ", " + offset + ")";
                case ZERO -> "h.zero(" + length + ", " + offset + ")";
                case ZERO_NO_HOLE -> "h.zero(" + length + ", " + offset + ", nbd.CMD_FLAG_NO_HOLE)";
                case REWRITE_SAME -> "h.pwrite(h.pread(" + length + ", " + offset + "), " + offset + ")";
            };
        }

        long firstBlock() {
            return offset / BLOCK;
        }

        long endBlock() {
            return (offset + length + BLOCK - 1) / BLOCK;
        }
    }

    static Op w(long off, long len) {
        return new Op(Kind.WRITE, off, len);
    }

    /** Phase 0 fills the volume before s1; phases 1 and 2 run between s1–s2 and s2–s3; phase 3 after s3. */
    static final List<List<Op>> PHASES = List.of(
            List.of(w(0, M), w(4 * M, 2 * M), w(10 * M, 64 * K), w(20 * M, M), w(28 * M, 8 * K)),
            List.of(
                    w(4 * M, 8 * K),                                  // overwrite: changed
                    new Op(Kind.TRIM, 10 * M, 16 * K),                // in use at s1, not at s3: unused
                    w(16 * M, 4 * K),                                 // never used before: changed
                    w(24 * M, 12 * K), new Op(Kind.TRIM, 24 * M, 12 * K),   // written and trimmed again: unused
                    new Op(Kind.ZERO_NO_HOLE, 28 * M, 8 * K)),        // zeroed but kept in use: changed
            List.of(
                    w(64 * K, 4 * K),                                 // changed
                    new Op(Kind.ZERO, 20 * M, 8 * K),                 // punched: unused
                    new Op(Kind.ZERO_NO_HOLE, 20 * M + 512 * K, 4 * K),  // changed
                    w(10 * M, 4 * K),                                 // trimmed in phase 1, written again: changed
                    w(6 * M - 50, 100),                               // unaligned, straddles two blocks: both changed
                    new Op(Kind.REWRITE_SAME, 5 * M, 4 * K),          // same bytes written again: still a write
                    w(12 * M + 100, 10)),                             // a few bytes in a never-used block
            List.of(w(30 * M, 4 * K), new Op(Kind.TRIM, 0, 64 * K), w(4 * M + 100 * K, 4 * K)));  // after s3: in no diff

    static final String[] SNAPS = {"s1", "s2", "s3"};

    /** What the model says about each snapshot: blocks in use, and blocks touched in the phase after it. */
    static final class Scenario {
        final String volume;
        final boolean[][] usedAt = new boolean[3][];        // s1, s2, s3
        final boolean[][] touchedAfter = new boolean[3][];  // phase after s1, after s2, after s3

        private Scenario(String volume) {
            this.volume = volume;
        }

        static Scenario run(String volume) {
            Scenario s = new Scenario(volume);
            boolean[] used = new boolean[BLOCKS];
            for (int phase = 0; phase < PHASES.size(); phase++) {
                boolean[] touched = new boolean[BLOCKS];
                List<String> lines = new ArrayList<>();
                lines.add("import random");
                lines.add("rnd = random.Random(" + (4242 + phase) + ")");
                for (Op op : PHASES.get(phase)) {
                    lines.add(op.python());
                    for (long b = op.firstBlock(); b < op.endBlock(); b++) {
                        touched[(int) b] = true;
                        boolean whole = op.offset() <= b * BLOCK && (b + 1) * BLOCK <= op.offset() + op.length();
                        switch (op.kind()) {
                            case WRITE, ZERO_NO_HOLE, REWRITE_SAME -> used[(int) b] = true;
                            case TRIM, ZERO -> {
                                assertTrue(whole, "the scenario only trims whole blocks");
                                used[(int) b] = false;
                            }
                        }
                    }
                }
                lines.add("h.flush()");
                nbdsh(server.unixUri(volume), String.join("\n", lines));
                if (phase > 0) {
                    s.touchedAfter[phase - 1] = touched;
                }
                if (phase < SNAPS.length) {
                    createSnapshot(server, volume, SNAPS[phase]);
                    s.usedAt[phase] = used.clone();
                }
            }
            return s;
        }

        /** Per block: CHANGED, UNUSED or UNCHANGED from snapshot index {@code l} to {@code m}. */
        long[] expected(int l, int m) {
            long[] t = new long[BLOCKS];
            for (int b = 0; b < BLOCKS; b++) {
                boolean touched = false;
                for (int i = l; i < m; i++) {
                    touched |= touchedAfter[i][b];
                }
                t[b] = !usedAt[m][b] ? UNUSED : touched ? CHANGED : UNCHANGED;
            }
            return t;
        }

        /** Per block: 1 if dirty from snapshot index {@code l} to {@code m} in qemu's meaning, else 0. */
        long[] dirty(int l, int m) {
            long[] t = new long[BLOCKS];
            for (int b = 0; b < BLOCKS; b++) {
                boolean touched = false;
                for (int i = l; i < m; i++) {
                    touched |= touchedAfter[i][b];
                }
                t[b] = touched && (usedAt[l][b] || usedAt[m][b]) ? 1 : 0;
            }
            return t;
        }

        /** The qemu:dirty-bitmap map: flag 1 on dirty extents, 0 everywhere else. */
        List<long[]> expectedDirtyFlags(int l, int m) {
            return SnapshotSupport.extentsOf(dirty(l, m), BLOCK);
        }

        /** The diff command's extents: changed and unused runs, unchanged ones left out. */
        List<long[]> expectedDiff(int l, int m) {
            List<long[]> out = new ArrayList<>();
            for (long[] e : SnapshotSupport.extentsOf(expected(l, m), BLOCK)) {
                if (e[2] != UNCHANGED) {
                    out.add(e);
                }
            }
            return out;
        }

        /** The meta context map: flag 1 on changed extents, 0 everywhere else. */
        List<long[]> expectedFlags(int l, int m) {
            long[] t = expected(l, m);
            for (int b = 0; b < t.length; b++) {
                t[b] = t[b] == CHANGED ? 1 : 0;
            }
            return SnapshotSupport.extentsOf(t, BLOCK);
        }

        String uri(String snap) {
            return server.unixUri(volume + "@" + snap);
        }
    }

    // ---- helpers ----------------------------------------------------------------------------------------------

    static JsonNode diffJson(String volume, String older, String younger) {
        return json(server.cli("diff", volume, older, younger, "--json"));
    }

    /** The diff's extents as {offset, length, CHANGED|UNUSED}, in the order printed. */
    static List<long[]> diffExtents(JsonNode diff) {
        List<long[]> out = new ArrayList<>();
        for (JsonNode e : diff.path("extents")) {
            String state = e.path("state").asText();
            assertTrue(state.equals("changed") || state.equals("unused"), "state of " + e);
            out.add(new long[]{e.path("offset").asLong(), e.path("length").asLong(), state.equals("changed") ? CHANGED : UNUSED});
        }
        return out;
    }

    static long bytes(List<long[]> extents, long type) {
        return extents.stream().filter(e -> e[2] == type).mapToLong(e -> e[1]).sum();
    }

    static void assertDiff(Scenario s, int l, int m) {
        JsonNode diff = diffJson(s.volume, SNAPS[l], SNAPS[m]);
        List<long[]> want = s.expectedDiff(l, m);
        List<long[]> got = diffExtents(diff);
        assertEquals(show(want), show(got), "diff " + s.volume + " " + SNAPS[l] + " " + SNAPS[m] + " (type 1 changed, 0 unused)");
        assertEquals(bytes(want, CHANGED), diff.path("changedBytes").asLong(), diff.toString());
        assertEquals(bytes(want, UNUSED), diff.path("unusedBytes").asLong(), diff.toString());
        assertEquals(BLOCK, diff.path("blockSize").asInt(), diff.toString());
    }

    static List<String> contexts(JsonNode list, String export) {
        for (JsonNode e : list.path("exports")) {
            if (e.path("export-name").asText().equals(export)) {
                List<String> out = new ArrayList<>();
                e.path("contexts").forEach(c -> out.add(c.asText()));
                return out;
            }
        }
        return null;
    }

    // ---- the diff command --------------------------------------------------------------------------------------

    @Test
    void diffListsExactlyTheChangedAndUnusedExtents() {
        // Sanity of the scenario itself: there is something of every kind to find.
        List<long[]> d13 = main.expectedDiff(0, 2);
        assertTrue(bytes(d13, CHANGED) >= 10 * BLOCK && bytes(d13, UNUSED) > 0, show(d13));
        assertDiff(main, 0, 2);
        assertDiff(main, 0, 1);
        assertDiff(main, 1, 2);

        // The human form has the same extents.
        Tools.Result text = server.cli("diff", "v", "s1", "s3").assertOk();
        for (long[] e : d13) {
            assertTrue(text.stdout().contains(Long.toString(e[0])), "offset " + e[0] + " in\n" + text.stdout());
        }
    }

    @Test
    void diffRefusesBadPairs() {
        for (String[] args : List.of(
                new String[]{"v", "s3", "s1"},          // younger older than older
                new String[]{"v", "s2", "s2"},          // not younger
                new String[]{"v", "s1", "nosuch"},
                new String[]{"v", "nosuch", "s3"},
                new String[]{"no-such-volume", "s1", "s3"})) {
            List<String> cmd = new ArrayList<>(List.of("diff"));
            cmd.addAll(List.of(args));
            cmd.add("--json");
            Tools.Result r = server.cli(cmd.toArray(String[]::new));
            assertNotEquals(0, r.exit(), "diff " + String.join(" ", args) + " must fail: " + r);
            assertTrue(r.stdout().isBlank(), "no extents printed: " + r);
            assertFalse(r.stderr().contains("\tat "), "no stack trace: " + r);
            assertTrue(r.stderr().strip().lines().count() <= 2 && r.stderr().startsWith("snapbd"), "one clear line: " + r);
        }
        Tools.Result r = server.cli("diff", "v", "s3", "s1");
        assertTrue(r.stderr().contains("s1") && r.stderr().contains("s3"), "names the snapshots: " + r);
    }

    // ---- over NBD ------------------------------------------------------------------------------------------------

    @Test
    void metaContextsAreListedPerOlderSnapshot() throws IOException {
        Tools.require("nbdinfo");
        JsonNode list = json(Tools.run("nbdinfo", "--list", "--json", server.unixUri("")));
        List<String> s3 = contexts(list, "v@s3");
        assertTrue(s3 != null, list.toString());
        assertEquals(new TreeSet<>(List.of("base:allocation", "snapbd:changed:s1", "snapbd:changed:s2",
                "qemu:dirty-bitmap:s1", "qemu:dirty-bitmap:s2")), new TreeSet<>(s3), "contexts of v@s3");
        assertEquals(new TreeSet<>(List.of("base:allocation", "snapbd:changed:s1", "qemu:dirty-bitmap:s1")),
                new TreeSet<>(contexts(list, "v@s2")), "contexts of v@s2: only older snapshots");
        assertEquals(List.of("base:allocation"), contexts(list, "v@s1"), "the oldest snapshot has nothing to compare with");

        // nbdinfo on one export lists its contexts too (LIST_META_CONTEXT with no query).
        Tools.Result one = Tools.run("nbdinfo", main.uri("s3")).assertOk();
        for (String c : s3) {
            assertTrue(one.stdout().contains(c), c + " in\n" + one.stdout());
        }
    }

    @Test
    void nbdinfoMapShowsTheDifferential() {
        Tools.require("nbdinfo");
        String prefix = "snapbd:changed:";
        assertEquals(show(main.expectedFlags(0, 2)), show(map(main.uri("s3"), prefix + "s1")), prefix + "s1 on v@s3");
        assertEquals(show(main.expectedFlags(1, 2)), show(map(main.uri("s3"), prefix + "s2")), prefix + "s2 on v@s3");
        assertEquals(show(main.expectedFlags(0, 1)), show(map(main.uri("s2"), prefix + "s1")), prefix + "s1 on v@s2");
        // qemu's meaning differs from EMC's exactly on the blocks that left use (the scenario has some).
        assertNotEquals(show(main.expectedFlags(0, 2)), show(main.expectedDirtyFlags(0, 2)), "the scenario trims blocks in use at s1");
        prefix = "qemu:dirty-bitmap:";
        assertEquals(show(main.expectedDirtyFlags(0, 2)), show(map(main.uri("s3"), prefix + "s1")), prefix + "s1 on v@s3");
        assertEquals(show(main.expectedDirtyFlags(1, 2)), show(map(main.uri("s3"), prefix + "s2")), prefix + "s2 on v@s3");
        assertEquals(show(main.expectedDirtyFlags(0, 1)), show(map(main.uri("s2"), prefix + "s1")), prefix + "s1 on v@s2");
        // Over TCP as well.
        assertEquals(show(main.expectedFlags(0, 2)), show(map(server.tcpUri("v@s3"), "snapbd:changed:s1")), "over TCP");
        // A context for a younger snapshot, or on the production volume, is not offered.
        Tools.Result younger = Tools.run("nbdinfo", "--map=snapbd:changed:s3", "--json", main.uri("s1"));
        assertTrue(younger.exit() != 0 || !younger.stdout().contains("\"type\": 1"), "no changed:s3 on v@s1: " + younger);
    }

    /**
     * qemu's NBD client reads a qemu:dirty-bitmap context through its x-dirty-bitmap option, reporting the
     * bitmap in place of allocation: per qemu's docs (interop/nbd, and iotest 223) dirty extents show as
     * {@code "data": false} and clean ones as {@code "data": true}.
     */
    @Test
    void qemuImgMapWithXDirtyBitmapAgreesWithTheDiff() throws IOException {
        Tools.require("qemu-img");
        String opts = "driver=nbd,server.type=unix,server.path=" + server.socket() + ",export=v@s3,x-dirty-bitmap=qemu:dirty-bitmap:s1";
        Tools.Result r = Tools.run("qemu-img", "map", "--output=json", "--image-opts", opts).assertOk();
        List<long[]> got = new ArrayList<>();
        long next = 0;
        for (JsonNode e : JSON.readTree(r.stdout())) {
            long start = e.path("start").asLong();
            assertEquals(next, start, "contiguous: " + r.stdout());
            next = start + e.path("length").asLong();
            SnapshotSupport.add(got, start, e.path("length").asLong(), e.path("data").asBoolean() ? 0 : 1);
        }
        assertEquals(SIZE, next, r.stdout());
        assertEquals(show(main.expectedDirtyFlags(0, 2)), show(got), "qemu-img map (dirty = data:false) of v@s3 against s1");
    }

    // ---- applying the diff ---------------------------------------------------------------------------------------

    /**
     * An incremental backup: a local copy of v@OLDER, then for each diff extent the changed bytes read from
     * v@YOUNGER over NBD and the unused ones zeroed. The result must equal v@YOUNGER byte for byte.
     */
    static void assertDiffAppliesTo(String volume, String older, String younger) throws IOException {
        Path base = copyOut(server.unixUri(volume + "@" + older), tmp.resolve(volume + "-" + older + "-base.img"));
        Path target = copyOut(server.unixUri(volume + "@" + younger), tmp.resolve(volume + "-" + younger + ".img"));
        assertNotEquals(-1L, Files.mismatch(base, target), "the two snapshots differ to begin with");
        Path extents = tmp.resolve(volume + "-diff.json");
        Files.writeString(extents, server.cli("diff", volume, older, younger, "--json").assertOk().stdout());
        Tools.Result r = nbdsh(server.unixUri(volume + "@" + younger), String.join("\n",
                "import json",
                "d = json.load(open(" + py(extents.toString()) + "))",
                "n = 0",
                "with open(" + py(base.toString()) + ", 'r+b') as f:",
                "    for e in d['extents']:",
                "        f.seek(e['offset'])",
                "        if e['state'] == 'changed':",
                "            f.write(h.pread(e['length'], e['offset']))",
                "            n += e['length']",
                "        else:",
                "            f.write(bytes(e['length']))",
                "print('applied', n)"));
        assertTrue(r.stdout().contains("applied"), r.toString());
        long mismatch = Files.mismatch(base, target);
        assertEquals(-1L, mismatch, volume + "@" + older + " patched with diff " + older + " " + younger + " differs from "
                + volume + "@" + younger + " at offset " + mismatch + " (block " + (mismatch / BLOCK) + ")");
    }

    @Test
    void applyingTheDiffToACopyOfTheOlderSnapshotGivesTheYoungerOne() throws IOException {
        Tools.require("nbdcopy", "nbdsh");
        assertDiffAppliesTo("v", "s1", "s3");
        assertDiffAppliesTo("v", "s1", "s2");
        assertDiffAppliesTo("v", "s2", "s3");
    }

    /**
     * An incremental backup the way qemu-based tools take one: copy OLDER out with nbdcopy; qemu-io writes,
     * discards and zeroes (with and without unmap) ranges of the volume; take YOUNGER; then only the extents
     * that {@code nbdinfo --map=qemu:dirty-bitmap:OLDER} marks dirty on VOL@YOUNGER are read from VOL@YOUNGER
     * and written onto the copy. The copy must equal VOL@YOUNGER byte for byte. The same with
     * {@code snapbd:changed:OLDER} plus zeros on the {@code unused} extents of {@code snapbd diff --json}.
     */
    @Test
    void incrementalBackupFromTheDirtyBitmapEqualsTheYoungerSnapshot() throws IOException {
        Tools.require("nbdcopy", "nbdsh", "nbdinfo", "qemu-io");
        String vol = "vb";
        server.cli("volume", "create", vol, "--size", "32M", "--save-size", "32M").assertOk();
        qemuIo(vol, "write -P 0x11 0 8M", "write -P 0x22 12M 4M", "write -P 0x33 20M 1M", "write -P 0x44 30M 64k");
        createSnapshot(server, vol, "older");
        Path base = copyOut(server.unixUri(vol + "@older"), tmp.resolve("vb-older.img"));
        Path baseChanged = tmp.resolve("vb-older-changed.img");
        Files.copy(base, baseChanged);

        qemuIo(vol,
                "write -P 0x55 1M 64k",                 // overwritten
                "discard 2M 256k",                      // TRIM of blocks in use at older
                "write -z 3M 128k",                     // WRITE_ZEROES, NO_HOLE: zeros, still in use
                "write -z -u 12M 512k",                 // WRITE_ZEROES that may unmap: punched
                "discard 20M 1M",                       // a whole written extent trimmed
                "write -P 0x66 24M 64k",                // never used before
                "write -P 0x77 26M 16k", "discard 26M 16k",   // written and trimmed again: zeros in both
                "discard 5M 4k", "write -P 0x88 5M 4k", // trimmed, then written again
                "write -P 0x99 7M 100");                // a part of a block
        createSnapshot(server, vol, "younger");
        Path target = copyOut(server.unixUri(vol + "@younger"), tmp.resolve("vb-younger.img"));
        assertNotEquals(-1L, Files.mismatch(base, target), "the two snapshots differ to begin with");

        // qemu's dirty bitmap alone.
        List<long[]> dirtyMap = map(server.unixUri(vol + "@younger"), "qemu:dirty-bitmap:older");
        List<long[]> dirty = dirtyMap.stream().filter(e -> e[2] == 1).toList();
        for (long trimmed : new long[]{2 * M, 12 * M, 20 * M}) {
            assertTrue(dirty.stream().anyMatch(e -> e[0] <= trimmed && trimmed < e[0] + e[1]),
                    "block at " + trimmed + " left use after older: dirty in" + show(dirtyMap));
        }
        assertTrue(dirty.stream().noneMatch(e -> e[0] <= 26 * M && 26 * M < e[0] + e[1]),
                "block at 26M reads as zeros in both snapshots: clean in" + show(dirtyMap));
        applyFromYounger(vol, base, dirty, List.of());
        long mismatch = Files.mismatch(base, target);
        assertEquals(-1L, mismatch, "copy of " + vol + "@older patched with the dirty extents of qemu:dirty-bitmap:older differs from "
                + vol + "@younger at offset " + mismatch + "; dirty map:" + show(dirtyMap));

        // EMC's changed blocks, plus zeros where the younger snapshot has nothing in use.
        List<long[]> changed = map(server.unixUri(vol + "@younger"), "snapbd:changed:older").stream().filter(e -> e[2] == 1).toList();
        List<long[]> unused = diffExtents(diffJson(vol, "older", "younger")).stream().filter(e -> e[2] == UNUSED).toList();
        assertFalse(unused.isEmpty(), "trimmed extents are unused in younger");
        applyFromYounger(vol, baseChanged, changed, unused);
        mismatch = Files.mismatch(baseChanged, target);
        assertEquals(-1L, mismatch, "copy of " + vol + "@older patched with snapbd:changed:older and the unused extents of diff differs from "
                + vol + "@younger at offset " + mismatch);
    }

    /** qemu-io commands against the production export {@code vol} over the Unix socket. */
    static void qemuIo(String vol, String... commands) {
        List<String> cmd = new ArrayList<>(List.of("qemu-io", "-f", "raw"));
        for (String c : commands) {
            cmd.add("-c");
            cmd.add(c);
        }
        cmd.add(server.unixUri(vol));
        Tools.Result r = Tools.run(cmd.toArray(String[]::new)).assertOk();
        assertFalse(r.stdout().contains("error") || r.stderr().contains("error"), "qemu-io: " + r);
    }

    /** Writes onto {@code file} the bytes of {@code vol@younger} over {@code read} and zeros over {@code zero}. */
    static void applyFromYounger(String vol, Path file, List<long[]> read, List<long[]> zero) throws IOException {
        Path extents = tmp.resolve(file.getFileName() + ".extents.json");
        Files.writeString(extents, JSON.writeValueAsString(List.of(read, zero)));
        Tools.Result r = nbdsh(server.unixUri(vol + "@younger"), String.join("\n",
                "import json",
                "read, zero = json.load(open(" + py(extents.toString()) + "))",
                "with open(" + py(file.toString()) + ", 'r+b') as f:",
                "    for off, length, _ in read:",
                "        f.seek(off)",
                "        f.write(h.pread(length, off))",
                "    for off, length, _ in zero:",
                "        f.seek(off)",
                "        f.write(bytes(length))",
                "print('applied', len(read), len(zero))"));
        assertTrue(r.stdout().contains("applied"), r.toString());
    }

    // ---- deleting a snapshot in the middle ---------------------------------------------------------------------

    @Test
    void deletingTheMiddleSnapshotLosesNoChange() throws IOException {
        Tools.require("nbdsh", "nbdinfo", "nbdcopy");
        server.cli("volume", "create", "vd", "--size", "32M", "--save-size", "32M").assertOk();
        Scenario s = Scenario.run("vd");
        assertDiff(s, 0, 2);
        server.cli("snapshot", "delete", "vd", "s2").assertOk();

        assertDiff(s, 0, 2);
        assertEquals(show(s.expectedFlags(0, 2)), show(map(s.uri("s3"), "snapbd:changed:s1")), "changed:s1 on vd@s3 after deleting s2");
        assertEquals(show(s.expectedDirtyFlags(0, 2)), show(map(s.uri("s3"), "qemu:dirty-bitmap:s1")), "dirty-bitmap:s1 on vd@s3 after deleting s2");
        JsonNode list = json(Tools.run("nbdinfo", "--list", "--json", server.unixUri("")));
        Set<String> ctx = new TreeSet<>(contexts(list, "vd@s3"));
        assertEquals(new TreeSet<>(List.of("base:allocation", "snapbd:changed:s1", "qemu:dirty-bitmap:s1")), ctx,
                "contexts of vd@s3 once s2 is gone");
        Tools.Result gone = server.cli("diff", "vd", "s2", "s3");
        assertNotEquals(0, gone.exit(), "diff from a deleted snapshot: " + gone);
        assertDiffAppliesTo("vd", "s1", "s3");

        // And after a restart (the merged bit maps are persistent).
        assertEquals(0, server.stop());
        server.restart();
        assertDiff(s, 0, 2);
        assertEquals(show(s.expectedFlags(0, 2)), show(map(s.uri("s3"), "snapbd:changed:s1")), "after a restart");
    }
}

package io.snapbd.server.it;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The server against the real clients people use: libnbd's nbdinfo, nbdcopy and nbdsh, fio's nbd engine,
 * qemu-img and qemu-io. Each test works on a volume of its own (created online), so they do not depend on
 * each other's data; the durability tests stop, kill and restart the shared server.
 */
@Timeout(value = 10, unit = TimeUnit.MINUTES)
@ExtendWith(ServerLiveness.class)
class RealClientsIT {

    static final long MiB = 1L << 20;
    static final ObjectMapper JSON = new ObjectMapper();

    enum Transport { TCP, UNIX }

    @TempDir
    static Path tmp;
    // Two volumes made offline before the first start: serve must not add vol0 next to them. Before each test the
    // extension restarts the server if a durability test left it stopped when it failed.
    @RegisterExtension
    static final SnapbdServerExtension SNAPBD = SnapbdServerExtension.builder("RealClientsIT")
            .volume("alpha", "64M", "16M").volume("beta", "32M", "8M").build();
    static final ServerProcess server = SNAPBD.server();
    static final Path data = SNAPBD.dataDir();

    static String newVolume(String name) {
        return newVolume(name, "64M");
    }

    static String newVolume(String name, String size) {
        server.cli("volume", "create", name, "--size", size, "--save-size", "16M").assertOk();
        return name;
    }

    static String uri(Transport t, String export) {
        return t == Transport.TCP ? server.tcpUri(export) : server.unixUri(export);
    }

    static Tools.Result nbdsh(String uri, String script) {
        return Tools.run("nbdsh", "--base-allocation", "-u", uri, "-c", script).assertOk();
    }

    // ---- nbdinfo -------------------------------------------------------------------------------------------

    @ParameterizedTest
    @EnumSource(Transport.class)
    void nbdinfoListsEveryVolumeWithItsProperties(Transport t) throws IOException {
        Tools.require("nbdinfo");
        Tools.Result text = Tools.run("nbdinfo", "--list", uri(t, "")).assertOk();
        assertTrue(text.stdout().contains("alpha") && text.stdout().contains("beta"), text.toString());

        JsonNode list = JSON.readTree(Tools.run("nbdinfo", "--list", "--json", uri(t, "")).assertOk().stdout());
        Set<String> names = new HashSet<>();
        for (JsonNode e : list.path("exports")) {
            String name = e.path("export-name").asText();
            names.add(name);
            if (!name.equals("alpha") && !name.equals("beta")) {
                continue;   // volumes other tests created meanwhile
            }
            String where = "export " + name + ": " + e;
            assertEquals(name.equals("alpha") ? 64 * MiB : 32 * MiB, e.path("export-size").asLong(), where);
            assertFalse(e.path("is_read_only").asBoolean(true), where);
            for (String can : List.of("can_multi_conn", "can_trim", "can_zero", "can_fua", "can_flush", "can_fast_zero", "can_df", "can_cache")) {
                assertTrue(e.path(can).asBoolean(false), can + " in " + where);
            }
            assertEquals(1, e.path("block_size_minimum").asLong(), where);
            assertEquals(4096, e.path("block_size_preferred").asLong(), where);
            assertEquals(32 * MiB, e.path("block_size_maximum").asLong(), where);
            List<String> contexts = new ArrayList<>();
            e.path("contexts").forEach(c -> contexts.add(c.asText()));
            assertTrue(contexts.contains("base:allocation"), where);
        }
        // Exactly the volumes the CLI knows: one export per volume, nothing else.
        Set<String> volumes = new HashSet<>();
        JSON.readTree(server.cli("volume", "list", "--json").assertOk().stdout()).path("volumes")
                .forEach(v -> volumes.add(v.path("name").asText()));
        assertEquals(volumes, names, "exports listed by nbdinfo vs volumes");
        assertTrue(names.containsAll(List.of("alpha", "beta")), names.toString());
        assertFalse(names.contains("vol0"), "serve must not create vol0 when volumes exist");
    }

    @Test
    void emptyExportNameIsTheFirstVolumeByName() {
        Tools.require("nbdinfo");
        Tools.Result r = Tools.run("nbdinfo", "--size", server.tcpUri("")).assertOk();
        assertEquals(String.valueOf(64 * MiB), r.stdout().strip(), "default export is alpha");
    }

    // ---- allocation map --------------------------------------------------------------------------------------

    static String show(List<long[]> extents) {
        StringBuilder sb = new StringBuilder();
        for (long[] e : extents) {
            sb.append(String.format("%n  %10d %10d %s", e[0], e[1], e[2] == 0 ? "data" : e[2] == 3 ? "hole,zero" : "type " + e[2]));
        }
        return sb.toString();
    }

    static void assertMap(String uri, long size, long[]... dataRanges) throws IOException {
        List<long[]> want = new ArrayList<>();
        long pos = 0;
        for (long[] d : dataRanges) {
            if (d[0] > pos) {
                want.add(new long[]{pos, d[0] - pos, 3});
            }
            want.add(new long[]{d[0], d[1], 0});
            pos = d[0] + d[1];
        }
        if (pos < size) {
            want.add(new long[]{pos, size - pos, 3});
        }
        List<long[]> got = SnapshotSupport.map(uri, "base:allocation");
        assertEquals(show(want), show(got), "base:allocation map of " + uri);
    }

    @Test
    void allocationMapFollowsWritesTrimsAndZeroes() throws IOException {
        Tools.require("nbdinfo", "nbdcopy", "nbdsh");
        String vol = newVolume("mapvol");
        String uri = server.unixUri(vol);
        long size = 64 * MiB;
        assertMap(uri, size);   // a fresh volume: one hole,zero extent

        // A sparse local image with three data ranges; nbdcopy skips its holes.
        Path img = tmp.resolve("sparse.img");
        try (RandomAccessFile f = new RandomAccessFile(img.toFile(), "rw")) {
            f.setLength(size);
            f.seek(MiB);
            f.write(TestData.random(1, 256 << 10));
            f.seek(10 * MiB);
            f.write(TestData.random(2, 2 << 20));
            f.seek(20 * MiB + 4096);
            f.write(TestData.random(3, 3 * 4096));
        }
        Tools.run("nbdcopy", img.toString(), uri).assertOk();
        assertMap(uri, size, new long[]{MiB, 256 << 10}, new long[]{10 * MiB, 2 * MiB}, new long[]{20 * MiB + 4096, 3 * 4096});

        // TRIM and WRITE_ZEROES (without NO_HOLE) give the blocks back; WRITE_ZEROES with NO_HOLE keeps them.
        nbdsh(uri, String.join("\n",
                "h.trim(256 * 1024, 1024 * 1024)",
                "h.zero(1024 * 1024, 10 * 1024 * 1024)",
                "h.zero(8192, 30 * 1024 * 1024, nbd.CMD_FLAG_NO_HOLE)",
                "assert h.pread(256 * 1024, 1024 * 1024) == bytearray(256 * 1024)",
                "assert h.pread(1024 * 1024, 10 * 1024 * 1024) == bytearray(1024 * 1024)",
                "assert h.pread(8192, 30 * 1024 * 1024) == bytearray(8192)",
                "h.flush()"));
        assertMap(uri, size, new long[]{11 * MiB, MiB}, new long[]{20 * MiB + 4096, 3 * 4096}, new long[]{30 * MiB, 8192});
    }

    // ---- nbdcopy ---------------------------------------------------------------------------------------------

    @ParameterizedTest
    @EnumSource(Transport.class)
    void nbdcopyRoundTripIsByteExact(Transport t) {
        Tools.require("nbdcopy");
        String vol = newVolume("copy-" + t.name().toLowerCase());
        byte[] image = TestData.imageWithZeroRegions(t.ordinal() + 11, (int) (64 * MiB));
        Path in = TestData.write(tmp.resolve("in-" + t + ".img"), image);
        Path out = tmp.resolve("out-" + t + ".img");
        Tools.run("nbdcopy", in.toString(), uri(t, vol)).assertOk();
        Tools.run("nbdcopy", uri(t, vol), out.toString()).assertOk();
        TestData.assertSameContent(image, out);
    }

    @Test
    void qemuImgCompareSeesIdenticalImages() {
        Tools.require("nbdcopy", "qemu-img", "nbdsh");
        String vol = newVolume("qemucmp");
        byte[] image = TestData.imageWithZeroRegions(21, (int) (64 * MiB));
        Path local = TestData.write(tmp.resolve("qemucmp.img"), image);
        Tools.run("nbdcopy", local.toString(), server.tcpUri(vol)).assertOk();
        Tools.Result same = Tools.run("qemu-img", "compare", "-f", "raw", "-F", "raw", local.toString(), server.tcpUri(vol)).assertOk();
        assertTrue(same.stdout().contains("Images are identical"), same.toString());
        // And it notices a one-byte difference (exit 1), so the comparison is real.
        nbdsh(server.tcpUri(vol), "h.pwrite(bytes([h.pread(1, 5000001)[0] ^ 0xff]), 5000001)");
        Tools.Result diff = Tools.run("qemu-img", "compare", "-f", "raw", "-F", "raw", local.toString(), server.unixUri(vol));
        assertEquals(1, diff.exit(), diff.toString());
        assertTrue(diff.stdout().contains("Content mismatch"), diff.toString());
    }

    @Test
    void qemuIoWritesAndReadsPatterns() {
        Tools.require("qemu-io");
        String vol = newVolume("qemuio");
        Tools.Result r = Tools.run("qemu-io", "-f", "raw", server.unixUri(vol),
                "-c", "write -P 0xab 4096 8192",
                "-c", "read -P 0xab 4096 8192",
                "-c", "write -P 0xcd 4097 100",          // unaligned, inside the first write
                "-c", "read -P 0xab 4096 1",
                "-c", "read -P 0xcd 4097 100",
                "-c", "read -P 0xab 4197 8091",
                "-c", "read -P 0x00 0 4096",
                "-c", "write -z 4096 4096",
                "-c", "read -P 0x00 4096 4096").assertOk();
        assertFalse(r.stdout().contains("fail") || r.stderr().contains("fail"), r.toString());
        assertTrue(r.stdout().contains("wrote 8192/8192 bytes at offset 4096"), r.toString());
        assertTrue(r.stdout().contains("read 8192/8192 bytes at offset 4096"), r.toString());
        assertTrue(r.stdout().contains("read 100/100 bytes at offset 4097"), r.toString());
    }

    // ---- fio -------------------------------------------------------------------------------------------------

    static List<String> fio(String uri, String... extra) {
        List<String> cmd = new ArrayList<>(List.of("fio", "--name=verify", "--ioengine=nbd", "--uri=" + uri,
                "--verify=crc32c", "--do_verify=1", "--verify_fatal=1", "--verify_state_save=0"));
        cmd.addAll(List.of(extra));
        return cmd;
    }

    static void runFio(List<String> cmd) {
        Tools.Result r = Tools.run(Tools.DEFAULT_TIMEOUT, null, cmd).assertOk();
        assertFalse(r.stdout().contains("verify: bad") || r.stderr().contains("verify: bad"), r.toString());
        assertTrue(r.stdout().contains("Run status group"), r.toString());
    }

    @ParameterizedTest
    @EnumSource(Transport.class)
    void fioRandomWritesVerify(Transport t) {
        Tools.require("fio");
        String vol = newVolume("fio-" + t.name().toLowerCase());
        runFio(fio(uri(t, vol), "--rw=randwrite", "--bs=4k", "--iodepth=32", "--size=32M"));
    }

    @Test
    void fioMixedReadWriteWithMixedUnalignedSizesVerifies() {
        Tools.require("fio");
        String vol = newVolume("fio-mixed");
        runFio(fio(server.unixUri(vol), "--rw=randrw", "--bsrange=512-64k", "--blockalign=512", "--iodepth=16", "--size=32M"));
        // Odd offset into the export too: every request is misaligned to the 4 KiB block size.
        runFio(fio(server.tcpUri(vol), "--rw=randwrite", "--bsrange=512-64k", "--blockalign=512", "--offset=1536",
                "--iodepth=16", "--size=16M"));
    }

    @Test
    void fioWithFourConnections() {
        Tools.require("fio");
        String vol = newVolume("fio-multi");
        // Four jobs, four connections, each on its own 8 MiB slice so their verifications do not collide.
        runFio(fio(server.unixUri(vol), "--rw=randwrite", "--bs=4k", "--iodepth=32", "--numjobs=4", "--size=8M",
                "--offset_increment=8M", "--group_reporting"));
    }

    // ---- nbdsh: the fine print -------------------------------------------------------------------------------

    @Test
    void nbdshFineGrainedChecks() {
        Tools.require("nbdsh");
        String vol = newVolume("nbdsh");
        String uri = server.unixUri(vol);
        String script = String.join("\n",
                "import nbd",
                "MiB = 1024 * 1024",
                "def extents(count, offset, flags=0):",
                "    got = []",
                "    def cb(meta, off, entries, err):",
                "        assert meta == nbd.CONTEXT_BASE_ALLOCATION, meta",
                "        got.append((off, list(entries)))",
                "        return 0",
                "    h.block_status(count, offset, cb, flags)",
                "    assert len(got) == 1, got",
                "    return got[0][1]",
                "",
                "assert h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION)",
                "assert h.get_size() == 64 * MiB",
                "assert h.can_fast_zero()",
                "assert h.can_fua() and h.can_flush() and h.can_trim() and h.can_zero() and h.can_cache() and h.can_df()",
                "assert h.can_multi_conn()",
                "assert not h.is_read_only()",
                // unaligned: 3 bytes straddling a block boundary
                "h.pwrite(b'abc', 4095)",
                "assert h.pread(5, 4094) == b'\\x00abc\\x00', h.pread(5, 4094)",
                "assert h.pread(8192, 0)[4095:4098] == b'abc'",
                // unaligned in the middle of a block, over existing data
                "h.pwrite(b'XY', 4096)",
                "assert h.pread(4, 4094) == b'\\x00aXY'",
                // FUA write
                "buf = bytes(range(256)) * 64",
                "h.pwrite(buf, 1 * MiB + 100, nbd.CMD_FLAG_FUA)",
                "assert h.pread(len(buf), 1 * MiB + 100) == buf",
                // DF read of a range mixing data and holes still returns the right bytes
                "chunks = []",
                "def chunk(sub, off, status, err):",
                "    chunks.append((off, status, bytes(sub)))",
                "    return 0",
                "dfbuf = h.pread_structured(4 * MiB, 0, chunk, nbd.CMD_FLAG_DF)",
                "assert len(chunks) == 1, ('DF: one content chunk', [(c[0], c[1], len(c[2])) for c in chunks])",
                "assert dfbuf[1 * MiB + 100 : 1 * MiB + 100 + len(buf)] == buf and dfbuf[:4095] == bytes(4095)",
                "mixed = h.pread(3 * 4096, 1 * MiB - 4096)",
                "assert mixed[4096 + 100 : 4096 + 100 + 16] == buf[:16] and mixed[:4096] == bytes(4096)",
                // block status with REQ_ONE: exactly one extent, not longer than asked
                "e = extents(2 * MiB, 0, nbd.CMD_FLAG_REQ_ONE)",
                "assert len(e) == 2 and 0 < e[0] <= 2 * MiB, e",
                "assert e[1] == 0, ('block 0 holds data', e)",
                "e = extents(1 * MiB, 8 * MiB, nbd.CMD_FLAG_REQ_ONE)",
                "assert e == [1 * MiB, 3], ('untouched range is one hole,zero extent', e)",
                // full block status over [0, 2 MiB): the lengths add up and cover the request
                "e = extents(2 * MiB, 0)",
                "assert sum(e[0::2]) <= 2 * MiB and sum(e[0::2]) > 0, e",
                "assert e[1] == 0 and e[-1] == 3, e",
                // WRITE_ZEROES with NO_HOLE: reads zeros, stays allocated
                "h.pwrite(b'\\xff' * 8192, 16 * MiB)",
                "h.zero(8192, 16 * MiB, nbd.CMD_FLAG_NO_HOLE)",
                "assert h.pread(8192, 16 * MiB) == bytes(8192)",
                "assert extents(8192, 16 * MiB, nbd.CMD_FLAG_REQ_ONE) == [8192, 0], extents(8192, 16 * MiB)",
                // plain WRITE_ZEROES and TRIM: reads zeros, becomes a hole
                "h.pwrite(b'\\xee' * 8192, 17 * MiB)",
                "h.zero(8192, 17 * MiB)",
                "assert h.pread(8192, 17 * MiB) == bytes(8192)",
                "assert extents(8192, 17 * MiB, nbd.CMD_FLAG_REQ_ONE) == [8192, 3]",
                "h.pwrite(b'\\xdd' * 8192, 18 * MiB)",
                "h.trim(8192, 18 * MiB)",
                "assert h.pread(8192, 18 * MiB) == bytes(8192)",
                "assert extents(8192, 18 * MiB, nbd.CMD_FLAG_REQ_ONE) == [8192, 3]",
                // FAST_ZERO is accepted
                "h.pwrite(b'\\xcc' * 4096, 19 * MiB)",
                "h.zero(4096, 19 * MiB, nbd.CMD_FLAG_FAST_ZERO)",
                "assert h.pread(4096, 19 * MiB) == bytes(4096)",
                // partial-block trim and zero leave the rest of the block intact
                "h.pwrite(b'\\xbb' * 4096, 20 * MiB)",
                "h.zero(100, 20 * MiB + 10)",
                "h.trim(100, 20 * MiB + 1000)",
                "got = h.pread(4096, 20 * MiB)",
                "want = b'\\xbb' * 10 + bytes(100) + b'\\xbb' * 890 + bytes(100) + b'\\xbb' * (4096 - 1100)",
                // (the bytes of a partial-block TRIM are unspecified; everything around them is not)
                "assert got[:1000] == want[:1000] and got[1100:] == want[1100:], got[:1200]",
                // CACHE
                "h.cache(64 * 1024, 0)",
                // the last byte of the export
                "h.pwrite(b'Z', 64 * MiB - 1)",
                "assert h.pread(2, 64 * MiB - 2) == b'\\x00Z'",
                // multi-conn: a flush on another connection covers writes of this one
                "h.pwrite(b'multi', 5 * MiB)",
                "h2 = nbd.NBD()",
                "h2.connect_uri(" + pyString(uri) + ")",
                "h2.flush()",
                "assert h2.pread(5, 5 * MiB) == b'multi'",
                "h2.shutdown()",
                "h.flush()",
                "print('nbdsh checks passed')");
        Tools.Result r = nbdsh(uri, script);
        assertTrue(r.stdout().contains("nbdsh checks passed"), r.toString());
    }

    /** Requests the server has counted for {@code export} so far ({@code status} through the admin socket: polled). */
    static long requests(String export) throws IOException {
        JsonNode st;
        try (SnapshotSupport.Admin admin = new SnapshotSupport.Admin(server)) {
            st = admin.call(java.util.Map.of("command", "status"));
        }
        for (JsonNode v : st.path("volumes")) {
            if (v.path("name").asText().equals(export)) {
                return v.path("requests").asLong();
            }
        }
        return -1;
    }

    /** Starts a long fio random-write load on {@code export} and returns once the server has seen it. */
    static Process startLoad(String export) throws IOException, InterruptedException {
        Process fio = Tools.start(tmp.resolve("load-" + export + ".log"), List.of("fio", "--name=load", "--ioengine=nbd",
                "--uri=" + server.unixUri(export), "--rw=randwrite", "--bsrange=512-64k", "--iodepth=32", "--numjobs=2",
                "--size=64M", "--time_based", "--runtime=120"));
        for (int i = 0; i < 3000 && requests(export) < 1000; i++) {     // up to 5 min
            assertTrue(fio.isAlive(), "fio ended early: " + java.nio.file.Files.readString(tmp.resolve("load-" + export + ".log")));
            Thread.sleep(100);
        }
        assertTrue(requests(export) >= 1000, "the load reached the server");
        return fio;
    }

    static void end(Process p) throws InterruptedException {
        // fio notices the server is gone and exits; it is bounded by --runtime anyway.
        if (!p.waitFor(3, TimeUnit.MINUTES)) {
            p.destroyForcibly();
            p.waitFor(30, TimeUnit.SECONDS);
        }
    }

    @Test
    void aCleanStopUnderLoadLeavesCleanVolumes() throws Exception {
        Tools.require("fio");
        String vol = newVolume("stop-under-load");
        Process fio = startLoad(vol);
        try {
            server.stop();
        } finally {
            end(fio);
        }
        assertTrue(server.log().contains("volumes closed cleanly"), server.log());
        Tools.Result fsck = ServerProcess.snapbd(data, "fsck").assertExit(0);
        assertTrue(fsck.stdout().contains(vol + ": clean"), fsck.toString());
        server.restart();
        assertFalse(server.log().contains("not stopped cleanly"), "a clean stop needs no recovery:\n" + server.log());
    }

    @Test
    void kill9UnderLoadRecoversToAConsistentVolume() throws Exception {
        Tools.require("fio", "nbdcopy");
        String vol = newVolume("kill-under-load");
        Process fio = startLoad(vol);
        try {
            server.kill9();
        } finally {
            end(fio);
        }
        server.restart();
        assertTrue(server.log().contains("volume " + vol + " was not stopped cleanly"), server.log());
        // Every block that reads non-zero must be in use after recovery: fsck checks exactly that on the
        // cleanly closed result.
        Path out = tmp.resolve("kill-under-load.img");
        Tools.run("nbdcopy", server.unixUri(vol), out.toString()).assertOk();
        server.stop();
        Tools.Result fsck = ServerProcess.snapbd(data, "fsck", vol).assertExit(0);
        assertTrue(fsck.stdout().contains(vol + ": clean"), fsck.toString());
        server.restart();
        // The content did not change across the clean restart.
        Path again = tmp.resolve("kill-under-load-again.img");
        Tools.run("nbdcopy", server.unixUri(vol), again.toString()).assertOk();
        TestData.assertSameContent(java.nio.file.Files.readAllBytes(out), again);
    }

    static String pyString(String s) {
        return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'";
    }

    // ---- durability ------------------------------------------------------------------------------------------

    @Test
    void dataSurvivesACleanRestartAndFsckIsClean() throws IOException {
        Tools.require("nbdcopy");
        String vol = newVolume("durable-clean");
        byte[] image = TestData.imageWithZeroRegions(31, (int) (64 * MiB));
        Path in = TestData.write(tmp.resolve("durable-clean.img"), image);
        Tools.run("nbdcopy", in.toString(), server.unixUri(vol)).assertOk();

        server.stop();
        assertTrue(server.log().contains("snapbd stopped"), "clean stop logged:\n" + server.log());
        Tools.Result fsck = ServerProcess.snapbd(data, "fsck").assertExit(0);
        assertTrue(fsck.stdout().contains(vol + ": clean"), fsck.toString());
        JsonNode report = JSON.readTree(ServerProcess.snapbd(data, "fsck", "--json").assertExit(0).stdout());
        for (JsonNode v : report) {
            assertTrue(v.path("ok").asBoolean(false), "fsck --json: " + v);
        }

        server.restart();
        Path out = tmp.resolve("durable-clean-out.img");
        Tools.run("nbdcopy", server.tcpUri(vol), out.toString()).assertOk();
        TestData.assertSameContent(image, out);
    }

    @Test
    void flushedDataSurvivesKill9() throws IOException {
        Tools.require("nbdcopy", "nbdsh");
        String vol = newVolume("durable-kill");
        byte[] image = TestData.imageWithZeroRegions(41, (int) (64 * MiB));
        Path in = TestData.write(tmp.resolve("durable-kill.img"), image);
        Tools.run("nbdcopy", "--flush", in.toString(), server.unixUri(vol)).assertOk();
        // A few small writes and a trim on top, then an explicit FLUSH.
        nbdsh(server.unixUri(vol), String.join("\n",
                "h.pwrite(b'after-copy', 12345)",
                "h.pwrite(b'\\x01' * 5000, 40 * 1024 * 1024 + 3)",
                "h.trim(1024 * 1024, 8 * 1024 * 1024)",
                "h.flush()"));
        System.arraycopy("after-copy".getBytes(), 0, image, 12345, 10);
        java.util.Arrays.fill(image, 40 * 1024 * 1024 + 3, 40 * 1024 * 1024 + 3 + 5000, (byte) 1);
        java.util.Arrays.fill(image, 8 * 1024 * 1024, 9 * 1024 * 1024, (byte) 0);

        server.kill9();
        server.restart();
        Path out = tmp.resolve("durable-kill-out.img");
        Tools.run("nbdcopy", server.tcpUri(vol), out.toString()).assertOk();
        TestData.assertSameContent(image, out);

        // After recovery and a clean stop, the data directory checks clean.
        server.stop();
        Tools.Result fsck = ServerProcess.snapbd(data, "fsck").assertExit(0);
        assertTrue(fsck.stdout().contains(vol + ": clean"), fsck.toString());
        server.restart();
        Path again = tmp.resolve("durable-kill-again.img");
        Tools.run("nbdcopy", server.unixUri(vol), again.toString()).assertOk();
        TestData.assertSameContent(image, again);
    }
}

package io.snapbd.server.it;

import com.fasterxml.jackson.databind.JsonNode;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.TimeUnit;

import static io.snapbd.server.it.SnapshotSupport.ENOSPC;
import static io.snapbd.server.it.SnapshotSupport.JSON;
import static io.snapbd.server.it.SnapshotSupport.EPERM;
import static io.snapbd.server.it.SnapshotSupport.ESHUTDOWN;
import static io.snapbd.server.it.SnapshotSupport.MiB;
import static io.snapbd.server.it.SnapshotSupport.copyOut;
import static io.snapbd.server.it.SnapshotSupport.createSnapshot;
import static io.snapbd.server.it.SnapshotSupport.json;
import static io.snapbd.server.it.SnapshotSupport.listSnapshots;
import static io.snapbd.server.it.SnapshotSupport.map;
import static io.snapbd.server.it.SnapshotSupport.nbdsh;
import static io.snapbd.server.it.SnapshotSupport.py;
import static io.snapbd.server.it.SnapshotSupport.saveChunksUsed;
import static io.snapbd.server.it.SnapshotSupport.sha256;
import static io.snapbd.server.it.SnapshotSupport.show;
import static io.snapbd.server.it.SnapshotSupport.snapshotEntry;
import static io.snapbd.server.it.SnapshotSupport.snapshotNames;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Snapshots end to end through real clients: EMC's a–h example, read-only snapshot exports, frozen content
 * under a production load, delete at every position, restore, clone, save-volume overflow (Mylex), and
 * persistence across clean restarts and kill -9 under load. Each test works on volumes of its own.
 */
@Timeout(value = 10, unit = TimeUnit.MINUTES)
@ExtendWith(ServerLiveness.class)
class SnapshotIT {

    static final int BLOCK = 4096;

    @TempDir
    static Path tmp;
    // Clones pause 100 ms per copied piece (at most 4 MiB), so that a client can always be seen refused while one copies.
    @RegisterExtension
    static final SnapbdServerExtension SNAPBD = SnapbdServerExtension.builder("SnapshotIT").volume("first", "32M", "4M")
            .jvmOptions("-Dsnapbd.clone.chunkPauseMillis=100").build();
    static final ServerProcess server = SNAPBD.server();
    static final Path data = SNAPBD.dataDir();

    static String newVolume(String name, String size, String saveSize) {
        server.cli("volume", "create", name, "--size", size, "--save-size", saveSize).assertOk();
        return name;
    }

    static String unix(String export) {
        return server.unixUri(export);
    }

    /**
     * A volume's content in memory, kept in step with the server: every change goes to both, over a raw NBD
     * connection (TCP). Trims are whole blocks, so their result (zeros) is defined.
     */
    static final class Model implements AutoCloseable {
        final byte[] content;
        final RawNbd conn;
        final Random random;
        long handle = 1;

        Model(String volume, int size, long seed) throws IOException {
            this.content = new byte[size];
            this.random = new Random(seed);
            this.conn = RawNbd.connect(server.port());
            conn.negotiate(volume, false, false);
            assertEquals(size, conn.exportSize);
        }

        void write(long offset, byte[] bytes) throws IOException {
            conn.write(handle++, offset, bytes);
            System.arraycopy(bytes, 0, content, (int) offset, bytes.length);
        }

        void trimBlocks(long firstBlock, int blocks) throws IOException {
            long h = handle++;
            conn.sendRequest(0, RawNbd.CMD_TRIM, h, firstBlock * BLOCK, (long) blocks * BLOCK, null);
            RawNbd.Reply r = conn.readReply(0);
            assertEquals(h, r.handle());
            assertEquals(0, r.error(), "TRIM");
            Arrays.fill(content, (int) (firstBlock * BLOCK), (int) ((firstBlock + blocks) * BLOCK), (byte) 0);
        }

        /** {@code n} random changes: writes of 1 byte to 256 KiB at any offset, and some whole-block trims. */
        void randomChanges(int n) throws IOException {
            for (int i = 0; i < n; i++) {
                if (random.nextInt(8) == 0) {
                    int blocks = 1 + random.nextInt(16);
                    trimBlocks(random.nextInt(content.length / BLOCK - blocks), blocks);
                } else {
                    int len = random.nextInt(4) == 0 ? 1 + random.nextInt(100) : 1 + random.nextInt(256 << 10);
                    byte[] b = new byte[len];
                    random.nextBytes(b);
                    write(random.nextInt(content.length - len), b);
                }
            }
        }

        void flush() throws IOException {
            long h = handle++;
            conn.sendRequest(0, RawNbd.CMD_FLUSH, h, 0, 0, null);
            assertEquals(0, conn.readReply(0).error(), "FLUSH");
        }

        byte[] copy() {
            return content.clone();
        }

        @Override
        public void close() throws IOException {
            conn.disconnect();
            conn.close();
        }
    }

    /** nbdcopy of an export into a file, compared byte for byte with {@code expected}. */
    static void assertExportEquals(byte[] expected, String export, String what) {
        Path out = copyOut(unix(export), tmp.resolve(export.replace('@', '_') + "-" + System.nanoTime() + ".img"));
        try {
            TestData.assertSameContent(expected, out);
        } catch (AssertionError e) {
            throw new AssertionError(what + ": " + e.getMessage(), e);
        } finally {
            try {
                Files.deleteIfExists(out);
            } catch (IOException ignored) {
                // temp file
            }
        }
    }

    // ---- EMC's example -----------------------------------------------------------------------------------------

    /**
     * EMC's a–h example (docs/glossary.md): blocks a0…h0, a snapshot, then a1 and b1 written: the snapshot still reads a0…h0,
     * production reads a1 b1 c0…h0, and the save volume holds exactly the two before-images a0, b0.
     */
    @Test
    void emcExampleAThroughH() throws IOException {
        Tools.require("nbdsh", "nbdcopy");
        String vol = newVolume("emc", "32M", "4M");
        int size = (int) (32 * MiB);
        byte[] before = TestData.random(101, 8 * BLOCK);       // a0 … h0
        byte[] after = TestData.random(102, 2 * BLOCK);         // a1, b1
        Path beforeFile = TestData.write(tmp.resolve("emc-before.bin"), before);
        Path afterFile = TestData.write(tmp.resolve("emc-after.bin"), after);

        nbdsh(unix(vol), String.join("\n",
                "d = open(" + py(beforeFile.toString()) + ", 'rb').read()",
                "for i in range(8):",
                "    h.pwrite(d[i * 4096:(i + 1) * 4096], i * 4096)",
                "h.flush()"));
        createSnapshot(server, vol, "S");
        assertEquals(0, snapshotEntry(server, vol, "S").path("saveChunksUsed").asLong(), "nothing saved yet");

        nbdsh(unix(vol), String.join("\n",
                "d = open(" + py(afterFile.toString()) + ", 'rb').read()",
                "h.pwrite(d[0:4096], 0)",            // a1
                "h.pwrite(d[4096:8192], 4096)",      // b1
                "h.flush()"));

        byte[] snapshot = new byte[size];
        System.arraycopy(before, 0, snapshot, 0, before.length);
        byte[] production = snapshot.clone();
        System.arraycopy(after, 0, production, 0, after.length);

        // nbdcopy of VOL@S: a0 … h0; of VOL: a1 b1 c0 … h0.
        assertExportEquals(snapshot, vol + "@S", "snapshot S");
        assertExportEquals(production, vol, "production");
        // pread through nbdsh, block by block, including a read that spans saved and unsaved blocks.
        nbdsh(unix(vol + "@S"), String.join("\n",
                "d = open(" + py(beforeFile.toString()) + ", 'rb').read()",
                "for i in range(8):",
                "    assert h.pread(4096, i * 4096) == d[i * 4096:(i + 1) * 4096], i",
                "assert h.pread(3 * 4096 - 200, 100) == d[100:3 * 4096 - 100]",
                "assert h.pread(4096, 8 * 4096) == bytes(4096)"));

        JsonNode s = snapshotEntry(server, vol, "S");
        assertEquals("active", s.path("state").asText(), s.toString());
        assertEquals(2, s.path("saveChunksUsed").asLong(), "the save volume holds a0 and b0: " + s);
        assertEquals(2, saveChunksUsed(server, vol));

        // A second write to a1's block finds its before-image safe (rule 2): no new copy. A write to a block
        // never in use copies nothing (meta bit map clear).
        nbdsh(unix(vol), String.join("\n",
                "h.pwrite(b'\\x5a' * 4096, 0)",
                "h.pwrite(b'\\x6b' * 4096, 100 * 4096)",
                "h.flush()"));
        assertEquals(2, saveChunksUsed(server, vol), "no copy for a block already saved or never in use");
        assertExportEquals(snapshot, vol + "@S", "snapshot S after more writes");
    }

    // ---- read-only exports ---------------------------------------------------------------------------------------

    @Test
    void snapshotExportIsReadOnly() throws IOException {
        Tools.require("nbdinfo", "nbdsh");
        String vol = newVolume("ro", "32M", "4M");
        byte[] block = TestData.random(201, BLOCK);
        try (RawNbd c = RawNbd.connect(server.port())) {
            c.negotiate(vol, false, false);
            c.write(1, 0, block);
            c.disconnect();
        }
        createSnapshot(server, vol, "S");
        String export = vol + "@S";

        // nbdinfo: listed, read-only, no trim or zero.
        // (Parsed whatever the exit code: other tests' terminated snapshots make nbdinfo --list exit 1, which
        // nbdinfoListStillWorksWhileASnapshotIsTerminated reports on its own.)
        JsonNode list = JSON.readTree(Tools.run("nbdinfo", "--list", "--json", server.tcpUri("")).stdout());
        JsonNode e = null;
        for (JsonNode x : list.path("exports")) {
            if (x.path("export-name").asText().equals(export)) {
                e = x;
            }
        }
        assertTrue(e != null, export + " is listed: " + list);
        assertTrue(e.path("is_read_only").asBoolean(false), e.toString());
        assertFalse(e.path("can_trim").asBoolean(true), e.toString());
        assertFalse(e.path("can_zero").asBoolean(true), e.toString());
        assertEquals(32 * MiB, e.path("export-size").asLong(), e.toString());
        JsonNode one = json(Tools.run("nbdinfo", "--json", unix(export)));
        assertTrue(one.path("exports").get(0).path("is_read_only").asBoolean(false), one.toString());

        // The server itself answers EPERM (raw client: no client-side check in the way).
        try (RawNbd c = RawNbd.connect(server.port())) {
            c.negotiate(export, false, false);
            assertTrue((c.transmissionFlags & 2) != 0, "NBD_FLAG_READ_ONLY advertised");
            c.sendRequest(0, RawNbd.CMD_WRITE, 1, 0, BLOCK, new byte[BLOCK]);
            assertEquals(EPERM, c.readReply(0).error(), "WRITE to a snapshot");
            c.sendRequest(0, RawNbd.CMD_TRIM, 2, 0, BLOCK, null);
            assertEquals(EPERM, c.readReply(0).error(), "TRIM of a snapshot");
            c.sendRequest(0, RawNbd.CMD_WRITE_ZEROES, 3, 0, BLOCK, null);
            assertEquals(EPERM, c.readReply(0).error(), "WRITE_ZEROES to a snapshot");
            assertArrayEquals(block, c.read(4, 0, BLOCK), "the stream is still in step and nothing changed");
            c.disconnect();
        }
        // libnbd with its client-side checks off, so the requests reach the server.
        Tools.Result r = nbdsh(unix(export), String.join("\n",
                "h.set_strict_mode(0)",
                "assert h.is_read_only()",
                "for name, op in [('pwrite', lambda: h.pwrite(b'x' * 4096, 0)), ('trim', lambda: h.trim(4096, 0)),",
                "                 ('zero', lambda: h.zero(4096, 0))]:",
                "    try:",
                "        op()",
                "        raise AssertionError(name + ' succeeded on a snapshot')",
                "    except nbd.Error as ex:",
                "        assert ex.errno == 'EPERM', (name, ex.errno, ex.string)",
                "        print(name, ex.errno)"));
        assertTrue(r.stdout().contains("pwrite EPERM") && r.stdout().contains("trim EPERM") && r.stdout().contains("zero EPERM"), r.toString());
        try (RawNbd c = RawNbd.connect(server.port())) {
            c.negotiate(export, false, false);
            assertArrayEquals(block, c.read(1, 0, BLOCK));
            c.disconnect();
        }
    }

    @Test
    void snapshotAllocationMapIsTheVolumesMapAtCreation() throws IOException {
        Tools.require("nbdinfo", "nbdcopy", "nbdsh");
        String vol = newVolume("allocmap", "32M", "8M");
        long size = 32 * MiB;
        Path img = tmp.resolve("allocmap.img");
        try (RandomAccessFile f = new RandomAccessFile(img.toFile(), "rw")) {
            f.setLength(size);
            f.seek(MiB);
            f.write(TestData.random(301, 256 << 10));
            f.seek(10 * MiB);
            f.write(TestData.random(302, 2 << 20));
            f.seek(20 * MiB + BLOCK);
            f.write(TestData.random(303, 3 * BLOCK));
        }
        Tools.run("nbdcopy", img.toString(), unix(vol)).assertOk();
        List<long[]> atCreation = map(unix(vol), "base:allocation");
        assertTrue(atCreation.size() >= 6, "some data and some holes: " + show(atCreation));
        createSnapshot(server, vol, "S");

        // Production changes its map: trims, zeroes, new data.
        nbdsh(unix(vol), String.join("\n",
                "h.trim(256 * 1024, 1024 * 1024)",
                "h.zero(1024 * 1024, 10 * 1024 * 1024)",
                "h.pwrite(b'\\x11' * 8192, 30 * 1024 * 1024)",
                "h.pwrite(b'\\x22' * 4096, 5 * 1024 * 1024)",
                "h.flush()"));
        List<long[]> production = map(unix(vol), "base:allocation");
        assertNotEquals(show(atCreation), show(production), "production's map changed");
        assertEquals(show(atCreation), show(map(unix(vol + "@S"), "base:allocation")),
                "the snapshot's base:allocation is production's map at creation");
        assertEquals(show(atCreation), show(map(server.tcpUri(vol + "@S"), "base:allocation")), "over TCP too");
    }

    // ---- frozen content under load ---------------------------------------------------------------------------------

    @Test
    void snapshotStaysFrozenWhileFioRewritesProduction() throws Exception {
        Tools.require("nbdcopy", "fio");
        String vol = newVolume("frozen", "64M", "72M");
        byte[] image = TestData.imageWithZeroRegions(401, (int) (64 * MiB));
        Path in = TestData.write(tmp.resolve("frozen-in.img"), image);
        Tools.run("nbdcopy", in.toString(), unix(vol)).assertOk();
        createSnapshot(server, vol, "S");
        String atCreation = sha256(copyOut(unix(vol + "@S"), tmp.resolve("frozen-0.img")));
        assertEquals(sha256(image), atCreation, "the snapshot equals the image right after creation");

        Path fioLog = tmp.resolve("frozen-fio.log");
        Process fio = Tools.start(fioLog, List.of("fio", "--name=rewrite", "--ioengine=nbd", "--uri=" + server.tcpUri(vol),
                "--rw=randwrite", "--bsrange=512-64k", "--iodepth=16", "--numjobs=2", "--size=64M",
                "--time_based", "--runtime=600"));
        try {
            // Wait until production has visibly changed, then read the snapshot twice while fio keeps writing.
            try (SnapshotSupport.Admin admin = new SnapshotSupport.Admin(server)) {
                for (int i = 0; i < 1200 && adminSaveChunksUsed(admin, vol) < 2000; i++) {
                    assertTrue(fio.isAlive(), "fio ended early: " + Files.readString(fioLog));
                    Thread.sleep(50);
                }
            }
            assertTrue(saveChunksUsed(server, vol) >= 2000, "fio's writes copied before-images");
            for (int i = 1; i <= 2; i++) {
                assertEquals(atCreation, sha256(copyOut(unix(vol + "@S"), tmp.resolve("frozen-" + i + ".img"))),
                        "snapshot read #" + i + " during the load");
            }
        } finally {
            SnapshotSupport.stopNow(fio);
        }
        assertEquals(atCreation, sha256(copyOut(unix(vol + "@S"), tmp.resolve("frozen-3.img"))), "after the load");
        assertNotEquals(atCreation, sha256(copyOut(unix(vol), tmp.resolve("frozen-prod.img"))), "production was rewritten");
        assertEquals("active", snapshotEntry(server, vol, "S").path("state").asText());
    }

    // ---- delete ----------------------------------------------------------------------------------------------------

    @Test
    void deleteHeadMiddleAndTailKeepsTheOthers() throws IOException {
        Tools.require("nbdcopy");
        String vol = newVolume("del", "32M", "64M");
        Map<String, String> sums = new LinkedHashMap<>();
        String production;
        try (Model m = new Model(vol, (int) (32 * MiB), 501)) {
            m.write(0, TestData.imageWithZeroRegions(502, (int) (32 * MiB)));
            for (int i = 1; i <= 5; i++) {
                m.flush();
                String name = "s" + i;
                createSnapshot(server, vol, name);
                sums.put(name, sha256(m.content));
                assertEquals(sums.get(name), sha256(copyOut(unix(vol + "@" + name), tmp.resolve("del-" + name + ".img"))),
                        name + " right after creation");
                m.randomChanges(60);
            }
            m.flush();
            production = sha256(m.content);
        }
        assertEquals(List.of("s1", "s2", "s3", "s4", "s5"), snapshotNames(server, vol));
        long used = saveChunksUsed(server, vol);
        assertTrue(used > 0, "the changes copied before-images");

        for (String victim : List.of("s3", "s1", "s5")) {      // middle, head, tail
            server.cli("snapshot", "delete", vol, victim).assertOk();
            sums.remove(victim);
            assertEquals(new ArrayList<>(sums.keySet()), snapshotNames(server, vol), "after deleting " + victim);
            for (Map.Entry<String, String> e : sums.entrySet()) {
                assertEquals(e.getValue(), sha256(copyOut(unix(vol + "@" + e.getKey()), tmp.resolve("del-check.img"))),
                        e.getKey() + " after deleting " + victim);
            }
            assertEquals(production, sha256(copyOut(unix(vol), tmp.resolve("del-prod.img"))), "production after deleting " + victim);
            long now = saveChunksUsed(server, vol);
            assertTrue(now <= used, "deleting " + victim + " does not use more save chunks: " + used + " -> " + now);
            used = now;
        }
        Tools.Result gone = Tools.run("nbdinfo", "--size", unix(vol + "@s3"));
        assertNotEquals(0, gone.exit(), "a deleted snapshot's export is gone: " + gone);
        server.cli("snapshot", "delete", vol, "s2").assertOk();
        server.cli("snapshot", "delete", vol, "s4").assertOk();
        assertEquals(0, saveChunksUsed(server, vol), "no snapshot left: every save chunk is free again");
        assertEquals(production, sha256(copyOut(unix(vol), tmp.resolve("del-prod.img"))));
    }

    // ---- restore ---------------------------------------------------------------------------------------------------

    @Test
    void restoreMakesProductionTheSnapshotAndKeepsYoungerSnapshots() throws Exception {
        Tools.require("nbdcopy", "qemu-img", "nbdsh", "nbdinfo");
        String vol = newVolume("restore", "32M", "64M");
        byte[] s1;
        byte[] s2;
        try (Model m = new Model(vol, (int) (32 * MiB), 601)) {
            m.write(0, TestData.imageWithZeroRegions(602, (int) (32 * MiB)));
            m.flush();
            createSnapshot(server, vol, "s1");
            s1 = m.copy();
            m.randomChanges(80);
            m.trimBlocks(100, 50);
            m.flush();
            createSnapshot(server, vol, "s2");
            s2 = m.copy();
            m.randomChanges(80);
            m.flush();
        }
        List<long[]> s1Map = map(unix(vol + "@s1"), "base:allocation");

        Tools.Result r = server.cli("snapshot", "restore", vol, "s1").assertOk();
        Tools.Result same = Tools.run("qemu-img", "compare", "-f", "raw", "-F", "raw", unix(vol), unix(vol + "@s1")).assertOk();
        assertTrue(same.stdout().contains("Images are identical"), same + "\n" + r);
        assertExportEquals(s1, vol, "production after restoring s1");
        assertExportEquals(s1, vol + "@s1", "s1 after the restore");
        assertExportEquals(s2, vol + "@s2", "the younger snapshot s2 after restoring s1");
        assertEquals(show(s1Map), show(map(unix(vol), "base:allocation")), "production's meta bit map is s1's");

        // Change production again, then keep a client connected: restore is refused and changes nothing.
        byte[] changed;
        try (Model m = new Model(vol, (int) (32 * MiB), 603)) {
            System.arraycopy(s1, 0, m.content, 0, s1.length);
            m.randomChanges(40);
            m.flush();
            changed = m.copy();
        }
        Path flag = tmp.resolve("restore-hold.flag");
        Process holder = SnapshotSupport.holdConnection(unix(vol), flag, tmp.resolve("restore-hold.log"));
        try {
            Tools.Result refused = server.cli("snapshot", "restore", vol, "s2");
            assertNotEquals(0, refused.exit(), "restore while a client is connected: " + refused);
            assertTrue(refused.stderr().contains("--force"), "the error says how to go on: " + refused);
            assertExportEquals(changed, vol, "production after a refused restore");

            server.cli("snapshot", "restore", vol, "s2", "--force").assertOk();
            Tools.Result same2 = Tools.run("qemu-img", "compare", "-f", "raw", "-F", "raw", unix(vol), unix(vol + "@s2")).assertOk();
            assertTrue(same2.stdout().contains("Images are identical"), same2.toString());
        } finally {
            Files.deleteIfExists(flag);
            SnapshotSupport.end(holder);
        }
        assertExportEquals(s2, vol, "production after the forced restore of s2");
        assertExportEquals(s1, vol + "@s1", "s1 after restoring s2");
        assertExportEquals(s2, vol + "@s2", "s2 after restoring it");
    }

    // ---- clone -----------------------------------------------------------------------------------------------------

    static JsonNode cloneState(SnapshotSupport.Admin admin, String target) throws IOException {
        return admin.call(Map.of("command", "clone.status", "target", target));
    }

    @Test
    void cloneCopiesTheSnapshotAndRefusesClientsWhileCopying() throws Exception {
        Tools.require("nbdcopy", "nbdinfo", "qemu-img");
        String vol = newVolume("clonesrc", "64M", "16M");
        byte[] image = TestData.imageWithZeroRegions(701, (int) (64 * MiB));
        Path in = TestData.write(tmp.resolve("clone-in.img"), image);
        Tools.run("nbdcopy", in.toString(), unix(vol)).assertOk();
        createSnapshot(server, vol, "S");
        // Production moves on; the clone must be the snapshot, not production.
        try (Model m = new Model(vol, (int) (64 * MiB), 702)) {
            m.randomChanges(20);
            m.flush();
        }

        // Started through the admin socket (no JVM start-up in the way), then a raw client at once: the new
        // export refuses it while the copy runs.
        try (SnapshotSupport.Admin admin = new SnapshotSupport.Admin(server)) {
            JsonNode job = admin.call(Map.of("command", "snapshot.clone", "volume", vol, "name", "S", "target", "clone1"));
            assertEquals("clone1", job.path("target").asText(), job.toString());
            List<RawNbd.OptReply> replies;
            try (RawNbd c = RawNbd.connect(server.port())) {
                c.startHandshake();
                replies = c.go("clone1");
            }
            String after = cloneState(admin, "clone1").path("state").asText();
            assertEquals("copying", after, "the clone still copies (100 ms per piece) after the client's GO: "
                    + cloneState(admin, "clone1"));
            RawNbd.OptReply last = replies.get(replies.size() - 1);
            assertEquals(0x80000002, last.type(), "NBD_REP_ERR_POLICY while copying: " + replies);
            assertTrue(last.text().contains("in progress"), "says why: " + last);
            for (int i = 0; i < 1200 && after.equals("copying"); i++) {
                Thread.sleep(100);
                after = cloneState(admin, "clone1").path("state").asText();
            }
            assertEquals("done", after, cloneState(admin, "clone1").toString());
        }
        JsonNode status = json(server.cli("status", "--json"));
        assertTrue(status.path("clones").toString().contains("clone1"), "status --json shows the clone: " + status);
        assertExportEquals(image, "clone1", "clone1");

        // With --wait: done when the command returns (the JSON is the last thing printed).
        String out = server.cli("snapshot", "clone", vol, "S", "clone2", "--wait", "--json").assertOk().stdout();
        JsonNode waited = JSON.readTree(out.substring(out.indexOf("\n{") + 1));
        assertEquals("done", waited.path("state").asText(), waited.toString());
        assertEquals(waited.path("bytesTotal").asLong(), waited.path("bytesDone").asLong(), waited.toString());
        assertExportEquals(image, "clone2", "clone2");
        Tools.Result same = Tools.run("qemu-img", "compare", "-f", "raw", "-F", "raw", unix("clone2"), unix(vol + "@S")).assertOk();
        assertTrue(same.stdout().contains("Images are identical"), same.toString());
        // Unused extents stay holes: the clone's allocation map is the snapshot's.
        assertEquals(show(map(unix(vol + "@S"), "base:allocation")), show(map(unix("clone2"), "base:allocation")));
        // The clone is an ordinary writable volume.
        try (RawNbd c = RawNbd.connect(server.port())) {
            c.negotiate("clone2", false, false);
            c.write(1, 0, new byte[]{1, 2, 3});
            assertArrayEquals(new byte[]{1, 2, 3}, c.read(2, 0, 3));
            c.disconnect();
        }
    }

    /** {@code --json} output is for scripts: nothing but the JSON document on stdout, progress elsewhere. */
    @Test
    void cloneWaitJsonPrintsOnlyJson() throws IOException {
        String vol = newVolume("clonejson", "32M", "4M");
        try (RawNbd c = RawNbd.connect(server.port())) {
            c.negotiate(vol, false, false);
            c.write(1, 0, TestData.random(711, 1 << 20));
            c.disconnect();
        }
        createSnapshot(server, vol, "S");
        Tools.Result r = server.cli("snapshot", "clone", vol, "S", "clonejson2", "--wait", "--json").assertOk();
        JsonNode j;
        try {
            j = JSON.readTree(r.stdout());
        } catch (IOException e) {
            throw new AssertionError("snapshot clone --wait --json must print one JSON document on stdout: " + r, e);
        }
        assertEquals("done", j.path("state").asText(), r.toString());
        assertTrue(r.stdout().strip().startsWith("{"), "no progress lines before the JSON on stdout: " + r);
    }

    // ---- overflow --------------------------------------------------------------------------------------------------

    /**
     * Volume 32M with a 4M save volume: 16M of data, a snapshot, then the 16M rewritten. Returns the new
     * production content. The connections passed in were opened to VOL@S before the overflow.
     */
    static byte[] overflow(String vol, long seed) throws IOException {
        newVolume(vol, "32M", "4M");
        byte[] first = TestData.random(seed, (int) (16 * MiB));
        Tools.run("nbdcopy", TestData.write(tmp.resolve(vol + "-1.img"), first).toString(), unix(vol)).assertOk();
        createSnapshot(server, vol, "S");
        return first;
    }

    static byte[] rewrite(String vol, long seed) {
        byte[] second = TestData.random(seed, (int) (16 * MiB));
        Path f = TestData.write(tmp.resolve(vol + "-2.img"), second);
        Tools.Result r = Tools.run("nbdcopy", f.toString(), unix(vol));
        assertEquals(0, r.exit(), "production writes never fail because the save volume is full: " + r);
        byte[] production = new byte[(int) (32 * MiB)];
        System.arraycopy(second, 0, production, 0, second.length);
        return production;
    }

    @Test
    void saveVolumeFullTerminatesTheSnapshotNotProduction() throws Exception {
        Tools.require("nbdcopy", "nbdinfo", "nbdsh");
        String vol = "overflow";
        byte[] first = overflow(vol, 801);
        try (RawNbd c = RawNbd.connect(server.port())) {
            c.negotiate(vol + "@S", false, false);      // simple replies, like the kernel client
            assertArrayEquals(Arrays.copyOfRange(first, 0, BLOCK), c.read(1, 0, BLOCK), "readable before the overflow");

            byte[] production = rewrite(vol, 802);
            assertExportEquals(production, vol, "production after the overflow");

            JsonNode s = snapshotEntry(server, vol, "S");
            assertEquals("invalid", s.path("state").asText(), s.toString());
            assertTrue(s.path("reason").asText().contains("save volume full"), s.toString());
            assertTrue(server.cli("snapshot", "list", vol).assertOk().stdout().contains("invalid: save volume full"));

            // The open connection: ENOSPC once, then ESHUTDOWN for every request.
            assertEquals(ENOSPC, SnapshotSupport.simpleRequestError(c, RawNbd.CMD_READ, 2, 0, BLOCK), "first request after the overflow");
            assertEquals(ESHUTDOWN, SnapshotSupport.simpleRequestError(c, RawNbd.CMD_READ, 3, 0, BLOCK), "second request");
            assertEquals(ESHUTDOWN, SnapshotSupport.simpleRequestError(c, RawNbd.CMD_READ, 4, 20 * MiB, BLOCK), "third request");
        }

        // New connections are refused at the handshake, with the reason.
        Tools.Result info = Tools.run(java.time.Duration.ofMinutes(1), Map.of("LIBNBD_DEBUG", "1"),
                List.of("nbdinfo", "--size", unix(vol + "@S")));
        assertNotEquals(0, info.exit(), "nbdinfo of a terminated snapshot: " + info);
        assertTrue(info.stderr().contains("save volume full"), "the refusal says why: " + info);
        try (RawNbd c = RawNbd.connect(server.port())) {
            c.startHandshake();
            List<RawNbd.OptReply> replies = c.go(vol + "@S");
            RawNbd.OptReply last = replies.get(replies.size() - 1);
            assertEquals(0x80000002, last.type(), "NBD_REP_ERR_POLICY: " + replies);
            assertTrue(last.text().contains("save volume full"), last.toString());
        }

        // Once the invalid snapshot is gone, snapshots work again.
        server.cli("snapshot", "delete", vol, "S").assertOk();
        assertEquals(0, saveChunksUsed(server, vol));
        createSnapshot(server, vol, "S2");
        byte[] atS2;
        try (Model m = new Model(vol, (int) (32 * MiB), 803)) {
            byte[] current = Files.readAllBytes(copyOut(unix(vol), tmp.resolve("overflow-now.img")));
            System.arraycopy(current, 0, m.content, 0, current.length);
            atS2 = m.copy();
            m.randomChanges(10);
            m.flush();
        }
        assertEquals("active", snapshotEntry(server, vol, "S2").path("state").asText());
        assertExportEquals(atS2, vol + "@S2", "a new snapshot after the overflow");
        assertTrue(saveChunksUsed(server, vol) > 0);
    }

    /**
     * The same overflow seen by clients that negotiated structured replies (libnbd, qemu): they too must get
     * ENOSPC once before ESHUTDOWN.
     */
    @Test
    void saveVolumeFullTellsStructuredReplyClientsEnospcOnce() throws Exception {
        Tools.require("nbdcopy");
        String vol = "overflow-sr";
        byte[] first = overflow(vol, 811);
        try (RawNbd c = RawNbd.connect(server.port())) {
            c.negotiate(vol + "@S", true, true);
            assertEquals(0, SnapshotSupport.structuredReadError(c, 1, 0, BLOCK), "readable before the overflow");
            rewrite(vol, 812);
            assertEquals("invalid", snapshotEntry(server, vol, "S").path("state").asText());
            int first1 = SnapshotSupport.structuredReadError(c, 2, 0, BLOCK);
            int second = SnapshotSupport.structuredReadError(c, 3, 0, BLOCK);
            int third = SnapshotSupport.structuredBlockStatusError(c, 4, 0, BLOCK);
            assertEquals(List.of(ENOSPC, ESHUTDOWN, ESHUTDOWN), List.of(first1, second, third),
                    "READ, READ, BLOCK_STATUS after the overflow on a structured-reply connection");
        }
        assertTrue(first.length > 0);
    }

    /** The same through libnbd (nbdsh): the connection opened before the overflow sees ENOSPC, then ESHUTDOWN. */
    @Test
    void saveVolumeFullSeenThroughNbdsh() throws Exception {
        Tools.require("nbdcopy", "nbdsh");
        String vol = "overflow-sh";
        overflow(vol, 821);
        Path flag = tmp.resolve("overflow-sh.flag");
        Path log = tmp.resolve("overflow-sh.log");
        Files.writeString(flag, "wait");
        Process p = Tools.start(log, List.of("nbdsh", "-u", unix(vol + "@S"), "-c", String.join("\n",
                "import os, time",
                "h.pread(4096, 0)",
                "print('connected', flush=True)",
                "deadline = time.time() + 300",
                "while os.path.exists(" + py(flag.toString()) + ") and time.time() < deadline:",
                "    time.sleep(0.05)",
                "for i in range(3):",
                "    try:",
                "        h.pread(4096, 0)",
                "        print('read ok', flush=True)",
                "    except nbd.Error as e:",
                "        print('errno', e.errno, flush=True)")));
        try {
            SnapshotSupport.awaitOutput(p, log, "connected");
            rewrite(vol, 822);
            assertEquals("invalid", snapshotEntry(server, vol, "S").path("state").asText());
        } finally {
            Files.deleteIfExists(flag);
            SnapshotSupport.end(p);
        }
        List<String> errnos = Files.readAllLines(log).stream().filter(l -> l.startsWith("errno") || l.startsWith("read ok")).toList();
        assertEquals(List.of("errno ENOSPC", "errno ESHUTDOWN", "errno ESHUTDOWN"), errnos, Files.readString(log));
    }

    /**
     * A snapshot taken of an empty volume needs no before-image at all (it reads zeros everywhere). When a
     * younger snapshot is terminated by an overflow, its before-images must not be handed to that older
     * snapshot: nobody can ever read them there, and the save volume would stay full, so every later snapshot
     * would be terminated at its first copy ("new snapshots work once space is free" would never happen).
     */
    @Test
    void overflowDoesNotParkUselessBeforeImagesInAnOlderSnapshot() throws Exception {
        Tools.require("nbdcopy");
        String vol = newVolume("overflow-old", "32M", "4M");
        createSnapshot(server, vol, "old");                  // the volume is empty: meta bit map all clear
        Tools.run("nbdcopy", TestData.write(tmp.resolve("overflow-old-1.img"), TestData.random(841, (int) (16 * MiB))).toString(),
                unix(vol)).assertOk();
        createSnapshot(server, vol, "young");
        byte[] production = rewrite(vol, 842);
        assertEquals("invalid", snapshotEntry(server, vol, "young").path("state").asText());
        assertExportEquals(new byte[(int) (32 * MiB)], vol + "@old", "old reads zeros");
        assertExportEquals(production, vol, "production");

        JsonNode old = snapshotEntry(server, vol, "old");
        assertEquals("active", old.path("state").asText(), old.toString());
        assertEquals(0, old.path("saveChunksUsed").asLong(),
                "old never had any of the rewritten blocks in use, so it must not hold their before-images: " + listSnapshots(server, vol));
        assertEquals(0, saveChunksUsed(server, vol), "the save volume is free again");

        createSnapshot(server, vol, "s3");
        try (RawNbd c = RawNbd.connect(server.port())) {
            c.negotiate(vol, false, false);
            c.write(1, 0, TestData.random(843, BLOCK));
            c.disconnect();
        }
        assertEquals("active", snapshotEntry(server, vol, "s3").path("state").asText(),
                "a new snapshot survives its first copy once the terminated one's space is free: " + listSnapshots(server, vol));
        assertExportEquals(production, vol + "@s3", "s3");
    }

    /** The same for an ordinary delete: before-images no older snapshot can read are freed, not moved. */
    @Test
    void deleteFreesBeforeImagesNoOlderSnapshotNeeds() throws Exception {
        Tools.require("nbdcopy");
        String vol = newVolume("delete-free", "32M", "8M");
        createSnapshot(server, vol, "old");                  // empty volume
        try (RawNbd c = RawNbd.connect(server.port())) {
            c.negotiate(vol, false, false);
            c.write(1, 0, TestData.random(851, (int) MiB));
            c.sendRequest(0, RawNbd.CMD_FLUSH, 2, 0, 0, null);
            assertEquals(0, c.readReply(0).error());
            createSnapshot(server, vol, "mid");
            c.write(3, 0, TestData.random(852, (int) MiB));
            c.sendRequest(0, RawNbd.CMD_FLUSH, 4, 0, 0, null);
            assertEquals(0, c.readReply(0).error());
            c.disconnect();
        }
        assertEquals(256, snapshotEntry(server, vol, "mid").path("saveChunksUsed").asLong(), "mid holds the 256 before-images");
        assertEquals(0, snapshotEntry(server, vol, "old").path("saveChunksUsed").asLong());
        server.cli("snapshot", "delete", vol, "mid").assertOk();
        assertExportEquals(new byte[(int) (32 * MiB)], vol + "@old", "old reads zeros");
        assertEquals(0, snapshotEntry(server, vol, "old").path("saveChunksUsed").asLong(),
                "old had none of these blocks in use: nobody can read mid's before-images any more: " + listSnapshots(server, vol));
        assertEquals(0, saveChunksUsed(server, vol));
    }

    /**
     * A terminated snapshot stays listed by NBD_OPT_LIST but refuses NBD_OPT_INFO/GO, so {@code nbdinfo --list}
     * (which asks every listed export for its details) exits 1 for the whole server from the first overflow on.
     */
    @Test
    void nbdinfoListStillWorksWhileASnapshotIsTerminated() throws Exception {
        Tools.require("nbdcopy", "nbdinfo");
        String vol = "overflow-list";
        overflow(vol, 831);
        rewrite(vol, 832);
        assertEquals("invalid", snapshotEntry(server, vol, "S").path("state").asText());
        Tools.Result r = Tools.run("nbdinfo", "--list", "--json", server.unixUri(""));
        assertEquals(0, r.exit(), "nbdinfo --list of a server with a terminated snapshot: " + r);
        assertTrue(r.stdout().contains("\"" + vol + "\""), r.toString());
    }

    // ---- persistence -----------------------------------------------------------------------------------------------

    @Test
    void snapshotsSurviveACleanRestartAndFsckIsClean() throws IOException {
        Tools.require("nbdcopy", "nbdinfo");
        String vol = newVolume("persist", "32M", "32M");
        Map<String, byte[]> expected = new LinkedHashMap<>();
        byte[] production;
        try (Model m = new Model(vol, (int) (32 * MiB), 901)) {
            m.write(0, TestData.imageWithZeroRegions(902, (int) (32 * MiB)));
            for (int i = 1; i <= 3; i++) {
                m.flush();
                createSnapshot(server, vol, "p" + i);
                expected.put("p" + i, m.copy());
                m.randomChanges(50);
            }
            m.flush();
            production = m.copy();
        }
        JsonNode before = listSnapshots(server, vol);
        Map<String, List<long[]>> maps = new LinkedHashMap<>();
        for (String s : expected.keySet()) {
            maps.put(s, map(unix(vol + "@" + s), "base:allocation"));
        }

        assertEquals(0, server.stop());
        Tools.Result fsck = ServerProcess.snapbd(data, "fsck", vol).assertExit(0);
        assertTrue(fsck.stdout().contains(vol + ": clean"), fsck.toString());
        server.restart();
        assertFalse(server.log().contains("not stopped cleanly"), server.log());

        JsonNode after = listSnapshots(server, vol);
        assertEquals(before.path("snapshots").toString(), after.path("snapshots").toString(), "snapshot list across the restart");
        assertEquals(before.path("saveVolume").toString(), after.path("saveVolume").toString());
        for (Map.Entry<String, byte[]> e : expected.entrySet()) {
            assertExportEquals(e.getValue(), vol + "@" + e.getKey(), e.getKey() + " after a clean restart");
            assertEquals(show(maps.get(e.getKey())), show(map(unix(vol + "@" + e.getKey()), "base:allocation")));
        }
        assertExportEquals(production, vol, "production after a clean restart");
    }

    /**
     * kill -9 while fio writes at random over TCP and snapshots are being taken: after the restart every
     * snapshot still reads exactly what it read right after it was created, and fsck is clean after a
     * clean stop.
     */
    @Test
    void kill9DuringARandomWriteLoadWithSnapshotsBeingCreated() throws Exception {
        Tools.require("nbdcopy", "fio");
        String vol = newVolume("crash", "32M", "192M");
        Tools.run("nbdcopy", TestData.write(tmp.resolve("crash-in.img"), TestData.imageWithZeroRegions(1001, (int) (32 * MiB))).toString(),
                unix(vol)).assertOk();

        Path fioLog = tmp.resolve("crash-fio.log");
        Process fio = Tools.start(fioLog, List.of("fio", "--name=load", "--ioengine=nbd", "--uri=" + server.tcpUri(vol),
                "--rw=randwrite", "--bsrange=512-16k", "--iodepth=16", "--numjobs=2", "--size=32M",
                "--rate_iops=500", "--time_based", "--runtime=600"));
        Map<String, String> sums = new LinkedHashMap<>();
        try {
            long requests0 = requests(vol);
            for (int i = 0; i < 3000 && requests(vol) < requests0 + 1000; i++) {     // up to 5 min
                assertTrue(fio.isAlive(), "fio ended early: " + Files.readString(fioLog));
                Thread.sleep(100);
            }
            for (int i = 1; i <= 8; i++) {
                String name = "c" + i;
                createSnapshot(server, vol, name);
                sums.put(name, sha256(copyOut(unix(vol + "@" + name), tmp.resolve("crash-" + name + ".img"))));
                assertTrue(fio.isAlive(), "the load still runs: " + Files.readString(fioLog));
                Thread.sleep(500);
            }
            JsonNode list = listSnapshots(server, vol);
            for (JsonNode s : list.path("snapshots")) {
                assertEquals("active", s.path("state").asText(), "the save volume is big enough for this test: " + list);
            }
            // The kill must come under load: fio still running and requests still arriving right before it.
            long before = requests(vol);
            long last = before;
            for (int i = 0; i < 1200 && last < before + 200; i++) {     // up to 1 min
                Thread.sleep(50);
                last = requests(vol);
            }
            assertTrue(last >= before + 200, "the load was not running before the kill: " + (last - before)
                    + " requests in the last window; fio: " + Files.readString(fioLog));
            assertTrue(fio.isAlive(), "fio ended before the kill: " + Files.readString(fioLog));
            server.kill9();
        } finally {
            SnapshotSupport.stopNow(fio);   // ours; it would otherwise keep retrying until its runtime ends
        }

        server.restart();
        assertTrue(server.log().contains("volume " + vol + " was not stopped cleanly"), server.log());
        assertEquals(new ArrayList<>(sums.keySet()), snapshotNames(server, vol));
        for (Map.Entry<String, String> e : sums.entrySet()) {
            assertEquals("active", snapshotEntry(server, vol, e.getKey()).path("state").asText());
            assertEquals(e.getValue(), sha256(copyOut(unix(vol + "@" + e.getKey()), tmp.resolve("crash-after.img"))),
                    e.getKey() + " after kill -9 and restart");
        }
        String production = sha256(copyOut(unix(vol), tmp.resolve("crash-prod.img")));

        assertEquals(0, server.stop());
        Tools.Result fsck = ServerProcess.snapbd(data, "fsck", vol).assertExit(0);
        assertTrue(fsck.stdout().contains(vol + ": clean"), fsck.toString());
        server.restart();
        for (Map.Entry<String, String> e : sums.entrySet()) {
            assertEquals(e.getValue(), sha256(copyOut(unix(vol + "@" + e.getKey()), tmp.resolve("crash-after.img"))),
                    e.getKey() + " after the clean restart");
        }
        assertEquals(production, sha256(copyOut(unix(vol), tmp.resolve("crash-prod2.img"))), "production across the clean restart");
    }

    /** The export's request count from {@code status}, through the admin socket: polled, so no JVM per call. */
    static long requests(String export) throws IOException {
        try (SnapshotSupport.Admin admin = new SnapshotSupport.Admin(server)) {
            for (JsonNode v : admin.call(Map.of("command", "status")).path("volumes")) {
                if (v.path("name").asText().equals(export)) {
                    return v.path("requests").asLong();
                }
            }
        }
        return -1;
    }

    /** {@code snapshot list}'s save chunks in use, through the admin socket (for polls). */
    static long adminSaveChunksUsed(SnapshotSupport.Admin admin, String volume) throws IOException {
        return admin.call(Map.of("command", "snapshot.list", "volume", volume)).path("saveVolume").path("chunksUsed").asLong();
    }
}

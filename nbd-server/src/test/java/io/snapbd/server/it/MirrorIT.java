package io.snapbd.server.it;

import com.fasterxml.jackson.databind.JsonNode;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.io.TempDir;

import java.io.RandomAccessFile;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.concurrent.TimeUnit;

import static io.snapbd.server.it.SnapshotSupport.json;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Mirrored volumes with file legs against the real server and real clients (docs/mirrors.md; Symantec
 * behaviours cited per test): fio writes through NBD, {@code kill -9} under load, reconciliation at the restart
 * before any client is served, every leg byte-identical over the volume's range, acknowledged data verified, and
 * the bytes reconciliation copied bounded by the bytes of the writes that were in flight.
 */
@Timeout(value = 20, unit = TimeUnit.MINUTES)
@ExtendWith(ServerLiveness.class)
class MirrorIT {

    static final String VOL = "m";
    static final long SIZE = 64L << 20;
    static final int JOBS = 2;
    static final int DEPTH = 16;
    static final int MAX_BS = 16 << 10;
    /**
     * Bytes of writes answered whose data-force batch may not have completed at a crash (docs/mirrors.md, "Write
     * order": at most 1024 changes wait for a batch), which reconciliation may copy besides the writes in flight.
     */
    static final long UNFORCED_BOUND = 1024L * MAX_BS;

    @TempDir
    Path tmp;

    static String sha256(Path f, long size) throws Exception {
        MessageDigest md = MessageDigest.getInstance("SHA-256");
        byte[] buf = new byte[1 << 20];
        try (RandomAccessFile r = new RandomAccessFile(f.toFile(), "r")) {
            long left = size;
            while (left > 0) {
                int n = r.read(buf, 0, (int) Math.min(buf.length, left));
                if (n < 0) {
                    throw new AssertionError(f + " is shorter than " + size + " bytes");
                }
                md.update(buf, 0, n);
                left -= n;
            }
        }
        return HexFormat.of().formatHex(md.digest());
    }

    static List<String> fioVerify(String uri, String... extra) {
        List<String> cmd = new ArrayList<>(List.of("fio", "--name=acked", "--ioengine=nbd", "--uri=" + uri,
                "--rw=write", "--bs=64k", "--offset=0", "--size=32M", "--verify=crc32c", "--verify_fatal=1",
                "--verify_state_save=0"));
        cmd.addAll(List.of(extra));
        return cmd;
    }

    static void assertVerified(Tools.Result r) {
        r.assertOk();
        assertFalse(r.stdout().contains("verify: bad") || r.stderr().contains("verify: bad"), r.toString());
        assertTrue(r.stdout().contains("Run status group"), r.toString());
    }

    static long requests(ServerProcess server) {
        for (JsonNode v : json(server.cli("status", "--json")).path("volumes")) {
            if (v.path("name").asText().equals(VOL)) {
                return v.path("requests").asLong();
            }
        }
        return -1;
    }

    /**
     * Starts fio's random writes (512 B to 16 KiB, depth {@link #DEPTH}, {@link #JOBS} connections) over the second
     * half of {@code uri}, waits until the server has taken 300 requests of it, and kills the server with SIGKILL
     * under that load.
     */
    static void kill9UnderLoad(ServerProcess server, String uri, Path fioLog) throws Exception {
        Process fio = Tools.start(fioLog, List.of("fio", "--name=load", "--ioengine=nbd", "--uri=" + uri,
                "--rw=randwrite", "--bsrange=512-16k", "--blockalign=512", "--iodepth=" + DEPTH, "--numjobs=" + JOBS,
                "--offset=32M", "--size=32M", "--time_based", "--runtime=600"));
        try {
            long before = requests(server);
            long last = before;
            for (int i = 0; i < 600 && last < before + 300; i++) {
                assertTrue(fio.isAlive(), "fio ended early: " + Files.readString(fioLog));
                Thread.sleep(100);
                last = requests(server);
            }
            assertTrue(last >= before + 300, "the load was not running: " + Files.readString(fioLog));
            assertTrue(fio.isAlive(), "fio ended before the kill: " + Files.readString(fioLog));
            server.kill9();
        } finally {
            SnapshotSupport.stopNow(fio);
        }
    }

    /**
     * Restarts the server after {@link #kill9UnderLoad}: reconciliation ran at open (log and {@code mirror status}),
     * copied at most the bytes the writes in flight can cover, and left every leg in sync. Returns the mirror status.
     */
    static JsonNode restartReconciled(ServerProcess server, String who) throws Exception {
        server.restart();
        String log = server.log();
        assertTrue(log.contains("volume " + VOL + ": mirror legs reconciled after an unclean stop"), log);
        JsonNode after = json(server.cli("mirror", "status", VOL, "--json"));
        JsonNode rec = after.path("lastReconciliation");
        assertTrue(rec.path("atOpen").asBoolean(), after.toString());
        long copied = rec.path("bytesCopied").asLong();
        long inFlightBound = (long) JOBS * DEPTH * MAX_BS + UNFORCED_BOUND;
        System.out.println(who + ": reconciliation after kill -9: " + rec + "; bytes copied " + copied
                + ", bytes of writes that can have been in flight or answered and not yet forced at most " + inFlightBound);
        assertTrue(copied <= inFlightBound, "copied " + copied + " bytes, more than the " + inFlightBound
                + " bytes the writes in flight can cover: " + after);
        for (JsonNode l : after.path("legs")) {
            assertEquals("in-sync", l.path("state").asText(), after.toString());
        }
        return after;
    }

    /**
     * Behaviours 1, 8, 13–19, 25–26: a volume with two file legs; fio writes and verifies the first half
     * (acknowledged writes), then writes at random over the second half at depth 16 on two connections, and the
     * server is killed with SIGKILL under that load. At the restart reconciliation runs before any client is
     * served (the report is in the log and in {@code mirror status}); data.img and both legs hash the same over
     * the volume's size; fio's verify pass over the first half succeeds; reconciliation copied at most the bytes
     * of the writes in flight at the kill (at most jobs × depth × largest request).
     */
    @Test
    void symantec8_13_19_26_kill9UnderFioLoadThenLegsIdenticalAndOnlyInFlightBytesCopied() throws Exception {
        Tools.require("fio");
        Path data = tmp.resolve("data");
        Path leg1 = tmp.resolve("leg1.img");
        Path leg2 = tmp.resolve("leg2.img");
        ServerProcess.snapbd(data, "volume", "create", VOL, "--size", "64M", "--save-size", "1M",
                "--mirror", leg1.toString(), "--mirror", leg2.toString()).assertOk();
        Path local = data.resolve("volumes").resolve(VOL).resolve("data.img");
        int metricsPort = DamagedVolumeIT.freePort();
        Path conf = tmp.resolve("metrics.conf");
        Files.writeString(conf, "metrics = 127.0.0.1:" + metricsPort + "\n");
        try (ServerProcess server = ServerProcess.start(data, "MirrorIT", "--warm-up", "off", "--config", conf.toString())) {
            assertVerified(Tools.run(Tools.DEFAULT_TIMEOUT, null, fioVerify(server.tcpUri(VOL), "--do_verify=1")));
            JsonNode st = json(server.cli("mirror", "status", VOL, "--json"));
            assertEquals(3, st.path("legs").size(), st.toString());
            for (JsonNode l : st.path("legs")) {
                assertEquals("in-sync", l.path("state").asText(), st.toString());
                assertTrue(l.path("writes").asLong() >= 512, "every leg took every 64 KiB write: " + st);
            }
            // hot regions (docs/mirrors.md): the writes made regions hot (one forced region entry each), the rest of
            // their writes left their ENTRY unforced; the bound is shown
            JsonNode hot = st.path("hotRegions");
            assertEquals(256, hot.path("cap").asInt(), st.toString());
            assertEquals(1 << 20, hot.path("regionBytes").asLong(), st.toString());
            assertTrue(hot.path("regionEntries").asLong() > 0 && hot.path("unforcedChanges").asLong() > 0, st.toString());
            assertTrue(hot.path("now").asInt() <= 256, st.toString());

            kill9UnderLoad(server, server.tcpUri(VOL), tmp.resolve("load-fio.log"));
            JsonNode after = restartReconciled(server, "MirrorIT");
            long copied = after.path("lastReconciliation").path("bytesCopied").asLong();
            String metrics = DamagedVolumeIT.metrics(metricsPort);
            double metricCopied = -1;
            for (String line : metrics.split("\n")) {
                if (line.startsWith("snapbd_mirror_reconcile_copied_bytes_total{volume=\"" + VOL + "\"}")) {
                    metricCopied = Double.parseDouble(line.substring(line.lastIndexOf(' ') + 1));
                }
            }
            assertEquals(copied, metricCopied, 0.0, "the metric shows the bytes reconciliation copied: " + metrics);
            assertEquals(3, metrics.lines().filter(l -> l.startsWith("snapbd_mirror_leg_table_entries{volume=\"" + VOL + "\"")).count(), metrics);
            // No client has written since the restart: the files are what reconciliation left.
            String h0 = sha256(local, SIZE);
            assertEquals(h0, sha256(leg1, SIZE), "leg 1 differs from data.img after reconciliation");
            assertEquals(h0, sha256(leg2, SIZE), "leg 2 differs from data.img after reconciliation");
            assertVerified(Tools.run(Tools.DEFAULT_TIMEOUT, null, fioVerify(server.tcpUri(VOL), "--verify_only")));

            assertEquals(0, server.stop());
            String c0 = sha256(local, SIZE);
            assertEquals(c0, sha256(leg1, SIZE), "leg 1 after a clean stop");
            assertEquals(c0, sha256(leg2, SIZE), "leg 2 after a clean stop");
            Tools.Result fsck = ServerProcess.snapbd(data, "fsck", VOL).assertExit(0);
            assertTrue(fsck.stdout().contains(VOL + ": clean"), fsck.toString());
        }
    }

    /**
     * Behaviours 4–8 and 14: {@code snapshot restore} reaches the leg (legs identical after it, the restored
     * data verifies), {@code mirror reconcile} on demand on a running server (nothing to copy after answered
     * changes), and fsck verifies each leg's tag table: a damaged one is a problem naming the file (exit 4).
     */
    @Test
    void symantec4_8_14_restoreIsMirroredReconcileOnDemandAndFsckNamesADamagedLegTable() throws Exception {
        Tools.require("fio");
        Path data = tmp.resolve("data");
        Path leg1 = tmp.resolve("leg1.img");
        ServerProcess.snapbd(data, "volume", "create", VOL, "--size", "64M", "--save-size", "8M",
                "--mirror", leg1.toString()).assertOk();
        Path local = data.resolve("volumes").resolve(VOL).resolve("data.img");
        try (ServerProcess server = ServerProcess.start(data, "MirrorIT-reconcile", "--warm-up", "off")) {
            assertVerified(Tools.run(Tools.DEFAULT_TIMEOUT, null, fioVerify(server.unixUri(VOL), "--size=4M", "--do_verify=1")));
            // snapshot restore changes production: it is mirrored too (each restore run is a tagged change)
            server.cli("snapshot", "create", VOL, "s1").assertOk();
            Tools.run(Tools.DEFAULT_TIMEOUT, null, List.of("fio", "--name=overwrite", "--ioengine=nbd", "--uri=" + server.unixUri(VOL),
                    "--rw=randwrite", "--bs=4k", "--size=4M", "--io_size=2M", "--end_fsync=1")).assertOk();
            // the FLUSH at the end: with the snapshot, answered writes may still be staged behind the copy-on-write
            // force (the legs got them through the volume's read, data.img gets them when the committer applies
            // them); a FLUSH waits for that, so data.img is comparable with the leg (with hot regions writes come
            // fast enough to catch the committer behind)
            String overwritten = sha256(local, SIZE);
            assertEquals(overwritten, sha256(leg1, SIZE), "leg 1 differs from data.img after the overwrite");
            server.cli("snapshot", "restore", VOL, "s1").assertOk();
            String restored = sha256(local, SIZE);
            assertFalse(restored.equals(overwritten), "the restore changed production");
            assertEquals(restored, sha256(leg1, SIZE), "leg 1 differs from data.img after snapshot restore");
            assertVerified(Tools.run(Tools.DEFAULT_TIMEOUT, null, fioVerify(server.unixUri(VOL), "--size=4M", "--verify_only")));
            JsonNode r = json(server.cli("mirror", "reconcile", VOL, "--json"));
            JsonNode rec = r.path("lastReconciliation");
            assertFalse(rec.path("atOpen").asBoolean(), r.toString());
            assertEquals(0, rec.path("bytesCopied").asLong(), "answered writes are matched, nothing to copy: " + r);
            JsonNode stats = json(server.cli("stats", "--json"));
            assertTrue(stats.toString().contains("\"mirror\""), stats.toString());
            assertEquals(0, server.stop());
        }
        Path table = leg1.resolveSibling("leg1.img.tags");
        try (RandomAccessFile f = new RandomAccessFile(table.toFile(), "rw")) {
            for (long pos : new long[]{20, 2048 + 20}) {         // both header copies
                f.seek(pos);
                int b = f.read();
                f.seek(pos);
                f.write(b ^ 0xff);
            }
        }
        Tools.Result fsck = ServerProcess.snapbd(data, "fsck", VOL).assertExit(4);
        assertTrue(fsck.stdout().contains(table.toString()), fsck.toString());
    }

    /**
     * {@code mirror add} and {@code mirror remove} through the CLI on the stopped volume (with a server running
     * they are online changes: {@code OnlineMirrorIT}): add copies the volume in full (plain progress lines, 100 % at the end) and
     * the new leg is byte-identical to data.img; remove takes the first leg out (the new one moves to place 1, keeping its id 2),
     * fsck is clean, and the server serves the volume with its legs in sync.
     */
    @Test
    void mirrorAddAndRemoveOnAStoppedVolume() throws Exception {
        Tools.require("fio");
        Path data = tmp.resolve("data");
        Path leg1 = tmp.resolve("leg1.img");
        Path leg2 = tmp.resolve("leg2.img");
        ServerProcess.snapbd(data, "volume", "create", VOL, "--size", "64M", "--save-size", "1M",
                "--mirror", leg1.toString()).assertOk();
        Path local = data.resolve("volumes").resolve(VOL).resolve("data.img");
        try (ServerProcess server = ServerProcess.start(data, "MirrorIT-add", "--warm-up", "off")) {
            assertVerified(Tools.run(Tools.DEFAULT_TIMEOUT, null, fioVerify(server.unixUri(VOL), "--do_verify=1")));
            assertEquals(0, server.stop());
        }
        Tools.Result add = ServerProcess.snapbd(data, "mirror", "add", VOL, leg2.toString()).assertOk();
        assertTrue(add.stdout().contains("mirror add " + VOL + ": 100.0%"), add.toString());
        assertEquals(sha256(local, SIZE), sha256(leg2, SIZE), "a full copy");
        ServerProcess.snapbd(data, "mirror", "remove", VOL, leg1.toString()).assertOk();
        JsonNode st = json(ServerProcess.snapbd(data, "mirror", "status", VOL, "--json"));
        assertEquals(2, st.path("legs").size(), st.toString());
        assertEquals(leg2.toString(), st.path("legs").get(1).path("uri").asText(), st.toString());
        ServerProcess.snapbd(data, "fsck", VOL).assertExit(0);
        try (ServerProcess server = ServerProcess.start(data, "MirrorIT-add2", "--warm-up", "off")) {
            assertVerified(Tools.run(Tools.DEFAULT_TIMEOUT, null, fioVerify(server.unixUri(VOL), "--offset=32M",
                    "--do_verify=1")));
            assertEquals(0, server.stop());
        }
        assertEquals(sha256(local, SIZE), sha256(leg2, SIZE), "the added leg takes changes");
    }
}

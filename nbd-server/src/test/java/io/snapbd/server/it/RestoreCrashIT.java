package io.snapbd.server.it;

import com.fasterxml.jackson.databind.JsonNode;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.TimeUnit;

import static io.snapbd.server.it.SnapshotSupport.copyOut;
import static io.snapbd.server.it.SnapshotSupport.createSnapshot;
import static io.snapbd.server.it.SnapshotSupport.json;
import static io.snapbd.server.it.SnapshotSupport.sha256;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * kill -9 of the server 0–300 ms after a {@code snapshot.restore} request (issue 21 C): after the restart,
 * production is either its content before the restore or exactly the snapshot's, never a mix; when the server
 * says it resumed an interrupted restore, it is the snapshot's. Every snapshot keeps its content, and fsck is
 * clean after a clean stop.
 */
@Timeout(value = 30, unit = TimeUnit.MINUTES)
@ExtendWith(ServerLiveness.class)
class RestoreCrashIT {

    static final int SIZE = 256 << 20;
    static final int BLOCK = 4096;
    static final String VOL = "r";
    static final int ROUNDS = 5;

    /** A fresh volume and server for each test; the kill -9 test kills and restarts it through {@link ServerProcess}. */
    @RegisterExtension
    static final SnapbdServerExtension SNAPBD = SnapbdServerExtension.builder("RestoreCrashIT").volume(VOL, "256M", "256M")
            .serveArgs("--warm-up", "off").perTest().build();

    @TempDir
    Path tmp;

    @Test
    void kill9DuringARestoreLeavesProductionOldOrRestored() throws Exception {
        Tools.require("nbdcopy");
        Path data = SNAPBD.dataDir();
        ServerProcess server = SNAPBD.server();
        Random rnd = new Random(2121);
        byte[] content = TestData.imageWithZeroRegions(2121, SIZE);
        Path image = tmp.resolve("prod.img");
        int resumedRounds = 0;
        List<String> outcomes = new ArrayList<>();
        Tools.run("nbdcopy", TestData.write(tmp.resolve("in.img"), content).toString(), server.unixUri(VOL)).assertOk();
        for (int round = 1; round <= ROUNDS; round++) {
            // Through the admin socket: a JVM per call would add seconds to every round.
            try (SnapshotSupport.Admin admin = new SnapshotSupport.Admin(server)) {
                for (JsonNode old : admin.call(Map.of("command", "snapshot.list", "volume", VOL)).path("snapshots")) {
                    admin.call(Map.of("command", "snapshot.delete", "volume", VOL, "name", old.path("name").asText()));
                }
            }
            // Snapshots a, b, c with 2 s of random writes before each, and after c.
            Map<String, String> sums = new LinkedHashMap<>();
            try (RawNbd c = RawNbd.connect(server.port())) {
                c.negotiate(VOL, false, false);
                long[] handle = {1};
                for (String s : List.of("a", "b", "c")) {
                    randomWrites(c, handle, content, rnd);
                    createSnapshot(server, VOL, s);
                    sums.put(s, sha256(content));
                }
                randomWrites(c, handle, content, rnd);
                c.sendRequest(0, RawNbd.CMD_FLUSH, handle[0]++, 0, 0, null);
                assertEquals(0, c.readReply(0).error(), "FLUSH");
                c.disconnect();
            }
            String before = sha256(content);
            assertEquals(before, sha256(copyOut(server.unixUri(VOL), image)), "production matches the model before the restore");
            String target = List.of("a", "b", "c").get((round - 1) % 3);     // head, middle, tail in turn
            int delay = rnd.nextInt(301);

            // Left open until the kill: closing it first could make the server see EOF before it read the line.
            try (SocketChannel admin = send(data, "{\"command\":\"snapshot.restore\",\"volume\":\"" + VOL
                    + "\",\"name\":\"" + target + "\",\"force\":true}")) {
                Thread.sleep(delay);
                server.kill9();
            }
            server.restart();

            String log = server.log();
            String after = sha256(copyOut(server.unixUri(VOL), image));
            boolean resumed = log.contains("resumed the interrupted restore of volume " + VOL + " from snapshot " + target);
            String outcome = "round " + round + ": restore of " + target + ", kill after " + delay + " ms: "
                    + (after.equals(before) ? "old content" : after.equals(sums.get(target)) ? "snapshot's content" : "MIXED")
                    + (resumed ? " (resumed at start)" : "");
            outcomes.add(outcome);
            System.out.println(outcome);
            if (resumed) {
                resumedRounds++;
                assertEquals(sums.get(target), after, outcome + ": a resumed restore ends with the snapshot's content\n" + log);
            } else {
                assertTrue(after.equals(before) || after.equals(sums.get(target)),
                        outcome + ": production must be its old content or the snapshot's\n" + String.join("\n", outcomes));
            }
            for (Map.Entry<String, String> e : sums.entrySet()) {
                assertEquals(e.getValue(), sha256(copyOut(server.unixUri(VOL + "@" + e.getKey()), tmp.resolve("snap.img"))),
                        outcome + ": snapshot " + e.getKey() + " keeps its content");
            }
            JsonNode st = json(server.cli("status", "--json"));
            for (JsonNode v : st.path("volumes")) {
                assertTrue(v.path("restore").isMissingNode(), "no restore in progress after the start: " + v);
            }
            content = Files.readAllBytes(image);
        }
        assertEquals(0, server.stop());
        Tools.Result fsck = ServerProcess.snapbd(data, "fsck", VOL).assertExit(0);
        assertTrue(fsck.stdout().contains(VOL + ": clean"), fsck.toString());
        // The kill must have come while restores ran, or the rounds prove nothing.
        assertTrue(resumedRounds > 0, "no round killed a restore in progress: " + outcomes);
    }

    /**
     * While a restore runs, {@code status} and {@code snapshot list} say so (and which snapshot), and a new client
     * of the volume is refused with the reason instead of seeing production half restored; afterwards all is back.
     */
    @Test
    void statusAndSnapshotListShowARestoreWhileItRunsAndNewClientsWait() throws Exception {
        Tools.require("nbdcopy");
        Path data = SNAPBD.dataDir();
        ServerProcess server = SNAPBD.server();
        Random rnd = new Random(77);
        byte[] content = TestData.imageWithZeroRegions(77, SIZE);
        Tools.run("nbdcopy", TestData.write(tmp.resolve("in.img"), content).toString(), server.unixUri(VOL)).assertOk();
        String sumA;
        try (RawNbd c = RawNbd.connect(server.port())) {
            c.negotiate(VOL, false, false);
            long[] handle = {1};
            createSnapshot(server, VOL, "a");
            sumA = sha256(content);
            for (String s : List.of("b", "c")) {
                randomWrites(c, handle, content, rnd);
                createSnapshot(server, VOL, s);
            }
            randomWrites(c, handle, content, rnd);
            c.disconnect();
        }
        List<String> seen = new ArrayList<>();
        try (SocketChannel restore = send(data, "{\"command\":\"snapshot.restore\",\"volume\":\"" + VOL
                + "\",\"name\":\"a\",\"force\":true}");
             SnapshotSupport.Admin admin = new SnapshotSupport.Admin(server)) {
            restore.configureBlocking(false);
            ByteBuffer answer = ByteBuffer.allocate(1 << 16);
            while (restore.read(answer) >= 0 && !new String(answer.array(), 0, answer.position(), StandardCharsets.UTF_8).contains("\n")) {
                JsonNode st = admin.call(Map.of("command", "status"));
                for (JsonNode v : st.path("volumes")) {
                    if (v.has("restore")) {
                        seen.add("status: " + v.path("restore"));
                    }
                }
                JsonNode list = admin.call(Map.of("command", "snapshot.list", "volume", VOL));
                if (list.has("restore")) {
                    seen.add("list: " + list.path("restore") + " " + list.path("snapshots").get(0).path("restoring"));
                }
                try (RawNbd c = RawNbd.connect(server.port())) {
                    c.startHandshake();
                    List<RawNbd.OptReply> go = c.go(VOL);
                    RawNbd.OptReply last = go.get(go.size() - 1);
                    if (last.isError()) {
                        seen.add("refused: " + last.text());
                    }
                }
            }
            String reply = new String(answer.array(), 0, answer.position(), StandardCharsets.UTF_8);
            assertTrue(reply.contains("\"ok\":true"), reply);
        }
        assertTrue(seen.stream().anyMatch(x -> x.startsWith("status: ") && x.contains("\"snapshot\":\"a\"")
                && x.contains("\"state\":\"in progress\"")), "status showed the restore: " + seen);
        assertTrue(seen.stream().anyMatch(x -> x.startsWith("list: ") && x.endsWith(" true")),
                "snapshot list showed the restore and marked a: " + seen);
        assertTrue(seen.stream().anyMatch(x -> x.startsWith("refused: ") && x.contains("restore from snapshot a in progress")),
                "a new client was refused while it ran: " + seen);
        for (JsonNode v : json(server.cli("status", "--json")).path("volumes")) {
            assertTrue(v.path("restore").isMissingNode(), "nothing in progress afterwards: " + v);
        }
        assertFalse(server.cli("snapshot", "list", VOL).assertOk().stdout().contains("restore from"));
        assertEquals(sumA, sha256(copyOut(server.unixUri(VOL), tmp.resolve("after.img"))), "production is a");
    }

    /** About 2 s of writes of 1 byte to 128 KiB at random offsets (paced, so the save volume never fills). */
    private static void randomWrites(RawNbd c, long[] handle, byte[] content, Random rnd) throws IOException,
            InterruptedException {
        long end = System.nanoTime() + 2_000_000_000L;
        while (System.nanoTime() < end) {
            int len = 1 + rnd.nextInt(128 << 10);
            int off = rnd.nextInt(content.length - len);
            byte[] b = new byte[len];
            rnd.nextBytes(b);
            c.write(handle[0]++, off, b);
            System.arraycopy(b, 0, content, off, len);
            Thread.sleep(5);
        }
    }

    /** Sends one admin request and returns at once (the answer is never read: the server is killed meanwhile). */
    private static SocketChannel send(Path data, String line) throws IOException {
        SocketChannel ch = SocketChannel.open(StandardProtocolFamily.UNIX);
        ch.connect(UnixDomainSocketAddress.of(data.resolve("admin.sock")));
        ByteBuffer b = ByteBuffer.wrap((line + "\n").getBytes(StandardCharsets.UTF_8));
        while (b.hasRemaining()) {
            ch.write(b);
        }
        return ch;
    }
}

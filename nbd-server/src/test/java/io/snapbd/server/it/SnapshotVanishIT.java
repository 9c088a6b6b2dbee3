package io.snapbd.server.it;

import com.fasterxml.jackson.databind.JsonNode;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import java.io.DataInputStream;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.function.BooleanSupplier;

import static io.snapbd.server.it.SnapshotSupport.ENOSPC;
import static io.snapbd.server.it.SnapshotSupport.ESHUTDOWN;
import static io.snapbd.server.it.SnapshotSupport.createSnapshot;
import static io.snapbd.server.it.SnapshotSupport.snapshotEntry;
import static io.snapbd.server.it.SnapshotSupport.snapshotNames;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * A snapshot export that goes away (save volume full, or {@code snapshot delete --force}) while a READ's reply
 * is on its way, on a raw socket whose reader stalls: the announced payload must arrive in full, with the
 * snapshot's content, followed by well-formed replies to the requests queued behind it; or, once the server's
 * grace for reads in flight has run out, the connection must end. Never may a reply appear inside a payload.
 */
@Timeout(value = 10, unit = TimeUnit.MINUTES)
@ExtendWith(ServerLiveness.class)
class SnapshotVanishIT {

    static final int MiB = 1 << 20;
    static final int VOLUME = 64 * MiB;
    static final int BIG = 32 * MiB;
    static final int SMALL = 4096;
    static final long SMALL_OFFSET = 40L * MiB;
    static final long H_BIG = 0x1111;
    static final long H_SMALL = 0x2222;
    static final long H_STATUS = 0x3333;

    @TempDir
    static Path tmp;
    // A grace far beyond any stall of this test: the removal must wait for the read, however slow the machine.
    @RegisterExtension
    static final SnapbdServerExtension SNAPBD = SnapbdServerExtension.builder("SnapshotVanishIT").volume("first", "8M", "1M")
            .serveArgs("--snapshot-read-grace", "600", "--warm-up", "off").build();
    static final ServerProcess server = SNAPBD.server();

    enum Vanish { TERMINATE, DELETE }

    @Test
    void terminatedWhileASimpleReplyIsSent() throws Exception {
        vanishDuringRead(server, "term-simple", false, Vanish.TERMINATE, 101);
    }

    @Test
    void terminatedWhileAStructuredReplyIsSent() throws Exception {
        vanishDuringRead(server, "term-sr", true, Vanish.TERMINATE, 102);
    }

    @Test
    void deletedWhileASimpleReplyIsSent() throws Exception {
        vanishDuringRead(server, "del-simple", false, Vanish.DELETE, 103);
    }

    @Test
    void deletedWhileAStructuredReplyIsSent() throws Exception {
        vanishDuringRead(server, "del-sr", true, Vanish.DELETE, 104);
    }

    /**
     * When the reader stalls beyond the grace, the terminate goes ahead (production must not wait forever) and
     * the read is cut off: what arrived is a prefix of the snapshot's content, then the connection closes.
     */
    @Test
    void aReaderStalledBeyondTheGraceIsCutOffNotDesynced() throws Exception {
        Path data = tmp.resolve("hasty");
        ServerProcess.snapbd(data, "volume", "create", "first", "--size", "8M", "--save-size", "1M").assertOk();
        try (ServerProcess s = ServerProcess.start(data, "SnapshotVanishIT-hasty", "--snapshot-read-grace", "1", "--warm-up", "off")) {
            String vol = "cut";
            byte[] content = filledVolumeWithSnapshot(s, vol, 105);
            try (RawNbd r = RawNbd.connect(s.port(), 64 << 10)) {
                r.negotiate(vol + "@s", false, false);
                startBigRead(r, false);
                DataInputStream in = r.in();
                byte[] head = new byte[MiB];
                in.readFully(head);
                assertRange(content, 0, head, 0, MiB, "the first MiB");

                CompletableFuture<Void> overwrite = CompletableFuture.runAsync(() -> overwrite(s, vol, 205));
                try (SnapshotSupport.Admin admin = new SnapshotSupport.Admin(s)) {
                    await(s, "the terminate went ahead after the grace", () -> !active(admin, vol));
                }
                byte[] rest = r.assertClosedByServer("a read cut off by the terminate");
                assertTrue(rest.length < BIG - MiB, "the read was cut off (" + rest.length + " more bytes came)");
                assertRange(content, MiB, rest, 0, rest.length, "what came before the close");
                overwrite.get(5, TimeUnit.MINUTES);
            }
            assertTrue(s.log().contains("still in flight after"), "the server says it cut reads off:\n" + s.log());
            JsonNode e = snapshotEntry(s, vol, "s");
            assertEquals("invalid", e.path("state").asText(), e.toString());
            // The server is fine: production reads back what the overwrite wrote.
            try (RawNbd c = RawNbd.connect(s.port())) {
                c.negotiate(vol, false, false);
                assertRange(TestData.random(205, VOLUME), 0, c.read(7, 0, MiB), 0, MiB, "production after the cut");
            }
        }
    }

    // ---- the scenario ----------------------------------------------------------------------------------------

    static void vanishDuringRead(ServerProcess s, String vol, boolean structured, Vanish how, long seed) throws Exception {
        byte[] content = filledVolumeWithSnapshot(s, vol, seed);
        CompletableFuture<Void> vanish;
        try (RawNbd r = RawNbd.connect(s.port(), 64 << 10)) {
            r.negotiate(vol + "@s", structured, structured);
            startBigRead(r, structured);
            DataInputStream in = r.in();
            byte[] payload = new byte[BIG];
            in.readFully(payload, 0, MiB);

            // The client now stalls; meanwhile the snapshot is made to go away.
            vanish = how == Vanish.TERMINATE
                    ? CompletableFuture.runAsync(() -> overwrite(s, vol, seed + 1000))
                    : CompletableFuture.runAsync(() -> s.cli("snapshot", "delete", vol, "s", "--force").assertOk());
            String held = "snapshot " + vol + "@s: waiting up to";
            try (SnapshotSupport.Admin admin = new SnapshotSupport.Admin(s)) {
                // Resume once the removal is under way: it waits for our read (fixed), or has happened (unfixed).
                await(s, "the " + how + " is under way", () -> s.log().contains(held) || vanish.isDone() || !active(admin, vol));
            }

            readPayload(in, content, payload, MiB);
            readSmallReply(r, structured, content);
            if (structured) {
                readBlockStatusReply(r);
            }
            r.disconnect();
        }
        vanish.get(5, TimeUnit.MINUTES);
        assertTrue(s.log().contains("snapshot " + vol + "@s: waiting up to"), "the removal waited for the read:\n" + s.log());
        if (how == Vanish.TERMINATE) {
            JsonNode e = snapshotEntry(s, vol, "s");
            assertEquals("invalid", e.path("state").asText(), e.toString());
            assertTrue(e.path("reason").asText().contains("save volume full"), e.toString());
        } else {
            assertFalse(snapshotNames(s, vol).contains("s"), "deleted");
        }
    }

    /** A 64 MiB volume with an 8 MiB save volume, filled with random data, and snapshot s of it. */
    static byte[] filledVolumeWithSnapshot(ServerProcess s, String vol, long seed) throws IOException {
        s.cli("volume", "create", vol, "--size", "64M", "--save-size", "8M").assertOk();
        byte[] content = TestData.random(seed, VOLUME);
        writeAll(s, vol, content);
        createSnapshot(s, vol, "s");
        return content;
    }

    /** READ 0x1111 of [0, 32 MiB), READ 0x2222 of 4 KiB, and with structured replies BLOCK_STATUS 0x3333; reads the first header. */
    static void startBigRead(RawNbd r, boolean structured) throws IOException {
        r.sendRequest(0, RawNbd.CMD_READ, H_BIG, 0, BIG, null);
        r.sendRequest(0, RawNbd.CMD_READ, H_SMALL, SMALL_OFFSET, SMALL, null);
        if (structured) {
            r.sendRequest(0, RawNbd.CMD_BLOCK_STATUS, H_STATUS, 0, VOLUME, null);
        }
        DataInputStream in = r.in();
        if (!structured) {
            assertEquals(RawNbd.SIMPLE_REPLY_MAGIC, in.readInt(), "simple reply magic");
            assertEquals(0, in.readInt(), "READ 0x1111 succeeds");
            assertEquals(H_BIG, in.readLong(), "handle");
        } else {
            assertEquals(RawNbd.STRUCTURED_REPLY_MAGIC, in.readInt(), "structured reply magic");
            assertEquals(RawNbd.REPLY_FLAG_DONE, in.readUnsignedShort(), "one chunk: the volume is full, no holes");
            assertEquals(RawNbd.REPLY_TYPE_OFFSET_DATA, in.readUnsignedShort(), "data chunk");
            assertEquals(H_BIG, in.readLong(), "handle");
            assertEquals(8 + BIG, in.readInt(), "chunk length");
            assertEquals(0, in.readLong(), "chunk offset");
        }
    }

    /** The reply to READ 0x2222: its data (the snapshot's) or ENOSPC / ESHUTDOWN; well-formed either way. */
    static void readSmallReply(RawNbd r, boolean structured, byte[] content) throws IOException {
        if (!structured) {
            RawNbd.Reply reply = r.readReply(SMALL);
            assertEquals(H_SMALL, reply.handle(), "the reply after the payload is READ 0x2222's");
            if (reply.error() == 0) {
                assertRange(content, SMALL_OFFSET, reply.data(), 0, SMALL, "READ 0x2222");
            } else {
                assertErrno(reply.error());
            }
            return;
        }
        while (true) {
            RawNbd.Reply chunk = r.readReply(0);
            assertEquals(H_SMALL, chunk.handle(), "the chunk after the payload is READ 0x2222's");
            if (chunk.type() == RawNbd.REPLY_TYPE_OFFSET_DATA) {
                ByteBuffer d = ByteBuffer.wrap(chunk.data());
                long off = d.getLong();
                assertRange(content, off, chunk.data(), 8, chunk.data().length - 8, "READ 0x2222 chunk");
            } else if (chunk.type() == RawNbd.REPLY_TYPE_ERROR) {
                assertErrno(chunk.error());
            } else {
                fail("unexpected chunk type " + chunk.type() + " for READ 0x2222");
            }
            if (chunk.done()) {
                return;
            }
        }
    }

    /** The reply to BLOCK_STATUS 0x3333: base:allocation descriptors or an error, well-formed. */
    static void readBlockStatusReply(RawNbd r) throws IOException {
        while (true) {
            RawNbd.Reply chunk = r.readReply(0);
            assertEquals(H_STATUS, chunk.handle(), "BLOCK_STATUS 0x3333's reply");
            if (chunk.type() == RawNbd.REPLY_TYPE_BLOCK_STATUS) {
                assertEquals(4, chunk.data().length % 8, "context id + 8-byte descriptors");
                assertTrue(chunk.data().length >= 12, "at least one descriptor");
            } else if (chunk.type() == RawNbd.REPLY_TYPE_ERROR) {
                assertErrno(chunk.error());
            } else {
                fail("unexpected chunk type " + chunk.type() + " for BLOCK_STATUS");
            }
            if (chunk.done()) {
                return;
            }
        }
    }

    static void assertErrno(int errno) {
        assertTrue(errno == ENOSPC || errno == ESHUTDOWN, "errno " + errno + " (expected ENOSPC or ESHUTDOWN)");
    }

    /**
     * Reads the rest of READ 0x1111's payload (from byte {@code from}) and checks it is the snapshot's content. If
     * the server stops sending, what did arrive is checked first: a reply inside the payload shows there.
     */
    static void readPayload(DataInputStream in, byte[] content, byte[] payload, int from) throws IOException {
        int got = from;
        try {
            while (got < BIG) {
                int n = in.read(payload, got, BIG - got);
                if (n < 0) {
                    break;
                }
                got += n;
            }
        } catch (java.net.SocketTimeoutException e) {
            // reported below
        }
        assertRange(content, 0, payload, 0, got, "the announced 32 MiB payload of READ 0x1111");
        assertEquals(BIG, got, "bytes of READ 0x1111's announced payload that arrived");
    }

    /** expected[at, at+n) == actual[from, from+n), reporting the first difference (not 32 MiB of bytes). */
    static void assertRange(byte[] expected, long at, byte[] actual, int from, int n, String what) {
        int a = (int) at;
        if (Arrays.equals(expected, a, a + n, actual, from, from + n)) {
            return;
        }
        int i = Arrays.mismatch(expected, a, a + n, actual, from, from + n);
        byte[] show = Arrays.copyOfRange(actual, from + i, from + i + Math.min(16, n - i));
        fail(what + ": differs from the snapshot's content at byte " + i + " (volume offset " + (at + i) + "): got "
                + java.util.HexFormat.of().formatHex(show) + " (a reply header inside the payload?)");
    }

    // ---- helpers ---------------------------------------------------------------------------------------------

    static void writeAll(ServerProcess s, String vol, byte[] content) throws IOException {
        try (RawNbd w = RawNbd.connect(s.port())) {
            w.negotiate(vol, false, false);
            long h = 1;
            for (int off = 0; off < content.length; off += MiB) {
                w.write(h++, off, Arrays.copyOfRange(content, off, off + MiB));
            }
            w.sendRequest(0, RawNbd.CMD_FLUSH, h, 0, 0, null);
            assertEquals(0, w.readReply(0).error(), "FLUSH");
            w.disconnect();
        }
    }

    /** Rewrites the whole volume: 64 MiB through an 8 MiB save volume terminates the snapshot. */
    static void overwrite(ServerProcess s, String vol, long seed) {
        try {
            writeAll(s, vol, TestData.random(seed, VOLUME));
        } catch (IOException e) {
            throw new java.io.UncheckedIOException(e);
        }
    }

    static boolean active(SnapshotSupport.Admin admin, String vol) {
        try {
            JsonNode list = admin.call(Map.of("command", "snapshot.list", "volume", vol));
            for (JsonNode e : list.path("snapshots")) {
                if (e.path("name").asText().equals("s")) {
                    return e.path("state").asText().equals("active");
                }
            }
            return false;
        } catch (IOException e) {
            throw new java.io.UncheckedIOException(e);
        }
    }

    static void await(ServerProcess s, String what, BooleanSupplier condition) throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.MINUTES.toNanos(3);
        while (!condition.getAsBoolean()) {
            if (System.nanoTime() > deadline) {
                fail(what + ": not after 3 minutes; server log:\n" + s.log());
            }
            Thread.sleep(20);
        }
    }
}

package io.snapbd.server.it;

import io.snapbd.server.it.RawNbd.OptReply;
import io.snapbd.server.it.RawNbd.Reply;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.net.InetAddress;
import java.net.Socket;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;

import static io.snapbd.server.it.RawNbd.*;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * Raw bytes at the server: malformed handshakes, out-of-range and malformed requests, slow and greedy
 * clients, garbage. After every bad client the server process must be alive and a fresh, well-behaved client
 * (nbdinfo, and a raw write/read round trip) must still work.
 */
@Timeout(value = 10, unit = TimeUnit.MINUTES)
@ExtendWith(ServerLiveness.class)
class BadInputIT {

    static final String GOOD = "good";
    static final String JUNK = "junk";
    static final long GOOD_SIZE = 64L << 20;
    static final long JUNK_SIZE = 32L << 20;

    @TempDir
    static Path tmp;
    // A crash is reported by the previous test's health check; the extension's ensureRunning before each test
    // keeps it from cascading into every later test.
    @RegisterExtension
    static final SnapbdServerExtension SNAPBD = SnapbdServerExtension.builder("BadInputIT").requires("nbdinfo")
            .volume(GOOD, "64M", "16M").volume(JUNK, "32M", "8M").build();
    static final ServerProcess server = SNAPBD.server();

    @AfterEach
    void serverStillServesGoodClients() throws IOException {
        assertHealthy(server, GOOD, GOOD_SIZE);
    }

    static void assertHealthy(ServerProcess s, String export, long size) throws IOException {
        assertTrue(s.isAlive(), "the server process died; its log:\n" + s.log());
        Tools.Result r = Tools.run("nbdinfo", "--size", s.tcpUri(export)).assertOk();
        assertEquals(String.valueOf(size), r.stdout().strip(), "nbdinfo --size");
        // And a raw round trip through a fresh connection.
        try (RawNbd c = RawNbd.connect(s.port())) {
            c.negotiate(export, false, false);
            byte[] data = "health check".getBytes(StandardCharsets.UTF_8);
            long off = size - 8192 + 100;
            c.write(1, off, data);
            assertArrayEquals(data, c.read(2, off, data.length));
            c.disconnect();
        }
        assertTrue(s.isAlive(), "the server process died; its log:\n" + s.log());
    }

    static RawNbd client() throws IOException {
        return RawNbd.connect(server.port());
    }

    static RawNbd transmission(boolean structured, boolean allocation) throws IOException {
        RawNbd c = client();
        c.negotiate(GOOD, structured, allocation);
        assertEquals(GOOD_SIZE, c.exportSize);
        return c;
    }

    static OptReply single(RawNbd c, int option) throws IOException {
        List<OptReply> r = c.readOptReplies(option);
        assertEquals(1, r.size(), "one reply expected: " + r);
        return r.get(0);
    }

    static void assertGoWorks(RawNbd c) throws IOException {
        List<OptReply> r = c.go(GOOD);
        assertEquals(REP_ACK, r.get(r.size() - 1).type(), "GO after the error: " + r);
        assertEquals(GOOD_SIZE, c.exportSize);
        c.read(77, 0, 4096);
        c.disconnect();
    }

    // ---- handshake -----------------------------------------------------------------------------------------

    @Test
    void unknownClientFlagsCloseTheConnection() throws IOException {
        try (RawNbd c = client()) {
            c.readGreeting();
            c.sendClientFlags(3 | 0x100);
            assertEquals(0, c.assertClosedByServer("unknown client flag bits").length, "no bytes after bad client flags");
        }
    }

    @Test
    void badOptionMagicClosesTheConnection() throws IOException {
        try (RawNbd c = client()) {
            c.startHandshake();
            c.sendOptionHeader(0x1122334455667788L, OPT_LIST, 0);
            assertEquals(0, c.assertClosedByServer("bad option magic").length);
        }
    }

    @Test
    void unknownOptionIsUnsupportedAndTheSessionContinues() throws IOException {
        try (RawNbd c = client()) {
            c.startHandshake();
            c.sendOption(99, "some data".getBytes(StandardCharsets.UTF_8));
            OptReply r = single(c, 99);
            assertEquals(REP_ERR_UNSUP, r.type(), r.toString());
            c.sendOption(5 /* STARTTLS: not offered */, new byte[0]);
            assertEquals(REP_ERR_UNSUP, single(c, 5).type());
            assertGoWorks(c);
        }
    }

    @Test
    void oversizedOptionIsTooBigThenClosed() throws IOException {
        try (RawNbd c = client()) {
            c.startHandshake();
            c.sendOptionHeader(IHAVEOPT, OPT_GO, 70000);
            OptReply r = c.readOptReply();
            assertEquals(OPT_GO, r.option());
            assertEquals(REP_ERR_TOO_BIG, r.type(), r.toString());
            c.assertClosedByServer("after REP_ERR_TOO_BIG");
        }
    }

    @Test
    void goWithNameLengthPastTheDataIsInvalid() throws IOException {
        try (RawNbd c = client()) {
            c.startHandshake();
            byte[] d = ByteBuffer.allocate(8).putInt(100).put("go".getBytes(StandardCharsets.UTF_8)).putShort((short) 0).array();
            c.sendOption(OPT_GO, d);
            assertEquals(REP_ERR_INVALID, single(c, OPT_GO).type());
            // Too short to hold even the counts.
            c.sendOption(OPT_GO, new byte[3]);
            assertEquals(REP_ERR_INVALID, single(c, OPT_GO).type());
            // Information request count that does not match the length.
            byte[] d2 = ByteBuffer.allocate(4 + 4 + 2 + 1).putInt(4).put(GOOD.getBytes(StandardCharsets.UTF_8)).putShort((short) 5).array();
            c.sendOption(OPT_INFO, d2);
            assertEquals(REP_ERR_INVALID, single(c, OPT_INFO).type());
            assertGoWorks(c);
        }
    }

    @Test
    void goForUnknownExportIsUnknown() throws IOException {
        try (RawNbd c = client()) {
            c.startHandshake();
            List<OptReply> r = c.go("no-such-volume");
            assertEquals(1, r.size(), r.toString());
            assertEquals(REP_ERR_UNKNOWN, r.get(0).type(), r.toString());
            c.sendOption(OPT_INFO, goData("no-such-volume"));
            assertEquals(REP_ERR_UNKNOWN, single(c, OPT_INFO).type());
            assertGoWorks(c);
        }
    }

    @Test
    void exportNameOf5000BytesIsRefusedWithoutHarm() throws IOException {
        String longName = "n".repeat(5000);
        try (RawNbd c = client()) {
            c.startHandshake();
            c.sendOption(OPT_GO, goData(longName));
            OptReply r = single(c, OPT_GO);
            assertTrue(r.isError(), "GO with a 5000-byte name must be an error: " + r);
            c.sendOption(OPT_INFO, goData(longName));
            assertTrue(single(c, OPT_INFO).isError());
            assertGoWorks(c);
        }
        try (RawNbd c = client()) {
            c.startHandshake();
            c.sendOption(OPT_EXPORT_NAME, longName.getBytes(StandardCharsets.UTF_8));
            assertEquals(0, c.assertClosedByServer("EXPORT_NAME of 5000 bytes").length);
        }
    }

    @Test
    void listWithDataIsInvalidListWithoutDataNamesBothExports() throws IOException {
        try (RawNbd c = client()) {
            c.startHandshake();
            c.sendOption(OPT_LIST, "x".getBytes(StandardCharsets.UTF_8));
            assertEquals(REP_ERR_INVALID, single(c, OPT_LIST).type());
            c.sendOption(OPT_LIST, new byte[0]);
            List<OptReply> r = c.readOptReplies(OPT_LIST);
            assertEquals(REP_ACK, r.get(r.size() - 1).type());
            List<String> names = new ArrayList<>();
            for (OptReply s : r.subList(0, r.size() - 1)) {
                assertEquals(REP_SERVER, s.type());
                ByteBuffer b = ByteBuffer.wrap(s.data());
                int len = b.getInt();
                names.add(new String(s.data(), 4, len, StandardCharsets.UTF_8));
            }
            assertEquals(List.of(GOOD, JUNK), names.stream().sorted().toList());
            assertGoWorks(c);
        }
    }

    @Test
    void exportNameForUnknownExportCloses() throws IOException {
        try (RawNbd c = client()) {
            c.startHandshake();
            c.sendOption(OPT_EXPORT_NAME, "no-such-volume".getBytes(StandardCharsets.UTF_8));
            assertEquals(0, c.assertClosedByServer("EXPORT_NAME of an unknown export").length);
        }
    }

    @Test
    void exportNameHonoursNoZeroes() throws IOException {
        // Without NO_ZEROES: size, flags and 124 bytes of zeros.
        try (RawNbd c = client()) {
            c.readGreeting();
            c.sendClientFlags(1);
            c.sendOption(OPT_EXPORT_NAME, GOOD.getBytes(StandardCharsets.UTF_8));
            assertEquals(GOOD_SIZE, c.in().readLong());
            int flags = c.in().readUnsignedShort();
            assertEquals(1, flags & 1, "HAS_FLAGS");
            byte[] pad = new byte[124];
            c.in().readFully(pad);
            assertArrayEquals(new byte[124], pad);
            c.read(1, 0, 512);
        }
        // With NO_ZEROES: exactly 10 bytes, then the first reply must follow directly.
        try (RawNbd c = client()) {
            c.startHandshake();
            c.sendOption(OPT_EXPORT_NAME, GOOD.getBytes(StandardCharsets.UTF_8));
            assertEquals(GOOD_SIZE, c.in().readLong());
            c.in().readUnsignedShort();
            c.read(1, 0, 512);
            c.disconnect();
        }
    }

    @Test
    void metaContextBeforeStructuredRepliesIsInvalid() throws IOException {
        try (RawNbd c = client()) {
            c.startHandshake();
            c.sendOption(OPT_SET_META_CONTEXT, metaContextData(GOOD, "base:allocation"));
            assertEquals(REP_ERR_INVALID, single(c, OPT_SET_META_CONTEXT).type());
            c.sendOption(OPT_LIST_META_CONTEXT, metaContextData(GOOD));
            assertEquals(REP_ERR_INVALID, single(c, OPT_LIST_META_CONTEXT).type());
            // In the right order it works, and BLOCK_STATUS answers.
            c.sendOption(OPT_STRUCTURED_REPLY, new byte[1]);
            assertEquals(REP_ERR_INVALID, single(c, OPT_STRUCTURED_REPLY).type(), "STRUCTURED_REPLY takes no data");
            c.sendOption(OPT_STRUCTURED_REPLY, new byte[0]);
            assertEquals(REP_ACK, single(c, OPT_STRUCTURED_REPLY).type());
            c.sendOption(OPT_SET_META_CONTEXT, metaContextData(GOOD, "base:allocation"));
            List<OptReply> r = c.readOptReplies(OPT_SET_META_CONTEXT);
            assertEquals(2, r.size(), r.toString());
            assertEquals(REP_META_CONTEXT, r.get(0).type());
            int id = ByteBuffer.wrap(r.get(0).data()).getInt(0);
            assertEquals("base:allocation", new String(r.get(0).data(), 4, r.get(0).data().length - 4, StandardCharsets.UTF_8));
            assertEquals(REP_ACK, r.get(1).type());
            List<OptReply> g = c.go(GOOD);
            assertEquals(REP_ACK, g.get(g.size() - 1).type(), g.toString());
            c.sendRequest(0, CMD_BLOCK_STATUS, 1, 0, 1 << 20, null);
            Reply bs = c.readReply(0);
            assertEquals(REPLY_TYPE_BLOCK_STATUS, bs.type(), "BLOCK_STATUS chunk, error " + bs.error());
            assertEquals(id, ByteBuffer.wrap(bs.data()).getInt(0), "context id from SET_META_CONTEXT");
            c.disconnect();
        }
    }

    @Test
    void abortIsAcknowledgedAndCloses() throws IOException {
        try (RawNbd c = client()) {
            c.startHandshake();
            c.sendOption(OPT_ABORT, new byte[0]);
            assertEquals(REP_ACK, single(c, OPT_ABORT).type());
            assertEquals(0, c.assertClosedByServer("after ABORT").length);
        }
    }

    @Test
    void infoReportsExportAndBlockSizesAndStaysInNegotiation() throws IOException {
        try (RawNbd c = client()) {
            c.startHandshake();
            c.sendOption(OPT_INFO, goData(GOOD, INFO_NAME, INFO_DESCRIPTION, INFO_BLOCK_SIZE));
            List<OptReply> r = c.readOptReplies(OPT_INFO);
            assertEquals(REP_ACK, r.get(r.size() - 1).type(), r.toString());
            boolean export = false;
            boolean blockSize = false;
            for (OptReply i : r.subList(0, r.size() - 1)) {
                assertEquals(REP_INFO, i.type());
                ByteBuffer b = ByteBuffer.wrap(i.data());
                switch (b.getShort(0)) {
                    case INFO_EXPORT -> {
                        export = true;
                        assertEquals(12, i.data().length);
                        assertEquals(GOOD_SIZE, b.getLong(2));
                        int flags = Short.toUnsignedInt(b.getShort(10));
                        assertEquals(0, flags & 2, "not read-only");
                        assertTrue((flags & (1 << 8)) != 0, "CAN_MULTI_CONN");
                    }
                    case INFO_NAME -> assertEquals(GOOD, new String(i.data(), 2, i.data().length - 2, StandardCharsets.UTF_8));
                    case INFO_BLOCK_SIZE -> {
                        blockSize = true;
                        assertEquals(14, i.data().length);
                        int min = b.getInt(2);
                        int pref = b.getInt(6);
                        int max = b.getInt(10);
                        assertEquals(1, min);
                        assertEquals(4096, pref);
                        assertEquals(32 << 20, max);
                    }
                    default -> {
                    }
                }
            }
            assertTrue(export && blockSize, "INFO_EXPORT and INFO_BLOCK_SIZE sent: " + r);
            assertGoWorks(c);
        }
    }

    @Test
    void truncatedHandshakesDoNotHurt() throws IOException {
        try (RawNbd c = client()) {
            c.readGreeting();
            c.sendRaw(new byte[]{0, 0});              // half the client flags
        }
        try (RawNbd c = client()) {
            c.startHandshake();
            c.sendRaw(Arrays.copyOf(ByteBuffer.allocate(8).putLong(IHAVEOPT).array(), 6));   // half an option header
        }
        try (RawNbd c = client()) {
            c.startHandshake();
            c.sendOptionHeader(IHAVEOPT, OPT_GO, 100);
            c.sendRaw(new byte[10]);                   // option data cut short
        }
    }

    // ---- transmission --------------------------------------------------------------------------------------

    @Test
    void readPastTheEndIsEinvalAndTheConnectionStaysUsable() throws IOException {
        try (RawNbd c = transmission(false, false)) {
            long[][] cases = {{GOOD_SIZE - 4096, 8192}, {GOOD_SIZE, 1}, {GOOD_SIZE + 4096, 4096},
                    {Long.MAX_VALUE - 10, 4096}, {-4096L, 4096} /* 2^64 - 4096 as u64 */};
            long h = 100;
            for (long[] k : cases) {
                c.sendRequest(0, CMD_READ, h, k[0], k[1], null);
                Reply r = c.readReply(0);
                assertEquals(h, r.handle());
                assertEquals(EINVAL, r.error(), "READ [" + Long.toUnsignedString(k[0]) + ", +" + k[1] + ")");
                h++;
                assertEquals(4096, c.read(h++, GOOD_SIZE - 4096, 4096).length, "the next READ works");
            }
            c.disconnect();
        }
    }

    @Test
    void writePastTheEndIsEnospcAndItsPayloadIsConsumed() throws IOException {
        try (RawNbd c = transmission(false, false)) {
            byte[] last = TestData.random(1, 4096);
            c.write(1, GOOD_SIZE - 4096, last);
            byte[] payload = new byte[8192];
            Arrays.fill(payload, (byte) 0x5a);
            c.sendRequest(0, CMD_WRITE, 2, GOOD_SIZE - 4096, 8192, payload);
            Reply r = c.readReply(0);
            assertEquals(2, r.handle());
            assertEquals(ENOSPC, r.error(), "WRITE past the end");
            // If the payload had not been consumed, these bytes would be parsed as requests.
            assertArrayEquals(last, c.read(3, GOOD_SIZE - 4096, 4096), "refused WRITE left the data alone");
            c.sendRequest(0, CMD_WRITE, 4, GOOD_SIZE, 512, new byte[512]);
            assertEquals(ENOSPC, c.readReply(0).error());
            c.sendRequest(0, CMD_WRITE_ZEROES, 5, GOOD_SIZE - 512, 1024, null);
            assertEquals(ENOSPC, c.readReply(0).error(), "WRITE_ZEROES past the end");
            c.sendRequest(0, CMD_TRIM, 6, GOOD_SIZE - 512, 1024, null);
            assertEquals(EINVAL, c.readReply(0).error(), "TRIM past the end");
            c.sendRequest(0, CMD_CACHE, 7, GOOD_SIZE - 512, 1024, null);
            assertEquals(EINVAL, c.readReply(0).error(), "CACHE past the end");
            assertArrayEquals(last, c.read(8, GOOD_SIZE - 4096, 4096));
            c.disconnect();
        }
    }

    @Test
    void readOf33MiBIsEinval() throws IOException {
        try (RawNbd c = transmission(false, false)) {
            c.sendRequest(0, CMD_READ, 9, 0, 33 << 20, null);
            Reply r = c.readReply(0);
            assertEquals(9, r.handle());
            assertEquals(EINVAL, r.error());
            assertEquals(32 << 20, c.read(10, 0, 32 << 20).length, "a READ of exactly 32 MiB is fine");
            c.disconnect();
        }
    }

    @Test
    void writeClaiming64MiBIsRefusedThenClosed() throws IOException {
        try (RawNbd c = transmission(false, false)) {
            c.sendRequest(0, CMD_WRITE, 11, 0, 64 << 20, null);    // header only: the payload never comes
            Reply r = c.readReply(0);
            assertEquals(11, r.handle());
            assertNotEquals(0, r.error(), "WRITE of 64 MiB must fail");
            c.assertClosedByServer("after an oversized WRITE");
        }
    }

    @Test
    void zeroLengthRequestsAreEinval() throws IOException {
        try (RawNbd c = transmission(false, false)) {
            int[] types = {CMD_READ, CMD_WRITE, CMD_TRIM, CMD_WRITE_ZEROES, CMD_CACHE};
            long h = 20;
            for (int t : types) {
                c.sendRequest(0, t, h, 4096, 0, null);
                Reply r = c.readReply(0);
                assertEquals(h, r.handle());
                assertEquals(EINVAL, r.error(), "zero-length command " + t);
                h++;
            }
            c.read(h, 0, 4096);
            c.disconnect();
        }
    }

    @Test
    void unknownCommandIsEinval() throws IOException {
        try (RawNbd c = transmission(false, false)) {
            c.sendRequest(0, 99, 30, 0, 4096, null);
            Reply r = c.readReply(0);
            assertEquals(30, r.handle());
            assertEquals(EINVAL, r.error());
            c.sendRequest(0, 0xffff, 31, 0, 0, null);
            assertEquals(EINVAL, c.readReply(0).error());
            c.read(32, 0, 4096);
            c.disconnect();
        }
    }

    @Test
    void unknownFlagBitsAreEinval() throws IOException {
        try (RawNbd c = transmission(false, false)) {
            c.sendRequest(0x100, CMD_READ, 40, 0, 4096, null);
            Reply r = c.readReply(0);
            assertEquals(40, r.handle());
            assertEquals(EINVAL, r.error());
            byte[] before = c.read(41, 8192, 4096);
            byte[] payload = new byte[4096];
            Arrays.fill(payload, (byte) 0x77);
            c.sendRequest(0x8000, CMD_WRITE, 42, 8192, 4096, payload);
            assertEquals(EINVAL, c.readReply(0).error(), "WRITE with unknown flags");
            assertArrayEquals(before, c.read(43, 8192, 4096), "WRITE with unknown flags wrote nothing, its payload was consumed");
            c.disconnect();
        }
    }

    @Test
    void blockStatusWithoutAContextIsEinval() throws IOException {
        try (RawNbd c = transmission(false, false)) {
            c.sendRequest(0, CMD_BLOCK_STATUS, 50, 0, 4096, null);
            Reply r = c.readReply(0);
            assertFalse(r.structured(), "simple replies only: none negotiated");
            assertEquals(50, r.handle());
            assertEquals(EINVAL, r.error());
            c.read(51, 0, 4096);
            c.disconnect();
        }
        try (RawNbd c = transmission(true, false)) {
            c.sendRequest(0, CMD_BLOCK_STATUS, 52, 0, 4096, null);
            Reply r = c.readReply(0);
            assertTrue(r.structured());
            assertEquals(REPLY_TYPE_ERROR, r.type());
            assertTrue(r.done());
            assertEquals(52, r.handle());
            assertEquals(EINVAL, r.error());
            c.disconnect();
        }
    }

    @Test
    void structuredErrorsAndBlockStatusStayInSync() throws IOException {
        try (RawNbd c = transmission(true, true)) {
            // READ past the end: one error chunk with DONE.
            c.sendRequest(0, CMD_READ, 60, GOOD_SIZE - 10, 20, null);
            Reply r = c.readReply(0);
            assertTrue(r.structured() && r.done());
            assertEquals(REPLY_TYPE_ERROR, r.type());
            assertEquals(EINVAL, r.error());
            // BLOCK_STATUS past the end.
            c.sendRequest(0, CMD_BLOCK_STATUS, 61, GOOD_SIZE - 10, 20, null);
            r = c.readReply(0);
            assertEquals(61, r.handle());
            assertEquals(EINVAL, r.error());
            // A good BLOCK_STATUS with REQ_ONE: one descriptor, not longer than asked.
            c.sendRequest(FLAG_REQ_ONE, CMD_BLOCK_STATUS, 62, 1 << 20, 1 << 20, null);
            r = c.readReply(0);
            assertEquals(62, r.handle());
            assertEquals(REPLY_TYPE_BLOCK_STATUS, r.type(), "chunk type");
            assertTrue(r.done());
            assertEquals(4 + 8, r.data().length, "one descriptor with REQ_ONE");
            long len = Integer.toUnsignedLong(ByteBuffer.wrap(r.data()).getInt(4));
            assertTrue(len > 0 && len <= 1 << 20, "extent length " + len);
            // A structured READ returns the right bytes whatever chunks it uses.
            byte[] data = TestData.random(62, 4096);
            c.sendRequest(0, CMD_WRITE, 63, (2 << 20) + 4096, 4096, data);
            assertEquals(0, c.readReply(0).error());
            byte[] got = structuredRead(c, 64, 2 << 20, 3 * 4096);
            byte[] want = new byte[3 * 4096];
            System.arraycopy(data, 0, want, 4096, 4096);
            assertArrayEquals(want, got);
            c.disconnect();
        }
    }

    /** Assembles a structured READ reply (data and hole chunks in any order). */
    static byte[] structuredRead(RawNbd c, long handle, long offset, int length) throws IOException {
        c.sendRequest(0, CMD_READ, handle, offset, length, null);
        byte[] out = new byte[length];
        boolean[] seen = new boolean[length];
        while (true) {
            Reply r = c.readReply(0);
            assertEquals(handle, r.handle());
            assertTrue(r.structured(), "structured reply");
            ByteBuffer b = ByteBuffer.wrap(r.data());
            if (r.type() == REPLY_TYPE_OFFSET_DATA) {
                long off = b.getLong(0);
                int n = r.data().length - 8;
                assertTrue(off >= offset && off + n <= offset + length, "data chunk inside the request");
                System.arraycopy(r.data(), 8, out, (int) (off - offset), n);
                Arrays.fill(seen, (int) (off - offset), (int) (off - offset) + n, true);
            } else if (r.type() == REPLY_TYPE_OFFSET_HOLE) {
                long off = b.getLong(0);
                int n = b.getInt(8);
                assertTrue(off >= offset && off + n <= offset + length, "hole chunk inside the request");
                Arrays.fill(seen, (int) (off - offset), (int) (off - offset) + n, true);
            } else if (r.type() != REPLY_TYPE_NONE) {
                fail("unexpected chunk type 0x" + Integer.toHexString(r.type()) + " error " + r.error());
            }
            if (r.done()) {
                break;
            }
        }
        for (boolean s : seen) {
            assertTrue(s, "every byte of a successful READ is covered by a chunk");
        }
        return out;
    }

    @Test
    void pipelinedBadRequestsKeepTheStreamInSync() throws IOException {
        try (RawNbd c = transmission(false, false)) {
            byte[] payload = TestData.random(70, 4096);
            c.sendRequest(0, CMD_READ, 70, GOOD_SIZE, 4096, null);                  // EINVAL
            c.sendRequest(0, CMD_WRITE, 71, GOOD_SIZE, 4096, new byte[4096]);       // ENOSPC, payload skipped
            c.sendRequest(0x40, CMD_WRITE, 72, 0, 4096, new byte[4096]);            // EINVAL, payload skipped
            c.sendRequest(0, 42, 73, 0, 0, null);                                   // EINVAL
            c.sendRequest(0, CMD_WRITE, 74, 12288, 4096, payload);                  // OK
            c.sendRequest(0, CMD_READ, 75, 12288, 4096, null);                      // OK
            int[] expect = {EINVAL, ENOSPC, EINVAL, EINVAL, 0};
            for (int i = 0; i < expect.length; i++) {
                Reply r = c.readReply(0);
                assertEquals(70 + i, r.handle(), "replies in order for inline requests");
                assertEquals(expect[i], r.error(), "request " + (70 + i));
            }
            Reply r = c.readReply(4096);
            assertEquals(75, r.handle());
            assertArrayEquals(payload, r.data());
            c.disconnect();
        }
    }

    @Test
    void badRequestMagicCloses() throws IOException {
        try (RawNbd c = transmission(false, false)) {
            c.sendRequest(0x12345678, 0, CMD_READ, 80, 0, 4096, null);
            assertEquals(0, c.assertClosedByServer("bad request magic").length);
        }
    }

    @Test
    void truncatedRequestsDoNotHurt() throws IOException {
        try (RawNbd c = transmission(false, false)) {
            c.sendRaw(Arrays.copyOf(ByteBuffer.allocate(28).putInt(REQUEST_MAGIC).putShort((short) 0).putShort((short) CMD_READ).array(), 14));
        }
        try (RawNbd c = transmission(false, false)) {
            ByteBuffer h = ByteBuffer.allocate(28).putInt(REQUEST_MAGIC).putShort((short) 0).putShort((short) CMD_WRITE)
                    .putLong(1).putLong(0).putInt(65536);
            c.sendRaw(h.array());
            c.sendRaw(new byte[1000]);      // payload cut short, then close
        }
        try (RawNbd c = transmission(false, false)) {
            // A READ whose reply the client never reads: the server must not get stuck on it.
            c.sendRequest(0, CMD_READ, 1, 0, 32 << 20, null);
        }
    }

    @Test
    void emptyNameIsTheDefaultExportAndBadUtf8NamesAreRefused() throws IOException {
        try (RawNbd c = client()) {
            c.startHandshake();
            c.sendOption(OPT_GO, ByteBuffer.allocate(4 + 2 + 2).putInt(2).put((byte) 0xff).put((byte) 0xfe).putShort((short) 0).array());
            assertTrue(single(c, OPT_GO).isError(), "export name that is not UTF-8");
            List<OptReply> r = c.go("");
            assertEquals(REP_ACK, r.get(r.size() - 1).type(), r.toString());
            assertEquals(GOOD_SIZE, c.exportSize, "the default export is the first volume by name");
            c.read(1, 0, 512);
            c.disconnect();
        }
        try (RawNbd c = client()) {
            c.startHandshake();
            c.sendOption(OPT_EXPORT_NAME, new byte[]{(byte) 0xc3, (byte) 0x28});
            assertEquals(0, c.assertClosedByServer("EXPORT_NAME that is not UTF-8").length);
        }
    }

    @Test
    void metaContextQueriesAndUnknownContexts() throws IOException {
        try (RawNbd c = client()) {
            c.startHandshake();
            c.sendOption(OPT_STRUCTURED_REPLY, new byte[0]);
            assertEquals(REP_ACK, single(c, OPT_STRUCTURED_REPLY).type());
            // LIST with the namespace query finds base:allocation.
            c.sendOption(OPT_LIST_META_CONTEXT, metaContextData(GOOD, "base:"));
            List<OptReply> r = c.readOptReplies(OPT_LIST_META_CONTEXT);
            assertEquals(REP_ACK, r.get(r.size() - 1).type(), r.toString());
            assertTrue(r.stream().anyMatch(x -> x.type() == REP_META_CONTEXT
                    && new String(x.data(), 4, x.data().length - 4, StandardCharsets.UTF_8).equals("base:allocation")), r.toString());
            // Meta context for an unknown export.
            c.sendOption(OPT_SET_META_CONTEXT, metaContextData("no-such-volume", "base:allocation"));
            assertTrue(single(c, OPT_SET_META_CONTEXT).isError());
            // Truncated query list.
            byte[] bad = metaContextData(GOOD, "base:allocation");
            c.sendOption(OPT_SET_META_CONTEXT, Arrays.copyOf(bad, bad.length - 3));
            assertEquals(REP_ERR_INVALID, single(c, OPT_SET_META_CONTEXT).type());
            // An unknown context selects nothing: just the ACK, and BLOCK_STATUS is then refused.
            c.sendOption(OPT_SET_META_CONTEXT, metaContextData(GOOD, "qemu:dirty-bitmap:nope"));
            r = c.readOptReplies(OPT_SET_META_CONTEXT);
            assertEquals(1, r.size(), r.toString());
            assertEquals(REP_ACK, r.get(0).type());
            r = c.go(GOOD);
            assertEquals(REP_ACK, r.get(r.size() - 1).type());
            c.sendRequest(0, CMD_BLOCK_STATUS, 5, 0, 4096, null);
            assertEquals(EINVAL, c.readReply(0).error());
            c.disconnect();
        }
    }

    @Test
    void durabilityRepliesArriveBeforeADisconnectCloses() throws IOException {
        try (RawNbd c = transmission(false, false)) {
            byte[] d = TestData.random(90, 8192);
            c.sendRequest(FLAG_FUA, CMD_WRITE, 1, 1 << 20, d.length, d);
            c.sendRequest(0, CMD_FLUSH, 2, 0, 0, null);
            c.sendRequest(0, CMD_WRITE, 3, (1 << 20) + 8192, d.length, d);
            c.sendRequest(FLAG_FUA, CMD_TRIM, 4, 2 << 20, 4096, null);
            c.sendRequest(FLAG_FUA | FLAG_NO_HOLE, CMD_WRITE_ZEROES, 5, 3 << 20, 4096, null);
            c.sendRequest(0, CMD_FLUSH, 6, 0, 0, null);
            c.disconnect();
            java.util.Set<Long> handles = new java.util.HashSet<>();
            for (int i = 0; i < 6; i++) {
                Reply r = c.readReply(0);
                assertFalse(r.structured());
                assertEquals(0, r.error(), "request " + r.handle());
                assertTrue(handles.add(r.handle()), "one reply per request");
            }
            assertEquals(java.util.Set.of(1L, 2L, 3L, 4L, 5L, 6L), handles);
            assertEquals(0, c.assertClosedByServer("after NBD_CMD_DISC").length, "nothing after the last reply");
        }
        try (RawNbd c = transmission(false, false)) {
            assertArrayEquals(TestData.random(90, 8192), c.read(1, (1 << 20) + 8192, 8192));
            c.disconnect();
        }
    }

    @Test
    void fragmentedAllocationIsReportedInBoundedReplies() throws IOException {
        String vol = "frag";
        server.cli("volume", "create", vol, "--size", "16M", "--save-size", "4M").assertOk();
        int span = 8 << 20;
        byte[] block = TestData.random(91, 4096);
        try (RawNbd c = RawNbd.connect(server.port())) {
            c.negotiate(vol, true, true);
            // Every other block written: 1024 data extents and 1024 holes, pipelined.
            for (int b = 0; b < span / 4096; b += 2) {
                c.sendRequest(0, CMD_WRITE, b, (long) b * 4096, 4096, block);
            }
            for (int b = 0; b < span / 4096; b += 2) {
                assertEquals(0, c.readReply(0).error());
            }
            c.sendRequest(0, CMD_BLOCK_STATUS, 1, 0, span, null);
            Reply r = c.readReply(0);
            assertEquals(REPLY_TYPE_BLOCK_STATUS, r.type(), "error " + r.error());
            assertTrue(r.done());
            ByteBuffer b = ByteBuffer.wrap(r.data());
            int n = (r.data().length - 4) / 8;
            assertTrue(n >= 1 && n <= 2048, n + " descriptors");
            long pos = 0;
            for (int i = 0; i < n; i++) {
                long len = Integer.toUnsignedLong(b.getInt(4 + 8 * i));
                int flags = b.getInt(8 + 8 * i);
                assertEquals(4096, len, "descriptor " + i);
                assertEquals(i % 2 == 0 ? 0 : 3, flags, "descriptor " + i);
                pos += len;
            }
            assertTrue(pos <= span);
            // A structured READ over all of it: one chunk per extent, reassembled exactly.
            byte[] got = structuredRead(c, 2, 0, span);
            for (int i = 0; i < span / 4096; i++) {
                byte[] want = i % 2 == 0 ? block : new byte[4096];
                assertArrayEquals(want, Arrays.copyOfRange(got, i * 4096, i * 4096 + 4096), "block " + i);
            }
            // WRITE_ZEROES and TRIM of more than the payload limit are fine: they carry no payload.
            c.sendRequest(0, CMD_WRITE_ZEROES, 3, 0, 16 << 20, null);
            assertEquals(0, c.readReply(0).error(), "WRITE_ZEROES of the whole export");
            c.sendRequest(0, CMD_TRIM, 4, 0, 16 << 20, null);
            assertEquals(0, c.readReply(0).error(), "TRIM of the whole export");
            c.sendRequest(0, CMD_BLOCK_STATUS, 5, 0, 16 << 20, null);
            r = c.readReply(0);
            assertEquals(REPLY_TYPE_BLOCK_STATUS, r.type());
            assertEquals(4 + 8, r.data().length, "one extent after zeroing everything");
            assertEquals(3, ByteBuffer.wrap(r.data()).getInt(8));
            c.disconnect();
        }
        Tools.Result map = Tools.run("nbdinfo", "--map", server.tcpUri(vol)).assertOk();
        assertEquals(1, map.stdout().strip().lines().count(), map.toString());
        server.cli("volume", "delete", vol).assertOk();
    }

    @Test
    void aClientThatNeverReadsItsRepliesDoesNotBlockOthers() throws IOException {
        try (RawNbd greedy = transmission(false, false)) {
            // 4 x 32 MiB of reads whose replies are never read: the server's send blocks on this connection only.
            for (int i = 0; i < 4; i++) {
                greedy.sendRequest(0, CMD_READ, i, 0, 32 << 20, null);
            }
            try (RawNbd other = transmission(false, false)) {
                byte[] d = TestData.random(92, 4096);
                other.write(1, 0, d);        // the very blocks being sent to the stalled reader
                assertArrayEquals(d, other.read(2, 0, 4096));
                other.sendRequest(0, CMD_FLUSH, 3, 0, 0, null);
                assertEquals(0, other.readReply(0).error());
                other.disconnect();
            }
            Tools.run("nbdinfo", "--size", server.unixUri(GOOD)).assertOk();
        }
    }

    /**
     * BUG (cross-connection stall): FLUSH and FUA replies are sent by a small shared pool ("nbd-sync", 4
     * threads) that takes the connection's send lock. A connection whose reader thread is blocked sending a
     * large READ reply to a client that does not read holds that lock, so the pool thread finishing that
     * connection's FLUSH waits for it indefinitely. A few such clients use up the pool, and then FLUSH and FUA
     * of every other client never complete.
     */
    @Test
    void clientsThatStopReadingDoNotStallOtherClientsFlushes() throws IOException {
        List<RawNbd> stalled = new ArrayList<>();
        try {
            byte[] dirty = new byte[4 << 20];
            new Random(93).nextBytes(dirty);
            for (int i = 0; i < 8; i++) {
                RawNbd c = RawNbd.connect(server.port());
                stalled.add(c);
                c.negotiate(JUNK, false, false);
                // Dirty pages so that the FLUSH takes a moment, then a FLUSH, then READs whose replies are never read.
                c.write(1, (long) (i % 4) * dirty.length, dirty);
                c.sendRequest(0, CMD_FLUSH, 2, 0, 0, null);
                c.sendRequest(0, CMD_READ, 3, 0, 32 << 20, null);
                c.sendRequest(0, CMD_READ, 4, 0, 32 << 20, null);
            }
            try (RawNbd good = transmission(false, false)) {
                byte[] d = TestData.random(94, 4096);
                good.write(1, 4096, d);
                good.sendRequest(0, CMD_FLUSH, 2, 0, 0, null);
                Reply r;
                try {
                    r = good.readReply(0);
                } catch (java.net.SocketTimeoutException e) {
                    fail("a well-behaved client's FLUSH got no reply within " + RawNbd.READ_TIMEOUT_MS
                            + " ms while 8 other clients had stopped reading their READ replies");
                    return;
                }
                assertEquals(2, r.handle());
                assertEquals(0, r.error());
                good.sendRequest(FLAG_FUA, CMD_WRITE, 3, 4096, 4096, d);
                assertEquals(0, good.readReply(0).error(), "FUA write");
                good.disconnect();
            }
        } finally {
            stalled.forEach(RawNbd::close);
        }
    }

    // ---- slow and greedy clients ---------------------------------------------------------------------------

    @Test
    void silentClientIsClosedAfterTheHandshakeTimeout() throws IOException {
        Path data = tmp.resolve("timeout-data");
        ServerProcess.snapbd(data, "volume", "create", "t", "--size", "16M", "--save-size", "4M").assertOk();
        try (ServerProcess s = ServerProcess.start(data, "BadInputIT-timeout", "--handshake-timeout", "1");
             RawNbd early = RawNbd.connect(s.port())) {
            // Connected first and negotiated at once: it must outlive the handshake deadline.
            early.negotiate("t", false, false);
            try (RawNbd silent = RawNbd.connect(s.port())) {
                silent.readGreeting();
                silent.assertClosedByServer("client that sent nothing after the greeting");
            }
            try (RawNbd stalled = RawNbd.connect(s.port())) {
                stalled.startHandshake();
                stalled.sendOptionHeader(IHAVEOPT, OPT_GO, 100);    // and then never the data
                stalled.assertClosedByServer("client stalled inside an option");
            }
            // Both deadlines have passed by now, and the transmission-phase connection is still served.
            early.write(1, 4096, new byte[]{1, 2, 3});
            assertArrayEquals(new byte[]{1, 2, 3}, early.read(2, 4096, 3));
            early.disconnect();
            assertHealthy(s, "t", 16L << 20);
        }
    }

    @Test
    void connectionsBeyondTheLimitAreClosedAtAccept() throws IOException {
        Path data = tmp.resolve("limit-data");
        ServerProcess.snapbd(data, "volume", "create", "t", "--size", "16M", "--save-size", "4M").assertOk();
        try (ServerProcess s = ServerProcess.start(data, "BadInputIT-limit", "--max-connections", "2")) {
            try (RawNbd c1 = RawNbd.connect(s.port()); RawNbd c2 = RawNbd.connect(s.port())) {
                c1.negotiate("t", false, false);
                c2.negotiate("t", false, false);
                try (RawNbd c3 = RawNbd.connect(s.port())) {
                    assertEquals(0, c3.assertClosedByServer("third connection with --max-connections 2").length,
                            "the extra connection gets no greeting");
                }
                c1.write(1, 0, new byte[]{9});
                assertArrayEquals(new byte[]{9}, c2.read(2, 0, 1), "the first two still work");
                c1.disconnect();
                c2.disconnect();
            }
            // The slots free up once the server has seen the disconnects (asynchronously): poll, bounded.
            awaitGreeting(s);
            Tools.Result st = s.cli("status", "--json").assertOk();
            assertTrue(st.stdout().contains("\"connectionsRejected\""), st.stdout());
            assertTrue(new com.fasterxml.jackson.databind.ObjectMapper().readTree(st.stdout()).path("connectionsRejected").asLong() >= 1,
                    "status counts the refused connection: " + st.stdout());
            assertHealthy(s, "t", 16L << 20);
        }
    }

    private static void awaitGreeting(ServerProcess s) throws IOException {
        for (int i = 0; i < 600; i++) {
            try (RawNbd c = RawNbd.connect(s.port())) {
                try {
                    c.readGreeting();
                    return;
                } catch (IOException e) {
                    // refused at accept: still counted as busy
                }
            }
            try {
                Thread.sleep(50);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                return;
            }
        }
        fail("no connection accepted again after the others closed; log:\n" + s.log());
    }

    // ---- garbage -------------------------------------------------------------------------------------------

    @Test
    void twentyGarbageClientsDoNotDisturbAVerifyingClient() throws Exception {
        Tools.require("fio", "nbdcopy");
        AtomicBoolean stop = new AtomicBoolean();
        AtomicLong connections = new AtomicLong();
        ExecutorService pool = Executors.newFixedThreadPool(20);
        List<Future<?>> garbage = new ArrayList<>();
        long accepted0 = acceptedConnections();
        try {
            for (int i = 0; i < 20; i++) {
                long seed = 1000 + i;
                garbage.add(pool.submit(() -> {
                    Random r = new Random(seed);
                    // At least 25 connections each, more while the good client is still busy.
                    for (int n = 0; n < 2000 && (n < 25 || !stop.get()); n++) {
                        connections.incrementAndGet();
                        garbageClient(r, server.port());
                    }
                    return null;
                }));
            }
            Tools.run("fio", "--name=good", "--ioengine=nbd", "--uri=" + server.tcpUri(GOOD), "--rw=randwrite", "--bs=4k",
                    "--iodepth=32", "--size=32M", "--verify=crc32c", "--do_verify=1", "--verify_fatal=1", "--verify_state_save=0").assertOk();
            byte[] img = TestData.imageWithZeroRegions(77, 16 << 20);
            Path in = TestData.write(tmp.resolve("garbage-in.img"), img);
            Path out = tmp.resolve("garbage-out.img");
            // nbdcopy into a 16 MiB window is not possible: copy to a fresh 16 MiB volume made online.
            server.cli("volume", "create", "copy16", "--size", "16M", "--save-size", "4M").assertOk();
            Tools.run("nbdcopy", in.toString(), server.tcpUri("copy16")).assertOk();
            Tools.run("nbdcopy", server.tcpUri("copy16"), out.toString()).assertOk();
            TestData.assertSameContent(img, out);
        } finally {
            stop.set(true);
            pool.shutdown();
            assertTrue(pool.awaitTermination(3, TimeUnit.MINUTES), "garbage clients finished");
        }
        for (Future<?> f : garbage) {
            f.get();
        }
        // What the server accepted, not what the loop tried (at least 20 x 25 by construction).
        long accepted = acceptedConnections() - accepted0;
        for (int i = 0; i < 100 && accepted < connections.get(); i++) {      // the last ones may still be in the backlog
            Thread.sleep(100);
            accepted = acceptedConnections() - accepted0;
        }
        assertTrue(accepted >= 500 && accepted >= connections.get(), "the server accepted " + accepted
                + " connections of the " + connections.get() + " the garbage clients opened");
        assertTrue(server.isAlive(), server.log());
    }

    /** Connections the server accepted since it started ({@code status --json}). */
    static long acceptedConnections() throws IOException {
        return new com.fasterxml.jackson.databind.ObjectMapper().readTree(server.cli("status", "--json").assertOk().stdout())
                .path("connectionsAccepted").asLong(-1);
    }

    /** One connection's worth of hostile bytes; every failure on the client side is expected and ignored. */
    private static void garbageClient(Random r, int port) {
        try (Socket s = new Socket(InetAddress.getLoopbackAddress(), port)) {
            s.setSoTimeout(500);
            var out = s.getOutputStream();
            var in = s.getInputStream();
            int mode = r.nextInt(5);
            ByteBuffer b = ByteBuffer.allocate(1 << 20);
            if (mode == 0) {
                byte[] junk = new byte[1 + r.nextInt(4096)];
                r.nextBytes(junk);
                out.write(junk);
            } else {
                in.readNBytes(18);
                if (mode == 1) {
                    byte[] junk = new byte[1 + r.nextInt(4096)];
                    r.nextBytes(junk);
                    out.write(junk);
                } else if (mode == 2) {
                    // Valid client flags, then options with random numbers, lengths and data.
                    b.putInt(3);
                    for (int i = 0; i < 1 + r.nextInt(8); i++) {
                        int len = r.nextInt(10) == 0 ? r.nextInt(100_000) : r.nextInt(600);
                        b.putLong(r.nextInt(20) == 0 ? r.nextLong() : IHAVEOPT).putInt(r.nextInt(12)).putInt(len);
                        int send = Math.min(len, Math.min(b.remaining(), r.nextInt(5) == 0 ? r.nextInt(len + 1) : len));
                        byte[] d = new byte[send];
                        r.nextBytes(d);
                        b.put(d);
                        if (b.remaining() < 200_000) {
                            break;
                        }
                    }
                    out.write(b.array(), 0, b.position());
                } else {
                    // A real handshake to the junk export, then requests with random fields.
                    out.write(ByteBuffer.allocate(4).putInt(3).array());
                    byte[] go = goData(JUNK);
                    out.write(ByteBuffer.allocate(16 + go.length).putLong(IHAVEOPT).putInt(OPT_GO).putInt(go.length).put(go).array());
                    for (int i = 0; i < 1 + r.nextInt(16); i++) {
                        int type = r.nextInt(10);
                        int flags = r.nextInt(4) == 0 ? r.nextInt(1 << 16) : r.nextInt(32);
                        long off = r.nextInt(4) == 0 ? r.nextLong() : r.nextInt((int) JUNK_SIZE + 8192);
                        int len = r.nextInt(4) == 0 ? r.nextInt() : r.nextInt(128 << 10);
                        int magic = r.nextInt(30) == 0 ? r.nextInt() : REQUEST_MAGIC;
                        b.clear();
                        b.putInt(magic).putShort((short) flags).putShort((short) type).putLong(r.nextLong()).putLong(off).putInt(len);
                        if (type == CMD_WRITE && len > 0 && len <= (128 << 10)) {
                            int send = mode == 4 && r.nextBoolean() ? r.nextInt(len) : len;
                            byte[] d = new byte[send];
                            r.nextBytes(d);
                            b.put(d);
                        }
                        out.write(b.array(), 0, b.position());
                    }
                }
            }
            out.flush();
            // Read a little of whatever comes back, then hang up.
            in.readNBytes(r.nextInt(4096));
        } catch (IOException e) {
            // expected: resets, timeouts, closed sockets
        }
    }
}

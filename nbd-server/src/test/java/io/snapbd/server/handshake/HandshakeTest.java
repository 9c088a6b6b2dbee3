package io.snapbd.server.handshake;

import io.snapbd.engine.BlockDevice;
import io.snapbd.engine.io.ByteSink;
import io.snapbd.engine.io.ByteSource;
import io.snapbd.server.export.Export;
import io.snapbd.server.export.ExportRegistry;
import io.snapbd.server.protocol.Nbd;
import io.snapbd.server.protocol.ProtocolViolation;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.Channels;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.concurrent.CompletableFuture;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Drives {@link Handshake} over a real Unix socket with hand-written client bytes. */
class HandshakeTest {

    @TempDir
    Path dir;

    private SocketChannel serverSide;
    private SocketChannel clientSide;
    private DataInputStream in;
    private DataOutputStream out;
    private final ExportRegistry exports = new ExportRegistry();
    private Export vol;

    @BeforeEach
    void connect() throws IOException {
        Path sock = dir.resolve("s");
        try (ServerSocketChannel ss = ServerSocketChannel.open(StandardProtocolFamily.UNIX)) {
            ss.bind(UnixDomainSocketAddress.of(sock));
            clientSide = SocketChannel.open(UnixDomainSocketAddress.of(sock));
            serverSide = ss.accept();
        }
        in = new DataInputStream(Channels.newInputStream(clientSide));
        out = new DataOutputStream(Channels.newOutputStream(clientSide));
        vol = new Export("vol0", "test volume", new FakeDevice("vol0", 1 << 20, false));
        exports.add(vol);
        exports.add(new Export("snap", null, new FakeDevice("snap", 4096, true)));
    }

    @AfterEach
    void close() throws IOException {
        clientSide.close();
        serverSide.close();
    }

    private CompletableFuture<Negotiated> runServer() {
        return CompletableFuture.supplyAsync(() -> {
            try {
                return new Handshake(serverSide, exports).run();
            } catch (IOException e) {
                throw new RuntimeException(e);
            }
        });
    }

    private void greet(int clientFlags) throws IOException {
        assertEquals(Nbd.NBDMAGIC, in.readLong());
        assertEquals(Nbd.IHAVEOPT, in.readLong());
        assertEquals(Nbd.FLAG_FIXED_NEWSTYLE | Nbd.FLAG_NO_ZEROES, in.readUnsignedShort());
        out.writeInt(clientFlags);
    }

    private void option(int opt, byte[] data) throws IOException {
        out.writeLong(Nbd.IHAVEOPT);
        out.writeInt(opt);
        out.writeInt(data.length);
        out.write(data);
    }

    /** Reads one option reply; returns its type, checks the option echo, and stores the payload. */
    private byte[] lastPayload;

    private int reply(int expectOption) throws IOException {
        assertEquals(Nbd.OPTION_REPLY_MAGIC, in.readLong());
        assertEquals(expectOption, in.readInt());
        int type = in.readInt();
        lastPayload = new byte[in.readInt()];
        in.readFully(lastPayload);
        return type;
    }

    private static byte[] goData(String name, int... infos) {
        byte[] n = name.getBytes(StandardCharsets.UTF_8);
        java.nio.ByteBuffer b = java.nio.ByteBuffer.allocate(4 + n.length + 2 + 2 * infos.length);
        b.putInt(n.length).put(n).putShort((short) infos.length);
        for (int i : infos) {
            b.putShort((short) i);
        }
        return b.array();
    }

    @Test
    void listThenGoWithInfos() throws Exception {
        CompletableFuture<Negotiated> server = runServer();
        greet(Nbd.FLAG_C_FIXED_NEWSTYLE | Nbd.FLAG_C_NO_ZEROES);
        option(Nbd.OPT_LIST, new byte[0]);
        assertEquals(Nbd.REP_SERVER, reply(Nbd.OPT_LIST));
        assertEquals("snap", new String(lastPayload, 4, lastPayload.length - 4, StandardCharsets.UTF_8));
        assertEquals(Nbd.REP_SERVER, reply(Nbd.OPT_LIST));
        assertEquals(Nbd.REP_ACK, reply(Nbd.OPT_LIST));

        option(Nbd.OPT_GO, goData("", Nbd.INFO_NAME, Nbd.INFO_DESCRIPTION, Nbd.INFO_BLOCK_SIZE));
        int seen = 0;
        int type;
        while ((type = reply(Nbd.OPT_GO)) == Nbd.REP_INFO) {
            java.nio.ByteBuffer p = java.nio.ByteBuffer.wrap(lastPayload);
            int info = p.getShort();
            if (info == Nbd.INFO_EXPORT) {
                assertEquals(1 << 20, p.getLong());
                int flags = p.getShort() & 0xffff;
                assertTrue((flags & Nbd.FLAG_HAS_FLAGS) != 0 && (flags & Nbd.FLAG_READ_ONLY) == 0);
                assertTrue((flags & Nbd.FLAG_SEND_DF) == 0, "DF only with structured replies");
            } else if (info == Nbd.INFO_NAME) {
                assertEquals("vol0", new String(lastPayload, 2, lastPayload.length - 2, StandardCharsets.UTF_8));
            } else if (info == Nbd.INFO_DESCRIPTION) {
                assertEquals("test volume", new String(lastPayload, 2, lastPayload.length - 2, StandardCharsets.UTF_8));
            } else if (info == Nbd.INFO_BLOCK_SIZE) {
                assertEquals(1, p.getInt());
                assertEquals(4096, p.getInt());
                assertEquals(Nbd.MAX_PAYLOAD, p.getInt());
            }
            seen |= 1 << info;
        }
        assertEquals(Nbd.REP_ACK, type);
        assertEquals(0b1111, seen);
        Negotiated n = server.get();
        assertSame(vol, n.export());
        assertTrue(n.contexts().isEmpty());
    }

    @Test
    void structuredRepliesAndMetaContext() throws Exception {
        CompletableFuture<Negotiated> server = runServer();
        greet(Nbd.FLAG_C_FIXED_NEWSTYLE);
        byte[] meta = metaData("vol0", Nbd.BASE_ALLOCATION, "qemu:dirty-bitmap:x");
        option(Nbd.OPT_SET_META_CONTEXT, meta);
        assertEquals(Nbd.REP_ERR_INVALID, reply(Nbd.OPT_SET_META_CONTEXT), "meta context needs structured replies");
        option(Nbd.OPT_STRUCTURED_REPLY, new byte[0]);
        assertEquals(Nbd.REP_ACK, reply(Nbd.OPT_STRUCTURED_REPLY));
        option(Nbd.OPT_LIST_META_CONTEXT, metaData("vol0", "base:"));
        assertEquals(Nbd.REP_META_CONTEXT, reply(Nbd.OPT_LIST_META_CONTEXT));
        assertEquals(Nbd.BASE_ALLOCATION, new String(lastPayload, 4, lastPayload.length - 4, StandardCharsets.UTF_8));
        assertEquals(Nbd.REP_ACK, reply(Nbd.OPT_LIST_META_CONTEXT));
        option(Nbd.OPT_SET_META_CONTEXT, meta);
        assertEquals(Nbd.REP_META_CONTEXT, reply(Nbd.OPT_SET_META_CONTEXT));
        int id = java.nio.ByteBuffer.wrap(lastPayload).getInt();
        assertEquals(Nbd.REP_ACK, reply(Nbd.OPT_SET_META_CONTEXT));
        option(Nbd.OPT_GO, goData("vol0"));
        assertEquals(Nbd.REP_INFO, reply(Nbd.OPT_GO));
        int flags = java.nio.ByteBuffer.wrap(lastPayload, 10, 2).getShort() & 0xffff;
        assertTrue((flags & Nbd.FLAG_SEND_DF) != 0);
        assertEquals(Nbd.REP_INFO, reply(Nbd.OPT_GO));     // block size
        assertEquals(Nbd.REP_ACK, reply(Nbd.OPT_GO));
        Negotiated n = server.get();
        assertTrue(n.structuredReplies());
        assertEquals(1, id);
        assertEquals(Nbd.BASE_ALLOCATION, n.contexts().get(id - 1).name());
    }

    @Test
    void errorsKeepTheSessionUsable() throws Exception {
        CompletableFuture<Negotiated> server = runServer();
        greet(Nbd.FLAG_C_FIXED_NEWSTYLE);
        option(99, new byte[]{1, 2, 3});
        assertEquals(Nbd.REP_ERR_UNSUP, reply(99));
        option(Nbd.OPT_GO, goData("nope"));
        assertEquals(Nbd.REP_ERR_UNKNOWN, reply(Nbd.OPT_GO));
        byte[] bad = goData("vol0");
        java.nio.ByteBuffer.wrap(bad).putInt(0, 1000);
        option(Nbd.OPT_INFO, bad);
        assertEquals(Nbd.REP_ERR_INVALID, reply(Nbd.OPT_INFO));
        option(Nbd.OPT_LIST, new byte[]{0});
        assertEquals(Nbd.REP_ERR_INVALID, reply(Nbd.OPT_LIST));
        option(Nbd.OPT_STARTTLS, new byte[0]);
        assertEquals(Nbd.REP_ERR_UNSUP, reply(Nbd.OPT_STARTTLS));
        option(Nbd.OPT_EXPORT_NAME, "snap".getBytes(StandardCharsets.UTF_8));
        assertEquals(4096, in.readLong());
        int flags = in.readUnsignedShort();
        assertTrue((flags & Nbd.FLAG_READ_ONLY) != 0);
        byte[] zeros = new byte[124];
        in.readFully(zeros);
        assertArrayEquals(new byte[124], zeros);
        assertEquals("snap", server.get().export().name());
    }

    @Test
    void abortEndsWithAck() throws Exception {
        CompletableFuture<Negotiated> server = runServer();
        greet(Nbd.FLAG_C_FIXED_NEWSTYLE);
        option(Nbd.OPT_ABORT, new byte[0]);
        assertEquals(Nbd.REP_ACK, reply(Nbd.OPT_ABORT));
        assertNull(server.get());
    }

    @Test
    void unknownClientFlagsAndBadMagicAreFatal() throws Exception {
        CompletableFuture<Negotiated> server = runServer();
        greet(1 << 5);
        Throwable t = assertThrows(Exception.class, server::get);
        assertTrue(t.getCause().getCause() instanceof ProtocolViolation, t.toString());
    }

    @Test
    void oversizedOptionIsRefusedThenClosed() throws Exception {
        CompletableFuture<Negotiated> server = runServer();
        greet(Nbd.FLAG_C_FIXED_NEWSTYLE);
        out.writeLong(Nbd.IHAVEOPT);
        out.writeInt(Nbd.OPT_GO);
        out.writeInt(Nbd.MAX_OPTION_BYTES + 1);
        assertEquals(Nbd.REP_ERR_TOO_BIG, reply(Nbd.OPT_GO));
        assertThrows(Exception.class, server::get);
    }

    private static byte[] metaData(String export, String... queries) {
        java.io.ByteArrayOutputStream bo = new java.io.ByteArrayOutputStream();
        DataOutputStream d = new DataOutputStream(bo);
        try {
            byte[] e = export.getBytes(StandardCharsets.UTF_8);
            d.writeInt(e.length);
            d.write(e);
            d.writeInt(queries.length);
            for (String q : queries) {
                byte[] qb = q.getBytes(StandardCharsets.UTF_8);
                d.writeInt(qb.length);
                d.write(qb);
            }
        } catch (IOException ex) {
            throw new RuntimeException(ex);
        }
        return bo.toByteArray();
    }

    /** The handshake only asks a device for its identity. */
    private record FakeDevice(String name, long size, boolean isReadOnly) implements BlockDevice {
        public int blockSize() {
            return 4096;
        }

        public boolean canZeroFast() {
            return true;
        }

        public Session openSession() {
            return () -> { };
        }

        public void read(Session s, long offset, int length, ByteSink sink) {
            throw new UnsupportedOperationException();
        }

        public void write(Session s, long offset, int length, ByteSource source, boolean fua) {
            throw new UnsupportedOperationException();
        }

        public void trim(Session s, long offset, long length, boolean fua) {
            throw new UnsupportedOperationException();
        }

        public void writeZeroes(Session s, long offset, long length, boolean noHole, boolean fastOnly, boolean fua) {
            throw new UnsupportedOperationException();
        }

        public void flush() {
        }

        public void forceRange(long offset, long length) {
        }

        public void extents(long offset, long length, ExtentConsumer consumer) {
            throw new UnsupportedOperationException();
        }
    }
}

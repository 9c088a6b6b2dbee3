package io.snapbd.server.it;

import org.junit.jupiter.api.Assertions;

import java.io.BufferedOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.EOFException;
import java.io.IOException;
import java.io.InputStream;
import java.net.InetAddress;
import java.net.Socket;
import java.net.SocketException;
import java.net.SocketTimeoutException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;

/**
 * A hand-written NBD client speaking raw bytes over TCP, for feeding the server exactly what a test wants:
 * well-formed or not. Every read is bounded by a socket timeout so a silent server fails the test instead of
 * hanging it. All integers are big-endian, as on the wire.
 */
public final class RawNbd implements AutoCloseable {

    // handshake
    public static final long NBDMAGIC = 0x4e42444d41474943L;
    public static final long IHAVEOPT = 0x49484156454F5054L;
    public static final long OPTION_REPLY_MAGIC = 0x3e889045565a9L;
    public static final int OPT_EXPORT_NAME = 1;
    public static final int OPT_ABORT = 2;
    public static final int OPT_LIST = 3;
    public static final int OPT_INFO = 6;
    public static final int OPT_GO = 7;
    public static final int OPT_STRUCTURED_REPLY = 8;
    public static final int OPT_LIST_META_CONTEXT = 9;
    public static final int OPT_SET_META_CONTEXT = 10;
    public static final int REP_ACK = 1;
    public static final int REP_SERVER = 2;
    public static final int REP_INFO = 3;
    public static final int REP_META_CONTEXT = 4;
    public static final int REP_ERR_UNSUP = 0x80000001;
    public static final int REP_ERR_INVALID = 0x80000003;
    public static final int REP_ERR_UNKNOWN = 0x80000006;
    public static final int REP_ERR_TOO_BIG = 0x80000009;
    public static final int INFO_EXPORT = 0;
    public static final int INFO_NAME = 1;
    public static final int INFO_DESCRIPTION = 2;
    public static final int INFO_BLOCK_SIZE = 3;

    // transmission
    public static final int REQUEST_MAGIC = 0x25609513;
    public static final int SIMPLE_REPLY_MAGIC = 0x67446698;
    public static final int STRUCTURED_REPLY_MAGIC = 0x668e33ef;
    public static final int CMD_READ = 0;
    public static final int CMD_WRITE = 1;
    public static final int CMD_DISC = 2;
    public static final int CMD_FLUSH = 3;
    public static final int CMD_TRIM = 4;
    public static final int CMD_CACHE = 5;
    public static final int CMD_WRITE_ZEROES = 6;
    public static final int CMD_BLOCK_STATUS = 7;
    public static final int FLAG_FUA = 1;
    public static final int FLAG_NO_HOLE = 2;
    public static final int FLAG_DF = 4;
    public static final int FLAG_REQ_ONE = 8;
    public static final int REPLY_FLAG_DONE = 1;
    public static final int REPLY_TYPE_NONE = 0;
    public static final int REPLY_TYPE_OFFSET_DATA = 1;
    public static final int REPLY_TYPE_OFFSET_HOLE = 2;
    public static final int REPLY_TYPE_BLOCK_STATUS = 5;
    public static final int REPLY_TYPE_ERROR = 0x8001;
    public static final int EINVAL = 22;
    public static final int ENOSPC = 28;

    /** Generous bound for any single read; a server that says nothing for this long has failed the test. */
    public static final int READ_TIMEOUT_MS = 30_000;

    /** The TCP socket, or null for a Unix socket ({@link #connectUnix}). */
    private final Socket socket;
    private final java.io.Closeable channel;
    private final DataInputStream in;
    private final DataOutputStream out;

    /** Export size and transmission flags after a successful GO / EXPORT_NAME. */
    public long exportSize;
    public int transmissionFlags;

    private RawNbd(java.nio.channels.SocketChannel unix) {
        this.socket = null;
        this.channel = unix;
        this.in = new DataInputStream(java.nio.channels.Channels.newInputStream(unix));
        this.out = new DataOutputStream(new BufferedOutputStream(java.nio.channels.Channels.newOutputStream(unix), 1 << 16));
    }

    /**
     * Connects to a Unix socket (reads are not bounded by a timeout here): a client whose unread replies fill the
     * server's send buffer after a few hundred (a Unix socket's buffer counts each reply's overhead, unlike TCP on
     * loopback, which grows to megabytes).
     */
    public static RawNbd connectUnix(java.nio.file.Path path) throws IOException {
        return new RawNbd(java.nio.channels.SocketChannel.open(java.net.UnixDomainSocketAddress.of(path)));
    }

    private RawNbd(Socket socket) throws IOException {
        this.socket = socket;
        this.channel = socket;
        socket.setSoTimeout(READ_TIMEOUT_MS);
        socket.setTcpNoDelay(true);
        this.in = new DataInputStream(socket.getInputStream());
        this.out = new DataOutputStream(new BufferedOutputStream(socket.getOutputStream(), 1 << 16));
    }

    public static RawNbd connect(int port) throws IOException {
        return new RawNbd(new Socket(InetAddress.getLoopbackAddress(), port));
    }

    /** Connects with SO_RCVBUF set before the connect (so the advertised window is small too): a slow reader. */
    public static RawNbd connect(int port, int receiveBuffer) throws IOException {
        Socket s = new Socket();
        s.setReceiveBufferSize(receiveBuffer);
        s.connect(new java.net.InetSocketAddress(InetAddress.getLoopbackAddress(), port));
        return new RawNbd(s);
    }

    public Socket socket() {
        return socket;
    }

    public DataInputStream in() {
        return in;
    }

    // ---- handshake -----------------------------------------------------------------------------------------

    /** Reads the 18-byte greeting and returns the handshake flags. */
    public int readGreeting() throws IOException {
        Assertions.assertEquals(NBDMAGIC, in.readLong(), "greeting: NBDMAGIC");
        Assertions.assertEquals(IHAVEOPT, in.readLong(), "greeting: IHAVEOPT");
        return in.readUnsignedShort();
    }

    public RawNbd sendClientFlags(int flags) throws IOException {
        out.writeInt(flags);
        out.flush();
        return this;
    }

    /** Greeting + client flags FIXED_NEWSTYLE|NO_ZEROES. */
    public RawNbd startHandshake() throws IOException {
        int f = readGreeting();
        Assertions.assertEquals(3, f & 3, "server flags FIXED_NEWSTYLE|NO_ZEROES");
        return sendClientFlags(3);
    }

    public RawNbd sendOption(int option, byte[] data) throws IOException {
        return sendOptionHeader(IHAVEOPT, option, data.length).sendRaw(data);
    }

    public RawNbd sendOptionHeader(long magic, int option, int length) throws IOException {
        out.writeLong(magic);
        out.writeInt(option);
        out.writeInt(length);
        out.flush();
        return this;
    }

    public RawNbd sendRaw(byte[] bytes) throws IOException {
        out.write(bytes);
        out.flush();
        return this;
    }

    public record OptReply(int option, int type, byte[] data) {
        public boolean isError() {
            return type < 0;
        }

        public String text() {
            return new String(data, StandardCharsets.UTF_8);
        }

        @Override
        public String toString() {
            return "OptReply[option=" + option + ", type=0x" + Integer.toHexString(type) + ", " + data.length + " bytes"
                    + (isError() ? ": " + text() : "") + "]";
        }
    }

    public OptReply readOptReply() throws IOException {
        long magic = in.readLong();
        Assertions.assertEquals(OPTION_REPLY_MAGIC, magic, "option reply magic");
        int option = in.readInt();
        int type = in.readInt();
        int len = in.readInt();
        Assertions.assertTrue(len >= 0 && len <= (1 << 20), "option reply length " + len);
        byte[] data = new byte[len];
        in.readFully(data);
        return new OptReply(option, type, data);
    }

    /** Reads replies to one option up to and including its ACK or first error. */
    public List<OptReply> readOptReplies(int option) throws IOException {
        List<OptReply> all = new ArrayList<>();
        while (true) {
            OptReply r = readOptReply();
            Assertions.assertEquals(option, r.option(), "reply is for option " + option + ": " + r);
            all.add(r);
            if (r.type() == REP_ACK || r.isError()) {
                return all;
            }
        }
    }

    public static byte[] goData(String export, int... infos) {
        byte[] name = export.getBytes(StandardCharsets.UTF_8);
        ByteBuffer b = ByteBuffer.allocate(4 + name.length + 2 + 2 * infos.length);
        b.putInt(name.length).put(name).putShort((short) infos.length);
        for (int i : infos) {
            b.putShort((short) i);
        }
        return b.array();
    }

    public static byte[] metaContextData(String export, String... queries) {
        byte[] name = export.getBytes(StandardCharsets.UTF_8);
        int len = 4 + name.length + 4;
        for (String q : queries) {
            len += 4 + q.getBytes(StandardCharsets.UTF_8).length;
        }
        ByteBuffer b = ByteBuffer.allocate(len);
        b.putInt(name.length).put(name).putInt(queries.length);
        for (String q : queries) {
            byte[] qb = q.getBytes(StandardCharsets.UTF_8);
            b.putInt(qb.length).put(qb);
        }
        return b.array();
    }

    /** Sends GO and reads its replies; on ACK records the export size and flags from NBD_INFO_EXPORT. */
    public List<OptReply> go(String export) throws IOException {
        sendOption(OPT_GO, goData(export));
        List<OptReply> replies = readOptReplies(OPT_GO);
        OptReply last = replies.get(replies.size() - 1);
        if (last.type() == REP_ACK) {
            for (OptReply r : replies) {
                ByteBuffer d = ByteBuffer.wrap(r.data());
                if (r.type() == REP_INFO && d.getShort(0) == INFO_EXPORT) {
                    exportSize = d.getLong(2);
                    transmissionFlags = Short.toUnsignedInt(d.getShort(10));
                }
            }
            Assertions.assertTrue(exportSize > 0, "GO reply carried NBD_INFO_EXPORT: " + replies);
        }
        return replies;
    }

    /** Full handshake to transmission on {@code export}; optionally with structured replies and base:allocation. */
    public RawNbd negotiate(String export, boolean structured, boolean allocation) throws IOException {
        startHandshake();
        if (structured) {
            sendOption(OPT_STRUCTURED_REPLY, new byte[0]);
            Assertions.assertEquals(REP_ACK, readOptReplies(OPT_STRUCTURED_REPLY).get(0).type());
        }
        if (allocation) {
            sendOption(OPT_SET_META_CONTEXT, metaContextData(export, "base:allocation"));
            List<OptReply> r = readOptReplies(OPT_SET_META_CONTEXT);
            Assertions.assertEquals(REP_ACK, r.get(r.size() - 1).type(), "SET_META_CONTEXT: " + r);
        }
        List<OptReply> r = go(export);
        Assertions.assertEquals(REP_ACK, r.get(r.size() - 1).type(), "GO " + export + ": " + r);
        return this;
    }

    // ---- transmission --------------------------------------------------------------------------------------

    public RawNbd sendRequest(int flags, int type, long handle, long offset, long length, byte[] payload) throws IOException {
        return sendRequest(REQUEST_MAGIC, flags, type, handle, offset, length, payload);
    }

    public RawNbd sendRequest(int magic, int flags, int type, long handle, long offset, long length, byte[] payload) throws IOException {
        out.writeInt(magic);
        out.writeShort(flags);
        out.writeShort(type);
        out.writeLong(handle);
        out.writeLong(offset);
        out.writeInt((int) length);
        if (payload != null) {
            out.write(payload);
        }
        out.flush();
        return this;
    }

    /** One reply: a simple reply, or one structured chunk. */
    public record Reply(boolean structured, int errorOrFlags, int type, long handle, byte[] data) {
        /** Error of a simple reply, or of a structured error chunk (0 otherwise). */
        public int error() {
            if (!structured) {
                return errorOrFlags;
            }
            if (type == REPLY_TYPE_ERROR && data.length >= 4) {
                return ByteBuffer.wrap(data).getInt(0);
            }
            return 0;
        }

        public boolean done() {
            return !structured || (errorOrFlags & REPLY_FLAG_DONE) != 0;
        }
    }

    /**
     * Reads one reply. A simple reply to a READ is followed by {@code simpleReadLength} bytes of data (pass 0
     * for other commands or when the reply is an error).
     */
    public Reply readReply(int simpleReadLength) throws IOException {
        int magic = in.readInt();
        if (magic == SIMPLE_REPLY_MAGIC) {
            int error = in.readInt();
            long handle = in.readLong();
            byte[] data = new byte[error == 0 ? simpleReadLength : 0];
            in.readFully(data);
            return new Reply(false, error, 0, handle, data);
        }
        Assertions.assertEquals(STRUCTURED_REPLY_MAGIC, magic, "reply magic 0x" + Integer.toHexString(magic));
        int flags = in.readUnsignedShort();
        int type = in.readUnsignedShort();
        long handle = in.readLong();
        int len = in.readInt();
        Assertions.assertTrue(len >= 0 && len <= (33 << 20), "structured chunk length " + len);
        byte[] data = new byte[len];
        in.readFully(data);
        return new Reply(true, flags, type, handle, data);
    }

    /** Simple-reply READ: returns the data, failing on an error reply. */
    public byte[] read(long handle, long offset, int length) throws IOException {
        sendRequest(0, CMD_READ, handle, offset, length, null);
        Reply r = readReply(length);
        Assertions.assertEquals(handle, r.handle(), "READ reply handle");
        Assertions.assertEquals(0, r.error(), "READ error");
        return r.data();
    }

    public void write(long handle, long offset, byte[] data) throws IOException {
        sendRequest(0, CMD_WRITE, handle, offset, data.length, data);
        Reply r = readReply(0);
        Assertions.assertEquals(handle, r.handle(), "WRITE reply handle");
        Assertions.assertEquals(0, r.error(), "WRITE error");
    }

    public void disconnect() throws IOException {
        sendRequest(0, CMD_DISC, 0, 0, 0, null);
    }

    // ---- closing -------------------------------------------------------------------------------------------

    /**
     * Drains whatever the server still sends and asserts that it then closes the connection (EOF or reset)
     * within the read timeout. Returns the bytes read before the close.
     */
    public byte[] assertClosedByServer(String why) {
        java.io.ByteArrayOutputStream seen = new java.io.ByteArrayOutputStream();
        try {
            InputStream raw = in;
            byte[] buf = new byte[65536];
            while (true) {
                int n = raw.read(buf);
                if (n < 0) {
                    return seen.toByteArray();
                }
                seen.write(buf, 0, n);
                if (seen.size() > (64 << 20)) {
                    Assertions.fail(why + ": the server keeps sending instead of closing");
                }
            }
        } catch (SocketTimeoutException e) {
            Assertions.fail(why + ": the server did not close the connection within " + READ_TIMEOUT_MS + " ms (read "
                    + seen.size() + " bytes)");
        } catch (EOFException | SocketException e) {
            return seen.toByteArray();     // reset by peer counts as closed
        } catch (IOException e) {
            return seen.toByteArray();
        }
        return seen.toByteArray();
    }

    @Override
    public void close() {
        try {
            channel.close();
        } catch (IOException e) {
            // closing anyway
        }
    }
}

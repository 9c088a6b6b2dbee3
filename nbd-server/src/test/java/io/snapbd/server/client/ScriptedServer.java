package io.snapbd.server.client;

import io.snapbd.server.protocol.Nbd;
import io.snapbd.server.protocol.RequestHeader;

import java.io.EOFException;
import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.Map;

/**
 * A fake NBD server for the protocol's corner cases that real servers do not produce on demand (out-of-order
 * chunks, holes inside a reply, error chunks, protocol violations). It accepts one connection on a Unix socket
 * and runs a script against it; {@link #finish()} rethrows whatever the script threw.
 */
final class ScriptedServer implements AutoCloseable {

    interface Script {
        void run(Peer peer) throws Exception;
    }

    /** An option as the server reads it. */
    record Option(int option, ByteBuffer data) {
    }

    /** A request as the server reads it. */
    record Request(int flags, int type, long handle, long offset, int length, byte[] payload) {
    }

    private final Path socket;
    private final ServerSocketChannel listener;
    private final Thread thread;
    private volatile Throwable failure;

    ScriptedServer(Path dir, Script script) throws IOException {
        socket = dir.resolve("scripted.sock");
        listener = ServerSocketChannel.open(StandardProtocolFamily.UNIX);
        listener.bind(UnixDomainSocketAddress.of(socket));
        thread = new Thread(() -> {
            try (SocketChannel ch = listener.accept()) {
                script.run(new Peer(ch));
            } catch (Throwable t) {
                failure = t;
            }
        }, "scripted-nbd-server");
        thread.setDaemon(true);
        thread.start();
    }

    NbdUri uri(String export) {
        return NbdUri.unix(socket, export);
    }

    /** Waits for the script to end; fails with what it threw. */
    void finish() throws Exception {
        thread.join();
        if (failure instanceof Exception) {
            throw (Exception) failure;
        }
        if (failure != null) {
            throw new AssertionError(failure);
        }
    }

    @Override
    public void close() throws IOException {
        listener.close();
    }

    /** The server's end of the connection. */
    static final class Peer {
        private final SocketChannel ch;

        Peer(SocketChannel ch) {
            this.ch = ch;
        }

        /** Sends the newstyle greeting; returns the client's flags. */
        int greet(int handshakeFlags) throws IOException {
            write(ByteBuffer.allocate(18).putLong(Nbd.NBDMAGIC).putLong(Nbd.IHAVEOPT).putShort((short) handshakeFlags).flip());
            return read(4).getInt();
        }

        Option readOption() throws IOException {
            ByteBuffer h = read(16);
            if (h.getLong() != Nbd.IHAVEOPT) {
                throw new IOException("no IHAVEOPT");
            }
            int option = h.getInt();
            return new Option(option, read(h.getInt()));
        }

        void reply(int option, int type, ByteBuffer data) throws IOException {
            write(ByteBuffer.allocate(20).putLong(Nbd.OPTION_REPLY_MAGIC).putInt(option).putInt(type)
                    .putInt(data.remaining()).flip());
            write(data);
        }

        /**
         * A typical fixed-newstyle handshake ending in NBD_OPT_GO: acknowledges structured replies, selects the
         * asked-for contexts found in {@code contexts} (name to id), and sends only NBD_INFO_EXPORT.
         */
        void handshake(long size, int transmissionFlags, Map<String, Integer> contexts) throws IOException {
            greet(Nbd.FLAG_FIXED_NEWSTYLE | Nbd.FLAG_NO_ZEROES);
            while (true) {
                Option o = readOption();
                int option = o.option();
                ByteBuffer data = o.data();
                switch (option) {
                    case Nbd.OPT_STRUCTURED_REPLY:
                        reply(option, Nbd.REP_ACK, ByteBuffer.allocate(0));
                        break;
                    case Nbd.OPT_SET_META_CONTEXT: {
                        data.position(4 + data.getInt());       // skip the export name
                        int queries = data.getInt();
                        for (int i = 0; i < queries; i++) {
                            byte[] q = new byte[data.getInt()];
                            data.get(q);
                            Integer id = contexts.get(new String(q, StandardCharsets.UTF_8));
                            if (id != null) {
                                reply(option, Nbd.REP_META_CONTEXT, ByteBuffer.allocate(4 + q.length).putInt(id).put(q).flip());
                            }
                        }
                        reply(option, Nbd.REP_ACK, ByteBuffer.allocate(0));
                        break;
                    }
                    case Nbd.OPT_GO:
                        reply(option, Nbd.REP_INFO, ByteBuffer.allocate(12).putShort((short) Nbd.INFO_EXPORT).putLong(size)
                                .putShort((short) (Nbd.FLAG_HAS_FLAGS | transmissionFlags)).flip());
                        reply(option, Nbd.REP_ACK, ByteBuffer.allocate(0));
                        return;
                    default:
                        reply(option, Nbd.REP_ERR_UNSUP, ByteBuffer.allocate(0));
                }
            }
        }

        Request readRequest() throws IOException {
            ByteBuffer h = read(RequestHeader.BYTES);
            if (h.getInt() != Nbd.REQUEST_MAGIC) {
                throw new IOException("bad request magic");
            }
            int flags = Short.toUnsignedInt(h.getShort());
            int type = Short.toUnsignedInt(h.getShort());
            long handle = h.getLong();
            long offset = h.getLong();
            int length = h.getInt();
            byte[] payload = new byte[type == Nbd.CMD_WRITE ? length : 0];
            read(payload.length).get(payload);
            return new Request(flags, type, handle, offset, length, payload);
        }

        void simple(long handle, int error, byte[] data) throws IOException {
            write(ByteBuffer.allocate(16 + data.length).putInt(Nbd.SIMPLE_REPLY_MAGIC).putInt(error).putLong(handle)
                    .put(data).flip());
        }

        void chunk(boolean done, int type, long handle, ByteBuffer payload) throws IOException {
            write(ByteBuffer.allocate(20).putInt(Nbd.STRUCTURED_REPLY_MAGIC).putShort((short) (done ? Nbd.REPLY_FLAG_DONE : 0))
                    .putShort((short) type).putLong(handle).putInt(payload.remaining()).flip());
            write(payload);
        }

        void data(boolean done, long handle, long offset, byte[] bytes) throws IOException {
            chunk(done, Nbd.REPLY_TYPE_OFFSET_DATA, handle, ByteBuffer.allocate(8 + bytes.length).putLong(offset).put(bytes).flip());
        }

        void hole(boolean done, long handle, long offset, int length) throws IOException {
            chunk(done, Nbd.REPLY_TYPE_OFFSET_HOLE, handle, ByteBuffer.allocate(12).putLong(offset).putInt(length).flip());
        }

        void none(long handle) throws IOException {
            chunk(true, Nbd.REPLY_TYPE_NONE, handle, ByteBuffer.allocate(0));
        }

        void error(boolean done, int type, long handle, int errno, String message, long... offset) throws IOException {
            byte[] text = message.getBytes(StandardCharsets.UTF_8);
            ByteBuffer b = ByteBuffer.allocate(6 + text.length + 8 * offset.length).putInt(errno).putShort((short) text.length).put(text);
            for (long o : offset) {
                b.putLong(o);
            }
            chunk(done, type, handle, b.flip());
        }

        /** A BLOCK_STATUS chunk: {@code extents} are (length, flags) pairs. */
        void blockStatus(boolean done, long handle, int context, int... extents) throws IOException {
            ByteBuffer b = ByteBuffer.allocate(4 + 4 * extents.length).putInt(context);
            for (int e : extents) {
                b.putInt(e);
            }
            chunk(done, Nbd.REPLY_TYPE_BLOCK_STATUS, handle, b.flip());
        }

        /** Reads until the client closes; fails if it sends anything but NBD_CMD_DISC. */
        void expectDisconnect() throws IOException {
            Request r = readRequest();
            if (r.type != Nbd.CMD_DISC) {
                throw new IOException("expected NBD_CMD_DISC, got " + Nbd.commandName(r.type));
            }
        }

        /** Reads and discards until the client closes the connection. */
        void drain() throws IOException {
            ByteBuffer b = ByteBuffer.allocate(4096);
            while (ch.read(b.clear()) >= 0) {
                // discard
            }
        }

        void write(ByteBuffer b) throws IOException {
            while (b.hasRemaining()) {
                ch.write(b);
            }
        }

        ByteBuffer read(int n) throws IOException {
            ByteBuffer b = ByteBuffer.allocate(n);
            while (b.hasRemaining()) {
                if (ch.read(b) < 0) {
                    throw new EOFException("client closed");
                }
            }
            return b.flip();
        }

        void close() throws IOException {
            ch.close();
        }
    }
}

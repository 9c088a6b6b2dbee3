package io.snapbd.nativeio;

import java.io.Closeable;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.ByteChannel;
import java.nio.channels.ClosedChannelException;
import java.nio.channels.GatheringByteChannel;
import java.util.Objects;
import jnr.constants.platform.AddressFamily;
import jnr.constants.platform.Errno;
import jnr.constants.platform.OpenFlags;
import jnr.constants.platform.Sock;
import jnr.unixsocket.UnixSocketChannel;

/** Connected pairs of AF_UNIX stream sockets, e.g. one end for the nbd driver, one for the server. */
public final class SocketPairs {

    private SocketPairs() {
    }

    public static SocketPair create() throws IOException {
        UnixSocketChannel[] pair = UnixSocketChannel.pair();
        return new SocketPair(new End(pair[0]), new End(pair[1]));
    }

    /** Both ends of a socketpair(2); closing the pair closes both. */
    public static final class SocketPair implements Closeable {
        private final End first;
        private final End second;

        private SocketPair(End first, End second) {
            this.first = first;
            this.second = second;
        }

        public End first() {
            return first;
        }

        public End second() {
            return second;
        }

        @Override
        public void close() throws IOException {
            try {
                first.close();
            } finally {
                second.close();
            }
        }
    }

    /**
     * One end: a blocking byte channel that also shows its file descriptor. Gathering writes of direct buffers
     * (a reply header and the mapped data behind it) go out in one writev(2).
     */
    public static final class End implements ByteChannel, GatheringByteChannel, ReadNow {
        private final UnixSocketChannel channel;
        /** struct iovec[Gather.IOV_ENTRIES]; guarded by itself, since replies may be sent from several threads. */
        private final ByteBuffer iov = Gather.newIov();

        private End(UnixSocketChannel channel) {
            this.channel = channel;
        }

        public int fd() {
            return channel.getFD();
        }

        // Reads and writes go straight to libc: jnr's own channel copies through a fresh heap
        // buffer on every call (less than half the throughput) and reports a zero-byte read as
        // end of stream.
        @Override
        public int read(ByteBuffer dst) throws IOException {
            ensureOpen();
            if (!dst.hasRemaining()) {
                return 0;
            }
            long n = Native.libc().read(fd(), dst, dst.remaining());
            if (n < 0) {
                int err = Native.errno();
                if (err == Errno.EAGAIN.intValue() || err == Errno.EWOULDBLOCK.intValue()) {
                    return 0;       // the receive timeout (setReceiveTimeout) passed with nothing received
                }
                throw new IOException("read from socket failed: " + Native.strerror(err));
            }
            if (n == 0) {
                return -1;
            }
            dst.position(dst.position() + (int) n);
            return (int) n;
        }

        @Override
        public int readNow(ByteBuffer dst) throws IOException {
            ensureOpen();
            return NativeSocket.recvNow(fd(), dst);
        }

        @Override
        public int write(ByteBuffer src) throws IOException {
            ensureOpen();
            long n = Native.libc().write(fd(), src, src.remaining());
            if (n < 0) {
                throw new IOException("write to socket failed: " + Native.strerror(Native.errno()));
            }
            src.position(src.position() + (int) n);
            return (int) n;
        }

        @Override
        public long write(ByteBuffer[] srcs) throws IOException {
            return write(srcs, 0, srcs.length);
        }

        @Override
        public long write(ByteBuffer[] srcs, int offset, int length) throws IOException {
            Objects.checkFromIndexSize(offset, length, srcs.length);
            ensureOpen();
            long simple = Gather.writeUnlessGathered(this, srcs, offset, length);
            if (simple != Gather.GATHER) {
                return simple;
            }
            synchronized (iov) {
                int entries = Gather.fill(iov, srcs, offset, length);
                long n = Native.libc().writev(fd(), iov, entries);
                if (n < 0) {
                    throw new IOException("write to socket failed: " + Native.strerror(Native.errno()));
                }
                Gather.advance(srcs, offset, length, n);
                return n;
            }
        }

        // After close the descriptor number may already belong to another file.
        private void ensureOpen() throws ClosedChannelException {
            if (!channel.isOpen()) {
                throw new ClosedChannelException();
            }
        }

        @Override
        public boolean isOpen() {
            return channel.isOpen();
        }

        /** SO_RCVTIMEO, as {@link NativeSocket#setReceiveTimeout}: a read that waited this long returns 0. */
        public void setReceiveTimeout(long millis) throws IOException {
            ensureOpen();
            NativeSocket.setReceiveTimeout(fd(), millis);
        }

        /**
         * shutdown(SHUT_RD): what the peer already sent can still be read, then reads see end of stream, and the
         * peer's further writes fail (EPIPE); the write side stays open for the replies.
         */
        public void shutdownInput() throws IOException {
            ensureOpen();
            channel.shutdownInput();
        }

        /**
         * Closes this process's descriptor without shutting the socket down, for after it was passed on
         * ({@link FdPassing}): the copy in the other process goes on working. Threads blocked on it are not woken.
         */
        public void closeWithoutShutdown() throws IOException {
            ensureOpen();
            // jnr's close shuts the socket down, so first put an unconnected socket under the channel's number
            // (dup3 drops the old reference atomically: the number is never free for another file meanwhile).
            LibC libc = Native.libc();
            int placeholder = libc.socket(AddressFamily.AF_UNIX.intValue(),
                    Sock.SOCK_STREAM.intValue() | OpenFlags.O_CLOEXEC.intValue(), 0);
            if (placeholder < 0) {
                throw new IOException("cannot create a Unix socket: " + Native.strerror(Native.errno()));
            }
            try {
                if (libc.dup3(placeholder, fd(), OpenFlags.O_CLOEXEC.intValue()) < 0) {
                    throw new IOException("dup3 onto fd " + fd() + " failed: " + Native.strerror(Native.errno()));
                }
            } finally {
                libc.close(placeholder);
            }
            channel.close();
        }

        /** Shuts the socket down first, so a thread blocked reading it sees end of stream. */
        @Override
        public void close() throws IOException {
            if (channel.isOpen()) {
                try {
                    channel.shutdownInput();
                    channel.shutdownOutput();
                } finally {
                    channel.close();
                }
            }
        }
    }
}

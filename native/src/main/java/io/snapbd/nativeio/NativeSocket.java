package io.snapbd.nativeio;

import java.io.IOException;
import java.net.Inet6Address;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.SocketAddress;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.ByteChannel;
import java.nio.channels.GatheringByteChannel;
import java.nio.charset.StandardCharsets;
import java.util.Objects;
import jnr.constants.platform.AddressFamily;
import jnr.constants.platform.Errno;
import jnr.constants.platform.IPProto;
import jnr.constants.platform.Shutdown;
import jnr.constants.platform.TCP;
import jnr.ffi.byref.IntByReference;

/**
 * A connected stream socket (TCP or Unix) known only by its file descriptor, e.g. one accepted on a listening
 * socket passed by systemd ({@link InheritedSockets}). A blocking byte channel: reads and writes go straight to
 * libc; gathering writes of direct buffers go out in one writev(2). Closing shuts the socket down first, so a
 * thread blocked reading it sees end of stream; the descriptor is closed once no thread uses it any more.
 */
public final class NativeSocket implements ByteChannel, GatheringByteChannel, ReadNow {

    private static final int SOCKADDR_BYTES = 128;   // sizeof(struct sockaddr_storage)

    private final FdRef fd;
    private final ByteBuffer iov = Gather.newIov();

    NativeSocket(int fd) {
        this.fd = new FdRef(fd);
    }

    /** Takes over a connected stream socket's descriptor, e.g. one received with {@link FdPassing}. */
    public static NativeSocket adopt(int fd) {
        if (fd < 0) {
            throw new IllegalArgumentException("no descriptor: " + fd);
        }
        return new NativeSocket(fd);
    }

    @Override
    public int read(ByteBuffer dst) throws IOException {
        if (!dst.hasRemaining()) {
            return 0;
        }
        int f = fd.acquire();
        try {
            while (true) {
                long n = Native.libc().read(f, dst, dst.remaining());
                if (n > 0) {
                    dst.position(dst.position() + (int) n);
                    return (int) n;
                }
                if (n == 0) {
                    return -1;
                }
                int err = Native.errno();
                if (err == Errno.EAGAIN.intValue() || err == Errno.EWOULDBLOCK.intValue()) {
                    return 0;       // the receive timeout (setReceiveTimeout) passed with nothing received
                }
                if (err != Errno.EINTR.intValue()) {
                    throw new IOException("read from socket failed: " + Native.strerror(err));
                }
            }
        } finally {
            fd.release();
        }
    }

    @Override
    public int readNow(ByteBuffer dst) throws IOException {
        int f = fd.acquire();
        try {
            return recvNow(f, dst);
        } finally {
            fd.release();
        }
    }

    /** recv(2) with MSG_DONTWAIT on {@code fd}, as {@link ReadNow#readNow} reports it. */
    static int recvNow(int fd, ByteBuffer dst) throws IOException {
        if (!dst.hasRemaining()) {
            return 0;
        }
        long n = Native.libc().recv(fd, dst, dst.remaining(), MSG_DONTWAIT);
        if (n > 0) {
            dst.position(dst.position() + (int) n);
            return (int) n;
        }
        if (n == 0) {
            return -1;
        }
        int err = Native.errno();
        if (err == Errno.EAGAIN.intValue() || err == Errno.EWOULDBLOCK.intValue()
                || err == Errno.EINTR.intValue()) {
            return 0;
        }
        throw new IOException("read from socket failed: " + Native.strerror(err));
    }

    private static final int MSG_DONTWAIT = 0x40;     // Linux

    @Override
    public int write(ByteBuffer src) throws IOException {
        int f = fd.acquire();
        try {
            while (true) {
                long n = Native.libc().write(f, src, src.remaining());
                if (n >= 0) {
                    src.position(src.position() + (int) n);
                    return (int) n;
                }
                int err = Native.errno();
                if (err != Errno.EINTR.intValue()) {
                    throw new IOException("write to socket failed: " + Native.strerror(err));
                }
            }
        } finally {
            fd.release();
        }
    }

    @Override
    public long write(ByteBuffer[] srcs) throws IOException {
        return write(srcs, 0, srcs.length);
    }

    @Override
    public long write(ByteBuffer[] srcs, int offset, int length) throws IOException {
        Objects.checkFromIndexSize(offset, length, srcs.length);
        long simple = Gather.writeUnlessGathered(this, srcs, offset, length);
        if (simple != Gather.GATHER) {
            return simple;
        }
        int f = fd.acquire();
        try {
            synchronized (iov) {
                int entries = Gather.fill(iov, srcs, offset, length);
                long n;
                while ((n = Native.libc().writev(f, iov, entries)) < 0) {
                    int err = Native.errno();
                    if (err != Errno.EINTR.intValue()) {
                        throw new IOException("write to socket failed: " + Native.strerror(err));
                    }
                }
                Gather.advance(srcs, offset, length, n);
                return n;
            }
        } finally {
            fd.release();
        }
    }

    /** Ends the reading side: a thread blocked in {@link #read} and every later read see end of stream. */
    public void shutdownInput() throws IOException {
        int f = fd.acquire();
        try {
            Native.libc().shutdown(f, Shutdown.SHUT_RD.intValue());     // fails only when already disconnected
        } finally {
            fd.release();
        }
    }

    /**
     * SO_RCVTIMEO: a {@link #read} that waited this long with nothing received returns 0 instead of waiting on, so
     * that its thread can look at a stop request (a connection stopping at a request boundary to be handed over). A
     * property of the socket, not of this descriptor: a copy passed to another process keeps it.
     */
    public void setReceiveTimeout(long millis) throws IOException {
        int f = fd.acquire();
        try {
            setReceiveTimeout(f, millis);
        } finally {
            fd.release();
        }
    }

    private static final int SOL_SOCKET = 1;
    private static final int SO_RCVTIMEO = 20;

    static void setReceiveTimeout(int fd, long millis) throws IOException {
        ByteBuffer tv = ByteBuffer.allocateDirect(16).order(ByteOrder.nativeOrder());     // struct timeval
        tv.putLong(0, millis / 1000).putLong(8, (millis % 1000) * 1000);
        if (Native.libc().setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, tv, 16) != 0) {
            throw new IOException("setsockopt(SO_RCVTIMEO) failed: " + Native.strerror(Native.errno()));
        }
    }

    /** TCP_NODELAY on a TCP socket; does nothing on a Unix socket. */
    public void setTcpNoDelay() throws IOException {
        if (!(remoteAddress() instanceof InetSocketAddress)) {
            return;
        }
        int f = fd.acquire();
        try {
            ByteBuffer one = ByteBuffer.allocateDirect(4).order(ByteOrder.nativeOrder()).putInt(0, 1);
            if (Native.libc().setsockopt(f, IPProto.IPPROTO_TCP.intValue(), TCP.TCP_NODELAY.intValue(), one, 4) != 0) {
                throw new IOException("setsockopt(TCP_NODELAY) failed: " + Native.strerror(Native.errno()));
            }
        } finally {
            fd.release();
        }
    }

    /** The peer: an InetSocketAddress, a UnixDomainSocketAddress (unnamed: empty path), or null when unknown. */
    public SocketAddress remoteAddress() {
        try {
            int f = fd.acquire();
            try {
                return socketAddress(f, true);
            } finally {
                fd.release();
            }
        } catch (IOException e) {
            return null;
        }
    }

    public int fd() {
        return fd.number();
    }

    /** The peer process's pid, uid and gid (a Unix socket only; getsockopt(SO_PEERCRED)). */
    public PeerCredentials peerCredentials() throws IOException {
        return PeerCredentials.of(this);
    }

    int acquireFd() throws IOException {
        return fd.acquire();
    }

    void releaseFd() {
        fd.release();
    }

    @Override
    public boolean isOpen() {
        return fd.isOpen();
    }

    @Override
    public void close() throws IOException {
        fd.close(f -> Native.libc().shutdown(f, Shutdown.SHUT_RDWR.intValue()));
    }

    /**
     * Closes this process's descriptor without shutting the socket down, for after it was passed on
     * ({@link FdPassing}): the copy in the other process goes on working. Threads blocked on it are not woken.
     */
    public void closeWithoutShutdown() throws IOException {
        fd.close(null);
    }

    @Override
    public String toString() {
        return "NativeSocket[fd " + fd.number() + (fd.isOpen() ? "" : ", closed") + "]";
    }

    // ---- struct sockaddr ---------------------------------------------------------------------------------------

    /** getsockname(2) ({@code peer} false) or getpeername(2) of {@code fd}, decoded; null for unknown families. */
    static SocketAddress socketAddress(int fd, boolean peer) throws IOException {
        ByteBuffer sa = ByteBuffer.allocateDirect(SOCKADDR_BYTES);
        IntByReference len = new IntByReference(SOCKADDR_BYTES);
        int rc = peer ? Native.libc().getpeername(fd, sa, len) : Native.libc().getsockname(fd, sa, len);
        if (rc != 0) {
            throw new IOException((peer ? "getpeername" : "getsockname") + " failed: " + Native.strerror(Native.errno()));
        }
        return decode(sa, Math.min(len.getValue(), SOCKADDR_BYTES));
    }

    static SocketAddress decode(ByteBuffer sa, int len) throws IOException {
        if (len < 2) {
            return UnixDomainSocketAddress.of("");        // an unnamed Unix socket has only the family, or nothing
        }
        int family = Short.toUnsignedInt(sa.order(ByteOrder.nativeOrder()).getShort(0));
        if (family == AddressFamily.AF_INET.intValue()) {
            byte[] a = new byte[4];
            sa.get(4, a);
            return new InetSocketAddress(InetAddress.getByAddress(a), Short.toUnsignedInt(sa.order(ByteOrder.BIG_ENDIAN).getShort(2)));
        }
        if (family == AddressFamily.AF_INET6.intValue()) {
            byte[] a = new byte[16];
            sa.get(8, a);
            int scope = sa.order(ByteOrder.nativeOrder()).getInt(24);
            InetAddress addr = scope != 0 ? Inet6Address.getByAddress(null, a, scope) : InetAddress.getByAddress(a);
            return new InetSocketAddress(addr, Short.toUnsignedInt(sa.order(ByteOrder.BIG_ENDIAN).getShort(2)));
        }
        if (family == AddressFamily.AF_UNIX.intValue()) {
            byte[] path = new byte[len - 2];
            sa.get(2, path);
            if (path.length > 0 && path[0] == 0) {
                return new AbstractUnixAddress(new String(path, 1, path.length - 1, StandardCharsets.UTF_8));
            }
            int end = 0;
            while (end < path.length && path[end] != 0) {
                end++;
            }
            return UnixDomainSocketAddress.of(new String(path, 0, end, StandardCharsets.UTF_8));
        }
        return null;
    }

    /** A Unix socket in the abstract namespace, shown as {@code @name} like ss(8) and systemd do. */
    public static final class AbstractUnixAddress extends SocketAddress {
        private final String name;

        AbstractUnixAddress(String name) {
            this.name = name;
        }

        public String name() {
            return name;
        }

        @Override
        public boolean equals(Object o) {
            return o instanceof AbstractUnixAddress a && a.name.equals(name);
        }

        @Override
        public int hashCode() {
            return name.hashCode();
        }

        @Override
        public String toString() {
            return "@" + name;
        }
    }
}

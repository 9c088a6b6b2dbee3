package io.snapbd.nativeio;

import java.io.Closeable;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.SocketAddress;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.List;
import jnr.constants.platform.Errno;
import jnr.constants.platform.Fcntl;
import jnr.constants.platform.OpenFlags;
import jnr.constants.platform.Sock;
import jnr.constants.platform.SocketLevel;
import jnr.constants.platform.SocketOption;
import jnr.ffi.byref.IntByReference;

/**
 * Listening sockets passed by systemd's socket activation (sd_listen_fds(3)): {@code LISTEN_PID} names this
 * process, {@code LISTEN_FDS} counts the descriptors starting at 3, {@code LISTEN_FDNAMES} names them. The JDK
 * can adopt an inherited socket only on descriptor 0 ({@code System.inheritedChannel()}), so these are served
 * through libc: poll(2) with a short timeout (stopping needs no shutdown(2) of a socket systemd still owns) and
 * accept4(2), each accepted connection a {@link NativeSocket}.
 */
public final class InheritedSockets {

    /** SD_LISTEN_FDS_START. */
    public static final int FIRST_FD = 3;

    private static final int FD_CLOEXEC = 1;
    private static final int SOCK_CLOEXEC = OpenFlags.O_CLOEXEC.intValue();   // the same bit on Linux
    private static final short POLLIN = 1;

    private InheritedSockets() {
    }

    /**
     * The listening sockets systemd passed to this process; empty when none were (not socket-activated, or the
     * variables were meant for another process). Each is made close-on-exec and non-blocking.
     *
     * @throws IOException when the variables are malformed or a descriptor is not a listening stream socket
     */
    public static List<Listener> fromEnvironment() throws IOException {
        return adopt(System.getenv("LISTEN_PID"), System.getenv("LISTEN_FDS"), System.getenv("LISTEN_FDNAMES"),
                ProcessHandle.current().pid());
    }

    /** How many descriptors the variables pass to process {@code pid} (0: none for it). */
    static int count(String listenPid, String listenFds, long pid) throws IOException {
        if (listenPid == null || listenFds == null || listenPid.isEmpty()) {
            return 0;
        }
        long forPid;
        try {
            forPid = Long.parseLong(listenPid.strip());
        } catch (NumberFormatException e) {
            throw new IOException("LISTEN_PID='" + listenPid + "' is not a process id");
        }
        if (forPid != pid) {
            return 0;           // inherited by a child of the process systemd started: not ours
        }
        int n;
        try {
            n = Integer.parseInt(listenFds.strip());
        } catch (NumberFormatException e) {
            throw new IOException("LISTEN_FDS='" + listenFds + "' is not a number of descriptors");
        }
        if (n < 0 || n > 1024) {
            throw new IOException("LISTEN_FDS=" + n + " is out of range");
        }
        return n;
    }

    static List<Listener> adopt(String listenPid, String listenFds, String names, long pid) throws IOException {
        return adopt(listenPid, listenFds, names, pid, FIRST_FD);
    }

    /** {@code firstFd} is 3 except in tests, which cannot place a socket there. */
    static List<Listener> adopt(String listenPid, String listenFds, String names, long pid, int firstFd) throws IOException {
        int n = count(listenPid, listenFds, pid);
        String[] fdNames = names == null || names.isEmpty() ? new String[0] : names.split(":", -1);
        List<Listener> out = new ArrayList<>();
        try {
            for (int i = 0; i < n; i++) {
                int fd = firstFd + i;
                String name = i < fdNames.length && !fdNames[i].isEmpty() ? fdNames[i] : "fd" + fd;
                out.add(adoptOne(fd, name));
            }
        } catch (IOException e) {
            for (Listener l : out) {
                l.close();
            }
            throw e;
        }
        return out;
    }

    private static Listener adoptOne(int fd, String name) throws IOException {
        LibC libc = Native.libc();
        String what = "descriptor " + fd + " (" + name + ") passed by systemd";
        int fdFlags = libc.fcntl(fd, Fcntl.F_GETFD.intValue(), 0);
        if (fdFlags < 0) {
            throw new IOException(what + " is not open: " + Native.strerror(Native.errno()));
        }
        if (intOption(fd, SocketOption.SO_TYPE, what) != Sock.SOCK_STREAM.intValue()) {
            throw new IOException(what + " is not a stream socket: use ListenStream= in the .socket unit");
        }
        if (intOption(fd, SocketOption.SO_ACCEPTCONN, what) == 0) {
            throw new IOException(what + " is not listening: the .socket unit must not use Accept=yes");
        }
        SocketAddress local = NativeSocket.socketAddress(fd, false);
        if (!(local instanceof InetSocketAddress || local instanceof UnixDomainSocketAddress
                || local instanceof NativeSocket.AbstractUnixAddress)) {
            throw new IOException(what + " is neither a TCP nor a Unix socket");
        }
        if (libc.fcntl(fd, Fcntl.F_SETFD.intValue(), fdFlags | FD_CLOEXEC) < 0) {
            throw new IOException("cannot mark " + what + " close-on-exec: " + Native.strerror(Native.errno()));
        }
        // Non-blocking, so an accept after a poll that a vanished connection woke cannot hang the accept thread.
        int flFlags = libc.fcntl(fd, Fcntl.F_GETFL.intValue(), 0);
        if (flFlags < 0 || libc.fcntl(fd, Fcntl.F_SETFL.intValue(), flFlags | OpenFlags.O_NONBLOCK.intValue()) < 0) {
            throw new IOException("cannot make " + what + " non-blocking: " + Native.strerror(Native.errno()));
        }
        return new Listener(fd, name, local);
    }

    private static int intOption(int fd, SocketOption option, String what) throws IOException {
        ByteBuffer v = ByteBuffer.allocateDirect(4).order(ByteOrder.nativeOrder());
        IntByReference len = new IntByReference(4);
        if (Native.libc().getsockopt(fd, SocketLevel.SOL_SOCKET.intValue(), option.intValue(), v, len) != 0) {
            int err = Native.errno();
            if (err == Errno.ENOTSOCK.intValue()) {
                throw new IOException(what + " is not a socket");
            }
            throw new IOException("getsockopt(" + option + ") on " + what + " failed: " + Native.strerror(err));
        }
        return v.getInt(0);
    }

    /** One inherited listening socket. */
    public static final class Listener implements Closeable {
        private final FdRef fd;
        private final String name;
        private final SocketAddress address;
        private final ByteBuffer pollfd = ByteBuffer.allocateDirect(8).order(ByteOrder.nativeOrder());
        /** Made by this process ({@link UnixListeners}), not passed by systemd. */
        private final boolean own;

        private Listener(int fd, String name, SocketAddress address) {
            this(fd, name, address, false);
        }

        Listener(int fd, String name, SocketAddress address, boolean own) {
            this.fd = new FdRef(fd);
            this.name = name;
            this.address = address;
            this.own = own;
        }

        /** The name from FileDescriptorName= (LISTEN_FDNAMES), else {@code fdN}. */
        public String name() {
            return name;
        }

        public int fd() {
            return fd.number();
        }

        /** InetSocketAddress, UnixDomainSocketAddress or {@link NativeSocket.AbstractUnixAddress}. */
        public SocketAddress address() {
            return address;
        }

        public boolean isUnix() {
            return !(address instanceof InetSocketAddress);
        }

        /**
         * Waits up to {@code timeoutMillis} for a connection and accepts it; null when none came (or it went away
         * before it was accepted). Only one thread may call this at a time.
         *
         * @throws IOException on errors that retrying right away would not cure (EMFILE, ENOBUFS, closed)
         */
        public NativeSocket accept(int timeoutMillis) throws IOException {
            int f = fd.acquire();
            try {
                LibC libc = Native.libc();
                pollfd.clear();
                pollfd.putInt(0, f).putShort(4, POLLIN).putShort(6, (short) 0);
                int ready = libc.poll(pollfd, 1, timeoutMillis);
                if (ready < 0) {
                    int err = Native.errno();
                    if (err == Errno.EINTR.intValue()) {
                        return null;
                    }
                    throw new IOException("poll on " + this + " failed: " + Native.strerror(err));
                }
                if (ready == 0) {
                    return null;
                }
                int c = libc.accept4(f, null, null, SOCK_CLOEXEC);
                if (c < 0) {
                    int err = Native.errno();
                    if (err == Errno.EAGAIN.intValue() || err == Errno.EWOULDBLOCK.intValue() || err == Errno.EINTR.intValue()
                            || err == Errno.ECONNABORTED.intValue() || err == Errno.EPROTO.intValue()) {
                        return null;
                    }
                    throw new IOException("accept on " + this + " failed: " + Native.strerror(err));
                }
                return new NativeSocket(c);
            } finally {
                fd.release();
            }
        }

        public boolean isOpen() {
            return fd.isOpen();
        }

        /**
         * Closes this process's descriptor (once no accept is in progress); the socket itself stays open in systemd,
         * which keeps queueing connections for the next start.
         */
        @Override
        public void close() throws IOException {
            fd.close(null);
        }

        @Override
        public String toString() {
            String a = address instanceof InetSocketAddress i ? i.getAddress().getHostAddress() + ":" + i.getPort()
                    : address instanceof UnixDomainSocketAddress u ? u.getPath().toString() : String.valueOf(address);
            return (own ? "Unix socket " + a + " (fd " + fd.number() + ")" : "systemd socket " + name + " (fd " + fd.number() + ", " + a + ")");
        }
    }
}

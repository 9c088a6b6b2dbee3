package io.snapbd.nativeio;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.net.UnixDomainSocketAddress;
import jnr.constants.platform.AddressFamily;
import jnr.constants.platform.Errno;
import jnr.constants.platform.Fcntl;
import jnr.constants.platform.OpenFlags;
import jnr.constants.platform.Sock;

/**
 * Listening Unix stream sockets made through libc rather than the JDK, so that each accepted connection is a
 * {@link NativeSocket} whose peer credentials ({@link PeerCredentials}) can be read: the JDK's channels do not
 * show the descriptor, and its SO_PEERCRED option gives neither uid nor pid.
 */
public final class UnixListeners {

    private static final int SUN_PATH_BYTES = 108;

    private UnixListeners() {
    }

    /**
     * Binds and listens on {@code path} (which must not exist), close-on-exec and non-blocking; accept with
     * {@link InheritedSockets.Listener#accept(int)}, close with {@link InheritedSockets.Listener#close()} (the
     * socket file is left for the caller to delete).
     */
    public static InheritedSockets.Listener listen(Path path, int backlog) throws IOException {
        byte[] p = sunPath(path, "listen on");
        LibC libc = Native.libc();
        int fd = libc.socket(AddressFamily.AF_UNIX.intValue(),
                Sock.SOCK_STREAM.intValue() | OpenFlags.O_CLOEXEC.intValue() | OpenFlags.O_NONBLOCK.intValue(), 0);
        if (fd < 0) {
            throw new IOException("cannot create a Unix socket for " + path + ": " + Native.strerror(Native.errno()));
        }
        if (libc.bind(fd, sockaddr(p), 2 + p.length + 1) != 0 || libc.listen(fd, backlog) != 0) {
            int err = Native.errno();
            libc.close(fd);
            throw new IOException("cannot listen on " + path + ": " + Native.strerror(err));
        }
        // SOCK_NONBLOCK/SOCK_CLOEXEC in the type need Linux 2.6.27; check that they took.
        if ((libc.fcntl(fd, Fcntl.F_GETFL.intValue(), 0) & OpenFlags.O_NONBLOCK.intValue()) == 0) {
            libc.close(fd);
            throw new IOException("cannot make the Unix socket " + path + " non-blocking");
        }
        return new InheritedSockets.Listener(fd, path.toString(), UnixDomainSocketAddress.of(path), true);
    }

    /**
     * Connects to the Unix stream socket at {@code path}: a blocking, close-on-exec {@link NativeSocket}, e.g. for
     * passing descriptors over it with {@link FdPassing} (a JDK channel does not show its descriptor).
     */
    public static NativeSocket connect(Path path) throws IOException {
        byte[] p = sunPath(path, "connect to");
        LibC libc = Native.libc();
        int fd = libc.socket(AddressFamily.AF_UNIX.intValue(), Sock.SOCK_STREAM.intValue() | OpenFlags.O_CLOEXEC.intValue(), 0);
        if (fd < 0) {
            throw new IOException("cannot create a Unix socket for " + path + ": " + Native.strerror(Native.errno()));
        }
        int rc;
        while ((rc = libc.connect(fd, sockaddr(p), 2 + p.length + 1)) != 0 && Native.errno() == Errno.EINTR.intValue()) {
            // a signal before the connection was made: try again
        }
        if (rc != 0) {
            int err = Native.errno();
            libc.close(fd);
            throw new IOException("cannot connect to " + path + ": " + Native.strerror(err));
        }
        return new NativeSocket(fd);
    }

    private static byte[] sunPath(Path path, String what) throws IOException {
        byte[] p = path.toString().getBytes(StandardCharsets.UTF_8);
        if (p.length >= SUN_PATH_BYTES) {
            throw new IOException("cannot " + what + " " + path + ": the path is longer than " + (SUN_PATH_BYTES - 1) + " bytes");
        }
        return p;
    }

    private static ByteBuffer sockaddr(byte[] p) {
        ByteBuffer sa = ByteBuffer.allocateDirect(2 + SUN_PATH_BYTES).order(ByteOrder.nativeOrder());
        sa.putShort(0, (short) AddressFamily.AF_UNIX.intValue());
        sa.put(2, p);
        return sa;
    }
}

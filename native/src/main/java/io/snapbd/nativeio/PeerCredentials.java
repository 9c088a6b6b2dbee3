package io.snapbd.nativeio;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import jnr.constants.platform.SocketLevel;
import jnr.ffi.byref.IntByReference;

/**
 * The credentials of the process at the other end of a connected Unix socket, as the kernel recorded them when
 * it connected ({@code getsockopt(SO_PEERCRED)}, struct ucred {pid, uid, gid}): they cannot be forged by the peer.
 */
public record PeerCredentials(int pid, int uid, int gid) {

    /** SO_PEERCRED on Linux (asm-generic/socket.h); jnr-constants does not name it. */
    static final int SO_PEERCRED = 17;
    private static final int UCRED_BYTES = 12;

    /** The peer of a connected Unix socket. */
    public static PeerCredentials of(NativeSocket socket) throws IOException {
        int fd = socket.acquireFd();
        try {
            return ofFd(fd);
        } finally {
            socket.releaseFd();
        }
    }

    static PeerCredentials ofFd(int fd) throws IOException {
        ByteBuffer v = ByteBuffer.allocateDirect(UCRED_BYTES).order(ByteOrder.nativeOrder());
        IntByReference len = new IntByReference(UCRED_BYTES);
        if (Native.libc().getsockopt(fd, SocketLevel.SOL_SOCKET.intValue(), SO_PEERCRED, v, len) != 0) {
            throw new IOException("getsockopt(SO_PEERCRED) failed: " + Native.strerror(Native.errno()));
        }
        if (len.getValue() < UCRED_BYTES) {
            throw new IOException("getsockopt(SO_PEERCRED) returned " + len.getValue() + " bytes, not a struct ucred");
        }
        return new PeerCredentials(v.getInt(0), v.getInt(4), v.getInt(8));
    }

    /** This process's effective user id (geteuid(2)). */
    public static int processUid() throws IOException {
        return Native.libc().geteuid();
    }
}

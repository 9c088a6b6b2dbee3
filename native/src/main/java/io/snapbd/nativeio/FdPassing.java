package io.snapbd.nativeio;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Arrays;
import jnr.constants.platform.Errno;
import jnr.ffi.Pointer;

/**
 * Passes open file descriptors, with a few bytes of payload, over a connected Unix stream socket: one
 * {@code sendmsg(2)} carrying one {@code SCM_RIGHTS} control message, and {@code recvmsg(2)} with
 * {@code MSG_CMSG_CLOEXEC}. The receiver gets new descriptors for the same open files (e.g. the server's end of
 * each kernel socket pair, so that a successor process can go on serving them while the kernel's connection
 * stays up).
 *
 * <p>The struct msghdr, its one iovec, the control buffer and the payload are laid out by hand in one native
 * buffer per instance, reused by every call (LP64 Linux: x86-64, aarch64; {@code CMSG_ALIGN} rounds to 8). An
 * instance serves one call at a time; calls on several instances may run in parallel.
 */
public final class FdPassing {

    /** SCM_MAX_FD: the kernel refuses more descriptors in one message. */
    public static final int MAX_FDS = 253;

    /** Payload bytes per call; the rest of a longer buffer is left for the next call. */
    public static final int MAX_PAYLOAD = 4096;

    // <sys/socket.h> on Linux; jnr-constants does not name the control-message ones.
    static final int SOL_SOCKET = 1;
    static final int SCM_RIGHTS = 1;
    static final int MSG_CTRUNC = 0x8;
    static final int MSG_NOSIGNAL = 0x4000;
    static final int MSG_CMSG_CLOEXEC = 0x40000000;

    // struct msghdr {void *name; socklen_t namelen; struct iovec *iov; size_t iovlen; void *control;
    //                size_t controllen; int flags;}: 56 bytes with the padding after namelen and flags.
    private static final int MSG_NAME = 0;
    private static final int MSG_NAMELEN = 8;
    private static final int MSG_IOV = 16;
    private static final int MSG_IOVLEN = 24;
    private static final int MSG_CONTROL = 32;
    private static final int MSG_CONTROLLEN = 40;
    private static final int MSG_FLAGS = 48;
    private static final int MSGHDR_BYTES = 56;
    // struct iovec {void *base; size_t len;}
    private static final int IOVEC_BYTES = 16;
    // struct cmsghdr {size_t len; int level; int type; unsigned char data[];}: data at CMSG_ALIGN(16) = 16.
    private static final int CMSG_LEN = 0;
    private static final int CMSG_LEVEL = 8;
    private static final int CMSG_TYPE = 12;
    private static final int CMSG_HDR_BYTES = 16;

    private final int maxFds;
    private final int controlBytes;
    private final int iovOffset = MSGHDR_BYTES;
    private final int controlOffset = MSGHDR_BYTES + IOVEC_BYTES;
    private final int payloadOffset;
    /** msghdr, iovec, control buffer, payload; guarded by this. */
    private final ByteBuffer scratch;
    private final Pointer msg;
    private final long base;

    /** Room for {@link #MAX_FDS} descriptors per call. */
    public FdPassing() throws IOException {
        this(MAX_FDS);
    }

    /** Room for {@code maxFds} descriptors per call: a receiver sent more fails (truncated control data). */
    public FdPassing(int maxFds) throws IOException {
        if (maxFds < 1 || maxFds > MAX_FDS) {
            throw new IllegalArgumentException("maxFds " + maxFds + " is not within 1.." + MAX_FDS);
        }
        this.maxFds = maxFds;
        this.controlBytes = cmsgSpace(4 * maxFds);
        this.payloadOffset = controlOffset + controlBytes;
        this.scratch = ByteBuffer.allocateDirect(payloadOffset + MAX_PAYLOAD).order(ByteOrder.nativeOrder());
        this.msg = Pointer.wrap(Native.runtime(), scratch);
        this.base = msg.address();
    }

    /** CMSG_ALIGN: control messages start at multiples of sizeof(size_t). */
    static int cmsgAlign(int n) {
        return (n + 7) & ~7;
    }

    /** CMSG_SPACE: the bytes one control message with {@code dataBytes} of data takes, padding included. */
    static int cmsgSpace(int dataBytes) {
        return cmsgAlign(CMSG_HDR_BYTES) + cmsgAlign(dataBytes);
    }

    /**
     * Sends {@code payload}'s remaining bytes (at least one, at most {@link #MAX_PAYLOAD}) with {@code fds}
     * attached to the first of them, and moves the position past them. The descriptors stay open here: the
     * receiver gets its own. Blocks until all the payload is sent. A peer that closed is an IOException (EPIPE).
     */
    public synchronized void send(int socketFd, ByteBuffer payload, int... fds) throws IOException {
        int length = payload.remaining();
        if (length < 1 || length > MAX_PAYLOAD) {
            throw new IllegalArgumentException("payload of " + length + " bytes is not within 1.." + MAX_PAYLOAD
                    + " (a stream socket drops control data sent without a byte)");
        }
        if (fds.length > maxFds) {
            throw new IllegalArgumentException(fds.length + " descriptors, at most " + maxFds + " per message");
        }
        scratch.clear();
        scratch.position(payloadOffset);
        scratch.put(payload.duplicate());
        int space = fds.length == 0 ? 0 : cmsgSpace(4 * fds.length);
        if (space > 0) {
            scratch.putLong(controlOffset + CMSG_LEN, CMSG_HDR_BYTES + 4L * fds.length);
            scratch.putInt(controlOffset + CMSG_LEVEL, SOL_SOCKET);
            scratch.putInt(controlOffset + CMSG_TYPE, SCM_RIGHTS);
            for (int i = 0; i < space - CMSG_HDR_BYTES; i += 4) {     // the fds, then zeroed padding
                int k = i / 4;
                scratch.putInt(controlOffset + CMSG_HDR_BYTES + i, k < fds.length ? fds[k] : 0);
            }
        }
        int sent = 0;
        while (sent < length) {
            // The descriptors go with the first bytes only; a short send (a signal) resends the rest without.
            fillHeader(payloadOffset + sent, length - sent, sent == 0 ? space : 0);
            long n = Native.libc().sendmsg(socketFd, msg, MSG_NOSIGNAL);
            if (n < 0) {
                int err = Native.errno();
                if (err == Errno.EINTR.intValue()) {
                    continue;
                }
                throw failure("sendmsg", socketFd, err);
            }
            sent += (int) n;
        }
        payload.position(payload.position() + length);
    }

    /**
     * Receives into {@code payload} (at most {@link #MAX_PAYLOAD} bytes; the position moves past them) and
     * returns the byte count, -1 at end of stream, with the descriptors that came with those bytes, already
     * close-on-exec; the caller owns them. A message whose control data did not fit (more than this instance's
     * {@code maxFds} descriptors) is refused: the descriptors that arrived are closed and an IOException says so.
     * A stream socket never returns bytes from before and after a message with descriptors in one call.
     */
    public synchronized Received receive(int socketFd, ByteBuffer payload) throws IOException {
        int room = Math.min(payload.remaining(), MAX_PAYLOAD);
        if (room < 1) {
            throw new IllegalArgumentException("no room in the payload buffer");
        }
        long n;
        while (true) {
            fillHeader(payloadOffset, room, controlBytes);
            n = Native.libc().recvmsg(socketFd, msg, MSG_CMSG_CLOEXEC);
            if (n >= 0) {
                break;
            }
            int err = Native.errno();
            if (err != Errno.EINTR.intValue()) {
                throw failure("recvmsg", socketFd, err);
            }
        }
        int[] fds = receivedFds();
        int flags = scratch.getInt(MSG_FLAGS);
        if ((flags & MSG_CTRUNC) != 0) {
            close(fds);
            throw new IOException("recvmsg on fd " + socketFd + ": control data truncated (more than " + maxFds
                    + " descriptors, or another control message), closed the " + fds.length + " received");
        }
        if (n == 0) {
            close(fds);     // none can come without a byte; closed all the same
            return new Received(-1, new int[0]);
        }
        scratch.clear();
        scratch.position(payloadOffset).limit(payloadOffset + (int) n);
        payload.put(scratch);
        return new Received((int) n, fds);
    }

    /** What {@link #receive} got: the payload bytes (-1 at end of stream) and the new descriptors, in order. */
    public record Received(int bytes, int[] fds) {
        @Override
        public String toString() {
            return "Received[" + bytes + " bytes, fds " + Arrays.toString(fds) + "]";
        }
    }

    /** Sends over a {@link NativeSocket}; see {@link #send(int, ByteBuffer, int...)}. */
    public void send(NativeSocket socket, ByteBuffer payload, int... fds) throws IOException {
        int f = socket.acquireFd();
        try {
            send(f, payload, fds);
        } finally {
            socket.releaseFd();
        }
    }

    /** Receives from a {@link NativeSocket}; see {@link #receive(int, ByteBuffer)}. */
    public Received receive(NativeSocket socket, ByteBuffer payload) throws IOException {
        int f = socket.acquireFd();
        try {
            return receive(f, payload);
        } finally {
            socket.releaseFd();
        }
    }

    /** Closes descriptors this process owns, e.g. received ones it does not use; errors are ignored. */
    public static void close(int... fds) throws IOException {
        for (int fd : fds) {
            Native.libc().close(fd);
        }
    }

    private void fillHeader(int dataOffset, int dataBytes, int control) {
        scratch.putLong(MSG_NAME, 0);
        scratch.putInt(MSG_NAMELEN, 0);
        scratch.putInt(MSG_NAMELEN + 4, 0);
        scratch.putLong(MSG_IOV, base + iovOffset);
        scratch.putLong(MSG_IOVLEN, 1);
        scratch.putLong(MSG_CONTROL, control == 0 ? 0 : base + controlOffset);
        scratch.putLong(MSG_CONTROLLEN, control);
        scratch.putLong(MSG_FLAGS, 0);     // flags and the padding after them
        scratch.putLong(iovOffset, base + dataOffset);
        scratch.putLong(iovOffset + 8, dataBytes);
    }

    /** The descriptors of every SCM_RIGHTS message in the control data recvmsg returned. */
    private int[] receivedFds() {
        long used = Math.min(scratch.getLong(MSG_CONTROLLEN), controlBytes);
        int[] fds = new int[0];
        int at = 0;
        while (at + CMSG_HDR_BYTES <= used) {
            long len = scratch.getLong(controlOffset + at + CMSG_LEN);
            if (len < CMSG_HDR_BYTES || at + len > used) {
                break;
            }
            if (scratch.getInt(controlOffset + at + CMSG_LEVEL) == SOL_SOCKET
                    && scratch.getInt(controlOffset + at + CMSG_TYPE) == SCM_RIGHTS) {
                int count = (int) ((len - CMSG_HDR_BYTES) / 4);
                int old = fds.length;
                fds = Arrays.copyOf(fds, old + count);
                for (int i = 0; i < count; i++) {
                    fds[old + i] = scratch.getInt(controlOffset + at + CMSG_HDR_BYTES + 4 * i);
                }
            }
            at += cmsgAlign((int) len);
        }
        return fds;
    }

    private static ErrnoException failure(String call, int socketFd, int err) {
        Errno e = Errno.valueOf(err);
        String name = e == null || e == Errno.__UNKNOWN_CONSTANT__ ? "errno " + err : e.name();
        return new ErrnoException(err, call + " on fd " + socketFd + " failed: " + name + ", " + Native.strerror(err));
    }
}

package io.snapbd.nativeio;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import jnr.constants.platform.Errno;
import jnr.constants.platform.OpenFlags;

/**
 * The kernel nbd driver's generic-netlink interface (family {@code "nbd"}, include/uapi/linux/nbd-netlink.h),
 * spoken over a raw {@code AF_NETLINK}/{@code NETLINK_GENERIC} socket without libnl. Unlike the ioctls, a
 * device connected this way is bound to no task (nothing blocks in DO_IT), and the kernel can keep it while
 * no server is connected ({@code NBD_ATTR_DEAD_CONN_TIMEOUT}) until a new socket arrives with RECONFIGURE.
 * <p>
 * A message is nlmsghdr (16 bytes: len, type, flags, seq, pid) + genlmsghdr (4: cmd, version, reserved)
 * + attributes (nlattr: u16 len, u16 type, payload, padded to 4 bytes), all in host byte order.
 * The encoding ({@link Message}, {@link #parse}) is pure Java; only {@link #open} and the requests touch libc.
 */
public final class NbdNetlink implements AutoCloseable {

    // linux/netlink.h
    static final int AF_NETLINK = 16;
    static final int NETLINK_GENERIC = 16;
    static final int SOCK_RAW = 3;
    static final int NLM_F_REQUEST = 0x1;
    static final int NLM_F_ACK = 0x4;
    static final int NLMSG_ERROR = 0x2;
    static final int NLMSG_DONE = 0x3;
    static final int NLA_F_NESTED = 0x8000;
    static final int NLMSG_HDRLEN = 16;
    static final int GENL_HDRLEN = 4;

    // linux/genetlink.h
    static final int GENL_ID_CTRL = 0x10;
    static final int CTRL_CMD_GETFAMILY = 3;
    static final int CTRL_ATTR_FAMILY_ID = 1;
    static final int CTRL_ATTR_FAMILY_NAME = 2;

    // linux/nbd-netlink.h
    public static final String FAMILY = "nbd";
    static final int NBD_GENL_VERSION = 1;
    public static final int NBD_CMD_CONNECT = 1;
    public static final int NBD_CMD_DISCONNECT = 2;
    public static final int NBD_CMD_RECONFIGURE = 3;
    public static final int NBD_CMD_STATUS = 5;
    static final int NBD_ATTR_INDEX = 1;
    static final int NBD_ATTR_SIZE_BYTES = 2;
    static final int NBD_ATTR_BLOCK_SIZE_BYTES = 3;
    static final int NBD_ATTR_TIMEOUT = 4;
    static final int NBD_ATTR_SERVER_FLAGS = 5;
    static final int NBD_ATTR_CLIENT_FLAGS = 6;
    static final int NBD_ATTR_SOCKETS = 7;
    static final int NBD_ATTR_DEAD_CONN_TIMEOUT = 8;
    static final int NBD_ATTR_DEVICE_LIST = 9;
    static final int NBD_ATTR_BACKEND_IDENTIFIER = 10;
    static final int NBD_DEVICE_ITEM = 1;
    static final int NBD_DEVICE_INDEX = 1;
    static final int NBD_DEVICE_CONNECTED = 2;
    static final int NBD_SOCK_ITEM = 1;
    static final int NBD_SOCK_FD = 1;

    private static final int SOL_SOCKET = 1;
    private static final int SO_RCVTIMEO = 20;
    private static final int RECEIVE_TIMEOUT_SECONDS = 30;
    private static final int RECEIVE_BYTES = 32 * 1024;

    private final int fd;
    private final int familyId;
    private int seq;
    private final ByteBuffer rx = ByteBuffer.allocateDirect(RECEIVE_BYTES).order(ByteOrder.nativeOrder());

    private NbdNetlink(int fd, int familyId) {
        this.fd = fd;
        this.familyId = familyId;
    }

    /**
     * Opens a generic-netlink socket and resolves the {@code nbd} family. Throws {@link FamilyMissingException}
     * when the kernel has no such family (the nbd module is not loaded, or predates netlink: before 4.12).
     */
    public static NbdNetlink open() throws IOException {
        return open(FAMILY);
    }

    /** Opens a socket for the generic-netlink family {@code family}. */
    static NbdNetlink open(String family) throws IOException {
        LibC libc = Native.libc();
        int fd = libc.socket(AF_NETLINK, SOCK_RAW | OpenFlags.O_CLOEXEC.intValue(), NETLINK_GENERIC);
        if (fd < 0) {
            throw new NetlinkException(Native.errno(), "cannot create a generic netlink socket: " + Native.strerror(Native.errno()));
        }
        try {
            ByteBuffer sa = ByteBuffer.allocateDirect(12).order(ByteOrder.nativeOrder());
            sa.putShort(0, (short) AF_NETLINK);         // nl_family; nl_pid 0: the kernel assigns the port
            if (libc.bind(fd, sa, 12) != 0) {
                throw new NetlinkException(Native.errno(), "cannot bind the netlink socket: " + Native.strerror(Native.errno()));
            }
            ByteBuffer tv = ByteBuffer.allocateDirect(16).order(ByteOrder.nativeOrder());
            tv.putLong(0, RECEIVE_TIMEOUT_SECONDS);     // struct timeval: a kernel that never answers is an error, not a hang
            if (libc.setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, tv, 16) != 0) {
                throw new NetlinkException(Native.errno(), "cannot set SO_RCVTIMEO: " + Native.strerror(Native.errno()));
            }
            NbdNetlink probe = new NbdNetlink(fd, GENL_ID_CTRL);
            List<Map<Integer, byte[]>> replies;
            try {
                replies = probe.request(getFamily(family, 1), "CTRL_CMD_GETFAMILY " + family);
            } catch (NetlinkException e) {
                if (e.errno() == Errno.ENOENT.intValue()) {
                    throw new FamilyMissingException(family);
                }
                throw e;
            }
            for (Map<Integer, byte[]> attrs : replies) {
                byte[] id = attrs.get(CTRL_ATTR_FAMILY_ID);
                if (id != null && id.length >= 2) {
                    return new NbdNetlink(fd, ByteBuffer.wrap(id).order(ByteOrder.nativeOrder()).getShort() & 0xffff);
                }
            }
            throw new IOException("CTRL_CMD_GETFAMILY " + family + ": the reply has no family id");
        } catch (IOException | RuntimeException e) {
            libc.close(fd);
            throw e;
        }
    }

    /** Whether the running kernel offers the {@code nbd} generic-netlink family. */
    public static boolean available() {
        try (NbdNetlink n = open()) {
            return true;
        } catch (IOException e) {
            return false;
        }
    }

    public int familyId() {
        return familyId;
    }

    /** What NBD_CMD_CONNECT sets; {@code backendIdentifier} may be null (the attribute exists from Linux 5.18). */
    public record ConnectSpec(int index, long sizeBytes, long blockSize, long serverFlags, long timeoutSeconds,
                              long deadConnTimeoutSeconds, String backendIdentifier, int[] socketFds) {
    }

    /** NBD_CMD_CONNECT: the kernel takes its own reference on each socket; returns the device index it used. */
    public int connect(ConnectSpec s) throws IOException {
        List<Map<Integer, byte[]>> replies = request(connectMessage(familyId, 0, s), "NBD_CMD_CONNECT /dev/nbd" + s.index());
        for (Map<Integer, byte[]> attrs : replies) {
            byte[] idx = attrs.get(NBD_ATTR_INDEX);
            if (idx != null && idx.length >= 4) {
                return ByteBuffer.wrap(idx).order(ByteOrder.nativeOrder()).getInt();
            }
        }
        return s.index();
    }

    /**
     * NBD_CMD_RECONFIGURE: hands a running device new sockets in place of dead ones. A device connected with a
     * backend identifier takes it only with the same identifier (else EINVAL, "must specify backend" in the
     * kernel log): {@code backendIdentifier} may be null for a device connected without one.
     */
    public void reconfigure(int index, String backendIdentifier, int[] socketFds) throws IOException {
        request(reconfigureMessage(familyId, 0, index, backendIdentifier, socketFds), "NBD_CMD_RECONFIGURE /dev/nbd" + index);
    }

    static ByteBuffer reconfigureMessage(int familyId, int seq, int index, String backendIdentifier, int[] socketFds) {
        Message m = new Message(familyId, NLM_F_REQUEST | NLM_F_ACK, seq, NBD_CMD_RECONFIGURE).u32(NBD_ATTR_INDEX, index);
        if (backendIdentifier != null) {
            m.string(NBD_ATTR_BACKEND_IDENTIFIER, backendIdentifier);
        }
        sockets(m, socketFds);
        return m.finish();
    }

    /** NBD_CMD_DISCONNECT: the driver sends NBD_CMD_DISC, shuts the sockets and releases the device. */
    public void disconnect(int index) throws IOException {
        request(new Message(familyId, NLM_F_REQUEST | NLM_F_ACK, 0, NBD_CMD_DISCONNECT).u32(NBD_ATTR_INDEX, index).finish(),
                "NBD_CMD_DISCONNECT /dev/nbd" + index);
    }

    /** NBD_CMD_STATUS of one device: true when it has a live configuration (connected). */
    public boolean connected(int index) throws IOException {
        List<Map<Integer, byte[]>> replies = request(
                new Message(familyId, NLM_F_REQUEST | NLM_F_ACK, 0, NBD_CMD_STATUS).u32(NBD_ATTR_INDEX, index).finish(),
                "NBD_CMD_STATUS /dev/nbd" + index);
        for (Map<Integer, byte[]> attrs : replies) {
            Map<Integer, Boolean> devices = deviceList(attrs.get(NBD_ATTR_DEVICE_LIST));
            if (devices.containsKey(index)) {
                return devices.get(index);
            }
        }
        throw new IOException("NBD_CMD_STATUS /dev/nbd" + index + ": the reply does not list the device");
    }

    @Override
    public void close() {
        try {
            Native.libc().close(fd);
        } catch (IOException e) {
            // libc was loaded when the socket was made
        }
    }

    // ---- one request/answer exchange ------------------------------------------------------------------------

    /** Sends one request (with NLM_F_ACK) and returns the attributes of each reply up to the ack, or throws its error. */
    private synchronized List<Map<Integer, byte[]>> request(ByteBuffer msg, String what) throws IOException {
        int mySeq = ++seq;
        msg.putInt(8, mySeq);
        LibC libc = Native.libc();
        ByteBuffer out = ByteBuffer.allocateDirect(msg.remaining()).order(ByteOrder.nativeOrder());
        out.put(msg.duplicate()).flip();
        long n = libc.write(fd, out, out.remaining());
        if (n != out.remaining()) {
            int err = Native.errno();
            throw new NetlinkException(err, what + ": send failed: " + (n < 0 ? Native.strerror(err) : "short write"));
        }
        List<Map<Integer, byte[]>> replies = new ArrayList<>();
        while (true) {
            rx.clear();
            long r = libc.read(fd, rx, rx.capacity());
            if (r < 0) {
                int err = Native.errno();
                throw new NetlinkException(err, what + ": no answer from the kernel: " + Native.strerror(err));
            }
            rx.limit((int) r);
            ByteBuffer in = ByteBuffer.allocate((int) r).order(ByteOrder.nativeOrder());
            in.put(rx).flip();
            for (Reply reply : parse(in)) {
                if (reply.seq() != mySeq) {
                    continue;
                }
                if (reply.type() == NLMSG_ERROR) {
                    if (reply.error() == 0) {
                        return replies;
                    }
                    int err = -reply.error();
                    throw new NetlinkException(err, what + " failed: " + Native.strerror(err));
                }
                if (reply.type() == NLMSG_DONE) {
                    return replies;
                }
                replies.add(reply.attrs());
            }
        }
    }

    // ---- encoding (pure Java, tested on the host) -------------------------------------------------------------

    /** A netlink + genetlink message being built; attributes are 4-byte aligned. */
    static final class Message {
        private final ByteBuffer b = ByteBuffer.allocate(4096).order(ByteOrder.nativeOrder());
        private final List<Integer> open = new ArrayList<>();

        Message(int type, int flags, int seq, int cmd) {
            b.putInt(0).putShort((short) type).putShort((short) flags).putInt(seq).putInt(0);
            b.put((byte) cmd).put((byte) NBD_GENL_VERSION).putShort((short) 0);
        }

        Message attr(int type, byte[] payload) {
            b.putShort((short) (4 + payload.length)).putShort((short) type).put(payload);
            pad();
            return this;
        }

        Message u32(int type, int v) {
            return attr(type, ByteBuffer.allocate(4).order(ByteOrder.nativeOrder()).putInt(v).array());
        }

        Message u64(int type, long v) {
            return attr(type, ByteBuffer.allocate(8).order(ByteOrder.nativeOrder()).putLong(v).array());
        }

        /** NUL-terminated, as NLA_STRING and NLA_NUL_STRING policies accept. */
        Message string(int type, String s) {
            byte[] u = s.getBytes(StandardCharsets.UTF_8);
            byte[] z = new byte[u.length + 1];
            System.arraycopy(u, 0, z, 0, u.length);
            return attr(type, z);
        }

        Message begin(int type) {
            open.add(b.position());
            b.putShort((short) 0).putShort((short) (type | NLA_F_NESTED));
            return this;
        }

        Message end() {
            int start = open.remove(open.size() - 1);
            b.putShort(start, (short) (b.position() - start));
            return this;
        }

        private void pad() {
            while ((b.position() & 3) != 0) {
                b.put((byte) 0);
            }
        }

        /** The finished message, its nlmsg_len filled in. */
        ByteBuffer finish() {
            if (!open.isEmpty()) {
                throw new IllegalStateException("unclosed nested attribute");
            }
            b.putInt(0, b.position());
            return ByteBuffer.wrap(b.array(), 0, b.position()).slice().order(ByteOrder.nativeOrder());
        }
    }

    static ByteBuffer getFamily(String name, int seq) {
        Message m = new Message(GENL_ID_CTRL, NLM_F_REQUEST | NLM_F_ACK, seq, CTRL_CMD_GETFAMILY);
        // the control family is version 1 too; the version byte is the same
        return m.string(CTRL_ATTR_FAMILY_NAME, name).finish();
    }

    static ByteBuffer connectMessage(int familyId, int seq, ConnectSpec s) {
        Message m = new Message(familyId, NLM_F_REQUEST | NLM_F_ACK, seq, NBD_CMD_CONNECT)
                .u32(NBD_ATTR_INDEX, s.index())
                .u64(NBD_ATTR_SIZE_BYTES, s.sizeBytes())
                .u64(NBD_ATTR_BLOCK_SIZE_BYTES, s.blockSize())
                .u64(NBD_ATTR_SERVER_FLAGS, s.serverFlags());
        if (s.timeoutSeconds() > 0) {
            m.u64(NBD_ATTR_TIMEOUT, s.timeoutSeconds());
        }
        if (s.deadConnTimeoutSeconds() > 0) {
            m.u64(NBD_ATTR_DEAD_CONN_TIMEOUT, s.deadConnTimeoutSeconds());
        }
        if (s.backendIdentifier() != null) {
            m.string(NBD_ATTR_BACKEND_IDENTIFIER, s.backendIdentifier());
        }
        sockets(m, s.socketFds());
        return m.finish();
    }

    private static void sockets(Message m, int[] fds) {
        m.begin(NBD_ATTR_SOCKETS);
        for (int sock : fds) {
            m.begin(NBD_SOCK_ITEM).u32(NBD_SOCK_FD, sock).end();
        }
        m.end();
    }

    /** One received message: for NLMSG_ERROR, {@code error} is 0 (ack) or a negative errno. */
    record Reply(int type, int seq, int cmd, int error, Map<Integer, byte[]> attrs) {
    }

    /** Splits a datagram into its messages; rejects lengths that run past the end. */
    static List<Reply> parse(ByteBuffer in) throws IOException {
        in = in.slice().order(ByteOrder.nativeOrder());
        List<Reply> out = new ArrayList<>();
        int pos = 0;
        while (in.limit() - pos >= NLMSG_HDRLEN) {
            int len = in.getInt(pos);
            int type = in.getShort(pos + 4) & 0xffff;
            int seq = in.getInt(pos + 8);
            if (len < NLMSG_HDRLEN || pos + len > in.limit()) {
                throw new IOException("malformed netlink message: length " + len + " at offset " + pos + " of " + in.limit());
            }
            if (type == NLMSG_ERROR) {
                int error = len >= NLMSG_HDRLEN + 4 ? in.getInt(pos + NLMSG_HDRLEN) : 0;
                out.add(new Reply(type, seq, 0, error, Map.of()));
            } else if (type == NLMSG_DONE) {
                out.add(new Reply(type, seq, 0, 0, Map.of()));
            } else {
                if (len < NLMSG_HDRLEN + GENL_HDRLEN) {
                    throw new IOException("malformed generic netlink message: length " + len);
                }
                int cmd = in.get(pos + NLMSG_HDRLEN) & 0xff;
                out.add(new Reply(type, seq, cmd, 0, attributes(in, pos + NLMSG_HDRLEN + GENL_HDRLEN, pos + len)));
            }
            pos += align(len);
        }
        return out;
    }

    /** Attributes between {@code from} and {@code to}, by type (nested flag cleared). */
    static Map<Integer, byte[]> attributes(ByteBuffer in, int from, int to) throws IOException {
        Map<Integer, byte[]> m = new LinkedHashMap<>();
        int pos = from;
        while (to - pos >= 4) {
            int len = in.getShort(pos) & 0xffff;
            int type = in.getShort(pos + 2) & 0x3fff;
            if (len < 4 || pos + len > to) {
                throw new IOException("malformed netlink attribute: length " + len + " at offset " + pos);
            }
            byte[] v = new byte[len - 4];
            in.get(pos + 4, v);
            m.put(type, v);
            pos += align(len);
        }
        return m;
    }

    /** NBD_ATTR_DEVICE_LIST: device index → connected. */
    static Map<Integer, Boolean> deviceList(byte[] list) throws IOException {
        Map<Integer, Boolean> devices = new LinkedHashMap<>();
        if (list == null) {
            return devices;
        }
        ByteBuffer b = ByteBuffer.wrap(list).order(ByteOrder.nativeOrder());
        int pos = 0;
        while (list.length - pos >= 4) {        // several NBD_DEVICE_ITEMs share a type: walk them, not a map
            int len = b.getShort(pos) & 0xffff;
            if (len < 4 || pos + len > list.length) {
                throw new IOException("malformed NBD_ATTR_DEVICE_LIST item: length " + len);
            }
            Map<Integer, byte[]> item = attributes(b, pos + 4, pos + len);
            byte[] idx = item.get(NBD_DEVICE_INDEX);
            byte[] conn = item.get(NBD_DEVICE_CONNECTED);
            if (idx != null && idx.length >= 4) {
                devices.put(ByteBuffer.wrap(idx).order(ByteOrder.nativeOrder()).getInt(), conn != null && conn.length > 0 && conn[0] != 0);
            }
            pos += align(len);
        }
        return devices;
    }

    private static int align(int len) {
        return (len + 3) & ~3;
    }

    /** A request the kernel refused, with its errno. */
    public static class NetlinkException extends ErrnoException {
        NetlinkException(int errno, String message) {
            super(errno, message);
        }
    }

    /** The kernel has no {@code nbd} generic-netlink family: the module is not loaded (or is older than 4.12). */
    public static final class FamilyMissingException extends NetlinkException {
        FamilyMissingException(String family) {
            super(Errno.ENOENT.intValue(), "the kernel has no \"" + family + "\" generic netlink family"
                    + (FAMILY.equals(family) ? " (modprobe nbd)" : ""));
        }
    }
}

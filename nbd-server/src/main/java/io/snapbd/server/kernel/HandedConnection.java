package io.snapbd.server.kernel;

import io.snapbd.nativeio.FdPassing;
import io.snapbd.nativeio.NativeSocket;

import java.io.EOFException;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;

/**
 * A kernel connection passed from a server to its successor at an in-place restart: the server's end of the
 * device's socket pair, stopped at a request boundary, with what the successor needs to go on serving it. The
 * connection is always a plain transmission-phase one (the kernel never negotiates): simple replies, no meta
 * contexts.
 *
 * <p>On the handover socket it is one {@link FdPassing} message carrying the descriptor and the line
 * {@code conn v1 plain INDEX ro|rw N EXPORT\n}, then the N bytes read ahead of the boundary as ordinary bytes (up
 * to the 128 KiB read-ahead buffer: more than a descriptor message's payload). A line of another version is
 * refused (an IOException): the device then takes the reconnect path.
 *
 * @param export     the export's name
 * @param device     the nbd device index (/dev/nbdINDEX)
 * @param readOnly   the connection refuses writes
 * @param readAhead  bytes the server had read from the socket beyond the boundary; served first by the successor
 */
public record HandedConnection(String export, int device, boolean readOnly, byte[] readAhead) {

    private static final String VERSION = "conn v1 plain";

    /**
     * Sends the connection with {@code fd} (the socket's descriptor, which stays open here: close it without
     * shutting the socket down once this returns).
     */
    public void send(FdPassing passing, NativeSocket to, int fd) throws IOException {
        String line = VERSION + " " + device + " " + (readOnly ? "ro" : "rw") + " " + readAhead.length + " " + export + "\n";
        byte[] l = line.getBytes(StandardCharsets.UTF_8);
        if (l.length > FdPassing.MAX_PAYLOAD) {
            throw new IOException("export name too long to hand over: " + export.length() + " characters");
        }
        passing.send(to, ByteBuffer.wrap(l), fd);
        ByteBuffer b = ByteBuffer.allocateDirect(Math.max(1, readAhead.length)).put(readAhead).flip();
        while (b.hasRemaining()) {
            to.write(b);
        }
    }

    /** A connection received, with its descriptor (owned by the caller; close it if it is not adopted). */
    public record Received(HandedConnection connection, int fd) {
    }

    /**
     * Receives one connection sent by {@link #send}. An unknown line closes the descriptor that came with it and
     * is an IOException; end of stream is an EOFException.
     */
    public static Received receive(FdPassing passing, NativeSocket from) throws IOException {
        ByteBuffer p = ByteBuffer.allocate(FdPassing.MAX_PAYLOAD);
        FdPassing.Received r = passing.receive(from, p);
        if (r.bytes() < 0) {
            FdPassing.close(r.fds());
            throw new EOFException("the handover socket closed");
        }
        String line = new String(p.array(), 0, p.position(), StandardCharsets.UTF_8);
        String[] f = line.endsWith("\n") ? line.substring(0, line.length() - 1).split(" ", 7) : new String[0];
        if (r.fds().length != 1 || f.length != 7 || !(f[0] + " " + f[1] + " " + f[2]).equals(VERSION)
                || !(f[4].equals("ro") || f[4].equals("rw"))) {
            FdPassing.close(r.fds());
            throw new IOException("not a handed-over connection (" + r.fds().length + " descriptors): " + line.strip());
        }
        int device;
        int n;
        try {
            device = Integer.parseInt(f[3]);
            n = Integer.parseInt(f[5]);
        } catch (NumberFormatException e) {
            FdPassing.close(r.fds());
            throw new IOException("not a handed-over connection: " + line.strip());
        }
        if (n < 0 || n > 1 << 20) {
            FdPassing.close(r.fds());
            throw new IOException("handed-over connection with " + n + " bytes read ahead: " + line.strip());
        }
        ByteBuffer b = ByteBuffer.allocateDirect(Math.max(1, n)).limit(n);
        try {
            while (b.hasRemaining()) {
                if (from.read(b) < 0) {
                    throw new EOFException("the handover socket closed inside the bytes read ahead of /dev/nbd" + device);
                }
            }
        } catch (IOException e) {
            FdPassing.close(r.fds());
            throw e;
        }
        byte[] readAhead = new byte[n];
        b.flip().get(readAhead);
        return new Received(new HandedConnection(f[6], device, f[4].equals("ro"), readAhead), r.fds()[0]);
    }
}

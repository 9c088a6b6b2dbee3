package io.snapbd.nativeio;

import static java.nio.charset.StandardCharsets.UTF_8;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

@Timeout(120)
class FdPassingTest {

    private static final int F_GETFD = 1;
    private static final int F_SETFL = 4;
    private static final int FD_CLOEXEC = 1;
    private static final int O_NONBLOCK = 0x800;
    private static final int O_CLOEXEC = 0x80000;

    @Test
    void layoutFollowsCmsgAlign() {
        assertEquals(16 + 8, FdPassing.cmsgSpace(4));        // CMSG_SPACE(sizeof(int)) on LP64
        assertEquals(16 + 16, FdPassing.cmsgSpace(12));
        assertEquals(16 + 1016, FdPassing.cmsgSpace(4 * FdPassing.MAX_FDS));
    }

    // Several descriptors in one message: each received one is a new number for the same open file, so bytes
    // written through it come out of the original's other end, and the other way round. The originals are closed
    // before the receive: the message in flight keeps the files open, as the old server's exit will.
    @Test
    void receivedDescriptorsReferToTheSameOpenFiles() throws Exception {
        try (SocketPairs.SocketPair carrier = SocketPairs.create();
             SocketPairs.SocketPair kernelSide = SocketPairs.create()) {
            int[] pipe = pipe();
            String pipeLink = link(pipe[1]);
            String sockLink = link(kernelSide.second().fd());
            int sockCopy = dup(kernelSide.second().fd());

            FdPassing sender = new FdPassing();
            ByteBuffer line = ByteBuffer.wrap("go 42\n".getBytes(UTF_8));
            sender.send(carrier.first().fd(), line, pipe[1], sockCopy);
            assertEquals(line.limit(), line.position(), "the payload counts as sent");
            FdPassing.close(pipe[1], sockCopy);

            ByteBuffer got = ByteBuffer.allocate(64);
            FdPassing.Received r = new FdPassing().receive(carrier.second().fd(), got);
            assertEquals(6, r.bytes());
            assertEquals("go 42\n", new String(got.array(), 0, got.position(), UTF_8));
            assertEquals(2, r.fds().length, r.toString());
            int pipeW = r.fds()[0];
            int sock = r.fds()[1];
            assertEquals(pipeLink, link(pipeW), "the same pipe");
            assertEquals(sockLink, link(sock), "the same socket");
            for (int fd : r.fds()) {
                assertEquals(FD_CLOEXEC, Native.libc().fcntl(fd, F_GETFD, 0) & FD_CLOEXEC, "close-on-exec");
            }

            write(pipeW, "through the pipe");
            assertEquals("through the pipe", read(pipe[0], 16));
            write(sock, "to the kernel side");
            assertEquals("to the kernel side", read(kernelSide.first().fd(), 18));
            write(kernelSide.first().fd(), "a reply");
            assertEquals("a reply", read(sock, 7));

            FdPassing.close(pipeW, sock, pipe[0]);
        }
    }

    // A sender and a receiver thread, as the two processes of a handover: descriptors cross on a live
    // connection between other traffic, and a message without descriptors brings none.
    @Test
    void betweenTwoThreadsWithAndWithoutDescriptors() throws Exception {
        try (SocketPairs.SocketPair carrier = SocketPairs.create()) {
            int[] pipe = pipe();
            String pipeLink = link(pipe[0]);
            CompletableFuture<FdPassing.Received[]> receiver = CompletableFuture.supplyAsync(() -> {
                try {
                    FdPassing in = new FdPassing();
                    FdPassing.Received first = in.receive(carrier.second().fd(), ByteBuffer.allocate(5));
                    FdPassing.Received second = in.receive(carrier.second().fd(), ByteBuffer.allocate(5));
                    FdPassing.Received end = in.receive(carrier.second().fd(), ByteBuffer.allocate(5));
                    return new FdPassing.Received[] {first, second, end};
                } catch (IOException e) {
                    throw new RuntimeException(e);
                }
            });
            FdPassing out = new FdPassing();
            out.send(carrier.first().fd(), ByteBuffer.wrap("plain".getBytes(UTF_8)));
            out.send(carrier.first().fd(), ByteBuffer.wrap("fds!!".getBytes(UTF_8)), pipe[0]);
            carrier.first().close();
            FdPassing.Received[] r = receiver.get(1, TimeUnit.MINUTES);

            assertEquals(5, r[0].bytes());
            assertEquals(0, r[0].fds().length, "no descriptors with the plain message");
            assertEquals(5, r[1].bytes());
            assertEquals(1, r[1].fds().length);
            int received = r[1].fds()[0];
            assertNotEquals(pipe[0], received);
            assertEquals(pipeLink, link(received));
            assertEquals(-1, r[2].bytes(), "end of stream once the sender closed");
            assertArrayEquals(new int[0], r[2].fds());

            write(pipe[1], "xyz");
            assertEquals("xyz", read(received, 3));
            FdPassing.close(received, pipe[0], pipe[1]);
        }
    }

    // More descriptors than the receiver has room for: the kernel sets MSG_CTRUNC. The receive refuses, and
    // closes the one that did arrive: with the sender's copy closed too, the pipe has no writer left (end of
    // stream). Without that close the read would find a writer (EAGAIN).
    @Test
    void truncatedControlDataIsRefusedAndWhatArrivedIsClosed() throws Exception {
        try (SocketPairs.SocketPair carrier = SocketPairs.create()) {
            int[] pipe = pipe();
            new FdPassing().send(carrier.first().fd(), ByteBuffer.wrap(new byte[] {1}), pipe[1], pipe[1], pipe[1]);
            FdPassing.close(pipe[1]);

            IOException e = assertThrows(IOException.class,
                    () -> new FdPassing(1).receive(carrier.second().fd(), ByteBuffer.allocate(8)));
            assertTrue(e.getMessage().contains("control data truncated"), e.getMessage());

            assertEquals(0, Native.libc().fcntl(pipe[0], F_SETFL, O_NONBLOCK));
            long n = Native.libc().read(pipe[0], ByteBuffer.allocateDirect(1), 1);
            assertEquals(0, n, "no writer left: " + (n < 0 ? Native.strerror(Native.errno()) : n + " bytes"));
            FdPassing.close(pipe[0]);
        }
    }

    @Test
    void errorsNameTheErrno() throws Exception {
        int[] pipe = pipe();
        try (SocketPairs.SocketPair carrier = SocketPairs.create()) {
            FdPassing io = new FdPassing();
            ByteBuffer one = ByteBuffer.wrap(new byte[] {1});

            // A descriptor that is not open.
            ErrnoException bad = assertThrows(ErrnoException.class, () -> io.send(carrier.first().fd(), one, 1_000_000));
            assertTrue(bad.getMessage().contains("EBADF"), bad.getMessage());
            assertEquals(0, one.position(), "nothing counts as sent");

            // Not a socket.
            ErrnoException notSock = assertThrows(ErrnoException.class, () -> io.send(pipe[1], one));
            assertTrue(notSock.getMessage().contains("ENOTSOCK"), notSock.getMessage());
            ErrnoException notSockIn = assertThrows(ErrnoException.class, () -> io.receive(pipe[0], ByteBuffer.allocate(1)));
            assertTrue(notSockIn.getMessage().contains("ENOTSOCK"), notSockIn.getMessage());

            // A peer that closed: EPIPE, not a SIGPIPE.
            carrier.second().close();
            ErrnoException closed = assertThrows(ErrnoException.class, () -> io.send(carrier.first().fd(), one, pipe[0]));
            assertTrue(closed.getMessage().contains("EPIPE"), closed.getMessage());

            assertThrows(IllegalArgumentException.class, () -> io.send(carrier.first().fd(), ByteBuffer.allocate(0), pipe[0]));
        } finally {
            FdPassing.close(pipe);
        }
    }

    @Test
    void nativeSocketOverloads() throws Exception {
        try (SocketPairs.SocketPair carrier = SocketPairs.create();
             NativeSocket a = new NativeSocket(dup(carrier.first().fd()));
             NativeSocket b = new NativeSocket(dup(carrier.second().fd()))) {
            int[] pipe = pipe();
            new FdPassing().send(a, ByteBuffer.wrap("x".getBytes(UTF_8)), pipe[1]);
            FdPassing.Received r = new FdPassing().receive(b, ByteBuffer.allocate(4));
            assertEquals(1, r.bytes());
            assertEquals(link(pipe[1]), link(r.fds()[0]));
            FdPassing.close(r.fds()[0], pipe[0], pipe[1]);
        }
    }

    // The whole move, as the restart will make it: the successor connects to the old server's handover socket,
    // the old server sends its end of a "kernel" socket pair and closes its own descriptor without shutting the
    // socket down, and the successor adopts the received one: the kernel side's connection never drops, a
    // request and its reply cross it both ways. A plain close() would shut the socket down for both copies.
    @Test
    void handOverTheServersEndOfASocketPair(@TempDir Path dir) throws Exception {
        Path sockFile = dir.resolve("handover.sock");
        try (InheritedSockets.Listener listener = UnixListeners.listen(sockFile, 1);
             SocketPairs.SocketPair kernel = SocketPairs.create()) {
            CompletableFuture<NativeSocket> successor = CompletableFuture.supplyAsync(() -> {
                try (NativeSocket handover = UnixListeners.connect(sockFile)) {
                    ByteBuffer line = ByteBuffer.allocate(32);
                    FdPassing.Received r = new FdPassing().receive(handover, line);
                    assertEquals("go 1\n", new String(line.array(), 0, line.position(), UTF_8));
                    assertEquals(1, r.fds().length, r.toString());
                    return NativeSocket.adopt(r.fds()[0]);
                } catch (IOException e) {
                    throw new RuntimeException(e);
                }
            });
            NativeSocket old;
            do {
                old = listener.accept(1000);
            } while (old == null);
            try (NativeSocket handover = old) {
                new FdPassing().send(handover, ByteBuffer.wrap("go 1\n".getBytes(UTF_8)), kernel.second().fd());
                kernel.second().closeWithoutShutdown();
                assertTrue(!kernel.second().isOpen());
            }
            NativeSocket first = successor.get(1, TimeUnit.MINUTES);
            // The next restart: the successor passes the adopted socket on in turn.
            NativeSocket second;
            try (SocketPairs.SocketPair carrier = SocketPairs.create()) {
                new FdPassing().send(carrier.first().fd(), ByteBuffer.wrap(new byte[] {'g'}), first.fd());
                first.closeWithoutShutdown();
                assertTrue(!first.isOpen());
                FdPassing.Received r = new FdPassing().receive(carrier.second().fd(), ByteBuffer.allocate(1));
                second = NativeSocket.adopt(r.fds()[0]);
            }
            try (NativeSocket taken = second) {
                kernel.first().write(ByteBuffer.wrap("request".getBytes(UTF_8)));
                ByteBuffer req = ByteBuffer.allocate(7);
                while (req.hasRemaining()) {
                    assertTrue(taken.read(req) > 0, "the successor reads the request");
                }
                assertEquals("request", new String(req.array(), UTF_8));
                taken.write(ByteBuffer.wrap("reply".getBytes(UTF_8)));
                ByteBuffer rep = ByteBuffer.allocate(5);
                while (rep.hasRemaining()) {
                    assertTrue(kernel.first().read(rep) > 0, "the kernel side reads the reply");
                }
                assertEquals("reply", new String(rep.array(), UTF_8));
            }
        }
    }

    // ---- helpers ------------------------------------------------------------------------------------------

    private static int[] pipe() throws IOException {
        int[] fds = new int[2];
        assertEquals(0, Native.libc().pipe2(fds, O_CLOEXEC), () -> "pipe2: " + Native.strerror(Native.errno()));
        return fds;
    }

    private static int dup(int fd) throws IOException {
        int copy = Native.libc().fcntl(fd, 1030 /* F_DUPFD_CLOEXEC */, 0);
        assertTrue(copy >= 0, () -> "dup: " + Native.strerror(Native.errno()));
        return copy;
    }

    /** What /proc/self/fd/N points to, e.g. pipe:[1234]: the same open file has the same inode. */
    private static String link(int fd) throws IOException {
        return Files.readSymbolicLink(Path.of("/proc/self/fd/" + fd)).toString();
    }

    private static void write(int fd, String s) throws IOException {
        ByteBuffer b = ByteBuffer.allocateDirect(s.length()).put(s.getBytes(UTF_8)).flip();
        assertEquals(s.length(), Native.libc().write(fd, b, s.length()), () -> "write: " + Native.strerror(Native.errno()));
    }

    private static String read(int fd, int count) throws IOException {
        ByteBuffer b = ByteBuffer.allocate(count);
        while (b.hasRemaining()) {
            ByteBuffer d = ByteBuffer.allocateDirect(b.remaining());
            long n = Native.libc().read(fd, d, d.remaining());
            assertTrue(n > 0, () -> "read: " + n + " " + Native.strerror(Native.errno()));
            d.limit((int) n);
            b.put(d);
        }
        return new String(b.array(), UTF_8);
    }
}

package io.snapbd.nativeio;

import static java.nio.charset.StandardCharsets.UTF_8;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import jnr.unixsocket.UnixServerSocketChannel;
import jnr.unixsocket.UnixSocketAddress;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class InheritedSocketsTest {

    private static final long PID = ProcessHandle.current().pid();

    @Test
    void variablesForAnotherProcessAreIgnored() throws Exception {
        assertEquals(0, InheritedSockets.count(null, null, PID));
        assertEquals(0, InheritedSockets.count(String.valueOf(PID + 1), "2", PID));
        assertEquals(2, InheritedSockets.count(String.valueOf(PID), "2", PID));
        assertTrue(InheritedSockets.adopt(String.valueOf(PID + 1), "2", "a:b", PID).isEmpty());
    }

    @Test
    void malformedVariablesAreErrors() {
        IOException e = assertThrows(IOException.class, () -> InheritedSockets.count("x", "1", PID));
        assertTrue(e.getMessage().contains("LISTEN_PID"), e.getMessage());
        e = assertThrows(IOException.class, () -> InheritedSockets.count(String.valueOf(PID), "two", PID));
        assertTrue(e.getMessage().contains("LISTEN_FDS"), e.getMessage());
    }

    @Test
    void acceptsOnAnInheritedUnixListener(@TempDir Path dir) throws Exception {
        Path path = dir.resolve("nbd.sock");
        try (UnixServerSocketChannel server = UnixServerSocketChannel.open()) {
            server.socket().bind(new UnixSocketAddress(path.toString()));
            List<InheritedSockets.Listener> ls = InheritedSockets.adopt(String.valueOf(PID), "1", "nbd", PID, dup(server.getFD()));
            assertEquals(1, ls.size());
            try (InheritedSockets.Listener l = ls.get(0)) {
                assertEquals("nbd", l.name());
                assertTrue(l.isUnix());
                assertEquals(UnixDomainSocketAddress.of(path), l.address());
                assertNull(l.accept(10), "nothing is connecting yet");
                try (SocketChannel client = SocketChannel.open(StandardProtocolFamily.UNIX)) {
                    client.connect(UnixDomainSocketAddress.of(path));
                    NativeSocket s = null;
                    for (int i = 0; i < 100 && s == null; i++) {
                        s = l.accept(100);
                    }
                    assertNotNull(s, "the connection was not accepted");
                    try (NativeSocket conn = s) {
                        client.write(ByteBuffer.wrap("ping".getBytes(UTF_8)));
                        ByteBuffer in = ByteBuffer.allocateDirect(4);
                        while (in.hasRemaining()) {
                            assertTrue(conn.read(in) > 0);
                        }
                        in.flip();
                        assertEquals("ping", UTF_8.decode(in).toString());
                        ByteBuffer a = ByteBuffer.allocateDirect(2).put("po".getBytes(UTF_8)).flip();
                        ByteBuffer b = ByteBuffer.allocateDirect(2).put("ng".getBytes(UTF_8)).flip();
                        assertEquals(4, conn.write(new ByteBuffer[] {a, b}));
                        ByteBuffer back = ByteBuffer.allocate(4);
                        while (back.hasRemaining()) {
                            client.read(back);
                        }
                        assertEquals("pong", new String(back.array(), UTF_8));
                        conn.setTcpNoDelay();           // a no-op on a Unix socket
                        conn.shutdownInput();
                        assertEquals(-1, conn.read(ByteBuffer.allocate(1)));
                    }
                    assertEquals(-1, client.read(ByteBuffer.allocate(1)), "the client sees the close");
                }
            }
            assertTrue(server.isOpen(), "closing the adopted descriptor leaves the original alone");
        }
    }

    @Test
    void closeWakesABlockedReader(@TempDir Path dir) throws Exception {
        Path path = dir.resolve("s");
        try (UnixServerSocketChannel server = UnixServerSocketChannel.open()) {
            server.socket().bind(new UnixSocketAddress(path.toString()));
            InheritedSockets.Listener l = InheritedSockets.adopt(String.valueOf(PID), "1", "", PID, dup(server.getFD())).get(0);
            try (l; SocketChannel client = SocketChannel.open(UnixDomainSocketAddress.of(path))) {
                NativeSocket s = null;
                for (int i = 0; i < 100 && s == null; i++) {
                    s = l.accept(100);
                }
                assertNotNull(s);
                NativeSocket conn = s;
                int[] result = {0};
                Thread reader = new Thread(() -> {
                    try {
                        result[0] = conn.read(ByteBuffer.allocate(8));
                    } catch (IOException e) {
                        result[0] = -2;
                    }
                });
                reader.start();
                Thread.sleep(100);
                conn.close();
                reader.join(10_000);
                assertFalse(reader.isAlive(), "close did not wake the reader");
                assertTrue(result[0] < 0);
                assertFalse(conn.isOpen());
            }
        }
    }

    /** A second descriptor for the socket, as systemd keeps its own while the service has another. */
    private static int dup(int fd) throws IOException {
        int copy = Native.libc().fcntl(fd, 0 /* F_DUPFD */, 10);
        assertTrue(copy >= 10, "dup failed");
        return copy;
    }

    @Test
    void refusesWhatIsNotAListeningStreamSocket(@TempDir Path dir) throws Exception {
        try (SocketPairs.SocketPair pair = SocketPairs.create()) {
            IOException e = assertThrows(IOException.class,
                    () -> InheritedSockets.adopt(String.valueOf(PID), "1", "x", PID, pair.first().fd()));
            assertTrue(e.getMessage().contains("not listening"), e.getMessage());
        }
        Path file = Files.writeString(dir.resolve("f"), "x");
        int fd = Native.libc().open(file.toString(), 0, 0);
        try {
            IOException e = assertThrows(IOException.class,
                    () -> InheritedSockets.adopt(String.valueOf(PID), "1", "x", PID, fd));
            assertTrue(e.getMessage().contains("not a socket"), e.getMessage());
        } finally {
            Native.libc().close(fd);
        }
    }
}

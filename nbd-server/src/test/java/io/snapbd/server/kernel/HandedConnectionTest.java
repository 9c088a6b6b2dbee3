package io.snapbd.server.kernel;

import io.snapbd.nativeio.FdPassing;
import io.snapbd.nativeio.InheritedSockets;
import io.snapbd.nativeio.NativeSocket;
import io.snapbd.nativeio.SocketPairs;
import io.snapbd.nativeio.UnixListeners;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.EOFException;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The successor's side of a handed-over kernel connection that it must not adopt (the fallback of the in-place
 * restart, docs/kernel-attach.md, "Handing the kernel's sockets over"): a line of another version, or one that
 * says more read-ahead bytes than follow, is refused, and the descriptor that came with it is closed, so the
 * kernel's end sees its connection end (the device then takes the reconnect path) instead of a socket held open
 * by nobody serving it. Real socket pair, real handover socket, real descriptor passing.
 */
class HandedConnectionTest {

    @TempDir
    Path dir;

    @Test
    void aConnectionOfAnotherVersionIsRefusedAndItsSocketClosed() throws Exception {
        refusedAndClosed("conn v2 plain 0 rw 0 vol0\n", new byte[0], IOException.class, "not a handed-over connection");
    }

    @Test
    void aConnectionWhoseReadAheadIsCutShortIsRefusedAndItsSocketClosed() throws Exception {
        refusedAndClosed("conn v1 plain 0 rw 10 vol0\n", "short".getBytes(StandardCharsets.US_ASCII), EOFException.class,
                "inside the bytes read ahead of /dev/nbd0");
    }

    @Test
    void aMatchingConnectionIsReceivedWithItsReadAhead() throws Exception {
        try (SocketPairs.SocketPair kernel = SocketPairs.create();
             InheritedSockets.Listener listener = UnixListeners.listen(dir.resolve("handover.sock"), 1);
             NativeSocket successor = UnixListeners.connect(dir.resolve("handover.sock"));
             NativeSocket predecessor = listener.accept(60_000)) {
            new HandedConnection("vol0@s1", 2, true, new byte[] {1, 2, 3}).send(new FdPassing(), predecessor, kernel.second().fd());
            kernel.second().closeWithoutShutdown();
            HandedConnection.Received got = HandedConnection.receive(new FdPassing(), successor);
            assertEquals(new HandedConnection("vol0@s1", 2, true, new byte[] {1, 2, 3}).export(), got.connection().export());
            assertEquals(2, got.connection().device());
            assertTrue(got.connection().readOnly());
            assertArrayEquals(new byte[] {1, 2, 3}, got.connection().readAhead());
            try (NativeSocket adopted = NativeSocket.adopt(got.fd())) {
                adopted.write(ByteBuffer.wrap("still connected\n".getBytes(StandardCharsets.US_ASCII)));
            }
            ByteBuffer b = ByteBuffer.allocate(64);
            assertTrue(kernel.first().read(b) > 0, "the kernel's end reads what the successor wrote on the handed socket");
        }
    }

    private void refusedAndClosed(String line, byte[] after, Class<? extends IOException> refusal, String message) throws Exception {
        try (SocketPairs.SocketPair kernel = SocketPairs.create();
             InheritedSockets.Listener listener = UnixListeners.listen(dir.resolve("handover.sock"), 1);
             NativeSocket successor = UnixListeners.connect(dir.resolve("handover.sock"))) {
            try (NativeSocket predecessor = listener.accept(60_000)) {
                new FdPassing().send(predecessor, ByteBuffer.wrap(line.getBytes(StandardCharsets.US_ASCII)), kernel.second().fd());
                predecessor.write(ByteBuffer.wrap(after));
            }
            kernel.second().closeWithoutShutdown();     // as the predecessor does once it passed it
            IOException e = assertThrows(refusal, () -> HandedConnection.receive(new FdPassing(), successor));
            assertTrue(e.getMessage().contains(message), e.getMessage());
            // The only other copy of the server's end was the one received: closed, the kernel's end reads end of
            // stream. (A leaked copy would leave it waiting: the receive timeout only keeps a failure from hanging.)
            kernel.first().setReceiveTimeout(60_000);
            assertEquals(-1, kernel.first().read(ByteBuffer.allocate(1)), "the refused connection's socket was not closed");
        }
    }
}

package io.snapbd.nativeio;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class PeerCredentialsTest {

    @Test
    void peerOfALocalConnectionIsThisProcess(@TempDir Path dir) throws Exception {
        Path path = dir.resolve("admin.sock");
        try (InheritedSockets.Listener l = UnixListeners.listen(path, 8);
             SocketChannel client = SocketChannel.open(StandardProtocolFamily.UNIX)) {
            assertTrue(Files.exists(path));
            client.connect(UnixDomainSocketAddress.of(path));
            NativeSocket s = null;
            for (int i = 0; i < 50 && s == null; i++) {
                s = l.accept(100);
            }
            assertNotNull(s, "no connection accepted");
            try (NativeSocket accepted = s) {
                PeerCredentials c = accepted.peerCredentials();
                assertEquals(ProcessHandle.current().pid(), c.pid());
                assertEquals(PeerCredentials.processUid(), c.uid());
                // The accepted socket is a working channel.
                client.write(ByteBuffer.wrap(new byte[]{42}));
                ByteBuffer b = ByteBuffer.allocate(1);
                assertEquals(1, accepted.read(b));
                assertEquals(42, b.get(0));
            }
        }
    }

    @Test
    void listeningOnABusyPathFailsWithThePath(@TempDir Path dir) throws Exception {
        Path path = dir.resolve("x.sock");
        try (InheritedSockets.Listener l = UnixListeners.listen(path, 8)) {
            IOException e = assertThrows(IOException.class, () -> UnixListeners.listen(path, 8));
            assertTrue(e.getMessage().contains(path.toString()) && e.getMessage().contains("in use"), e.getMessage());
        }
    }
}

package io.snapbd.nativeio;

import static java.nio.charset.StandardCharsets.UTF_8;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.util.UUID;
import jnr.unixsocket.UnixDatagramChannel;
import jnr.unixsocket.UnixSocketAddress;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class SdNotifyTest {

    @Test
    void noSocketMeansNoOp() throws Exception {
        assertFalse(SdNotify.notify(null, "READY=1"));
        assertFalse(SdNotify.notify("", "READY=1"));
    }

    @Test
    void noOpOutsideSystemd() throws Exception {
        assumeTrue(System.getenv("NOTIFY_SOCKET") == null);
        assertFalse(SdNotify.notify("READY=1"));
    }

    @Test
    void sendsToASocketPath(@TempDir Path dir) throws Exception {
        Path socket = dir.resolve("notify");
        try (UnixDatagramChannel systemd = UnixDatagramChannel.open()) {
            systemd.bind(new UnixSocketAddress(socket.toString()));
            assertTrue(SdNotify.notify(socket.toString(), "READY=1"));
            assertEquals("READY=1", receive(systemd));
        }
    }

    @Test
    void sendsToAnAbstractName() throws Exception {
        String name = "snapbd-test-" + UUID.randomUUID();
        try (UnixDatagramChannel systemd = UnixDatagramChannel.open()) {
            systemd.bind(new UnixSocketAddress("\0" + name));
            assertTrue(SdNotify.notify("@" + name, "STATUS=serving\nREADY=1"));
            assertEquals("STATUS=serving\nREADY=1", receive(systemd));
        }
    }

    @Test
    void missingSocketIsAnError(@TempDir Path dir) {
        String socket = dir.resolve("nobody-listens").toString();
        IOException e = assertThrows(IOException.class, () -> SdNotify.notify(socket, "READY=1"));
        assertTrue(e.getMessage().contains(socket), e.getMessage());
    }

    private static String receive(UnixDatagramChannel channel) throws IOException {
        ByteBuffer buf = ByteBuffer.allocate(256);
        channel.receive(buf);
        buf.flip();
        return UTF_8.decode(buf).toString();
    }
}

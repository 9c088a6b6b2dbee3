package io.snapbd.nativeio;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import jnr.unixsocket.UnixDatagramChannel;
import jnr.unixsocket.UnixSocketAddress;

/** systemd's sd_notify(3) protocol: one datagram with newline-separated KEY=VALUE lines. */
public final class SdNotify {

    private SdNotify() {
    }

    /**
     * Sends {@code state} (e.g. "READY=1") to the socket named by {@code $NOTIFY_SOCKET}.
     * Returns false without doing anything when not started by systemd with Type=notify.
     */
    public static boolean notify(String state) throws IOException {
        return notify(System.getenv("NOTIFY_SOCKET"), state);
    }

    static boolean notify(String notifySocket, String state) throws IOException {
        if (notifySocket == null || notifySocket.isEmpty()) {
            return false;
        }
        // '@' names a socket in the abstract namespace, whose address starts with a NUL byte.
        String address = notifySocket.startsWith("@") ? "\0" + notifySocket.substring(1) : notifySocket;
        try (UnixDatagramChannel channel = UnixDatagramChannel.open()) {
            channel.send(ByteBuffer.wrap(state.getBytes(StandardCharsets.UTF_8)), new UnixSocketAddress(address));
        } catch (IOException e) {
            throw new IOException("cannot notify systemd at " + notifySocket + ": " + e.getMessage(), e);
        }
        return true;
    }
}

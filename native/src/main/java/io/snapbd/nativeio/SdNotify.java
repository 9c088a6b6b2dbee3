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

    /**
     * Loads and links the notification path (jnr-unixsocket's datagram channel and its native binding: tens of
     * milliseconds on a first use, hundreds under User-Mode Linux) without notifying anyone: one datagram to
     * {@code scratch}, where nothing listens (the send's failure is expected and ignored). For the successor of an
     * in-place restart, which must not notify systemd before the handover (it is not the main process yet).
     */
    public static void warmUp(java.nio.file.Path scratch) {
        try {
            notify(scratch.toAbsolutePath().toString(), "STATUS=warm-up");
        } catch (IOException | RuntimeException expected) {
            // nothing listens there: only the loading and linking was wanted
        }
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

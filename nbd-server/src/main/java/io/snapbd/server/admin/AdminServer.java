package io.snapbd.server.admin;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.snapbd.server.Log;
import io.snapbd.server.api.Json;
import io.snapbd.server.api.OperationException;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.OutputStream;
import io.snapbd.nativeio.InheritedSockets;
import io.snapbd.nativeio.NativeSocket;
import io.snapbd.nativeio.PeerCredentials;
import io.snapbd.nativeio.UnixListeners;

import java.nio.channels.Channels;
import java.nio.channels.ClosedChannelException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;

/**
 * The admin socket: JSON lines over a Unix socket of mode 0600. One request per line, one response per
 * line: {@code {"ok":true,"result":{...}}} or {@code {"ok":false,"error":"..."}}. Besides the file mode, each
 * connection's peer credentials (SO_PEERCRED) are checked: only root and the server's own user may manage; any
 * other peer gets one {@code "code":"permission-denied"} answer and is logged with its uid and pid.
 */
public final class AdminServer implements AutoCloseable {

    private static final int MAX_LINE = 1 << 20;

    private final Path path;
    private final ControlPlane control;
    private final InheritedSockets.Listener ss;
    private final int ownUid;
    private volatile boolean closing;
    /** Requests read and not yet answered: close waits for their answers (a restart's answer precedes the stop). */
    private final java.util.concurrent.atomic.AtomicInteger answering = new java.util.concurrent.atomic.AtomicInteger();
    private static final long CLOSE_WAIT_MILLIS = 10_000;

    public AdminServer(Path path, ControlPlane control) throws IOException {
        this.path = path;
        this.control = control;
        this.ownUid = PeerCredentials.processUid();
        Files.deleteIfExists(path);
        ss = UnixListeners.listen(path, 128);
        Files.setPosixFilePermissions(path, PosixFilePermissions.fromString("rw-------"));
        Thread t = new Thread(this::acceptLoop, "admin-accept");
        t.setDaemon(true);
        t.start();
    }

    public Path path() {
        return path;
    }

    private void acceptLoop() {
        while (!closing) {
            try {
                NativeSocket ch = ss.accept(200);       // a short poll: closing needs no shutdown of a blocked accept
                if (ch == null) {
                    continue;
                }
                Thread t = new Thread(() -> serve(ch), "admin-client");
                t.setDaemon(true);
                t.start();
            } catch (ClosedChannelException e) {
                return;
            } catch (IOException e) {
                if (!closing) {
                    Log.warn("admin socket accept failed: %s", e.getMessage());
                    try {
                        Thread.sleep(100);      // e.g. EMFILE: back off instead of spinning
                    } catch (InterruptedException ie) {
                        return;
                    }
                }
            }
        }
    }

    /** Null when the peer may manage; else the answer it gets (it has been logged). */
    private String refusal(NativeSocket ch) {
        PeerCredentials peer;
        try {
            peer = ch.peerCredentials();
        } catch (IOException e) {
            Log.warn("admin: refused a connection whose peer credentials cannot be read: %s", e.getMessage());
            return "permission denied: the admin socket cannot read this client's credentials (" + e.getMessage() + ")";
        }
        if (peer.uid() == 0 || peer.uid() == ownUid) {
            return null;
        }
        Log.warn("admin: refused a connection from uid %d (pid %d): only root and the server's user (uid %d) may manage",
                peer.uid(), peer.pid(), ownUid);
        return "permission denied: uid " + peer.uid() + " may not use the admin socket " + path
                + " (only root and the server's user, uid " + ownUid + ", may)";
    }

    private void serve(NativeSocket ch) {
        String refused = refusal(ch);
        if (refused != null) {
            refuse(ch, refused);
            return;
        }
        try (ch;
             BufferedReader in = new BufferedReader(new InputStreamReader(Channels.newInputStream(ch), StandardCharsets.UTF_8));
             OutputStream out = Channels.newOutputStream(ch)) {
            String line;
            while ((line = readLine(in)) != null) {
                if (line.isBlank()) {
                    continue;
                }
                ObjectNode resp = Json.MAPPER.createObjectNode();
                answering.incrementAndGet();
                try {
                    JsonNode req = Json.MAPPER.readTree(line);
                    if (req == null || !req.isObject()) {
                        throw new OperationException("request must be a JSON object");
                    }
                    JsonNode result = control.handle(req);
                    resp.put("ok", true);
                    resp.set("result", result);
                    Log.info("admin: %s ok", req.path("command").asText("?"));
                } catch (OperationException e) {
                    resp.put("ok", false);
                    resp.put("error", e.getMessage());
                    if (e.code() != null) {
                        resp.put("code", e.code());
                    }
                } catch (IOException e) {
                    resp.put("ok", false);
                    resp.put("error", "malformed request: " + e.getMessage().lines().findFirst().orElse(""));
                } catch (RuntimeException e) {
                    Log.error("admin: internal error: %s", e);
                    resp.put("ok", false);
                    resp.put("error", "internal error: " + e);
                }
                try {
                    out.write((Json.MAPPER.writeValueAsString(resp) + "\n").getBytes(StandardCharsets.UTF_8));
                    out.flush();
                } finally {
                    answering.decrementAndGet();
                }
            }
        } catch (IOException e) {
            Log.debug("admin client: %s", e.getMessage());
        }
    }

    /**
     * Answers the refusal and closes. The client's request is read first (bounded in size and, by closing the
     * socket, in time), so that the client, which writes before it reads, gets the answer and not a broken pipe.
     */
    private static void refuse(NativeSocket ch, String error) {
        Thread closer = new Thread(() -> {
            try {
                Thread.sleep(2000);
            } catch (InterruptedException e) {
                return;
            }
            try {
                ch.close();
            } catch (IOException e) {
                // closed already
            }
        }, "admin-refuse");
        closer.setDaemon(true);
        closer.start();
        try (ch) {
            java.nio.ByteBuffer b = java.nio.ByteBuffer.allocate(4096);
            int n;
            int total = 0;
            while (total < MAX_LINE && (n = ch.read(b.clear())) > 0) {
                total += n;
                boolean newline = false;
                for (int i = 0; i < b.position(); i++) {
                    newline |= b.get(i) == '\n';
                }
                if (newline) {
                    break;
                }
            }
            ObjectNode resp = Json.MAPPER.createObjectNode();
            resp.put("ok", false);
            resp.put("error", error);
            resp.put("code", "permission-denied");
            Channels.newOutputStream(ch).write((Json.MAPPER.writeValueAsString(resp) + "\n").getBytes(StandardCharsets.UTF_8));
        } catch (IOException e) {
            Log.debug("admin client (refused): %s", e.getMessage());
        } finally {
            closer.interrupt();
        }
    }

    private static String readLine(BufferedReader in) throws IOException {
        StringBuilder sb = new StringBuilder();
        int c;
        while ((c = in.read()) >= 0) {
            if (c == '\n') {
                return sb.toString();
            }
            if (sb.length() >= MAX_LINE) {
                throw new IOException("request line longer than " + MAX_LINE + " bytes");
            }
            sb.append((char) c);
        }
        return sb.length() == 0 ? null : sb.toString();
    }

    @Override
    public void close() {
        closing = true;
        try {
            ss.close();
            Files.deleteIfExists(path);
        } catch (IOException e) {
            // best effort
        }
        long deadline = System.nanoTime() + CLOSE_WAIT_MILLIS * 1_000_000;
        while (answering.get() > 0 && System.nanoTime() < deadline) {
            try {
                Thread.sleep(5);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                return;
            }
        }
    }
}

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
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.Channels;
import java.nio.channels.ClosedChannelException;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;

/**
 * The admin socket: JSON lines over a Unix socket of mode 0600. One request per line, one response per
 * line: {@code {"ok":true,"result":{...}}} or {@code {"ok":false,"error":"..."}}.
 */
public final class AdminServer implements AutoCloseable {

    private static final int MAX_LINE = 1 << 20;

    private final Path path;
    private final ControlPlane control;
    private final ServerSocketChannel ss;
    private volatile boolean closing;

    public AdminServer(Path path, ControlPlane control) throws IOException {
        this.path = path;
        this.control = control;
        Files.deleteIfExists(path);
        ss = ServerSocketChannel.open(StandardProtocolFamily.UNIX);
        ss.bind(UnixDomainSocketAddress.of(path));
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
                SocketChannel ch = ss.accept();
                Thread t = new Thread(() -> serve(ch), "admin-client");
                t.setDaemon(true);
                t.start();
            } catch (ClosedChannelException e) {
                return;
            } catch (IOException e) {
                if (!closing) {
                    Log.warn("admin socket accept failed: %s", e.getMessage());
                }
            }
        }
    }

    private void serve(SocketChannel ch) {
        try (ch;
             BufferedReader in = new BufferedReader(new InputStreamReader(Channels.newInputStream(ch), StandardCharsets.UTF_8));
             OutputStream out = Channels.newOutputStream(ch)) {
            String line;
            while ((line = readLine(in)) != null) {
                if (line.isBlank()) {
                    continue;
                }
                ObjectNode resp = Json.MAPPER.createObjectNode();
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
                out.write((Json.MAPPER.writeValueAsString(resp) + "\n").getBytes(StandardCharsets.UTF_8));
                out.flush();
            }
        } catch (IOException e) {
            Log.debug("admin client: %s", e.getMessage());
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
    }
}

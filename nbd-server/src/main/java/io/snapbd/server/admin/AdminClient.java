package io.snapbd.server.admin;

import com.fasterxml.jackson.databind.JsonNode;
import io.snapbd.server.api.Json;
import io.snapbd.server.api.OperationException;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.Channels;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;

/** Sends one JSON request to a running server's admin socket. */
public final class AdminClient {
    private AdminClient() {
    }

    /** Opens the admin socket, or returns null when no server listens there. */
    public static SocketChannel connect(Path socket) {
        if (!Files.exists(socket)) {
            return null;
        }
        try {
            SocketChannel ch = SocketChannel.open(StandardProtocolFamily.UNIX);
            ch.connect(UnixDomainSocketAddress.of(socket));
            return ch;
        } catch (IOException e) {
            return null;     // stale socket file: nobody listening
        }
    }

    public static JsonNode call(SocketChannel ch, JsonNode request) throws IOException, OperationException {
        try (ch) {
            OutputStream out = Channels.newOutputStream(ch);
            out.write((Json.MAPPER.writeValueAsString(request) + "\n").getBytes(StandardCharsets.UTF_8));
            out.flush();
            BufferedReader in = new BufferedReader(new InputStreamReader(Channels.newInputStream(ch), StandardCharsets.UTF_8));
            String line = in.readLine();
            if (line == null) {
                throw new IOException("the server closed the admin connection without answering");
            }
            JsonNode resp = Json.MAPPER.readTree(line);
            if (!resp.path("ok").asBoolean(false)) {
                throw new OperationException(resp.path("error").asText("unknown error"),
                        resp.hasNonNull("code") ? resp.path("code").asText() : null);
            }
            return resp.path("result");
        }
    }
}

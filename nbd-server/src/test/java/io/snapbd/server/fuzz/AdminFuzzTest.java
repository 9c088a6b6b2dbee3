package io.snapbd.server.fuzz;

import com.code_intelligence.jazzer.api.FuzzedDataProvider;
import com.code_intelligence.jazzer.junit.FuzzTest;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.snapbd.engine.io.JavaFileSpace;
import io.snapbd.engine.volume.Volume;
import io.snapbd.engine.volume.VolumeCatalog;
import io.snapbd.server.Log;
import io.snapbd.server.admin.AdminServer;
import io.snapbd.server.admin.ControlPlane;
import io.snapbd.server.api.Json;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.Channels;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Set;

/**
 * Fuzzes the admin socket (issue 25, part 2): JSON request lines go over the real {@link AdminServer}'s Unix
 * socket to a {@link ControlPlane} on a data directory with a small volume {@code v} and its snapshot {@code s}.
 * Every line must get exactly one JSON response line, {@code {"ok":true,...}} or {@code {"ok":false,"error":...}};
 * never an "internal error" (an unchecked exception in the server). Requests are mostly well-formed JSON objects
 * naming real commands with fields of every JSON type; sizes above 64 MiB are not sent (the server would honour
 * them and fill the disk, which is not what is tested here).
 *
 * <p>Without {@code JAZZER_FUZZ=1} the target replays its corpus in
 * {@code src/test/resources/io/snapbd/server/fuzz/AdminFuzzTestInputs/adminRequest/}; see benchmarks/fuzz.sh.
 */
class AdminFuzzTest {

    private static final List<String> COMMANDS = List.of("status", "volume.list", "volume.create", "volume.delete",
            "snapshot.create", "snapshot.list", "snapshot.delete", "snapshot.restore", "snapshot.clone", "clone.status",
            "snapshot.diff", "lun.get", "lun.enable", "lun.disable", "attach", "detach", "stats");
    private static final List<String> FIELDS = List.of("name", "volume", "target", "older", "younger", "export", "size",
            "saveSize", "blockSize", "sparse", "force", "track", "device", "readOnly", "timeout", "reset", "histograms");
    private static final List<String> NAMES = List.of("v", "s", "t", "v@s", "", "x/y", "..", "s2", "a".repeat(70));
    private static final long LIMIT = 64L << 20;

    private static Path root;
    private static VolumeCatalog catalog;
    private static AdminServer admin;

    private static synchronized Path socket() throws IOException {
        if (admin == null) {
            Path shm = Path.of("/dev/shm");
            root = Files.isDirectory(shm) && Files.isWritable(shm) ? Files.createTempDirectory(shm, "snapbd-adminfuzz")
                    : Files.createTempDirectory("snapbd-adminfuzz");
            catalog = VolumeCatalog.open(root.resolve("data"), new JavaFileSpace(), true);
            admin = new AdminServer(root.resolve("admin.sock"), ControlPlane.offline(catalog));
            Runtime.getRuntime().addShutdownHook(new Thread(() -> {
                try {
                    admin.close();
                    catalog.close();
                    try (var w = Files.walk(root)) {
                        w.sorted(java.util.Comparator.reverseOrder()).forEach(f -> f.toFile().delete());
                    }
                } catch (IOException | RuntimeException e) {
                    // best effort
                }
            }));
        }
        reset();
        return admin.path();
    }

    /** Back to exactly volume v (1 MiB, 4 KiB blocks) with one snapshot s: whatever the last input created goes. */
    private static void reset() throws IOException {
        for (String n : catalog.names()) {
            if (!n.equals("v")) {
                catalog.delete(n);
            }
        }
        Volume v = catalog.exists("v") ? catalog.open("v") : null;
        if (v != null && (v.snapshots().list().size() != 1 || v.snapshots().record("s") == null
                || !v.snapshots().list().get(0).active())) {
            catalog.delete("v");
            v = null;
        }
        if (v == null) {
            v = catalog.create("v", 1 << 20, 4096, 256 << 10, true);
            v.createSnapshot("s");
        }
    }

    @FuzzTest(maxDuration = "5m")
    void adminRequest(FuzzedDataProvider in) throws IOException {
        StringBuilder lines = new StringBuilder();
        int n = in.consumeInt(1, 4);
        for (int i = 0; i < n && in.remainingBytes() > 0; i++) {
            String line;
            if (in.consumeInt(0, 7) == 0) {
                line = in.consumeString(200).replace('\n', ' ');
            } else {
                ObjectNode req = Json.MAPPER.createObjectNode();
                if (in.consumeInt(0, 15) == 0) {
                    putValue(in, req, "command");
                } else {
                    req.put("command", COMMANDS.get(in.consumeInt(0, COMMANDS.size() - 1)));
                }
                int fields = in.consumeInt(0, 6);
                for (int k = 0; k < fields; k++) {
                    putValue(in, req, FIELDS.get(in.consumeInt(0, FIELDS.size() - 1)));
                }
                if (tooBig(req)) {
                    continue;
                }
                line = req.toString();
            }
            if (!line.isBlank()) {
                lines.append(line).append('\n');
            }
        }
        int expected = (int) lines.chars().filter(c -> c == '\n').count();
        Path sock = socket();
        Log.Level level = Log.level();
        Log.setLevel(Log.Level.ERROR);
        try (SocketChannel ch = SocketChannel.open(StandardProtocolFamily.UNIX)) {
            ch.connect(UnixDomainSocketAddress.of(sock));
            ByteBuffer b = ByteBuffer.wrap(lines.toString().getBytes(StandardCharsets.UTF_8));
            while (b.hasRemaining()) {
                ch.write(b);
            }
            ch.shutdownOutput();
            BufferedReader r = new BufferedReader(new InputStreamReader(Channels.newInputStream(ch), StandardCharsets.UTF_8));
            int got = 0;
            String resp;
            while ((resp = r.readLine()) != null) {
                got++;
                JsonNode j = Json.MAPPER.readTree(resp);
                if (!j.path("ok").isBoolean() || (!j.path("ok").asBoolean() && !j.path("error").isTextual())) {
                    throw new AssertionError("malformed response " + resp + "\nto\n" + lines);
                }
                if (j.path("error").asText("").startsWith("internal error")) {
                    throw new AssertionError("internal error: " + resp + "\nrequests:\n" + lines);
                }
            }
            if (got != expected) {
                throw new AssertionError(got + " responses to " + expected + " request lines:\n" + lines);
            }
        } finally {
            Log.setLevel(level);
        }
    }

    private static void putValue(FuzzedDataProvider in, ObjectNode o, String field) {
        switch (in.consumeInt(0, 8)) {
            case 0 -> o.put(field, NAMES.get(in.consumeInt(0, NAMES.size() - 1)));
            case 1 -> o.put(field, in.consumeString(24));
            case 2 -> o.put(field, in.consumeLong());
            case 3 -> o.put(field, in.consumeLong(-4096, LIMIT));
            case 4 -> o.put(field, in.consumeBoolean());
            case 5 -> o.putNull(field);
            case 6 -> o.put(field, in.consumeDouble());
            case 7 -> {
                ArrayNode a = o.putArray(field);
                a.add(in.consumeString(8));
            }
            default -> o.putObject(field).put("x", in.consumeInt());
        }
    }

    /** Sizes the server would honour by writing that many bytes: not sent (see the class comment). */
    private static boolean tooBig(ObjectNode req) {
        for (String f : Set.of("size", "saveSize")) {
            JsonNode v = req.get(f);
            if (v != null && v.isNumber() && Math.abs(v.asDouble()) > LIMIT) {
                return true;
            }
        }
        return false;
    }
}

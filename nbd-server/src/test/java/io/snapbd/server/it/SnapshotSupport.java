package io.snapbd.server.it;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.junit.jupiter.api.Assertions;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.Channels;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Helpers shared by the snapshot, LUN state and differential integration tests: snapshot CLI calls with JSON
 * results, images copied out with nbdcopy and their checksums, meta-context maps read with nbdinfo, a raw
 * admin-socket client for fast polling, and raw NBD requests that the {@link RawNbd} helpers do not cover.
 */
final class SnapshotSupport {

    static final ObjectMapper JSON = new ObjectMapper();
    static final long MiB = 1L << 20;
    static final int EPERM = 1;
    static final int ENOSPC = 28;
    static final int ESHUTDOWN = 108;

    private SnapshotSupport() {
    }

    static JsonNode json(Tools.Result r) {
        try {
            return JSON.readTree(r.assertOk().stdout());
        } catch (IOException e) {
            throw new AssertionError("not JSON: " + r, e);
        }
    }

    // ---- snapshot CLI ----------------------------------------------------------------------------------------

    static JsonNode createSnapshot(ServerProcess s, String volume, String snap) {
        JsonNode r = json(s.cli("snapshot", "create", volume, snap, "--json"));
        assertEquals(volume + "@" + snap, r.path("export").asText(), r.toString());
        return r;
    }

    static JsonNode listSnapshots(ServerProcess s, String volume) {
        return json(s.cli("snapshot", "list", volume, "--json"));
    }

    /** The {@code snapshot list --json} entry of {@code snap}, failing if it is not listed. */
    static JsonNode snapshotEntry(ServerProcess s, String volume, String snap) {
        JsonNode list = listSnapshots(s, volume);
        for (JsonNode e : list.path("snapshots")) {
            if (e.path("name").asText().equals(snap)) {
                return e;
            }
        }
        return Assertions.fail("snapshot " + snap + " not listed: " + list);
    }

    static List<String> snapshotNames(ServerProcess s, String volume) {
        List<String> names = new ArrayList<>();
        listSnapshots(s, volume).path("snapshots").forEach(e -> names.add(e.path("name").asText()));
        return names;
    }

    static long saveChunksUsed(ServerProcess s, String volume) {
        return listSnapshots(s, volume).path("saveVolume").path("chunksUsed").asLong();
    }

    // ---- images ----------------------------------------------------------------------------------------------

    /** nbdcopy of an export into a fresh local file. */
    static Path copyOut(String uri, Path file) {
        try {
            Files.deleteIfExists(file);
        } catch (IOException e) {
            throw new IllegalStateException(e);
        }
        Tools.run("nbdcopy", uri, file.toString()).assertOk();
        return file;
    }

    static String sha256(Path file) {
        try (InputStream in = Files.newInputStream(file)) {
            MessageDigest md = MessageDigest.getInstance("SHA-256");
            byte[] buf = new byte[1 << 20];
            int n;
            while ((n = in.read(buf)) > 0) {
                md.update(buf, 0, n);
            }
            return HexFormat.of().formatHex(md.digest());
        } catch (IOException | NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }

    static String sha256(byte[] data) {
        try {
            return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(data));
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }

    /** nbdsh against {@code uri} running {@code script}; must exit 0. */
    static Tools.Result nbdsh(String uri, String script) {
        return Tools.run("nbdsh", "-u", uri, "-c", script).assertOk();
    }

    static String py(String s) {
        return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'";
    }

    // ---- maps ------------------------------------------------------------------------------------------------

    /** One extent of a meta context map: {@code [offset, length, type]}. */
    static String show(List<long[]> extents) {
        StringBuilder sb = new StringBuilder();
        for (long[] e : extents) {
            sb.append(String.format("%n  %10d %10d  type %d", e[0], e[1], e[2]));
        }
        return sb.toString();
    }

    /** {@code nbdinfo --map=CONTEXT --json}, adjacent extents of the same type merged; checks contiguity. */
    static List<long[]> map(String uri, String context) {
        Tools.Result r = Tools.run("nbdinfo", "--map=" + context, "--json", uri).assertOk();
        JsonNode arr;
        try {
            arr = JSON.readTree(r.stdout());
        } catch (IOException e) {
            throw new AssertionError("nbdinfo --map --json: " + r, e);
        }
        List<long[]> out = new ArrayList<>();
        long expectOffset = 0;
        for (JsonNode e : arr) {
            long off = e.path("offset").asLong();
            long len = e.path("length").asLong();
            long type = e.path("type").asLong();
            assertEquals(expectOffset, off, "extents are contiguous: " + arr);
            expectOffset = off + len;
            add(out, off, len, type);
        }
        return out;
    }

    /** Appends an extent, merging it into the previous one when adjacent and of the same type. */
    static void add(List<long[]> out, long off, long len, long type) {
        if (len == 0) {
            return;
        }
        long[] last = out.isEmpty() ? null : out.get(out.size() - 1);
        if (last != null && last[2] == type && last[0] + last[1] == off) {
            last[1] += len;
        } else {
            out.add(new long[]{off, len, type});
        }
    }

    /** The merged extents of a per-block type array. */
    static List<long[]> extentsOf(long[] typeOfBlock, int blockSize) {
        List<long[]> out = new ArrayList<>();
        for (int b = 0; b < typeOfBlock.length; b++) {
            add(out, (long) b * blockSize, blockSize, typeOfBlock[b]);
        }
        return out;
    }

    // ---- admin socket ----------------------------------------------------------------------------------------

    /** A JSON-lines connection to the server's admin socket, for polls too frequent for a JVM per call. */
    static final class Admin implements AutoCloseable {
        private final SocketChannel ch;
        private final OutputStream out;
        private final BufferedReader in;

        Admin(ServerProcess s) throws IOException {
            ch = SocketChannel.open(StandardProtocolFamily.UNIX);
            ch.connect(UnixDomainSocketAddress.of(s.dataDir().resolve("admin.sock")));
            out = Channels.newOutputStream(ch);
            in = new BufferedReader(new InputStreamReader(Channels.newInputStream(ch), StandardCharsets.UTF_8));
        }

        JsonNode call(Map<String, String> fields) throws IOException {
            ObjectNode req = JSON.createObjectNode();
            fields.forEach(req::put);
            out.write((JSON.writeValueAsString(req) + "\n").getBytes(StandardCharsets.UTF_8));
            out.flush();
            String line = in.readLine();
            Assertions.assertNotNull(line, "the admin socket closed without answering " + req);
            JsonNode resp = JSON.readTree(line);
            assertTrue(resp.path("ok").asBoolean(false), "admin request " + req + " failed: " + resp);
            return resp.path("result");
        }

        @Override
        public void close() throws IOException {
            ch.close();
        }
    }

    // ---- raw requests ----------------------------------------------------------------------------------------

    /** Sends one request without payload and returns the error of its (single) reply: 0 when it succeeded. */
    static int simpleRequestError(RawNbd c, int type, long handle, long offset, int length) throws IOException {
        c.sendRequest(0, type, handle, offset, length, null);
        RawNbd.Reply r = c.readReply(type == RawNbd.CMD_READ ? length : 0);
        assertEquals(handle, r.handle(), "reply handle");
        return r.error();
    }

    /**
     * Sends a READ on a connection with structured replies and reads every chunk up to the one flagged DONE.
     * Returns the first error chunk's errno, or 0 when the read succeeded.
     */
    static int structuredReadError(RawNbd c, long handle, long offset, int length) throws IOException {
        c.sendRequest(0, RawNbd.CMD_READ, handle, offset, length, null);
        return structuredError(c, handle);
    }

    /** BLOCK_STATUS of base:allocation on a structured connection; returns the errno (0: answered). */
    static int structuredBlockStatusError(RawNbd c, long handle, long offset, int length) throws IOException {
        c.sendRequest(0, RawNbd.CMD_BLOCK_STATUS, handle, offset, length, null);
        return structuredError(c, handle);
    }

    private static int structuredError(RawNbd c, long handle) throws IOException {
        int error = 0;
        while (true) {
            RawNbd.Reply r = c.readReply(0);
            assertTrue(r.structured(), "structured replies were negotiated");
            assertEquals(handle, r.handle(), "reply handle");
            if (error == 0 && r.type() >= 0x8000) {
                error = ByteBuffer.wrap(r.data()).getInt(0);
            }
            if (r.done()) {
                return error;
            }
        }
    }

    // ---- background processes --------------------------------------------------------------------------------

    /** Waits for a background tool to end on its own (bounded), then ends it. */
    static void end(Process p) throws InterruptedException {
        if (p == null) {
            return;
        }
        if (!p.waitFor(3, TimeUnit.MINUTES)) {
            p.descendants().forEach(ProcessHandle::destroyForcibly);
            p.destroyForcibly();
            p.waitFor(30, TimeUnit.SECONDS);
        }
    }

    /** Ends a background tool now (it is ours: started by the test). */
    static void stopNow(Process p) throws InterruptedException {
        if (p == null) {
            return;
        }
        p.descendants().forEach(ProcessHandle::destroy);
        p.destroy();
        if (!p.waitFor(30, TimeUnit.SECONDS)) {
            p.descendants().forEach(ProcessHandle::destroyForcibly);
            p.destroyForcibly();
            p.waitFor(30, TimeUnit.SECONDS);
        }
    }

    /** Waits until {@code log} contains {@code text} or the process ends; fails after a minute. */
    static void awaitOutput(Process p, Path log, String text) throws IOException, InterruptedException {
        for (int i = 0; i < 1200; i++) {
            if (Files.exists(log) && Files.readString(log).contains(text)) {
                return;
            }
            if (!p.isAlive()) {
                break;
            }
            Thread.sleep(50);
        }
        Assertions.fail("'" + text + "' never appeared in " + log + ": " + (Files.exists(log) ? Files.readString(log) : "(no log)"));
    }

    /**
     * Starts an nbdsh that connects to {@code uri}, prints "connected", and keeps the connection open until
     * {@code flag} is deleted. The caller deletes the flag and then calls {@link #end(Process)}.
     */
    static Process holdConnection(String uri, Path flag, Path log) throws IOException, InterruptedException {
        Files.writeString(flag, "hold");
        Process p = Tools.start(log, List.of("nbdsh", "-u", uri, "-c", String.join("\n",
                "import os, time",
                "h.pread(512, 0)",
                "print('connected', flush=True)",
                "deadline = time.time() + 600",
                "while os.path.exists(" + py(flag.toString()) + ") and time.time() < deadline:",
                "    time.sleep(0.05)")));
        awaitOutput(p, log, "connected");
        return p;
    }
}

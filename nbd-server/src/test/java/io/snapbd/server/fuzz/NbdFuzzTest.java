package io.snapbd.server.fuzz;

import com.code_intelligence.jazzer.api.FuzzedDataProvider;
import com.code_intelligence.jazzer.junit.FuzzTest;
import io.snapbd.engine.BlockDevice;
import io.snapbd.engine.io.JavaFileSpace;
import io.snapbd.engine.volume.Volume;
import io.snapbd.server.Log;
import io.snapbd.server.export.Export;
import io.snapbd.server.export.ExportName;
import io.snapbd.server.export.ExportRegistry;
import io.snapbd.server.export.MetaContext;
import io.snapbd.server.handshake.Handshake;
import io.snapbd.server.handshake.Negotiated;
import io.snapbd.server.protocol.Nbd;
import io.snapbd.server.protocol.RequestHeader;
import io.snapbd.server.transmission.Connection;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.BitSet;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * Fuzzes the NBD server's handshake and transmission phase (issue 25, part 2): the real {@link Handshake} and
 * {@link Connection} run over an in-memory channel ({@link MemoryChannel}: the client's bytes, then end of
 * stream) against small real volumes (a writable one, and two snapshots of another as read-only exports).
 *
 * <p>Checked for every input: nothing unchecked escapes (the engine's calls are watched too, see
 * {@link WatchedDevice}; an "internal error" reply is a failure); the server's output is a well-formed stream of
 * handshake replies and then of simple/structured replies, each to a request that was sent (READ data of the
 * announced length, chunks inside the request's range); READ data of a snapshot is the snapshot's content;
 * and no byte of the writable volume outside the ranges of the WRITE/TRIM/WRITE_ZEROES requests sent changes.
 * The connection ends only when the input does, on NBD_CMD_DISC, or on a protocol violation (which
 * Connection and NbdServer log).
 *
 * <p>Without {@code JAZZER_FUZZ=1} each target replays its corpus in
 * {@code src/test/resources/io/snapbd/server/fuzz/NbdFuzzTestInputs/<target>/}; see benchmarks/fuzz.sh.
 */
class NbdFuzzTest {

    static final int BS = 512;
    static final long SIZE = 256L << 10;
    private static Fixture fixture;

    record Fixture(Path root, Volume vol, WatchedDevice watched, byte[] original, ExportRegistry exports,
                   Map<String, byte[]> readOnly) {
    }

    static synchronized Fixture fixture() throws IOException {
        if (fixture == null) {
            fixture = makeFixture();
        }
        return fixture;
    }

    private static Fixture makeFixture() throws IOException {
        Path shm = Path.of("/dev/shm");
        Path root = Files.isDirectory(shm) && Files.isWritable(shm) ? Files.createTempDirectory(shm, "snapbd-nbdfuzz")
                : Files.createTempDirectory("snapbd-nbdfuzz");
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try (var w = Files.walk(root)) {
                w.sorted(java.util.Comparator.reverseOrder()).forEach(f -> f.toFile().delete());
            } catch (IOException | RuntimeException e) {
                // best effort
            }
        }));
        Volume.create(root.resolve("vol"), "vol", SIZE, BS, 64L * BS, true, new JavaFileSpace());
        Volume vol = Volume.open(root.resolve("vol"), new JavaFileSpace());
        byte[] original = new byte[(int) SIZE];
        for (int i = 0; i < SIZE / 2; i++) {        // the second half stays a hole
            original[i] = (byte) (i * 31 + (i >>> 9) + 1);
        }
        write(vol, 0, original, (int) SIZE / 2);
        Volume.create(root.resolve("ro"), "ro", SIZE, BS, 256L * BS, true, new JavaFileSpace());
        Volume ro = Volume.open(root.resolve("ro"), new JavaFileSpace());
        byte[] c1 = new byte[(int) SIZE];
        Arrays.fill(c1, 0, 8192, (byte) 0x11);
        Arrays.fill(c1, 65536, 70000, (byte) 0x22);
        write(ro, 0, c1, c1.length);
        ro.createSnapshot("s1");
        byte[] c2 = c1.clone();
        Arrays.fill(c2, 4096, 12288, (byte) 0x33);
        Arrays.fill(c2, 200000, 200100, (byte) 0x44);
        write(ro, 0, c2, c2.length);
        ro.createSnapshot("s2");
        write(ro, 0, new byte[(int) SIZE], (int) SIZE);     // production moves on: the snapshots must not

        ExportRegistry exports = new ExportRegistry();
        WatchedDevice watched = new WatchedDevice(vol);
        exports.add(new Export("vol", "writable test volume", watched));
        Map<String, byte[]> readOnly = new HashMap<>();
        for (String[] s : new String[][]{{"s1"}, {"s2"}}) {
            String name = ExportName.format("ro", s[0]);
            exports.add(new Export(name, "snapshot " + s[0], ro.snapshotView(s[0])));
            readOnly.put(name, s[0].equals("s1") ? c1 : c2);
        }
        Export gone = new Export("gone", null, ro.snapshotView("s1"));
        gone.setUnavailable("being deleted");
        exports.add(gone);
        exports.setDefault("vol");
        return new Fixture(root, vol, watched, original, exports, readOnly);
    }

    private static void write(Volume v, long offset, byte[] b, int len) throws IOException {
        try (BlockDevice.Session s = v.openSession()) {
            int[] at = {0};
            v.write(s, offset, len, dst -> {
                int n = dst.remaining();
                dst.put(b, at[0], n);
                at[0] += n;
            }, false);
        }
    }

    private static byte[] readAll(BlockDevice d) throws IOException {
        byte[] out = new byte[(int) d.size()];
        try (BlockDevice.Session s = d.openSession()) {
            int[] at = {0};
            d.read(s, 0, out.length, src -> {
                int n = src.remaining();
                src.get(out, at[0], n);
                at[0] += n;
            });
        }
        return out;
    }

    // ---- targets ---------------------------------------------------------------------------------------------

    /**
     * Raw client bytes from the first byte on: the greeting is answered, every option is parsed from the
     * fuzzer's bytes, and if an export is chosen the rest of the input is its transmission phase. The first
     * input byte only sets how many bytes each read() returns.
     */
    @FuzzTest(maxDuration = "5m")
    void handshake(byte[] input) throws IOException {
        if (input.length == 0) {
            return;
        }
        Fixture f = fixture();
        MemoryChannel ch = new MemoryChannel(Arrays.copyOfRange(input, 1, input.length), 1 + (input[0] & 0xff) * 97);
        Negotiated n;
        Log.Level level = Log.level();
        Log.setLevel(Log.Level.ERROR);
        try {
            try {
                n = new Handshake(ch, f.exports()).run();
            } catch (IOException e) {
                n = null;       // protocol violation or end of input: the connection ends (NbdServer logs why)
            }
            byte[] hs = ch.out.toByteArray();
            int end = checkHandshakeOutput(hs, n);
            if (n == null) {
                return;
            }
            int consumed = input.length - 1 - ch.unread();
            byte[] rest = Arrays.copyOfRange(input, 1 + consumed, input.length);
            MemoryChannel tch = new MemoryChannel(rest, 1 + (input[0] & 0xff) * 97);
            serveAndCheck(f, n, tch, rest);
            if (end != hs.length) {
                throw new AssertionError("handshake output has " + (hs.length - end) + " bytes after the export reply");
            }
        } finally {
            Log.setLevel(level);
        }
    }

    /**
     * The transmission phase from the first request: the export and negotiation (structured replies, meta
     * contexts) come from the first bytes, then a stream of requests built from the fuzzer's choices (mostly
     * well-framed, with flags, types, offsets and lengths drawn towards the edges: 0, the export size, 2^63,
     * 2^64 − 1, the payload limit), sometimes raw bytes.
     */
    @FuzzTest(maxDuration = "5m")
    void transmission(FuzzedDataProvider in) throws IOException {
        Fixture f = fixture();
        List<String> names = List.of("vol", ExportName.format("ro", "s1"), ExportName.format("ro", "s2"));
        Export e = f.exports().lookup(names.get(in.consumeInt(0, names.size() - 1)));
        boolean structured = in.consumeBoolean();
        List<MetaContext> contexts = new ArrayList<>();
        if (structured) {
            for (MetaContext c : MetaContext.available(e)) {
                if (in.consumeBoolean()) {
                    contexts.add(c);
                }
            }
        }
        int chunk = in.consumeInt(1, 200_000);
        ByteArrayOutputStream client = new ByteArrayOutputStream();
        int requests = in.consumeInt(0, 24);
        for (int i = 0; i < requests && in.remainingBytes() > 0; i++) {
            if (in.consumeInt(0, 15) == 0) {
                client.writeBytes(in.consumeBytes(in.consumeInt(0, 64)));
                continue;
            }
            ByteBuffer h = ByteBuffer.allocate(RequestHeader.BYTES);
            int type = in.consumeInt(0, 9);
            int flags = in.consumeBoolean() ? in.consumeInt(0, Nbd.CMD_FLAGS_KNOWN) : in.consumeShort() & 0xffff;
            long offset = edge(in, SIZE);
            long length = edge(in, SIZE) & 0xffffffffL;
            h.putInt(in.consumeInt(0, 31) == 0 ? in.consumeInt() : Nbd.REQUEST_MAGIC).putShort((short) flags)
                    .putShort((short) type).putLong(i).putLong(offset).putInt((int) length);
            client.writeBytes(h.array());
            if (type == Nbd.CMD_WRITE) {
                int payload = length <= 65536 && in.consumeInt(0, 7) != 0 ? (int) length : in.consumeInt(0, 4096);
                byte[] p = new byte[payload];
                Arrays.fill(p, (byte) (0xA0 + (i & 0x1f)));
                client.writeBytes(p);
            }
        }
        byte[] bytes = client.toByteArray();
        Log.Level level = Log.level();
        Log.setLevel(Log.Level.ERROR);
        try {
            serveAndCheck(f, new Negotiated(e, structured, contexts), new MemoryChannel(bytes, chunk), bytes);
        } finally {
            Log.setLevel(level);
        }
    }

    /** An offset or length: mostly near the interesting edges, sometimes anything. */
    private static long edge(FuzzedDataProvider in, long size) {
        long[] edges = {0, 1, BS - 1, BS, BS + 1, size - BS, size - 1, size, size + 1, 4096, 65536, 65537,
                Nbd.MAX_PAYLOAD, Nbd.MAX_PAYLOAD + 1L, 0xffffffffL, Long.MAX_VALUE, Long.MIN_VALUE, -1, -BS,
                -size, Long.MAX_VALUE - size + 1};
        switch (in.consumeInt(0, 3)) {
            case 0:
                return in.consumeLong();
            case 1:
                return in.consumeLong(0, size);
            default:
                return edges[in.consumeInt(0, edges.length - 1)] + in.consumeInt(-2, 2);
        }
    }

    // ---- checks ----------------------------------------------------------------------------------------------

    /** Checks the handshake's output framing; returns where a final EXPORT_NAME reply ends (or the length). */
    private static int checkHandshakeOutput(byte[] out, Negotiated n) {
        ByteBuffer b = ByteBuffer.wrap(out);
        if (out.length < 18 || b.getLong(0) != Nbd.NBDMAGIC || b.getLong(8) != Nbd.IHAVEOPT) {
            throw new AssertionError("no greeting: " + out.length + " bytes");
        }
        int p = 18;
        while (p + 20 <= out.length && b.getLong(p) == Nbd.OPTION_REPLY_MAGIC) {
            int len = b.getInt(p + 16);
            if (len < 0 || p + 20L + len > out.length) {
                throw new AssertionError("option reply at " + p + " announces " + len + " bytes, " + (out.length - p - 20) + " follow");
            }
            int type = b.getInt(p + 12);
            if (type < 0) {
                String msg = new String(out, p + 20, len, StandardCharsets.UTF_8);
                if (msg.contains("internal error")) {
                    throw new AssertionError("handshake error reply: " + msg);
                }
            }
            p += 20 + len;
        }
        if (p != out.length) {
            // Only the EXPORT_NAME answer (size, flags, maybe 124 zeros) may end the handshake without a reply header.
            int rest = out.length - p;
            if (n == null || (rest != 10 && rest != 134)) {
                throw new AssertionError("handshake output has " + rest + " unframed bytes at " + p);
            }
            if (b.getLong(p) != n.export().device().size()) {
                throw new AssertionError("EXPORT_NAME reply announces size " + b.getLong(p));
            }
        }
        return out.length;
    }

    /** A request as the server will parse it from the client's bytes. */
    private record Req(int flags, int type, long handle, long offset, long length) {
    }

    /** Serves {@code ch} (whose bytes are {@code client}) as the negotiated export and checks what came out. */
    private static void serveAndCheck(Fixture f, Negotiated n, MemoryChannel ch, byte[] client) throws IOException {
        f.watched().unchecked.set(null);
        try {
            new Connection(ch, ch, n, Runnable::run, "fuzz").serve();
        } catch (RuntimeException | Error e) {
            throw new AssertionError("unchecked exception escaped Connection.serve: " + e, e);
        }
        if (f.watched().unchecked.get() != null) {
            throw new AssertionError("the device threw " + f.watched().unchecked.get(), f.watched().unchecked.get());
        }
        // What the server parsed: requests up to the first bad magic, DISC, oversized WRITE or the end.
        List<Req> reqs = new ArrayList<>();
        ByteBuffer c = ByteBuffer.wrap(client);
        long size = n.export().device().size();
        BitSet touched = new BitSet((int) size);
        int p = 0;
        while (p + RequestHeader.BYTES <= client.length && c.getInt(p) == Nbd.REQUEST_MAGIC) {
            Req r = new Req(c.getShort(p + 4) & 0xffff, c.getShort(p + 6) & 0xffff, c.getLong(p + 8), c.getLong(p + 16),
                    c.getInt(p + 24) & 0xffffffffL);
            reqs.add(r);
            p += RequestHeader.BYTES;
            if (r.type() == Nbd.CMD_WRITE || r.type() == Nbd.CMD_TRIM || r.type() == Nbd.CMD_WRITE_ZEROES) {
                long from = Math.max(0, Math.min(size, r.offset()));
                long to = r.offset() < 0 || r.offset() + r.length() < r.offset() ? size : Math.min(size, r.offset() + r.length());
                if (r.offset() >= 0 && from < to) {
                    touched.set((int) from, (int) to);
                }
            }
            if (r.type() == Nbd.CMD_DISC || (r.type() == Nbd.CMD_WRITE && r.length() > Nbd.MAX_PAYLOAD)) {
                break;
            }
            if (r.type() == Nbd.CMD_WRITE) {
                p += (int) Math.min(r.length(), client.length - p);
            }
        }
        byte[] expected = f.readOnly().get(n.export().name());
        boolean writable = expected == null;
        if (writable) {
            expected = f.original();
        }
        try {
            checkReplies(ch.out.toByteArray(), reqs, n.structuredReplies(), expected, writable ? touched : null, n.export().name());
        } catch (AssertionError a) {
            throw new AssertionError(a.getMessage() + "\n  structured " + n.structuredReplies() + ", contexts "
                    + n.contexts().size() + ", requests " + reqs + ", " + ch.out.size() + " bytes of replies", a);
        }
        if (writable) {
            byte[] now = readAll(f.vol());
            for (int i = 0; i < now.length; i++) {
                if (now[i] != f.original()[i] && !touched.get(i)) {
                    restore(f, now);
                    throw new AssertionError("byte " + i + " of the volume changed, outside every request's range");
                }
            }
            restore(f, now);
        }
    }

    private static void restore(Fixture f, byte[] now) throws IOException {
        if (!Arrays.equals(now, f.original())) {
            write(f.vol(), 0, f.original(), f.original().length);
        }
    }

    /** Parses the reply stream: every reply answers a sent request; READ data is what the export holds. */
    private static void checkReplies(byte[] out, List<Req> reqs, boolean structured, byte[] content, BitSet touched, String export) {
        Map<Long, ArrayDeque<Req>> open = new HashMap<>();
        for (Req r : reqs) {
            open.computeIfAbsent(r.handle(), k -> new ArrayDeque<>()).add(r);
        }
        ByteBuffer b = ByteBuffer.wrap(out);
        int p = 0;
        while (p < out.length) {
            if (p + 16 > out.length) {
                throw new AssertionError(export + ": reply cut at " + p);
            }
            int magic = b.getInt(p);
            if (magic == Nbd.SIMPLE_REPLY_MAGIC) {
                int errno = b.getInt(p + 4);
                Req r = answered(open, b.getLong(p + 8), export);
                p += 16;
                if (r.type() == Nbd.CMD_READ && errno == 0) {
                    if (structured) {
                        throw new AssertionError(export + ": simple reply with data to READ on a structured connection");
                    }
                    if (p + r.length() > out.length) {
                        throw new AssertionError(export + ": READ reply announces " + r.length() + " bytes, " + (out.length - p) + " follow");
                    }
                    checkData(out, p, r.offset(), (int) r.length(), content, touched, export);
                    p += (int) r.length();
                }
                continue;
            }
            if (magic != Nbd.STRUCTURED_REPLY_MAGIC || !structured || p + 20 > out.length) {
                throw new AssertionError(export + ": bad reply magic 0x" + Integer.toHexString(magic) + " at " + p);
            }
            int flags = b.getShort(p + 4) & 0xffff;
            int type = b.getShort(p + 6) & 0xffff;
            long handle = b.getLong(p + 8);
            int len = b.getInt(p + 16);
            if (len < 0 || p + 20L + len > out.length) {
                throw new AssertionError(export + ": structured chunk announces " + len + " bytes, " + (out.length - p - 20) + " follow");
            }
            ArrayDeque<Req> q = open.get(handle);
            if (q == null || q.isEmpty()) {
                throw new AssertionError(export + ": chunk for handle " + handle + " that no open request has");
            }
            Req r = q.peek();
            int d = p + 20;
            if (type == Nbd.REPLY_TYPE_OFFSET_DATA) {
                long off = b.getLong(d);
                int n = len - 8;
                if (r.type() != Nbd.CMD_READ || off < r.offset() || off + n > r.offset() + r.length()) {
                    throw new AssertionError(export + ": data chunk [" + off + ", +" + n + ") outside " + r);
                }
                checkData(out, d + 8, off, n, content, touched, export);
            } else if (type == Nbd.REPLY_TYPE_OFFSET_HOLE) {
                long off = b.getLong(d);
                int n = b.getInt(d + 8);
                if (r.type() != Nbd.CMD_READ || len != 12 || off < r.offset() || off + n > r.offset() + r.length()) {
                    throw new AssertionError(export + ": hole chunk [" + off + ", +" + n + ") outside " + r);
                }
                checkData(new byte[n], 0, off, n, content, touched, export);
            } else if (type == Nbd.REPLY_TYPE_ERROR) {
                String msg = new String(out, d + 6, Math.max(0, len - 6), StandardCharsets.UTF_8);
                if (msg.contains("internal error")) {
                    throw new AssertionError(export + ": " + msg);
                }
            } else if (type == Nbd.REPLY_TYPE_BLOCK_STATUS) {
                if (r.type() != Nbd.CMD_BLOCK_STATUS || (len - 4) % 8 != 0 || len < 12) {
                    throw new AssertionError(export + ": block status chunk of " + len + " bytes for " + r);
                }
                for (int k = d + 4; k < d + len; k += 8) {
                    if (b.getInt(k) == 0) {
                        throw new AssertionError(export + ": block status descriptor of length 0 for " + r);
                    }
                }
                if ((r.flags() & Nbd.CMD_FLAG_REQ_ONE) != 0 && len != 12) {
                    throw new AssertionError(export + ": REQ_ONE answered with " + (len - 4) / 8 + " descriptors");
                }
            } else {
                throw new AssertionError(export + ": unknown chunk type " + type);
            }
            if ((flags & Nbd.REPLY_FLAG_DONE) != 0) {
                q.poll();
            }
            p += 20 + len;
        }
    }

    private static Req answered(Map<Long, ArrayDeque<Req>> open, long handle, String export) {
        ArrayDeque<Req> q = open.get(handle);
        if (q == null || q.isEmpty()) {
            throw new AssertionError(export + ": reply for handle " + handle + " that no open request has");
        }
        return q.poll();
    }

    /** Data read at {@code offset} must be the export's content (for the writable volume: outside what was written). */
    private static void checkData(byte[] buf, int at, long offset, int n, byte[] content, BitSet touched, String export) {
        for (int i = 0; i < n; i++) {
            long pos = offset + i;
            if (touched != null && touched.get((int) pos)) {
                continue;
            }
            if (buf[at + i] != content[(int) pos]) {
                throw new AssertionError(export + ": READ returned wrong data at byte " + pos);
            }
        }
    }
}

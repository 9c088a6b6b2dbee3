package io.snapbd.bench.powerloss;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.snapbd.bench.powerloss.Workload.Kind;
import io.snapbd.bench.powerloss.Workload.Op;
import io.snapbd.server.admin.AdminClient;
import io.snapbd.server.api.OperationException;
import io.snapbd.server.client.NbdClient;
import io.snapbd.server.client.NbdException;
import io.snapbd.server.client.NbdUri;
import io.snapbd.server.export.ExportName;
import io.snapbd.server.mirror.NbdLeg;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.Callable;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;

/**
 * {@code bench power-loss}: the part of benchmarks/power-loss.sh that runs inside the User-Mode Linux guest,
 * next to a snapbd server whose data directory is on ext4 on {@code /dev/ubda}.
 * <ul>
 *   <li>{@code --check LOG --result FILE}: after the power cut and the reboot, replays the previous round's
 *   log through {@link Model} and checks production, every snapshot, every clone, a mirror's legs and the
 *   LUN state against it; writes the verdict as JSON to FILE (forced).</li>
 *   <li>{@code --log LOG --seed S}: replaces the volume with a new one (mirrored, with a small save volume, as
 *   {@code --features} says) and runs {@link Workload} against it forever (the host cuts the power), over
 *   one or two connections (plus one per clone), appending one line per acknowledged operation to LOG and
 *   forcing it before that connection sends its next operation.</li>
 * </ul>
 * Both may be given: the check runs first.
 */
@Command(name = "power-loss", mixinStandardHelpOptions = true,
        description = "Power-loss campaign guest side: check the previous round's log, then run a logged workload (benchmarks/power-loss.sh).")
public final class PowerLossCommand implements Callable<Integer> {

    static final String MAGIC = "POWERLOSS 1";
    private static final ObjectMapper JSON = new ObjectMapper();

    @Option(names = "--socket", required = true, description = "snapbd's NBD Unix socket.")
    Path socket;
    @Option(names = "--admin", required = true, description = "snapbd's admin socket (DATA-DIR/admin.sock).")
    Path admin;
    @Option(names = "--volume", defaultValue = "pl", description = "Volume name (default pl).")
    String volume;
    @Option(names = "--size", defaultValue = "16777216", description = "Volume size in bytes for --log (default 16 MiB).")
    long size;
    @Option(names = "--save-size", defaultValue = "67108864", description = "Save volume size in bytes for --log (default 64 MiB).")
    long saveSize;
    @Option(names = "--check", description = "The previous round's log to check against.")
    Path check;
    @Option(names = "--result", description = "Where the check's verdict goes (JSON).")
    Path result;
    @Option(names = "--log", description = "Run the workload, logging acknowledged operations here.")
    Path log;
    @Option(names = "--seed", defaultValue = "1", description = "Workload seed.")
    long seed;
    @Option(names = "--features", defaultValue = "none", description = "What the workload adds: none, mix (chosen by the seed) "
            + "or a comma-separated list of clone, mirror, concurrent, full (default none).")
    String features;
    @Option(names = "--full-save-size", defaultValue = "524288", description = "Save volume size in bytes with the feature full (default 512 KiB: copy-on-write runs out within seconds).")
    long fullSaveSize;
    @Option(names = "--leg-dir", description = "Directory of the second leg with the feature mirror (default: legs next to the data directory).")
    Path legDir;
    @Option(names = "--leg-socket", description = "The NBD Unix socket of the second snapbd that serves the leg of a round whose seed picks an NBD leg.")
    Path legSocket;
    @Option(names = "--leg-admin", description = "That second snapbd's admin socket (its DATA-DIR/admin.sock).")
    Path legAdmin;
    @Option(names = "--self-test", description = "Break the promise on purpose: send no FLUSH and no FUA flag, yet log them "
            + "as acknowledged, so that the check must find violations (power-loss.sh --self-test).")
    boolean selfTest;

    @Override
    public Integer call() throws Exception {
        int rc = 0;
        if (check != null) {
            ObjectNode verdict = check();
            byte[] text = (JSON.writerWithDefaultPrettyPrinter().writeValueAsString(verdict) + "\n").getBytes(StandardCharsets.UTF_8);
            if (result != null) {
                // Written whole, then renamed: the host takes an existing verdict as the round's, also when it resumes
                // a campaign the end of a session cut short (power-loss.sh --resume).
                Path tmp = result.resolveSibling(result.getFileName() + ".tmp");
                try (FileChannel ch = FileChannel.open(tmp, StandardOpenOption.CREATE, StandardOpenOption.WRITE,
                        StandardOpenOption.TRUNCATE_EXISTING)) {
                    ch.write(ByteBuffer.wrap(text));
                    ch.force(true);
                }
                Files.move(tmp, result, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
            }
            System.out.println("power-loss check: " + verdict.path("opsAcknowledged").asLong() + " ops, in flight "
                    + verdict.path("inFlight").asText() + ", " + verdict.path("bytesChecked").asLong() + " bytes checked, "
                    + verdict.path("violations").size() + " violation(s)");
            for (JsonNode v : verdict.path("violations")) {
                System.out.println("  VIOLATION " + v.asText());
            }
            rc = verdict.path("violations").isEmpty() ? 0 : 3;
        }
        if (log != null) {
            run();
        }
        return rc;
    }

    // ---- admin socket ---------------------------------------------------------------------------------------

    /** Sends {@code {"command": COMMAND, NAME: VALUE, ...}} from name/value pairs to the admin socket. */
    private JsonNode admin(String command, Object... kv) throws IOException, OperationException {
        return admin(admin, command, kv);
    }

    /** The same to the admin socket {@code socket} (the leg server's). */
    private static JsonNode admin(Path socket, String command, Object... kv) throws IOException, OperationException {
        ObjectNode r = JSON.createObjectNode();
        r.put("command", command);
        for (int i = 0; i < kv.length; i += 2) {
            r.set((String) kv[i], JSON.valueToTree(kv[i + 1]));
        }
        SocketChannel ch = AdminClient.connect(socket);
        if (ch == null) {
            throw new IOException("no server listens on " + socket);
        }
        return AdminClient.call(ch, r);
    }

    private NbdClient connect(String export) throws IOException {
        return NbdClient.connect(NbdUri.unix(socket, export));
    }

    // ---- the workload ---------------------------------------------------------------------------------------

    /** One NBD connection with its own thread: one data operation in flight on it at a time. */
    private final class Lane {
        final String export;
        final ExecutorService thread;
        NbdClient client;
        Future<?> pending;

        Lane(String export, String name) throws IOException {
            this.export = export;
            this.thread = Executors.newSingleThreadExecutor(r -> {
                Thread t = new Thread(r, name);
                t.setDaemon(true);
                return t;
            });
            this.client = connect(export);
        }

        /** Waits for the operation in flight on this lane; rethrows its failure. */
        void settle() throws Exception {
            if (pending != null) {
                try {
                    pending.get();
                } catch (ExecutionException e) {
                    throw e.getCause() instanceof Exception x ? x : e;
                } finally {
                    pending = null;
                }
            }
        }

        void close() throws IOException {
            thread.shutdownNow();
            client.close();
        }
    }

    private FileChannel out;
    /** LOG.sending (see {@link #run}). */
    private FileChannel sending;
    /** The third leg's URI in a round with leg changes (added and removed online), else null. */
    private String thirdLeg;
    /** Records (ACK and FAIL lines) logged so far; each op's {@code s=} is this when it is sent. */
    private long logged;

    /** Appends one record and forces it before returning; records are numbered in log order. */
    private synchronized void record(String line) throws IOException {
        append(out, line);
        logged++;
    }

    /** Appends a PROGRESS line (not a record: not numbered, the checker only reports the last one) and forces it. */
    private synchronized void progress(String line) throws IOException {
        append(out, line);
    }

    private synchronized long loggedNow() {
        return logged;
    }

    /** Rewrites LOG.sending (one line of fixed width, so no rest of a longer line stays behind). */
    private synchronized void sending(String line) throws IOException {
        sending.write(ByteBuffer.wrap(String.format("%-63s%n", line).getBytes(StandardCharsets.US_ASCII)), 0);
    }

    private void run() throws Exception {
        Set<Workload.Feature> feats = Workload.parse(features, seed);
        for (JsonNode v : admin("volume.list").path("volumes")) {       // this round's volume and the last round's clones
            admin("volume.delete", "name", v.path("name").asText(), "force", true);
        }
        int bs = 4096;
        long save = feats.contains(Workload.Feature.FULL) ? fullSaveSize : saveSize;
        String mirror = null;
        String legHeader = "";
        if (feats.contains(Workload.Feature.MIRROR)) {
            Workload.LegKind kind = Workload.legKind(seed);
            boolean changes = Workload.legChanges(seed);
            if (kind == Workload.LegKind.NBD) {
                // An export of the second snapbd, on the same ext4 disk: the power cut hits both servers at once.
                if (legSocket == null || legAdmin == null) {
                    throw new IllegalArgumentException("seed " + seed + " picks an NBD leg but no --leg-socket/--leg-admin was given "
                            + "(power-loss-guest.sh's rule and Workload.legKind differ?)");
                }
                for (JsonNode v : admin(legAdmin, "volume.list").path("volumes")) {
                    admin(legAdmin, "volume.delete", "name", v.path("name").asText(), "force", true);
                }
                long exportSize = NbdLeg.exportBytes(size);
                admin(legAdmin, "volume.create", "name", volume + "leg", "size", exportSize, "saveSize", 0, "blockSize", bs);
                mirror = NbdUri.unix(legSocket, volume + "leg").toString();
                if (changes) {
                    admin(legAdmin, "volume.create", "name", volume + "leg2", "size", exportSize, "saveSize", 0, "blockSize", bs);
                    thirdLeg = NbdUri.unix(legSocket, volume + "leg2").toString();
                }
            } else {
                Path leg = (legDir != null ? legDir : admin.toAbsolutePath().getParent().resolveSibling("legs")).resolve(volume + ".leg");
                Files.createDirectories(leg.getParent());
                for (Path p : List.of(leg, leg.resolveSibling(volume + ".leg2"))) {
                    Files.deleteIfExists(p);
                    Files.deleteIfExists(p.resolveSibling(p.getFileName() + ".tags"));
                }
                mirror = leg.toString();
                if (changes) {
                    thirdLeg = leg.resolveSibling(volume + ".leg2").toString();
                }
            }
            admin("volume.create", "name", volume, "size", size, "saveSize", save, "blockSize", bs, "mirrors", List.of(mirror));
            legHeader = " leg=" + kind.name().toLowerCase(Locale.ROOT) + (changes ? " thirdLeg=" + thirdLeg : "");
        } else {
            admin("volume.create", "name", volume, "size", size, "saveSize", save, "blockSize", bs);
        }
        int blocks = (int) (size / bs);
        Workload gen = new Workload(seed, blocks, feats);
        boolean concurrent = feats.contains(Workload.Feature.CONCURRENT);
        boolean full = feats.contains(Workload.Feature.FULL);
        // LOG.sending: the operation being sent, rewritten in place before each one and never forced; through
        // hostfs the host sees it at once, so power-loss.sh can cut while a chosen kind of operation runs.
        Path sendingPath = log.resolveSibling(log.getFileName() + ".sending");
        List<Lane> lanes = new ArrayList<>();
        Map<String, Lane> cloneLanes = new HashMap<>();
        try (FileChannel o = FileChannel.open(log, StandardOpenOption.CREATE, StandardOpenOption.WRITE,
                StandardOpenOption.TRUNCATE_EXISTING);
             FileChannel sendingFile = FileChannel.open(sendingPath, StandardOpenOption.CREATE, StandardOpenOption.WRITE,
                     StandardOpenOption.TRUNCATE_EXISTING)) {
            out = o;
            sending = sendingFile;
            append(out, MAGIC + " seed=" + seed + " volume=" + volume + " blocks=" + blocks + " blockSize=" + bs
                    + " features=" + Workload.format(feats) + " saveSize=" + save + (mirror != null ? " mirror=" + mirror : "") + legHeader);
            lanes.add(new Lane(volume, "pl-0"));
            if (concurrent) {
                lanes.add(new Lane(volume, "pl-1"));
            }
            // Leg changes run on a thread of their own while the data operations go on.
            ExecutorService legThread = Executors.newSingleThreadExecutor(r -> {
                Thread t = new Thread(r, "leg-change");
                t.setDaemon(true);
                return t;
            });
            Future<?>[] legPending = {null};
            try {
                while (true) {
                    Op op = gen.next();
                    if (op.data()) {
                        Lane lane = op.target() != null ? cloneLanes.get(op.target()) : lanes.get((int) (op.index() % lanes.size()));
                        lane.settle();
                        if (!concurrent) {
                            for (Lane l : lanes) {
                                l.settle();
                            }
                            for (Lane l : cloneLanes.values()) {
                                l.settle();
                            }
                        }
                        long s = loggedNow();
                        if (legPending[0] == null || legPending[0].isDone()) {
                            sending(String.format("%-12s %12d", op.kind(), op.index()));     // else it names the leg change
                        }
                        lane.pending = lane.thread.submit(() -> {
                            dataOp(op, lane.client, bs, s, full);
                            return null;
                        });
                        continue;
                    }
                    settle(legPending);
                    if (op.leg()) {
                        // A leg change: sent while the data operations go on (the next ones are data only).
                        long s = loggedNow();
                        sending(String.format("%-12s %12d", op.kind(), op.index()));
                        legPending[0] = legThread.submit(() -> {
                            legOp(op, s);
                            return null;
                        });
                        continue;
                    }
                    // An administrative operation: nothing else in flight.
                    for (Lane l : lanes) {
                        l.settle();
                    }
                    for (Lane l : cloneLanes.values()) {
                        l.settle();
                    }
                    long s = loggedNow();
                    sending(String.format("%-12s %12d", op.kind(), op.index()));
                    String res;
                    try {
                        res = adminOp(op, lanes, full);
                    } catch (Exception e) {
                        record("ERROR " + op.index() + " " + op.describe() + " " + e);
                        throw e;
                    }
                    boolean applied = !res.contains(" skipped=");
                    record("ACK " + op.index() + " s=" + s + " " + op.describe() + res);
                    gen.acknowledged(op, applied);
                    if (op.kind() == Kind.CLONE && applied) {
                        cloneLanes.put(op.target(), new Lane(op.target(), "clone-" + op.target()));
                    }
                }
            } finally {
                legThread.shutdownNow();
                for (Lane l : lanes) {
                    l.close();
                }
                for (Lane l : cloneLanes.values()) {
                    l.close();
                }
            }
        }
    }

    /** Waits for the leg change in flight, if any; rethrows its failure. */
    private static void settle(Future<?>[] pending) throws Exception {
        if (pending[0] != null) {
            try {
                pending[0].get();
            } catch (ExecutionException e) {
                throw e.getCause() instanceof Exception x ? x : e;
            } finally {
                pending[0] = null;
            }
        }
    }

    /**
     * {@code mirror add} (the full copy into the new leg; its progress, polled from {@code mirror.status}, goes to
     * LOG.sending and the number of readings taken during the copy to the record) or {@code mirror remove} of the
     * third leg, while data operations go on.
     */
    private void legOp(Op op, long s) throws Exception {
        String res = "";
        try {
            if (op.kind() == Kind.MIRROR_ADD) {
                CompletableFuture<JsonNode> add = new CompletableFuture<>();
                Thread t = new Thread(() -> {
                    try {
                        add.complete(admin("mirror.add", "volume", volume, "leg", thirdLeg, "force", true));
                    } catch (Throwable e) {
                        add.completeExceptionally(e);
                    }
                }, "mirror-add");
                t.setDaemon(true);
                t.start();
                int readings = 0;
                long lastDone = -1;
                while (!add.isDone()) {
                    JsonNode st = admin("mirror.status", "volume", volume);
                    boolean resyncing = false;
                    for (JsonNode l : st.path("legs")) {
                        resyncing |= l.path("uri").asText().equals(thirdLeg) && l.path("state").asText().equals("resyncing");
                    }
                    long done = st.path("copy").path("bytesDone").asLong();
                    long total = st.path("copy").path("bytesTotal").asLong();
                    if (resyncing && !add.isDone()) {
                        if (done != lastDone) {
                            readings++;
                            lastDone = done;
                            progress("PROGRESS " + op.index() + " " + done + "/" + total);
                        }
                        sending(String.format("%-12s %12d %d/%d", op.kind(), op.index(), done, total));
                    }
                    Thread.sleep(50);
                }
                try {
                    JsonNode r = add.get();
                    res = " added=" + r.path("added").asInt() + " progressReadings=" + readings;
                } catch (ExecutionException e) {
                    throw e.getCause() instanceof Exception x ? x : e;
                }
            } else {
                admin("mirror.remove", "volume", volume, "leg", thirdLeg);
            }
        } catch (Exception e) {
            record("ERROR " + op.index() + " " + op.describe() + " " + e);
            throw e;
        }
        sending(String.format("%-12s %12d", "LEG_DONE", op.index()));
        record("ACK " + op.index() + " s=" + s + " " + op.describe() + res);
    }

    /** Runs a WRITE, TRIM, ZERO or FLUSH on one lane and logs it (ACK; FAIL when refused with ENOSPC on a full save volume). */
    private void dataOp(Op op, NbdClient c, int bs, long s, boolean full) throws Exception {
        long off = (long) op.block() * bs;
        long len = (long) op.count() * bs;
        try {
            switch (op.kind()) {
                case WRITE -> {
                    byte[] buf = new byte[(int) len];
                    for (int k = 0; k < op.count(); k++) {
                        Workload.fill(buf, k * bs, bs, seed, op.value(), op.block() + k);
                    }
                    c.write(off, ByteBuffer.wrap(buf), op.fua() && !selfTest);
                }
                case FLUSH -> {
                    if (!selfTest) {
                        c.flush();
                    }
                }
                case TRIM -> c.trim(off, len, op.fua() && !selfTest);
                case ZERO -> {
                    if (op.fua() && !selfTest) {
                        c.writeZeroes(off, len, NbdClient.ZeroFlag.FUA);
                    } else {
                        c.writeZeroes(off, len);
                    }
                }
                default -> throw new AssertionError(op);
            }
        } catch (NbdException e) {
            if (full && e.errno() == ENOSPC) {
                record("FAIL " + op.index() + " s=" + s + " " + op.describe() + " errno=" + e.errno());
                return;
            }
            record("ERROR " + op.index() + " " + op.describe() + " " + e);
            throw e;
        } catch (Exception e) {
            record("ERROR " + op.index() + " " + op.describe() + " " + e);
            throw e;
        }
        record("ACK " + op.index() + " s=" + s + " " + op.describe());
    }

    private static final int ENOSPC = 28;

    /** Runs an administrative operation (nothing else in flight); returns the result fields to log. */
    private String adminOp(Op op, List<Lane> lanes, boolean full) throws Exception {
        switch (op.kind()) {
            case LUN_ENABLE, LUN_GET -> {
                JsonNode v = admin(op.kind() == Kind.LUN_ENABLE ? "lun.enable" : "lun.get", "export", volume);
                return " enabled=" + v.path("enabled").asBoolean() + " counter=" + v.path("counter").asLong()
                        + " timestamp=" + v.path("timestamp").asLong();
            }
            case SNAP_CREATE -> {
                return " sequence=" + admin("snapshot.create", "volume", volume, "name", op.snapshot()).path("sequence").asLong();
            }
            case SNAP_DELETE -> admin("snapshot.delete", "volume", volume, "name", op.snapshot());
            case RESTORE -> {
                if (full && !activeSnapshot(op.snapshot())) {
                    return " skipped=invalid";
                }
                for (Lane l : lanes) {
                    l.client.close();      // a restore is refused while the volume has clients
                }
                admin("snapshot.restore", "volume", volume, "name", op.snapshot());
                for (Lane l : lanes) {
                    l.client = connect(volume);
                }
            }
            case CLONE -> {
                if (full && !activeSnapshot(op.snapshot())) {
                    return " skipped=invalid";
                }
                // The clone gets no save volume (it is never snapshotted); acknowledged once its copy is done.
                admin("snapshot.clone", "volume", volume, "name", op.snapshot(), "target", op.target(), "saveSize", 0);
                while (true) {
                    JsonNode st = admin("clone.status", "target", op.target());
                    String state = st.path("state").asText();
                    if (state.equals("done")) {
                        break;
                    }
                    if (!state.equals("copying")) {
                        throw new IOException("clone " + op.target() + ": " + state + " " + st.path("error").asText());
                    }
                    Thread.sleep(20);
                }
            }
            default -> throw new AssertionError(op);
        }
        return "";
    }

    /** Whether the snapshot is listed active (a full save volume terminates snapshots). */
    private boolean activeSnapshot(String name) throws IOException, OperationException {
        for (JsonNode s : admin("snapshot.list", "volume", volume).path("snapshots")) {
            if (s.path("name").asText().equals(name)) {
                return s.path("state").asText().equals("active");
            }
        }
        return false;
    }

    private static void append(FileChannel out, String line) throws IOException {
        ByteBuffer b = ByteBuffer.wrap((line + "\n").getBytes(StandardCharsets.UTF_8));
        while (b.hasRemaining()) {
            out.write(b);
        }
        out.force(true);
    }

    // ---- the check ------------------------------------------------------------------------------------------

    /** One record of a log: ACK (acknowledged), FAIL (refused with ENOSPC) or ERROR; {@code p} its position. */
    record Rec(String kind, long index, long s, long p, String text, String line) {
    }

    private ObjectNode check() throws Exception {
        ObjectNode verdict = JSON.createObjectNode();
        ArrayNode violations = verdict.putArray("violations");
        String text = Files.readString(check, StandardCharsets.UTF_8);
        List<String> lines = new ArrayList<>(List.of(text.split("\n", -1)));
        // The last element is "" when the log ends with a newline; otherwise it is a record cut by the kill.
        String partial = lines.remove(lines.size() - 1);
        verdict.put("partialLastRecord", !partial.isEmpty());
        if (lines.isEmpty() || !lines.get(0).startsWith(MAGIC + " ")) {
            violations.add("log " + check + " has no header line (the workload never started?)");
            return verdict;
        }
        Map<String, String> h = fields(lines.get(0));
        long logSeed = Long.parseLong(h.get("seed"));
        String vol = h.get("volume");
        int blocks = Integer.parseInt(h.get("blocks"));
        int bs = Integer.parseInt(h.get("blockSize"));
        Set<Workload.Feature> feats = Workload.parse(h.getOrDefault("features", "none"), logSeed);
        String mirror = h.get("mirror");
        verdict.put("seed", logSeed);
        verdict.put("features", Workload.format(feats));
        boolean concurrent = feats.contains(Workload.Feature.CONCURRENT);
        boolean full = feats.contains(Workload.Feature.FULL);

        // The records, in log order; ACK and FAIL records are numbered 1, 2, ... (their position p).
        List<Rec> recs = new ArrayList<>();
        Map<Long, Rec> byIndex = new HashMap<>();
        Map<Long, String> copied = new HashMap<>();       // a mirror add's last copy progress logged
        long maxIndex = -1;
        for (int n = 1; n < lines.size(); n++) {
            String line = lines.get(n);
            String[] f = line.split(" ", 3);
            if (f[0].equals("PROGRESS") && f.length == 3 && f[1].matches("[0-9]+")) {
                copied.put(Long.parseLong(f[1]), f[2]);
                continue;
            }
            Rec r;
            try {
                long index = Long.parseLong(f[1]);
                if (f[0].equals("ERROR")) {
                    r = new Rec("ERROR", index, -1, -1, f.length > 2 ? f[2] : "", line);
                } else if ((f[0].equals("ACK") || f[0].equals("FAIL")) && f.length == 3) {
                    String[] g = f[2].split(" ", 2);
                    if (!g[0].startsWith("s=") || g.length < 2) {
                        throw new IllegalArgumentException("no s= field");
                    }
                    r = new Rec(f[0], index, Long.parseLong(g[0].substring(2)), recs.size() + 1, g[1], line);
                } else {
                    throw new IllegalArgumentException("unknown record");
                }
            } catch (RuntimeException e) {
                violations.add("log line " + (n + 1) + " '" + line + "' is not a record: " + e.getMessage());
                return verdict;
            }
            if (byIndex.put(r.index(), r) != null) {
                violations.add("log line " + (n + 1) + " '" + line + "' repeats operation " + r.index());
                return verdict;
            }
            if (!r.kind().equals("ERROR")) {
                recs.add(r);
            } else {
                violations.add("the workload failed at operation " + r.index() + " " + r.text());
            }
            maxIndex = Math.max(maxIndex, r.index());
        }

        // Regenerate the operations; those not logged may have been in flight.
        Replay replay = replay(new Workload(logSeed, blocks, feats), byIndex, maxIndex, concurrent);
        if (replay.violation() != null) {
            violations.add(replay.violation());
            return verdict;
        }
        Map<Long, Op> ops = replay.ops();
        List<Op> inFlight = replay.inFlight();
        Op legInFlight = replay.legInFlight();

        for (Rec r : recs) {
            if (!ops.containsKey(r.index())) {
                violations.add("log record '" + r.line() + "' comes after an operation that was never acknowledged");
                return verdict;
            }
        }
        Model model = new Model(blocks);
        Map<String, Model> clones = new LinkedHashMap<>();
        Map<String, long[][]> maybeClones = new LinkedHashMap<>();
        boolean enabled = false;
        long maxCounter = -1;
        long maxTimestamp = -1;
        boolean alteredSinceGet = false;
        long lastCounter = -1;
        long lastTimestamp = -1;
        long acked = 0;
        long refused = 0;
        boolean thirdLegListed = false;     // after the leg changes acknowledged
        int legAdds = 0;
        int legRemoves = 0;
        for (Rec r : recs) {
            Op op = ops.get(r.index());
            Model m = op.target() == null || op.kind() == Kind.CLONE ? model : clones.get(op.target());
            if (r.kind().equals("FAIL")) {
                if (!full || !op.data()) {
                    violations.add("operation " + op.index() + " " + op.describe() + " failed: " + r.text());
                }
                refused++;
                m.inFlight(op);          // refused: it may still have happened, in part or whole
                continue;
            }
            acked++;
            if (r.text().contains(" skipped=")) {
                continue;
            }
            if (op.leg()) {
                thirdLegListed = op.kind() == Kind.MIRROR_ADD;
                legAdds += thirdLegListed ? 1 : 0;
                legRemoves += thirdLegListed ? 0 : 1;
                continue;
            }
            if (op.kind() == Kind.CLONE) {
                clones.put(op.target(), new Model(blocks, model.snapshots.get(op.snapshot())));
            } else {
                m.acknowledged(op, r.s(), r.p());
            }
            if (op.altering()) {
                alteredSinceGet = true;
            }
            if (op.kind() == Kind.LUN_ENABLE || op.kind() == Kind.LUN_GET) {
                Map<String, String> v = fields(r.text());
                long counter = Long.parseLong(v.get("counter"));
                long ts = Long.parseLong(v.get("timestamp"));
                if (op.kind() == Kind.LUN_ENABLE) {
                    enabled = true;
                }
                if (counter < lastCounter || (alteredSinceGet && lastCounter >= 0 && counter == lastCounter) || ts < lastTimestamp) {
                    violations.add("LUN state went back or did not move at operation " + op.index() + ": counter " + lastCounter
                            + " -> " + counter + ", timestamp " + lastTimestamp + " -> " + ts
                            + (alteredSinceGet ? " (altering requests acknowledged in between)" : ""));
                }
                lastCounter = counter;
                lastTimestamp = ts;
                maxCounter = Math.max(maxCounter, counter);
                maxTimestamp = Math.max(maxTimestamp, ts);
                alteredSinceGet = false;
            }
        }
        StringBuilder flying = new StringBuilder();
        for (Op op : inFlight) {
            flying.append(flying.length() == 0 ? "" : "; ").append(op.describe());
            if (op.kind() == Kind.CLONE) {
                maybeClones.put(op.target(), model.snapshots.get(op.snapshot()));
            } else if (op.target() != null) {
                clones.get(op.target()).inFlight(op);
            } else {
                model.inFlight(op);
            }
        }
        verdict.put("opsAcknowledged", acked);
        verdict.put("opsRefusedNoSpace", refused);
        verdict.put("inFlight", flying.toString());
        // The kind the cut hit: the administrative operation in flight if any, else the first data operation.
        String kind = inFlight.isEmpty() ? "NONE" : inFlight.get(0).kind().toString();
        for (Op op : inFlight) {
            if (!op.data()) {
                kind = op.kind().toString();
            }
        }
        verdict.put("inFlightKind", kind);

        long[] bytes = {0};
        long[] torn = {0};
        long[] fate = {0, 0};       // blocks whose last write was not yet durable: {held it, held an older value}
        // Production.
        try (NbdClient c = connect(vol)) {
            compare(c, "volume " + vol, model.may, model.latest, fate, bs, blocks, logSeed, violations, bytes, torn);
        } catch (IOException e) {
            violations.add("cannot read volume " + vol + " after recovery: " + e);
        }
        // Clones: an acknowledged one reads like a volume (its content at the clone, then its writes); one whose
        // clone was in flight is absent or, once its copy (restarted by the recovery) is done, exactly the snapshot.
        int checkedClones = 0;
        try {
            Set<String> volumes = new HashSet<>();
            for (JsonNode v : admin("volume.list").path("volumes")) {
                volumes.add(v.path("name").asText());
            }
            for (String name : volumes) {
                if (name.equals(vol)) {
                    continue;
                }
                Model cm = clones.get(name);
                long[][] exact = cm == null ? maybeClones.get(name) : null;
                if (cm == null && exact == null) {
                    violations.add("volume " + name + " exists after recovery but no clone of that name was ever sent");
                    continue;
                }
                String st = awaitClone(name);
                if (!st.equals("done")) {
                    violations.add("clone " + name + (cm == null ? " (in flight at the cut)" : "") + " after recovery: " + st);
                    continue;
                }
                try (NbdClient c = connect(name)) {
                    if (cm != null) {
                        compare(c, "clone " + name, cm.may, cm.latest, fate, bs, blocks, logSeed, violations, bytes, torn);
                    } else {
                        compare(c, "clone " + name + " (in flight at the cut)", exact, null, null, bs, blocks, logSeed, violations, bytes, torn);
                    }
                }
                checkedClones++;
            }
            for (String name : clones.keySet()) {
                if (!volumes.contains(name)) {
                    violations.add("clone " + name + " (acknowledged) is gone after recovery");
                }
            }
        } catch (OperationException | IOException e) {
            violations.add("cannot list or read the clones after recovery: " + e);
        }
        // Snapshots.
        Set<String> listed = new HashSet<>();
        int checkedSnaps = 0;
        int invalidated = 0;
        try {
            for (JsonNode s : admin("snapshot.list", "volume", vol).path("snapshots")) {
                String name = s.path("name").asText();
                listed.add(name);
                long[][] content = model.snapshots.get(name);
                if (content == null) {
                    content = model.maybeCreated.get(name);
                }
                if (content == null) {
                    violations.add("snapshot " + name + " exists after recovery but was never created, or its delete was acknowledged");
                    continue;
                }
                if (!s.path("state").asText().equals("active")) {
                    if (full && s.path("reason").asText().contains("save volume full")) {
                        invalidated++;      // terminated by the overflow rule (docs/snapshots.md): listed invalid, never read
                    } else {
                        violations.add("snapshot " + name + " is " + s.path("state").asText() + " after recovery: " + s.path("reason").asText());
                    }
                    continue;
                }
                try (NbdClient c = connect(ExportName.format(vol, name))) {
                    compare(c, "snapshot " + name, content, null, null, bs, blocks, logSeed, violations, bytes, torn);
                }
                checkedSnaps++;
            }
            for (String name : model.snapshots.keySet()) {
                if (!listed.contains(name) && !model.maybeDeleted.contains(name)) {
                    violations.add("snapshot " + name + " (creation acknowledged, never deleted) is gone after recovery");
                }
            }
        } catch (OperationException | IOException e) {
            violations.add("cannot list or read the snapshots of " + vol + ": " + e);
        }
        // Mirror: after the recovery's reconciliation every listed leg is in sync and holds the same bytes as leg 0
        // over the volume: the second leg always; the third (a round with leg changes) when its add was acknowledged
        // and its remove was not; one whose add or remove was in flight at the cut may be listed or not, but if
        // listed it is complete (never listed, served or in sync while its copy was partial).
        if (mirror != null) {
            String third = h.get("thirdLeg");
            String leg = h.getOrDefault("leg", "file");
            verdict.put("legKind", leg);
            boolean thirdMay = legInFlight != null;
            ObjectNode lc = verdict.putObject("legChanges");
            lc.put("enabled", third != null);
            lc.put("addsAcknowledged", legAdds);
            lc.put("removesAcknowledged", legRemoves);
            lc.put("inFlight", legInFlight == null ? "none" : legInFlight.kind().toString());
            if (legInFlight != null && legInFlight.kind() == Kind.MIRROR_ADD) {
                // How far its copy had come by the last progress reading logged before the cut.
                lc.put("copyAtCut", copied.getOrDefault(legInFlight.index(), "not started"));
            }
            try {
                JsonNode ms = admin("mirror.status", "volume", vol);
                List<String> uris = new ArrayList<>();
                for (JsonNode l : ms.path("legs")) {
                    String uri = l.path("uri").asText();
                    uris.add(uri);
                    if (!l.path("state").asText().equals("in-sync")) {
                        violations.add("mirror leg " + uri + " is " + l.path("state").asText() + " after recovery: " + l.path("error").asText());
                    }
                }
                boolean thirdThere = third != null && uris.contains(third);
                lc.put("thirdLegAfterRecovery", third == null ? "-" : thirdThere ? "listed" : "absent");
                if (third != null && !thirdMay && thirdThere != thirdLegListed) {
                    violations.add("leg " + third + " is " + (thirdThere ? "listed" : "not listed") + " after recovery although its "
                            + (thirdLegListed ? "add" : "remove") + " was acknowledged last");
                }
                List<String> want = new ArrayList<>(List.of(mirror));
                if (thirdThere) {
                    want.add(third);
                }
                if (uris.size() != want.size() + 1 || !uris.subList(1, uris.size()).equals(want)) {
                    violations.add("volume " + vol + " has legs " + uris + " after recovery, not its own and " + want);
                } else {
                    long differ = 0;
                    Path leg0 = Path.of(uris.get(0).startsWith("local:") ? uris.get(0).substring("local:".length()) : uris.get(0));
                    for (String uri : want) {
                        differ += compareLegs(leg0, uri, (long) blocks * bs, bs, violations);
                        bytes[0] += 2L * blocks * bs;
                    }
                    verdict.put("mirrorBlocksDiffering", differ);
                }
            } catch (OperationException | IOException e) {
                violations.add("cannot compare the mirror legs of " + vol + ": " + e);
            }
        }
        // LUN state.
        try {
            JsonNode v = admin("lun.get", "export", vol);
            long counter = v.path("counter").asLong();
            long ts = v.path("timestamp").asLong();
            ObjectNode lun = verdict.putObject("lun");
            lun.put("maxCounterBefore", maxCounter);
            lun.put("counterAfter", counter);
            lun.put("maxTimestampBefore", maxTimestamp);
            lun.put("timestampAfter", ts);
            if (enabled && !v.path("enabled").asBoolean()) {
                violations.add("LUN state tracking was enabled (acknowledged) but is disabled after recovery");
            }
            if (maxCounter >= 0 && counter <= maxCounter) {
                violations.add("LUN state counter " + counter + " after recovery is not above " + maxCounter + ", handed out before the power loss");
            }
            if (maxTimestamp >= 0 && ts <= maxTimestamp) {
                violations.add("LUN state timestamp " + ts + " after recovery is not above " + maxTimestamp + ", handed out before the power loss");
            }
        } catch (OperationException | IOException e) {
            violations.add("lun.get after recovery failed: " + e);
        }
        verdict.put("bytesChecked", bytes[0]);
        verdict.put("tornBlocks", torn[0]);
        verdict.put("notDurableBlocksKept", fate[0]);
        verdict.put("notDurableBlocksLost", fate[1]);
        verdict.put("snapshotsChecked", checkedSnaps);
        verdict.put("snapshotsInvalidated", invalidated);
        verdict.put("clonesChecked", checkedClones);
        return verdict;
    }

    /**
     * The operations of a log, regenerated: {@code ops} those logged (by index), {@code inFlight} those not logged
     * that may have been sent, {@code legInFlight} the leg change among them (or null); {@code violation} when the
     * log does not match the workload (then the rest is incomplete).
     */
    record Replay(Map<Long, Op> ops, List<Op> inFlight, Op legInFlight, String violation) {
    }

    /**
     * Replays a log's records ({@code byIndex}, {@code maxIndex} the highest index logged) against the workload
     * {@code gen}. An operation not logged may have been in flight: any data operation up to one per connection
     * past the last logged one, or the administrative operation after it (sent alone). A leg change is the
     * exception: data operations go on while it runs (logged after it, or in flight), and the next leg change or
     * administrative operation waits for it.
     */
    static Replay replay(Workload gen, Map<Long, Rec> byIndex, long maxIndex, boolean concurrent) {
        Map<Long, Op> ops = new HashMap<>();
        List<Op> inFlight = new ArrayList<>();
        Op legInFlight = null;
        long legPast = 0;
        for (long i = 0; ; i++) {
            Op op = gen.next();
            Rec r = byIndex.get(i);
            if (r == null || r.kind().equals("ERROR")) {
                long reach = concurrent ? 2 + gen.clones().size() : 1;
                if (i > maxIndex + reach + legPast) {
                    break;
                }
                if (op.leg()) {
                    if (legInFlight != null) {
                        break;
                    }
                    legInFlight = op;
                    inFlight.add(op);
                    legPast += i > maxIndex ? 1 : 0;
                    continue;
                }
                if (!op.data()) {
                    if (legInFlight == null) {
                        inFlight.add(op);
                    }
                    break;
                }
                inFlight.add(op);
                continue;
            }
            if (!describedPart(r.text()).equals(op.describe())) {
                return new Replay(ops, inFlight, legInFlight,
                        "log record '" + r.line() + "' is not the workload's operation " + op.index() + " '" + op.describe() + "'");
            }
            if (legInFlight != null && !op.data()) {
                return new Replay(ops, inFlight, legInFlight, "log record '" + r.line() + "' is logged although the leg change before it, operation "
                        + legInFlight.index() + ", never was (the workload waits for it)");
            }
            ops.put(i, op);
            if (!op.data()) {
                gen.acknowledged(op, r.kind().equals("ACK") && !r.text().contains(" skipped="));
            }
        }
        return new Replay(ops, inFlight, legInFlight, null);
    }

    /** Waits (up to 5 minutes) while the clone's copy runs; its final state, or "done" when no copy runs (none restarted). */
    private String awaitClone(String target) throws IOException, InterruptedException {
        long deadline = System.nanoTime() + 300_000_000_000L;
        while (true) {
            JsonNode st;
            try {
                st = admin("clone.status", "target", target);
            } catch (OperationException e) {
                return "done";      // no copy job: it finished before the cut (its marker gone), none to restart
            }
            String state = st.path("state").asText();
            if (!state.equals("copying")) {
                return state.equals("done") ? state : state + " (" + st.path("error").asText() + ")";
            }
            if (System.nanoTime() > deadline) {
                return "still copying after 5 minutes";
            }
            Thread.sleep(50);
        }
    }

    /**
     * Compares leg 0 ({@code a}, data.img) with leg {@code b} (a file, or an NBD export read through its server) block
     * by block over {@code length} bytes; returns how many blocks differ (each a violation).
     */
    private static long compareLegs(Path a, String b, long length, int bs, ArrayNode violations) throws IOException {
        long differ = 0;
        boolean nbd = b.startsWith("nbd");
        try (FileChannel x = FileChannel.open(a, StandardOpenOption.READ);
             FileChannel y = nbd ? null : FileChannel.open(Path.of(b), StandardOpenOption.READ);
             NbdClient z = nbd ? NbdClient.connect(NbdUri.parse(b)) : null) {
            ByteBuffer bx = ByteBuffer.allocate(1 << 20);
            ByteBuffer by = ByteBuffer.allocate(1 << 20);
            for (long off = 0; off < length; off += bx.capacity()) {
                int n = (int) Math.min(bx.capacity(), length - off);
                bx.clear().limit(n);
                by.clear().limit(n);
                readFully(x, bx, off, a);
                if (nbd) {
                    z.read(off, by);
                } else {
                    readFully(y, by, off, Path.of(b));
                }
                for (int k = 0; k < n; k += bs) {
                    if (!Arrays.equals(bx.array(), k, k + bs, by.array(), k, k + bs)) {
                        if (differ++ < 20) {
                            violations.add("mirror legs differ after recovery at block " + ((off + k) / bs) + ": " + a + " holds "
                                    + describeBlock(bx.array(), k, bs) + ", " + b + " holds " + describeBlock(by.array(), k, bs));
                        }
                    }
                }
            }
        }
        return differ;
    }

    private static void readFully(FileChannel ch, ByteBuffer dst, long off, Path what) throws IOException {
        while (dst.hasRemaining()) {
            if (ch.read(dst, off + dst.position()) < 0) {
                throw new IOException(what + " ends before " + (off + dst.limit()));
            }
        }
    }

    /**
     * Reads the whole export and checks each block against its set of legitimate values: equal to one of
     * them, or (where the set has several values: writes not yet durable, or in flight together) a byte-wise
     * mix of them. Where {@code fate} is given (a volume, not a snapshot), it counts the blocks with several
     * legitimate values that held {@code latest} and those that held another one (what the power cut lost).
     */
    private static void compare(NbdClient c, String what, long[][] may, long[] latest, long[] fate, int bs, int blocks, long seed,
                                ArrayNode violations, long[] bytes, long[] torn) throws IOException {
        int chunkBlocks = 256;
        byte[] data = new byte[chunkBlocks * bs];
        byte[] want = new byte[bs];
        for (int first = 0; first < blocks; first += chunkBlocks) {
            int n = Math.min(chunkBlocks, blocks - first);
            c.read((long) first * bs, ByteBuffer.wrap(data, 0, n * bs));
            bytes[0] += (long) n * bs;
            for (int k = 0; k < n; k++) {
                int b = first + k;
                int off = k * bs;
                boolean ok = false;
                for (long v : may[b]) {
                    Workload.fill(want, 0, bs, seed, v, b);
                    if (Arrays.equals(data, off, off + bs, want, 0, bs)) {
                        ok = true;
                        if (fate != null && may[b].length > 1) {
                            fate[v == latest[b] ? 0 : 1]++;
                        }
                        break;
                    }
                }
                if (!ok && may[b].length > 1 && isMix(data, off, bs, may[b], seed, b)) {
                    torn[0]++;
                    ok = true;
                }
                if (!ok && violations.size() < 50) {
                    violations.add(what + " block " + b + " (offset " + ((long) b * bs) + ") holds "
                            + describeBlock(data, off, bs) + "; legitimate values " + Arrays.toString(may[b])
                            + " (value n = written by operation n-1, 0 = zeros)");
                }
            }
        }
    }

    private static boolean isMix(byte[] data, int off, int bs, long[] values, long seed, int block) {
        byte[][] c = new byte[values.length][bs];
        for (int i = 0; i < values.length; i++) {
            Workload.fill(c[i], 0, bs, seed, values[i], block);
        }
        for (int p = 0; p < bs; p++) {
            boolean any = false;
            for (byte[] x : c) {
                if (x[p] == data[off + p]) {
                    any = true;
                    break;
                }
            }
            if (!any) {
                return false;
            }
        }
        return true;
    }

    private static String describeBlock(byte[] data, int off, int bs) {
        boolean zero = true;
        for (int p = 0; p < bs; p++) {
            if (data[off + p] != 0) {
                zero = false;
                break;
            }
        }
        return zero ? "zeros" : "data claiming value " + Workload.claimedValue(data, off);
    }

    /** An ACK record's operation text without its result fields (those with '='). */
    private static String describedPart(String s) {
        StringBuilder b = new StringBuilder();
        for (String w : s.split(" ")) {
            if (w.indexOf('=') < 0) {
                b.append(b.length() == 0 ? "" : " ").append(w);
            }
        }
        return b.toString();
    }

    private static Map<String, String> fields(String s) {
        Map<String, String> m = new HashMap<>();
        for (String w : s.split(" ")) {
            int eq = w.indexOf('=');
            if (eq > 0) {
                m.put(w.substring(0, eq), w.substring(eq + 1));
            }
        }
        return m;
    }
}

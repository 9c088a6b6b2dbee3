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
import io.snapbd.server.client.NbdUri;
import io.snapbd.server.export.ExportName;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.Callable;

/**
 * {@code bench power-loss}: the part of benchmarks/power-loss.sh that runs inside the User-Mode Linux guest,
 * next to a snapbd server whose data directory is on ext4 on {@code /dev/ubda}.
 * <ul>
 *   <li>{@code --check LOG --result FILE}: after the power cut and the reboot, replays the previous round's
 *   log through {@link Model} and checks production, every snapshot, and the LUN state against it; writes
 *   the verdict as JSON to FILE (forced).</li>
 *   <li>{@code --log LOG --seed S}: replaces the volume with a new one and runs {@link Workload} against it
 *   forever (the host cuts the power), appending one line per acknowledged operation to LOG and forcing it
 *   before the next operation is sent.</li>
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
                try (FileChannel ch = FileChannel.open(result, StandardOpenOption.CREATE, StandardOpenOption.WRITE,
                        StandardOpenOption.TRUNCATE_EXISTING)) {
                    ch.write(ByteBuffer.wrap(text));
                    ch.force(true);
                }
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
        ObjectNode r = JSON.createObjectNode();
        r.put("command", command);
        for (int i = 0; i < kv.length; i += 2) {
            r.set((String) kv[i], JSON.valueToTree(kv[i + 1]));
        }
        SocketChannel ch = AdminClient.connect(admin);
        if (ch == null) {
            throw new IOException("no server listens on " + admin);
        }
        return AdminClient.call(ch, r);
    }

    private NbdClient connect(String export) throws IOException {
        return NbdClient.connect(NbdUri.unix(socket, export));
    }

    // ---- the workload ---------------------------------------------------------------------------------------

    private void run() throws Exception {
        try {
            admin("volume.delete", "name", volume, "force", true);
        } catch (OperationException e) {
            if (!e.getMessage().startsWith("no volume named")) {
                throw e;
            }
        }
        int bs = 4096;
        admin("volume.create", "name", volume, "size", size, "saveSize", saveSize, "blockSize", bs);
        int blocks = (int) (size / bs);
        byte[] buf = new byte[16 * bs];
        Workload gen = new Workload(seed, blocks);
        // LOG.sending: the operation being sent, rewritten in place before each one and never forced; through
        // hostfs the host sees it at once, so power-loss.sh can cut while a chosen kind of operation runs.
        Path sendingPath = log.resolveSibling(log.getFileName() + ".sending");
        try (FileChannel out = FileChannel.open(log, StandardOpenOption.CREATE, StandardOpenOption.WRITE,
                StandardOpenOption.TRUNCATE_EXISTING);
             FileChannel sending = FileChannel.open(sendingPath, StandardOpenOption.CREATE, StandardOpenOption.WRITE,
                     StandardOpenOption.TRUNCATE_EXISTING)) {
            append(out, MAGIC + " seed=" + seed + " volume=" + volume + " blocks=" + blocks + " blockSize=" + bs);
            NbdClient c = connect(volume);
            try {
                while (true) {
                    Op op = gen.next();
                    sending.write(ByteBuffer.wrap(String.format("%-12s %12d%n", op.kind(), op.index()).getBytes(StandardCharsets.US_ASCII)), 0);
                    String res;
                    try {
                        res = execute(op, c, buf, bs);
                        if (op.kind() == Kind.RESTORE) {
                            c = connect(volume);
                        }
                    } catch (Exception e) {
                        append(out, "ERROR " + op.index() + " " + op.describe() + " " + e);
                        throw e;
                    }
                    append(out, "ACK " + op.index() + " " + op.describe() + res);
                    gen.acknowledged(op);
                }
            } finally {
                c.close();
            }
        }
    }

    private String execute(Op op, NbdClient c, byte[] buf, int bs) throws Exception {
        long off = (long) op.block() * bs;
        long len = (long) op.count() * bs;
        switch (op.kind()) {
            case WRITE -> {
                for (int k = 0; k < op.count(); k++) {
                    Workload.fill(buf, k * bs, bs, seed, op.value(), op.block() + k);
                }
                c.write(off, ByteBuffer.wrap(buf, 0, (int) len), op.fua() && !selfTest);
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
                c.close();      // a restore is refused while the volume has clients
                admin("snapshot.restore", "volume", volume, "name", op.snapshot());
            }
            default -> throw new AssertionError(op);
        }
        return "";
    }

    private static void append(FileChannel out, String line) throws IOException {
        ByteBuffer b = ByteBuffer.wrap((line + "\n").getBytes(StandardCharsets.UTF_8));
        while (b.hasRemaining()) {
            out.write(b);
        }
        out.force(true);
    }

    // ---- the check ------------------------------------------------------------------------------------------

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
        verdict.put("seed", logSeed);
        Workload gen = new Workload(logSeed, blocks);
        Model model = new Model(blocks);
        boolean enabled = false;
        long maxCounter = -1;
        long maxTimestamp = -1;
        boolean alteredSinceGet = false;
        long lastCounter = -1;
        long lastTimestamp = -1;
        long acked = 0;
        Op inFlight = null;
        for (int n = 1; n < lines.size(); n++) {
            String line = lines.get(n);
            Op op = gen.next();
            String[] f = line.split(" ", 3);
            if (f[0].equals("ERROR")) {
                violations.add("the workload failed at operation " + line.substring(6));
                inFlight = op;
                break;
            }
            if (!f[0].equals("ACK") || f.length < 3 || Long.parseLong(f[1]) != op.index() || !describedPart(f[2]).equals(op.describe())) {
                violations.add("log line " + (n + 1) + " '" + line + "' is not the workload's operation " + op.index() + " '" + op.describe() + "'");
                return verdict;
            }
            model.acknowledged(op);
            gen.acknowledged(op);
            acked++;
            if (op.altering()) {
                alteredSinceGet = true;
            }
            if (op.kind() == Kind.LUN_ENABLE || op.kind() == Kind.LUN_GET) {
                Map<String, String> v = fields(f[2]);
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
        if (inFlight == null) {
            inFlight = gen.next();
        }
        model.inFlight(inFlight);
        verdict.put("opsAcknowledged", acked);
        verdict.put("inFlight", inFlight.describe());
        verdict.put("inFlightKind", inFlight.kind().toString());

        long[] bytes = {0};
        long[] torn = {0};
        long[] fate = {0, 0};       // blocks whose last write was not yet durable: {held it, held an older value}
        // Production.
        try (NbdClient c = connect(vol)) {
            compare(c, "volume " + vol, model.may, model.latest, fate, bs, blocks, logSeed, violations, bytes, torn);
        } catch (IOException e) {
            violations.add("cannot read volume " + vol + " after recovery: " + e);
        }
        // Snapshots.
        Set<String> listed = new HashSet<>();
        int checkedSnaps = 0;
        try {
            for (JsonNode s : admin("snapshot.list", "volume", vol).path("snapshots")) {
                String name = s.path("name").asText();
                listed.add(name);
                long[] content = model.snapshots.get(name);
                if (content == null && name.equals(model.maybeCreated)) {
                    content = model.maybeCreatedContent;
                }
                if (content == null) {
                    violations.add("snapshot " + name + " exists after recovery but was never created, or its delete was acknowledged");
                    continue;
                }
                if (!s.path("state").asText().equals("active")) {
                    violations.add("snapshot " + name + " is " + s.path("state").asText() + " after recovery: " + s.path("reason").asText());
                    continue;
                }
                long[][] exact = new long[blocks][];
                for (int b = 0; b < blocks; b++) {
                    exact[b] = new long[]{content[b]};
                }
                try (NbdClient c = connect(ExportName.format(vol, name))) {
                    compare(c, "snapshot " + name, exact, null, null, bs, blocks, logSeed, violations, bytes, torn);
                }
                checkedSnaps++;
            }
            for (String name : model.snapshots.keySet()) {
                if (!listed.contains(name) && !name.equals(model.maybeDeleted)) {
                    violations.add("snapshot " + name + " (creation acknowledged, never deleted) is gone after recovery");
                }
            }
        } catch (OperationException | IOException e) {
            violations.add("cannot list or read the snapshots of " + vol + ": " + e);
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
        return verdict;
    }

    /**
     * Reads the whole export and checks each block against its set of legitimate values: equal to one of
     * them, or (only for production, where {@code latest} is given, and where the set has several values) a
     * byte-wise mix of them. For production, {@code fate} counts the blocks with several legitimate values
     * that held {@code latest} and those that held an older one (what the power cut lost).
     */
    private static void compare(NbdClient c, String what, long[][] may, long[] latest, long[] fate, int bs, int blocks, long seed,
                                ArrayNode violations, long[] bytes, long[] torn) throws IOException {
        boolean mixAllowed = latest != null;
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
                if (!ok && mixAllowed && may[b].length > 1 && isMix(data, off, bs, may[b], seed, b)) {
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

package io.snapbd.server.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.snapbd.server.api.Json;
import io.snapbd.server.client.NbdUri;
import io.snapbd.server.config.Sizes;
import io.snapbd.server.export.ExportName;
import io.snapbd.server.replication.Replicator;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.time.Instant;
import java.util.concurrent.Callable;

@Command(name = "replicate", mixinStandardHelpOptions = true,
        description = {"Send a snapshot to any NBD server: with --from only the blocks changed since OLDER (which the target must hold), "
                + "else a full copy of the in-use blocks. Reads VOLUME@SNAPSHOT from this server over NBD; the target is flushed at the end.",
                "With --state FILE the target's snapshot is remembered: the next run sends the difference to the newest snapshot, "
                        + "a full copy if the remembered snapshot is gone, or nothing when it is already the newest."})
final class ReplicateCommand implements Callable<Integer> {

    @CommandLine.Mixin
    Cli.DataDirOption dataDir;

    @Parameters(paramLabel = "VOLUME")
    String volume;

    @Option(names = "--to", required = true, paramLabel = "URI", description = "Target: nbd://HOST[:PORT]/EXPORT or nbd+unix:///EXPORT?socket=PATH; "
            + "over TLS nbds://HOST[:PORT]/EXPORT?tls-certificates=DIR (libnbd's parameters, also tls-verify-peer=false).")
    String to;

    @Option(names = "--from", paramLabel = "OLDER", description = "Snapshot the target already holds: send only the difference.")
    String from;

    @Option(names = "--snapshot", paramLabel = "YOUNGER", description = "Snapshot to send (default with --state: the newest).")
    String snapshot;

    @Option(names = "--state", paramLabel = "FILE", description = "Replica state file: which snapshot the target holds.")
    Path state;

    @Option(names = "--verify", description = "Read the target back over the copied extents and compare checksums.")
    boolean verify;

    @Option(names = "--source-socket", paramLabel = "PATH", description = "This server's NBD Unix socket (default DIR/nbd.sock).")
    Path sourceSocket;

    @Option(names = "--json", description = "Print the result as JSON.")
    boolean json;

    /**
     * Whether the state file's target is {@code target}: the same server and export, whatever the TLS settings
     * (moving to nbds:// or to another certificate directory keeps the replica's history).
     */
    static boolean sameTarget(String recorded, NbdUri target) {
        try {
            return NbdUri.parse(recorded).withoutTls().equals(target.withoutTls());
        } catch (IllegalArgumentException e) {
            return false;
        }
    }

    @Override
    public Integer call() throws IOException {
        NbdUri target;
        try {
            target = NbdUri.parse(to);
        } catch (IllegalArgumentException e) {
            throw new Cli.ExitException(2, e.getMessage());
        }
        Path dir = dataDir.resolve();
        ObjectNode listReq = Cli.request("snapshot.list");
        listReq.put("volume", volume);
        JsonNode snaps = Cli.call(dir, listReq).path("snapshots");
        String older = from;
        String younger = snapshot;
        long olderSeq = -1;
        if (state != null && Files.exists(state)) {
            JsonNode st = Json.MAPPER.readTree(Files.readString(state, StandardCharsets.UTF_8));
            if (!st.path("volume").asText().equals(volume) || !sameTarget(st.path("target").asText(), target)) {
                throw new Cli.ExitException(2, state + " records volume " + st.path("volume").asText() + " to "
                        + st.path("target").asText() + ", not " + volume + " to " + target);
            }
            if (older == null) {
                older = st.path("snapshot").asText();
                olderSeq = st.path("sequence").asLong(-1);
            }
        }
        JsonNode newest = null;
        JsonNode olderNode = null;
        JsonNode youngerNode = null;
        for (JsonNode s : snaps) {
            if (!"active".equals(s.path("state").asText())) {
                continue;
            }
            newest = s;
            if (s.path("name").asText().equals(older) && (olderSeq < 0 || s.path("sequence").asLong() == olderSeq)) {
                olderNode = s;
            }
            if (s.path("name").asText().equals(younger)) {
                youngerNode = s;
            }
        }
        if (younger == null) {
            if (state == null) {
                throw new Cli.ExitException(2, "name the snapshot to send with --snapshot (or use --state)");
            }
            youngerNode = newest;
            if (youngerNode == null) {
                throw new Cli.ExitException(1, "volume " + volume + " has no active snapshot to send");
            }
            younger = youngerNode.path("name").asText();
        } else if (youngerNode == null) {
            throw new Cli.ExitException(1, "volume " + volume + " has no active snapshot named " + younger);
        }
        if (older != null && olderNode == null) {
            if (from != null) {
                throw new Cli.ExitException(1, "volume " + volume + " has no active snapshot named " + from);
            }
            System.err.println("snapbd: the target's snapshot " + older + " no longer exists: sending a full copy");
            older = null;
        }
        if (older != null && olderNode.path("sequence").asLong() == youngerNode.path("sequence").asLong()) {
            System.out.println("up to date: " + target + " already holds " + ExportName.format(volume, younger));
            return 0;
        }
        if (older != null && olderNode.path("sequence").asLong() > youngerNode.path("sequence").asLong()) {
            throw new Cli.ExitException(1, "snapshot " + older + " is younger than " + younger + ": nothing to send forward");
        }
        Path sock = sourceSocket != null ? sourceSocket : dir.resolve("nbd.sock");
        NbdUri source = NbdUri.unix(sock, ExportName.format(volume, younger));
        NbdUri olderUri = older == null ? null : NbdUri.unix(sock, ExportName.format(volume, older));
        Progress bar = new Progress(System.out, (older == null ? "full copy " : "delta " + older + "..") + younger + " -> " + target);
        Replicator.Result r;
        try {
            r = new Replicator(source, olderUri, target, older).run(verify, bar::update);
        } catch (IOException e) {
            throw new Cli.ExitException(1, "replication failed: " + Cli.message(e) + " (re-run the same command to complete it)");
        }
        if (state != null) {
            ObjectNode st = Json.MAPPER.createObjectNode();
            st.put("volume", volume);
            st.put("target", target.toString());
            st.put("snapshot", younger);
            st.put("sequence", youngerNode.path("sequence").asLong());
            st.put("replicatedAt", Instant.now().toString());
            Path tmp = state.resolveSibling(state.getFileName() + ".tmp");
            Files.writeString(tmp, Json.MAPPER.writerWithDefaultPrettyPrinter().writeValueAsString(st) + "\n", StandardCharsets.UTF_8);
            Files.move(tmp, state, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        }
        if (json) {
            ObjectNode o = Json.MAPPER.createObjectNode();
            o.put("volume", volume);
            o.put("snapshot", younger);
            if (older != null) {
                o.put("from", older);
            }
            o.put("target", target.toString());
            o.put("bytesCopied", r.bytesCopied());
            o.put("bytesZeroed", r.bytesZeroed());
            o.put("extentsCopied", r.extentsCopied());
            o.put("verified", r.verified());
            Cli.printJson(o);
        } else {
            System.out.println("replicated " + ExportName.format(volume, younger) + (older == null ? " (full copy)" : " (delta from " + older + ")")
                    + " to " + target + ": " + Sizes.format(r.bytesCopied()) + " copied in " + r.extentsCopied() + " extent(s), "
                    + Sizes.format(r.bytesZeroed()) + " zeroed" + (r.verified() ? ", verified" : ""));
        }
        return 0;
    }
}

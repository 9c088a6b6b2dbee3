package io.snapbd.bench.mirror;

import io.snapbd.bench.latency.BlockPermutation;
import io.snapbd.server.client.Completion;
import io.snapbd.server.client.NbdClient;
import io.snapbd.server.client.NbdUri;
import io.snapbd.server.config.Sizes;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

import java.io.BufferedWriter;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import java.util.concurrent.Callable;
import java.util.concurrent.atomic.AtomicLong;

/**
 * {@code bench trace-load URI --trace FILE}: random writes on several connections that log, per write, when it
 * was sent and when (and whether) it was acknowledged. Run until the server goes away (the resync benchmark
 * kills it with SIGKILL) or {@code --duration} ends; the trace then names exactly the writes in flight at the
 * kill: sent, never acknowledged. Each block written carries a header (round, connection, sequence, offset) and a
 * body fixed per connection and round, so {@link TraceCheck} can tell which write a block holds.
 */
@Command(name = "trace-load", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Random writes that log every request's send and acknowledgement time (the write trace of",
                "benchmarks/mirror-resync.sh). Ends when the connection breaks or after --duration; then writes the trace:",
                "'# round R bs B …' and one line per write: seq conn offset length issue_ns ack_ns status",
                "(epoch ns; ack_ns -1 when not acknowledged; status 0 ok, -1 connection lost, else the NBD error)."},
        exitCodeListHeading = "%nExit codes:%n",
        exitCodeList = {"0:the trace was written (the connection may have broken)", "2:bad arguments or no connection"})
public final class TraceLoad implements Callable<Integer> {

    /** Block header: magic, round, connection, sequence, offset. */
    static final long MAGIC = 0x3154434152544253L; // "SBTRACT1" little-endian
    static final int HEADER = 32;

    @Parameters(index = "0", paramLabel = "URI", description = "NBD URI of the export")
    String uri;

    @Option(names = "--trace", required = true, paramLabel = "FILE", description = "where the trace goes")
    Path trace;

    @Option(names = "--round", defaultValue = "0", description = "round number (in each block's header). Default: ${DEFAULT-VALUE}")
    int round;

    @Option(names = "--bs", defaultValue = "4k", paramLabel = "SIZE", description = "write size. Default: ${DEFAULT-VALUE}")
    String blockSize;

    @Option(names = {"-c", "--connections"}, defaultValue = "2", description = "connections. Default: ${DEFAULT-VALUE}")
    int connections;

    @Option(names = {"-d", "--depth"}, defaultValue = "16", description = "writes in flight per connection. Default: ${DEFAULT-VALUE}")
    int depth;

    @Option(names = "--offset", defaultValue = "0", paramLabel = "SIZE", description = "start of the range written. Default: 0")
    String offset;

    @Option(names = "--size", paramLabel = "SIZE", description = "bytes of the range written (default: to the end of the export)")
    String size;

    @Option(names = {"-t", "--duration"}, defaultValue = "600", paramLabel = "SECONDS", description = "stop after this long. Default: ${DEFAULT-VALUE}")
    double duration;

    @Option(names = "--seed", defaultValue = "1", description = "seed of offsets and data. Default: ${DEFAULT-VALUE}")
    long seed;

    @Option(names = "--ready", paramLabel = "FILE", description = "created once every connection is open and writing")
    Path ready;

    @Override
    public Integer call() throws Exception {
        int bs = Math.toIntExact(Sizes.parse(blockSize));
        if (bs < 512 || Integer.bitCount(bs) != 1 || bs > 1 << 20 || connections < 1 || connections > 64 || depth < 1 || depth > 1024) {
            System.err.println("bench trace-load: --bs must be a power of two 512..1M, --connections 1..64, --depth 1..1024");
            return 2;
        }
        NbdUri u = NbdUri.parse(uri);
        List<NbdClient> clients = new ArrayList<>();
        try {
            for (int i = 0; i < connections; i++) {
                clients.add(NbdClient.connect(u, NbdClient.Options.defaults().withMaxInFlight(depth)));
            }
        } catch (IOException e) {
            System.err.println("bench trace-load: " + uri + ": " + e.getMessage());
            clients.forEach(TraceLoad::closeQuietly);
            return 2;
        }
        long exportSize = clients.get(0).size();
        long first = Sizes.parse(offset);
        long bytes = size == null ? exportSize - first : Sizes.parse(size);
        if (first < 0 || first % bs != 0 || bytes < (long) bs * connections || first + bytes > exportSize) {
            System.err.println("bench trace-load: range " + first + "+" + bytes + " does not fit the export (" + exportSize + " bytes)");
            clients.forEach(TraceLoad::closeQuietly);
            return 2;
        }
        long blocks = bytes / bs;
        BlockPermutation perm = new BlockPermutation(blocks, seed * 1_000_003L + round);
        AtomicLong seq = new AtomicLong();
        long epochBase = System.currentTimeMillis() * 1_000_000L - System.nanoTime();
        long deadline = System.nanoTime() + (long) (duration * 1e9);
        List<Writer> writers = new ArrayList<>();
        for (int i = 0; i < connections; i++) {
            writers.add(new Writer(clients.get(i), i, bs, first, perm, seq, epochBase, deadline));
        }
        writers.forEach(w -> w.thread.start());
        if (ready != null) {
            Files.writeString(ready, "ready\n");
        }
        for (Writer w : writers) {
            w.thread.join();
        }
        for (NbdClient c : clients) {
            closeQuietly(c);
        }
        long acked = 0, lost = 0;
        try (BufferedWriter out = Files.newBufferedWriter(trace, StandardCharsets.UTF_8)) {
            out.write("# round " + round + " bs " + bs + " connections " + connections + " depth " + depth + " offset " + first
                    + " size " + bytes + " export " + exportSize + " seed " + seed + "\n");
            for (Writer w : writers) {
                for (int k = 0; k < w.count; k++) {
                    int c = k >>> CHUNK_BITS, j = k & CHUNK_MASK;
                    long ack = w.ack[c][j];
                    int status = w.status[c][j];
                    if (status == 0) {
                        acked++;
                    } else {
                        lost++;
                    }
                    out.write(w.seqs[c][j] + " " + w.index + " " + w.offsets[c][j] + " " + bs + " " + w.issue[c][j] + " "
                            + (status == 0 ? ack : -1) + " " + status + "\n");
                }
            }
        }
        System.err.println("bench trace-load: round " + round + ": " + (acked + lost) + " writes sent, " + acked + " acknowledged, "
                + lost + " not; trace in " + trace);
        return 0;
    }

    private static void closeQuietly(NbdClient c) {
        try {
            c.close();
        } catch (RuntimeException e) {
            // the server is gone: that is how a round ends
        }
    }

    static final int CHUNK_BITS = 16, CHUNK = 1 << CHUNK_BITS, CHUNK_MASK = CHUNK - 1;
    static final int NOT_ANSWERED = Integer.MIN_VALUE;

    /** One connection: its thread sends, the client's reader thread records acknowledgements. */
    private final class Writer implements Completion, Runnable {
        final NbdClient client;
        final int index;
        final int bs;
        final long first;
        final BlockPermutation perm;
        final AtomicLong seq;
        final long epochBase;
        final long deadline;
        final ByteBuffer buf;
        final Thread thread;
        long[][] seqs = new long[0][], offsets = new long[0][], issue = new long[0][], ack = new long[0][];
        int[][] status = new int[0][];
        volatile int count;
        volatile boolean failed;

        Writer(NbdClient client, int index, int bs, long first, BlockPermutation perm, AtomicLong seq, long epochBase, long deadline) {
            this.client = client;
            this.index = index;
            this.bs = bs;
            this.first = first;
            this.perm = perm;
            this.seq = seq;
            this.epochBase = epochBase;
            this.deadline = deadline;
            this.buf = ByteBuffer.allocateDirect(bs).order(ByteOrder.LITTLE_ENDIAN);
            byte[] body = body(seed, round, index, bs);
            buf.put(body).flip();
            this.thread = new Thread(this, "trace-load-" + index);
        }

        @Override
        public void run() {
            int k = 0;
            try {
                for (long i = index; !failed && System.nanoTime() < deadline; i += connections) {
                    int c = k >>> CHUNK_BITS, j = k & CHUNK_MASK;
                    if (c == seqs.length) {
                        grow();
                    }
                    long off = first + perm.block(i) * bs;
                    long s = seq.getAndIncrement();
                    header(buf, round, index, s, off);
                    seqs[c][j] = s;
                    offsets[c][j] = off;
                    status[c][j] = NOT_ANSWERED;
                    issue[c][j] = epochBase + System.nanoTime();
                    count = ++k;
                    buf.rewind();
                    client.submitWrite(off, buf, false, k - 1, this);
                }
            } catch (IOException | RuntimeException e) {
                failed = true; // the connection broke while sending: that write is in the trace, not acknowledged
            }
        }

        private void grow() {
            int n = seqs.length + 1;
            seqs = java.util.Arrays.copyOf(seqs, n);
            offsets = java.util.Arrays.copyOf(offsets, n);
            issue = java.util.Arrays.copyOf(issue, n);
            ack = java.util.Arrays.copyOf(ack, n);
            status = java.util.Arrays.copyOf(status, n);
            seqs[n - 1] = new long[CHUNK];
            offsets[n - 1] = new long[CHUNK];
            issue[n - 1] = new long[CHUNK];
            ack[n - 1] = new long[CHUNK];
            status[n - 1] = new int[CHUNK];
        }

        @Override
        public void complete(int error, long tag) {
            long now = epochBase + System.nanoTime();
            int k = (int) tag;
            int c = k >>> CHUNK_BITS, j = k & CHUNK_MASK;
            ack[c][j] = now;
            status[c][j] = error;
            if (error == CONNECTION_FAILED) {
                failed = true;
            }
        }
    }

    /** The body of every block one connection writes in one round (its header overwrites the first bytes). */
    static byte[] body(long seed, int round, int conn, int bs) {
        byte[] b = new byte[bs];
        new SplittableRandom(seed * 7919 + round * 104_729L + conn).nextBytes(b);
        return b;
    }

    static void header(ByteBuffer buf, int round, int conn, long seq, long offset) {
        buf.putLong(0, MAGIC);
        buf.putInt(8, round);
        buf.putInt(12, conn);
        buf.putLong(16, seq);
        buf.putLong(24, offset);
    }
}

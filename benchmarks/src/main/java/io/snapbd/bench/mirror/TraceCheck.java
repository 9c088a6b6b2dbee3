package io.snapbd.bench.mirror;

import com.fasterxml.jackson.databind.ObjectMapper;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

import java.io.BufferedReader;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;

/**
 * {@code bench trace-check --image A --image B TRACE...}: after a crash and reconciliation, reads every block the
 * traces wrote from every image (a mirror's legs, read as files) and checks (1) the images hold the same bytes
 * there, and (2) where the last write to a block was acknowledged, the first image holds exactly that write
 * (header and body): no acknowledged write was lost. A block whose last write was not acknowledged may hold
 * anything, as after any crash, but the same on every image.
 */
@Command(name = "trace-check", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Checks images (mirror legs) against write traces of 'bench trace-load', given in round order:",
                "every traced block identical on all images, and the last write of a block, when acknowledged, present.",
                "Prints a JSON summary on stdout."},
        exitCodeListHeading = "%nExit codes:%n",
        exitCodeList = {"0:all blocks agree and no acknowledged write is missing", "1:a difference or a lost write", "2:bad arguments"})
public final class TraceCheck implements Callable<Integer> {

    @Option(names = "--image", required = true, paramLabel = "FILE", description = "an image holding the volume's blocks at offset 0 (repeat)")
    List<Path> images;

    @Parameters(paramLabel = "TRACE", arity = "1..*", description = "traces, oldest round first")
    List<Path> traces;

    /** The last write to one block. */
    private record Last(int round, int conn, long seq, int length, long seed, boolean acked) {
    }

    @Override
    public Integer call() throws Exception {
        Map<Long, Last> last = new HashMap<>();
        for (Path t : traces) {
            read(t, last);
        }
        List<FileChannel> ch = new ArrayList<>();
        try {
            for (Path p : images) {
                ch.add(FileChannel.open(p, StandardOpenOption.READ));
            }
            long differ = 0, lost = 0, ackedChecked = 0;
            List<String> examples = new ArrayList<>();
            Map<String, byte[]> bodies = new HashMap<>();
            long[] offsets = last.keySet().stream().mapToLong(Long::longValue).sorted().toArray();
            for (long off : offsets) {
                Last l = last.get(off);
                ByteBuffer a = ByteBuffer.allocate(l.length).order(ByteOrder.LITTLE_ENDIAN);
                readFully(ch.get(0), a, off);
                for (int i = 1; i < ch.size(); i++) {
                    ByteBuffer b = ByteBuffer.allocate(l.length);
                    readFully(ch.get(i), b, off);
                    if (!Arrays.equals(a.array(), b.array())) {
                        differ++;
                        if (examples.size() < 5) {
                            examples.add("offset " + off + ": " + images.get(0) + " and " + images.get(i) + " differ");
                        }
                    }
                }
                if (l.acked) {
                    ackedChecked++;
                    byte[] want = bodies.computeIfAbsent(l.round + "/" + l.conn + "/" + l.length,
                            k -> TraceLoad.body(l.seed, l.round, l.conn, l.length)).clone();
                    ByteBuffer w = ByteBuffer.wrap(want).order(ByteOrder.LITTLE_ENDIAN);
                    TraceLoad.header(w, l.round, l.conn, l.seq, off);
                    if (!Arrays.equals(want, a.array())) {
                        lost++;
                        if (examples.size() < 5) {
                            examples.add("offset " + off + ": acknowledged write round " + l.round + " seq " + l.seq
                                    + " missing in " + images.get(0) + " (it holds round " + a.getInt(8) + " seq " + a.getLong(16) + ")");
                        }
                    }
                }
            }
            Map<String, Object> doc = new LinkedHashMap<>();
            doc.put("blocksChecked", offsets.length);
            doc.put("acknowledgedChecked", ackedChecked);
            doc.put("blocksDiffering", differ);
            doc.put("acknowledgedLost", lost);
            doc.put("examples", examples);
            System.out.println(new ObjectMapper().writeValueAsString(doc));
            examples.forEach(e -> System.err.println("bench trace-check: " + e));
            return differ == 0 && lost == 0 ? 0 : 1;
        } finally {
            for (FileChannel c : ch) {
                c.close();
            }
        }
    }

    private static void read(Path trace, Map<Long, Last> last) throws IOException {
        int round = 0;
        long seed = 1;
        List<long[]> rows = new ArrayList<>();
        try (BufferedReader r = Files.newBufferedReader(trace, StandardCharsets.UTF_8)) {
            String line;
            while ((line = r.readLine()) != null) {
                if (line.startsWith("#")) {
                    String[] f = line.substring(1).trim().split(" ");
                    for (int i = 0; i + 1 < f.length; i += 2) {
                        if (f[i].equals("round")) {
                            round = Integer.parseInt(f[i + 1]);
                        } else if (f[i].equals("seed")) {
                            seed = Long.parseLong(f[i + 1]);
                        }
                    }
                    continue;
                }
                String[] f = line.split(" ");
                // seq conn offset length issue ack status
                rows.add(new long[]{Long.parseLong(f[0]), Long.parseLong(f[1]), Long.parseLong(f[2]), Long.parseLong(f[3]),
                        Long.parseLong(f[6])});
            }
        }
        rows.sort((x, y) -> Long.compare(x[0], y[0])); // issue order within the round
        for (long[] x : rows) {
            last.put(x[2], new Last(round, (int) x[1], x[0], (int) x[3], seed, x[4] == 0));
        }
    }

    private static void readFully(FileChannel ch, ByteBuffer b, long off) throws IOException {
        long pos = off;
        while (b.hasRemaining()) {
            int n = ch.read(b, pos);
            if (n < 0) {
                break; // past the end: the rest stays zero
            }
            pos += n;
        }
        b.flip();
        b.limit(b.capacity());
    }
}

// benchmarks/TableForce.java (issue 24): what a tag table ENTRY force costs as pwrite + fdatasync vs one O_DSYNC pwrite, on
// a pre-written table file, rounds alternating. Run: java benchmarks/TableForce.java DIR RECORDS-PER-ROUND ROUNDS [RECORDS-PER-COMMIT]
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.*;
import static java.nio.file.StandardOpenOption.*;

/** 64-byte record appends to a pre-written table file: pwrite + fdatasync vs one O_DSYNC pwrite; rounds alternate. */
public class TableForce {
    public static void main(String[] a) throws Exception {
        Path dir = Path.of(a[0]);
        int n = Integer.parseInt(a[1]);
        int rounds = Integer.parseInt(a[2]);
        int per = a.length > 3 ? Integer.parseInt(a[3]) : 1;     // records per commit (a group commit's batch)
        Path p1 = dir.resolve("t1.tags"), p2 = dir.resolve("t2.tags");
        for (Path p : new Path[]{p1, p2}) {
            try (FileChannel c = FileChannel.open(p, CREATE, WRITE, TRUNCATE_EXISTING)) {
                ByteBuffer z = ByteBuffer.allocate(1 << 20);
                for (int i = 0; i < 3; i++) { z.clear(); c.write(z, (long) i << 20); }
                c.force(true);
            }
        }
        ByteBuffer rec = ByteBuffer.allocateDirect(64 * per);
        long[][] lat = new long[2][n * rounds];
        int[] k = new int[2];
        try (FileChannel f = FileChannel.open(p1, WRITE); FileChannel d = FileChannel.open(p2, WRITE, DSYNC)) {
            long pos1 = 0, pos2 = 0;
            for (int r = 0; r < rounds; r++) {
                for (int m = 0; m < 2; m++) {
                    int mode = (r % 2 == 0) ? m : 1 - m;
                    for (int i = 0; i < n; i++) {
                        long t0 = System.nanoTime();
                        rec.clear();
                        if (mode == 0) { f.write(rec, pos1); f.force(false); pos1 = (pos1 + 64L * per) % (2 << 20); }
                        else { d.write(rec, pos2); pos2 = (pos2 + 64L * per) % (2 << 20); }
                        lat[mode][k[mode]++] = System.nanoTime() - t0;
                    }
                }
            }
        }
        String[] name = {"pwrite+fdatasync", "O_DSYNC pwrite"};
        for (int m = 0; m < 2; m++) {
            long[] l = java.util.Arrays.copyOf(lat[m], k[m]);
            java.util.Arrays.sort(l);
            long sum = 0; for (long x : l) sum += x;
            System.out.printf("%-17s records/commit %d: n %d, mean %.0f us, p50 %.0f us, p99 %.0f us%n", name[m], per, l.length,
                    sum / 1e3 / l.length, l[l.length / 2] / 1e3, l[(int) (l.length * 0.99)] / 1e3);
        }
    }
}

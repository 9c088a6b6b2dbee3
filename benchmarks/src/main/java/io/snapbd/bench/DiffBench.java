package io.snapbd.bench;

import io.snapbd.engine.BlockDevice;
import io.snapbd.engine.io.JavaFileSpace;
import io.snapbd.engine.snapshot.Differential;
import io.snapbd.engine.volume.Volume;
import picocli.CommandLine;

import java.lang.management.ManagementFactory;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Random;
import java.util.concurrent.Callable;

/**
 * Differential benchmark (issue 6): a sparse 64 GiB volume, 8 snapshots, 1% of the blocks changed between
 * the first and the last; times producing every extent of diff(s0, s7) and reports the heap the snapshot
 * maps occupy. Usage: DiffBench DIR [SIZE_GIB] [SNAPSHOTS] [PERCENT].
 */
public final class DiffBench {

    /** {@code bench diff DIR [SIZE_GIB] [SNAPSHOTS] [PERCENT]}. */
    @CommandLine.Command(name = "diff", mixinStandardHelpOptions = true,
            description = "Differential of a sparse volume with snapshots: time to produce all extents.")
    static final class Command implements Callable<Integer> {
        @CommandLine.Parameters(arity = "1..4", paramLabel = "DIR [SIZE_GIB [SNAPSHOTS [PERCENT]]]")
        String[] args;

        @Override
        public Integer call() throws Exception {
            main(args);
            return 0;
        }
    }

    public static void main(String[] args) throws Exception {
        Path dir = Path.of(args[0]);
        long gib = args.length > 1 ? Long.parseLong(args[1]) : 64;
        int snapshots = args.length > 2 ? Integer.parseInt(args[2]) : 8;
        double percent = args.length > 3 ? Double.parseDouble(args[3]) : 1.0;
        int bs = 4096;
        long size = gib << 30;
        long blocks = size / bs;
        long changes = (long) (blocks * percent / 100);
        Path vdir = dir.resolve("v");
        if (Files.exists(vdir)) {
            Volume.deleteFiles(vdir);
        }
        Volume.create(vdir, "v", size, bs, (changes + blocks / 100 + 1024) * bs, true, new JavaFileSpace());
        Volume v = Volume.open(vdir, new JavaFileSpace());
        Random rnd = new Random(7);
        ByteBuffer block = ByteBuffer.allocateDirect(bs);
        long t0 = System.nanoTime();
        try (BlockDevice.Session s = v.openSession()) {
            // 1% of the volume in use before the first snapshot, then the changes spread over the snapshots.
            for (long i = 0; i < blocks / 100; i++) {
                write(v, s, (rnd.nextLong() & Long.MAX_VALUE) % blocks * bs, block, rnd);
            }
            v.createSnapshot("s0");
            for (int k = 1; k < snapshots; k++) {
                for (long i = 0; i < changes / (snapshots - 1); i++) {
                    write(v, s, (rnd.nextLong() & Long.MAX_VALUE) % blocks * bs, block, rnd);
                }
                v.createSnapshot("s" + k);
            }
        }
        System.err.printf("setup: %.1f s (%d blocks changed over %d snapshots)%n", (System.nanoTime() - t0) / 1e9, changes, snapshots);
        long heapBefore = usedHeap();
        Differential d = v.snapshots().differential("s0", "s" + (snapshots - 1));
        long[] best = {Long.MAX_VALUE};
        long[] extents = new long[3];
        for (int run = 0; run < 7; run++) {
            long[] counts = new long[3];
            long start = System.nanoTime();
            d.scan(0, blocks, (first, count, state) -> {
                counts[state.ordinal()]++;
                return true;
            });
            best[0] = Math.min(best[0], System.nanoTime() - start);
            extents = counts;
        }
        long heapAfter = usedHeap();
        System.out.printf("volume %d GiB (%d blocks), %d snapshots, %.2f%% of blocks changed%n", gib, blocks, snapshots, percent);
        System.out.printf("diff(s0, s%d): %d changed extents, %d unused extents, %d unchanged runs%n", snapshots - 1,
                extents[Differential.State.CHANGED.ordinal()], extents[Differential.State.UNUSED.ordinal()],
                extents[Differential.State.UNCHANGED.ordinal()]);
        System.out.printf("time to produce all extents: %.1f ms (best of 7)%n", best[0] / 1e6);
        System.out.printf("heap in use with the volume and its snapshot maps loaded: %.1f MiB (scan itself: %+.1f MiB)%n",
                heapBefore / 1048576.0, (heapAfter - heapBefore) / 1048576.0);
        v.close();
        Volume.deleteFiles(vdir);
    }

    private static void write(Volume v, BlockDevice.Session s, long off, ByteBuffer block, Random rnd) throws Exception {
        block.clear();
        block.putLong(0, rnd.nextLong() | 1);
        v.write(s, off, block.capacity(), dst -> {
            block.clear().limit(dst.remaining());
            dst.put(block);
        }, false);
    }

    private static long usedHeap() {
        for (int i = 0; i < 3; i++) {
            System.gc();
        }
        return ManagementFactory.getMemoryMXBean().getHeapMemoryUsage().getUsed();
    }
}

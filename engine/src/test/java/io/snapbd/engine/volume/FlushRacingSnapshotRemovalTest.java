package io.snapbd.engine.volume;

import io.snapbd.engine.BlockDevice;
import io.snapbd.engine.TestVolumes;
import io.snapbd.engine.io.ByteSource;
import io.snapbd.engine.io.JavaFileSpace;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.concurrent.Callable;
import java.util.concurrent.CyclicBarrier;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;

/**
 * A FLUSH on one connection and the removal of a snapshot on another (a delete here; in the power-loss campaign a
 * full save volume ending the snapshot under a TRIM) both persist the snapshot's frozen meta pages. Run side by
 * side from copies of the same pending list, the second wrote a page the first had already committed and the
 * client got EIO ("snap-N.meta: page 0 is already present"; power-loss campaign seed 72, round 70). Each round here
 * freezes a production meta page on the tail and starts both at once; without the fix most rounds fail.
 */
class FlushRacingSnapshotRemovalTest {

    static final int BS = 4096;
    static final int BLOCKS = 64;
    static final int ROUNDS = 60;

    @TempDir
    Path dir;

    private static ByteSource filled(int n, int value) {
        return dst -> {
            for (int i = 0; i < n; i++) {
                dst.put((byte) value);
            }
        };
    }

    @Test
    void aFlushAndASnapshotRemovalPersistTheSameFrozenPagesOneAtATime() throws Exception {
        Volume.create(dir.resolve("v"), "v", (long) BLOCKS * BS, BS, (long) BLOCKS * 4 * BS, false, new JavaFileSpace());
        ExecutorService pool = Executors.newFixedThreadPool(2);
        try (Volume v = Volume.open(dir.resolve("v"), new JavaFileSpace());
             BlockDevice.Session s = v.openSession()) {
            v.createSnapshot("old");
            for (int round = 0; round < ROUNDS; round++) {
                v.createSnapshot("tail");
                // The first write to a block of a meta page the snapshots share: the tail keeps the page's old content
                // in its pending list until a persist writes it to snap-N.meta.
                v.write(s, (long) (round % BLOCKS) * BS, BS, filled(BS, round + 1), false);
                CyclicBarrier start = new CyclicBarrier(2);
                Callable<Void> flush = () -> {
                    start.await();
                    v.flush();
                    return null;
                };
                Callable<Void> delete = () -> {
                    start.await();
                    v.deleteSnapshot("tail");
                    return null;
                };
                Future<Void> f = pool.submit(flush);
                Future<Void> d = pool.submit(delete);
                f.get();        // an ExecutionException names the failed side and its cause
                d.get();
            }
        } finally {
            pool.shutdownNow();
        }
        try (Volume v = Volume.open(dir.resolve("v"), new JavaFileSpace());
             BlockDevice.Session s = v.openSession()) {
            BlockDevice old = v.snapshotView("old");
            try (BlockDevice.Session os = old.openSession()) {
                for (int b = 0; b < ROUNDS; b++) {
                    byte[] expected = new byte[BS];
                    Arrays.fill(expected, (byte) (b + 1));
                    assertArrayEquals(expected, TestVolumes.read(v, s, (long) b * BS, BS), "block " + b + " after a reopen");
                    assertArrayEquals(new byte[BS], TestVolumes.read(old, os, (long) b * BS, BS),
                            "block " + b + " in the older snapshot: zeros, as when it was taken");
                }
            }
        }
    }
}

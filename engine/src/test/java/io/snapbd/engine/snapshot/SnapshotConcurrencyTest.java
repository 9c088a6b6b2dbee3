package io.snapbd.engine.snapshot;

import io.snapbd.engine.BlockDevice;
import io.snapbd.engine.io.JavaFileSpace;
import io.snapbd.engine.volume.Volume;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicReference;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertNull;

/**
 * Rule 6: writers copying on write and snapshot readers run at the same time; a snapshot read never sees a
 * torn block and a snapshot never changes after creation, while snapshots are also created and deleted.
 */
class SnapshotConcurrencyTest {

    static final int BS = 4096;
    static final int BLOCKS = 256;

    @TempDir
    Path dir;

    /** Each writer owns every third block, so production blocks are never torn and neither may a snapshot's be. */
    @Test
    void snapshotsStayFrozenAndUntornUnderConcurrentWriters() throws Exception {
        run(BLOCKS, true, 6, 3);
    }

    /**
     * Writers race on a few shared blocks: the one that loses the race to claim a block's chunk must still wait
     * for the force that fills the chunk, or it changes production under a snapshot read of the pending block.
     * Concurrent writes of one block may tear it, so only "never changes" is checked, with many re-reads.
     */
    @Test
    void snapshotsStayFrozenWhenWritersRaceOnTheSameBlocks() throws Exception {
        run(16, false, 200, 5);
    }

    private void run(int hotBlocks, boolean partitioned, int rounds, int rereads) throws Exception {
        Path d = dir.resolve("v");
        Volume.create(d, "v", (long) BLOCKS * BS, BS, (long) BLOCKS * 12 * BS, false, new JavaFileSpace());
        Volume v = Volume.open(d, new JavaFileSpace());
        AtomicBoolean stop = new AtomicBoolean();
        AtomicReference<Throwable> failure = new AtomicReference<>();
        List<Thread> threads = new ArrayList<>();
        int writers = 3;
        for (int w = 0; w < writers; w++) {
            int seed = w;
            threads.add(new Thread(() -> {
                Random rnd = new Random(seed);
                byte[] block = new byte[BS];
                try (BlockDevice.Session s = v.openSession()) {
                    while (!stop.get()) {
                        Arrays.fill(block, (byte) (1 + rnd.nextInt(250)));   // a whole block of one value: torn = mixed
                        int b = partitioned ? rnd.nextInt(hotBlocks / writers) * writers + seed : rnd.nextInt(hotBlocks);
                        SnapshotModelTest.write(v, s, (long) b * BS, block);
                    }
                } catch (Throwable t) {
                    failure.compareAndSet(null, t);
                }
            }));
        }
        threads.forEach(Thread::start);
        try {
            for (int round = 0; round < rounds && failure.get() == null; round++) {
                String name = "s" + round;
                v.createSnapshot(name);
                byte[] first = SnapshotModelTest.read(v.snapshotView(name), 0, BLOCKS * BS);
                if (partitioned) {
                    for (int b = 0; b < BLOCKS; b++) {
                        byte x = first[b * BS];
                        for (int i = 1; i < BS; i++) {
                            if (first[b * BS + i] != x) {
                                throw new AssertionError("snapshot " + name + " block " + b + " is torn");
                            }
                        }
                    }
                }
                for (int again = 0; again < rereads; again++) {
                    assertArrayEquals(first, SnapshotModelTest.read(v.snapshotView(name), 0, BLOCKS * BS),
                            "snapshot " + name + " changed after creation");
                }
                if (round >= 2) {
                    v.deleteSnapshot("s" + (round - 2));     // head deletions while writers copy
                }
            }
        } finally {
            stop.set(true);     // also when a check fails: no writer outlives the test
            for (Thread t : threads) {
                t.join();
            }
        }
        assertNull(failure.get());
        v.close();
    }
}

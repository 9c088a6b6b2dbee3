package io.snapbd.engine.volume;

import io.snapbd.engine.BlockDevice;
import io.snapbd.engine.TestVolumes;
import io.snapbd.engine.io.FileSpace;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicReference;

import static io.snapbd.engine.TestVolumes.isZero;
import static io.snapbd.engine.TestVolumes.read;
import static io.snapbd.engine.TestVolumes.write;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Writers, a discarder and a flusher race on the same blocks (one session each, fixed iteration counts). Whatever
 * the interleaving, a block not in use must read as zeros, and blocks owned by one writer hold its last write.
 */
class VolumeConcurrencyTest {

    private static final int BS = 4096;
    private static final long SIZE = 6L << 20;          // 3 intent regions
    private static final int SHARED = 96;               // blocks 0..95 are fought over (crossing no region)
    private static final int WRITERS = 3;
    private static final int ITERATIONS = 1500;

    @TempDir
    Path tmp;

    @ParameterizedTest(name = "{0}")
    @ValueSource(strings = {"java", "fast"})
    void racingWritesTrimsAndFlushesKeepClearBitsOverZeros(String kind) throws Exception {
        FileSpace space = VolumeTest.space(kind);
        Path dir = tmp.resolve("c");
        Volume.create(dir, "c", SIZE, BS, 0, false, space);
        Volume v = Volume.open(dir, space);
        AtomicReference<Throwable> failure = new AtomicReference<>();
        CountDownLatch start = new CountDownLatch(1);
        List<Thread> threads = new ArrayList<>();
        // own blocks of writer t: 600 + 100 t .. 600 + 100 t + 99 (region 1, shared with the other writers' own blocks)
        byte[][][] lastOwn = new byte[WRITERS][100][];
        for (int t = 0; t < WRITERS; t++) {
            final int id = t;
            threads.add(new Thread(() -> {
                Random rnd = new Random(100 + id);
                try (BlockDevice.Session s = v.openSession()) {
                    start.await();
                    for (int i = 0; i < ITERATIONS; i++) {
                        long b = rnd.nextInt(SHARED);
                        int off = rnd.nextInt(BS);
                        int len = 1 + rnd.nextInt(2 * BS);
                        byte[] data = new byte[len];
                        Arrays.fill(data, (byte) (id + 1));
                        write(v, s, b * BS + off, data);
                        int own = rnd.nextInt(100);
                        byte[] ownData = TestVolumes.pattern(id * 1_000_000L + i, BS);
                        write(v, s, (600L + 100L * id + own) * BS, ownData);
                        lastOwn[id][own] = ownData;
                    }
                } catch (Throwable e) {
                    failure.compareAndSet(null, e);
                }
            }));
        }
        threads.add(new Thread(() -> {
            Random rnd = new Random(7);
            try (BlockDevice.Session s = v.openSession()) {
                start.await();
                for (int i = 0; i < ITERATIONS; i++) {
                    long off = rnd.nextInt(SHARED * BS);
                    long len = Math.min(SHARED * (long) BS - off, rnd.nextInt(8 * BS));
                    switch (rnd.nextInt(3)) {
                        case 0 -> v.trim(s, off, len, false);
                        case 1 -> v.writeZeroes(s, off, len, false, false, false);
                        default -> v.writeZeroes(s, off, len, true, false, false);
                    }
                }
            } catch (Throwable e) {
                failure.compareAndSet(null, e);
            }
        }));
        threads.add(new Thread(() -> {
            try {
                start.await();
                for (int i = 0; i < ITERATIONS / 10; i++) {
                    v.flush();
                }
            } catch (Throwable e) {
                failure.compareAndSet(null, e);
            }
        }));
        threads.forEach(Thread::start);
        start.countDown();
        for (Thread t : threads) {
            t.join();
        }
        if (failure.get() != null) {
            throw new AssertionError(failure.get());
        }
        try (BlockDevice.Session s = v.openSession()) {
            check(v, s, lastOwn);
        }
        // and after a crash, recovery keeps both properties
        v.abandon();
        Volume again = Volume.open(dir, space);
        try (BlockDevice.Session s = again.openSession()) {
            assertFalse(again.recovery().wasClean());
            check(again, s, lastOwn);
        } finally {
            again.close();
        }
    }

    private static void check(Volume v, BlockDevice.Session s, byte[][][] lastOwn) throws IOException {
        for (long b = 0; b < SIZE / BS; b++) {
            if (!v.inUse(b) && !isZero(read(v, s, b * BS, BS))) {
                throw new AssertionError("block " + b + " is not in use but holds data");
            }
        }
        for (int t = 0; t < WRITERS; t++) {
            for (int own = 0; own < 100; own++) {
                long b = 600L + 100L * t + own;
                if (lastOwn[t][own] != null) {
                    assertTrue(v.inUse(b), "own block " + b);
                    assertArrayEquals(lastOwn[t][own], read(v, s, b * BS, BS), "own block " + b);
                }
            }
        }
    }
}

package io.snapbd.engine.volume;

import io.snapbd.engine.BlockDevice;
import io.snapbd.engine.io.JavaFileSpace;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.util.Arrays;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;

/**
 * A rewrite of a block whose first write after a snapshot is still staged must not wait for the committer's
 * force (it would hold every request queued behind it on its connection for a whole force): a whole-block
 * rewrite replaces the staged copy; a partial one waits, so its uncovered bytes come from the staged data.
 */
class OverlayRewriteTest {

    static final int BS = 4096;
    static final int BLOCKS = 256;

    @TempDir
    Path dir;

    private static void write(Volume v, BlockDevice.Session s, long off, byte[] data) throws IOException {
        ByteBuffer src = ByteBuffer.wrap(data);
        v.write(s, off, data.length, dst -> {
            int n = dst.remaining();
            ByteBuffer part = src.slice().limit(n);
            dst.put(part);
            src.position(src.position() + n);
        }, false);
    }

    private static byte[] read(BlockDevice d, long off, int len) throws IOException {
        byte[] out = new byte[len];
        ByteBuffer dst = ByteBuffer.wrap(out);
        try (BlockDevice.Session s = d.openSession()) {
            d.read(s, off, len, dst::put);
        }
        return out;
    }

    private static byte[] filled(int n, int value) {
        byte[] b = new byte[n];
        Arrays.fill(b, (byte) value);
        return b;
    }

    /** A volume whose committer holds a batch an hour unless somebody waits (to observe staging). */
    private Volume create() throws IOException {
        Volume.create(dir.resolve("v"), "v", (long) BLOCKS * BS, BS, (long) BLOCKS * 2 * BS, false, new JavaFileSpace());
        return Volume.open(dir.resolve("v"), new JavaFileSpace(),
                VolumeTuning.system().withOverlayBatchNanos(3_600_000_000_000L));
    }

    @Test
    void wholeBlockRewritesOfAStagedBlockStayStagedAndKeepTheSnapshot() throws IOException {
        try (Volume v = create()) {
            try (BlockDevice.Session s = v.openSession()) {
                write(v, s, 0, filled(4 * BS, 'a'));
                // The committer holds the batch unless somebody waits (the batch time create() opened it with).
                v.createSnapshot("s");
                assertFalse(v.prepareWrite(s, BS, BS), "a first write after a snapshot is staged");
                v.abortPrepared(s);
                write(v, s, BS, filled(BS, 'b'));
                assertEquals(1, v.overlayStaged());
                for (int i = 0; i < 20; i++) {
                    assertFalse(v.prepareWrite(s, BS, BS), "a whole-block rewrite is staged, nobody waits");
                    v.abortPrepared(s);
                    write(v, s, BS, filled(BS, 'c' + i));
                    assertEquals(1, v.overlayStaged(), "the rewrite replaced the staged copy; nothing was applied");
                    assertArrayEquals(filled(BS, 'c' + i), read(v, BS, BS));
                }
                assertArrayEquals(filled(4 * BS, 'a'), read(v.snapshotView("s"), 0, 4 * BS));

                // A partial rewrite takes its uncovered bytes from the staged block: it waits for the apply.
                write(v, s, BS + 100, filled(10, 'z'));
                assertEquals(0, v.overlayStaged());
                byte[] want = filled(BS, 'c' + 19);
                Arrays.fill(want, 100, 110, (byte) 'z');
                assertArrayEquals(want, read(v, BS, BS));
                assertArrayEquals(filled(4 * BS, 'a'), read(v.snapshotView("s"), 0, 4 * BS));
            }
        }
        try (Volume v = Volume.open(dir.resolve("v"), new JavaFileSpace())) {
            byte[] want = filled(4 * BS, 'a');
            Arrays.fill(want, BS, 2 * BS, (byte) ('c' + 19));
            Arrays.fill(want, BS + 100, BS + 110, (byte) 'z');
            assertArrayEquals(want, read(v, 0, 4 * BS));
            assertArrayEquals(filled(4 * BS, 'a'), read(v.snapshotView("s"), 0, 4 * BS), "the before-image is on disk");
        }
    }
}

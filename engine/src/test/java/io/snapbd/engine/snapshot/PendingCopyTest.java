package io.snapbd.engine.snapshot;

import io.snapbd.engine.BlockDevice;
import io.snapbd.engine.io.JavaFileSpace;
import io.snapbd.engine.volume.Volume;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * A copy-on-write registers its copy and the force fills the chunk: between the two, a snapshot read must still
 * see the before-image (from production), the log must not name the chunk yet, and after the force and the
 * overwrite the snapshot reads the filled chunk. A write of more blocks than the overlay takes at once goes
 * through prepare / commit / finish, which opens that window deterministically.
 */
class PendingCopyTest {

    static final int BS = 4096;
    static final int BLOCKS = 1024;
    static final int WRITE_BLOCKS = 300;    // more than a session stages in the overlay

    @TempDir
    Path dir;

    @Test
    void snapshotReadsBeforeImageWhileItsCopyIsPending() throws Exception {
        Path d = dir.resolve("v");
        Volume.create(d, "v", (long) BLOCKS * BS, BS, (long) BLOCKS * 2 * BS, false, new JavaFileSpace());
        byte[] before = new byte[WRITE_BLOCKS * BS];
        for (int b = 0; b < WRITE_BLOCKS; b++) {
            Arrays.fill(before, b * BS, (b + 1) * BS, (byte) (b % 251 + 1));
        }
        byte[] after = new byte[WRITE_BLOCKS * BS];
        Arrays.fill(after, (byte) 0x7e);
        Path log = d.resolve("exceptions.log");
        try (Volume v = Volume.open(d, new JavaFileSpace())) {
            try (BlockDevice.Session s = v.openSession()) {
                SnapshotModelTest.write(v, s, 0, before);
                v.createSnapshot("s");
                long logBefore = Files.size(log);
                byte[] logBytes = Files.readAllBytes(log);

                assertTrue(v.prepareWrite(s, 0, after.length), "a write this large is not staged: the writer waits for the force");
                assertArrayEquals(before, SnapshotModelTest.read(v.snapshotView("s"), 0, before.length),
                        "pending copies: the snapshot reads production's before-image");
                assertEquals(logBefore, Files.size(log));
                assertArrayEquals(logBytes, Files.readAllBytes(log), "no record reaches the log before its chunk is filled");

                v.commitPrepared();
                assertArrayEquals(before, SnapshotModelTest.read(v.snapshotView("s"), 0, before.length),
                        "after the force the snapshot reads the filled chunks");
                ByteBuffer src = ByteBuffer.wrap(after);
                v.finishWrite(s, 0, after.length, dst -> {
                    ByteBuffer part = src.slice().limit(dst.remaining());
                    dst.put(part);
                    src.position(src.position() + part.limit());
                });
                assertArrayEquals(after, SnapshotModelTest.read(v, 0, after.length));
                assertArrayEquals(before, SnapshotModelTest.read(v.snapshotView("s"), 0, before.length));
            }
        }
        try (Volume v = Volume.open(d, new JavaFileSpace())) {
            assertArrayEquals(before, SnapshotModelTest.read(v.snapshotView("s"), 0, before.length),
                    "the chunks and their records are on disk");
            assertArrayEquals(after, SnapshotModelTest.read(v, 0, after.length));
        }
    }
}

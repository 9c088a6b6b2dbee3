package io.snapbd.engine.volume;

import io.snapbd.engine.BlockDevice;
import io.snapbd.engine.TestVolumes;
import io.snapbd.engine.io.JavaFileSpace;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * A write staged behind a copy-on-write force is answered before it reaches data.img. A {@code kill -9} of the
 * server then lost it, while a kernel device kept across the restart completed its next FLUSH on the new
 * connection: the file system above took the lost write as durable (KernelRestartIT's kill9-twice step saw fio's
 * verify read a block's old content). The overlay now lives in a RAM file that outlives the process, and the next
 * open writes the staged blocks again, through copy-on-write, before anything reads the volume.
 */
class StagedWritesSurviveKillTest {

    static final int BS = 4096;
    static final int BLOCKS = 256;

    @TempDir
    Path dir;

    private static void write(Volume v, BlockDevice.Session s, long off, byte[] data) throws IOException {
        TestVolumes.write(v, s, off, data);
    }

    private static byte[] read(BlockDevice d, long off, int len) throws IOException {
        try (BlockDevice.Session s = d.openSession()) {
            return TestVolumes.read(d, s, off, len);
        }
    }

    private static byte[] filled(int n, int value) {
        return TestVolumes.filled(n, value);
    }

    /** The committer holds a batch an hour unless somebody waits: writes after a snapshot stay staged. */
    private Volume open() throws IOException {
        return Volume.open(dir.resolve("v"), new JavaFileSpace(),
                VolumeTuning.system().withOverlayBatchNanos(3_600_000_000_000L));
    }

    private List<Path> overlayFiles(Volume v) throws IOException {
        String prefix = OverlayFile.prefix(dir.resolve("v"), v.header().uuid());
        try (Stream<Path> s = Files.list(OverlayFile.directory())) {
            return s.filter(p -> p.getFileName().toString().startsWith(prefix)).toList();
        }
    }

    /** Old content 'a' on 8 blocks, a snapshot, new content staged on 6 of them (2 rewritten twice). */
    private Volume stageAfterSnapshot() throws IOException {
        assertNotNull(OverlayFile.directory(), "/dev/shm is a tmpfs here: the overlay lives in a RAM file");
        Volume.create(dir.resolve("v"), "v", (long) BLOCKS * BS, BS, (long) BLOCKS * 2 * BS, false, new JavaFileSpace());
        Volume v = open();
        assertTrue(v.stagedWritesSurviveKill());
        try (BlockDevice.Session s = v.openSession()) {
            write(v, s, 0, filled(8 * BS, 'a'));
            v.createSnapshot("s");
            for (int b = 2; b < 8; b++) {
                write(v, s, (long) b * BS, filled(BS, 'b' + b));
            }
            write(v, s, 3L * BS, filled(BS, 'x'));      // replaces block 3's staged slot
            write(v, s, 5L * BS, filled(BS, 'y'));
        }
        assertEquals(6, v.overlayStaged(), "the writes after the snapshot are staged, none applied");
        assertEquals(1, overlayFiles(v).size());
        return v;
    }

    private static byte[] expectedAfterWrites() {
        byte[] want = filled(8 * BS, 'a');
        for (int b = 2; b < 8; b++) {
            Arrays.fill(want, b * BS, (b + 1) * BS, (byte) ('b' + b));
        }
        Arrays.fill(want, 3 * BS, 4 * BS, (byte) 'x');
        Arrays.fill(want, 5 * BS, 6 * BS, (byte) 'y');
        return want;
    }

    @Test
    void aKilledServersStagedWritesAreWrittenAgainAtTheNextOpen() throws IOException {
        Volume killed = stageAfterSnapshot();
        killed.abandonAsKilled();       // kill -9: the process's memory is gone, the RAM file is not
        List<String> fsck = Volume.overlayFileNotes(dir.resolve("v"), killed.header());
        assertEquals(1, fsck.size(), fsck.toString());
        assertTrue(fsck.get(0).contains(": 6 staged slot(s) of acknowledged writes; the next open writes them again"), fsck.toString());

        try (Volume v = open()) {
            assertEquals(6, v.stagedReplay().blocks(), "every staged block written again: " + v.stagedReplay());
            assertTrue(v.stagedReplay().notUsed().isEmpty(), v.stagedReplay().notUsed().toString());
            assertArrayEquals(expectedAfterWrites(), read(v, 0, 8 * BS), "the acknowledged writes are there");
            assertArrayEquals(filled(8 * BS, 'a'), read(v.snapshotView("s"), 0, 8 * BS), "the snapshot kept its content");
            assertEquals(List.of(OverlayFile.path(OverlayFile.directory(), dir.resolve("v"), v.header().uuid(),
                    v.header().openCount())), overlayFiles(v), "the earlier run's file is gone once replayed");
        }
        try (Volume v = open()) {
            assertEquals(0, v.stagedReplay().blocks(), "a clean close leaves nothing to replay");
            assertArrayEquals(expectedAfterWrites(), read(v, 0, 8 * BS));
            assertArrayEquals(filled(8 * BS, 'a'), read(v.snapshotView("s"), 0, 8 * BS));
        }
    }

    @Test
    void aPowerCutLosesThemAsItLosesAnyUnflushedWrite() throws IOException {
        Volume cut = stageAfterSnapshot();
        cut.abandon();      // the RAM file goes with the machine
        try (Volume v = open()) {
            assertEquals(0, v.stagedReplay().blocks());
            assertArrayEquals(filled(8 * BS, 'a'), read(v, 0, 8 * BS), "never applied, never flushed: old content");
            assertArrayEquals(filled(8 * BS, 'a'), read(v.snapshotView("s"), 0, 8 * BS));
        }
    }

    @Test
    void aFileOfAnotherBootIsNotReplayed() throws IOException {
        Volume killed = stageAfterSnapshot();
        Path f = overlayFiles(killed).get(0);
        killed.abandonAsKilled();
        // The same file as an earlier boot would have left it (a directory that is not wiped at boot).
        ByteBuffer h = ByteBuffer.allocate(OverlayFile.HEADER_BYTES).order(java.nio.ByteOrder.LITTLE_ENDIAN);
        try (var ch = java.nio.channels.FileChannel.open(f, java.nio.file.StandardOpenOption.READ,
                java.nio.file.StandardOpenOption.WRITE)) {
            ch.read(h, 0);
            ByteBuffer other = OverlayFile.header(killed.header().uuid(), new java.util.UUID(1, 2), h.getLong(56),
                    h.getInt(12), h.getInt(16), Path.of("/nonexistent-dir-kept-out-of-the-sweep"));
            ch.write(other, 0);
        }
        try (Volume v = open()) {
            assertEquals(0, v.stagedReplay().blocks());
            assertEquals(1, v.stagedReplay().notUsed().size(), v.stagedReplay().toString());
            assertTrue(v.stagedReplay().notUsed().get(0).contains("before the last boot"), v.stagedReplay().toString());
            assertArrayEquals(filled(8 * BS, 'a'), read(v, 0, 8 * BS));
            assertEquals(1, overlayFiles(v).size(), "the stale file was deleted");
        }
    }

    @Test
    void theFilesOfAVolumeDeletedByHandAreSweptAtTheNextOpenOfAnyVolume() throws IOException {
        Volume killed = stageAfterSnapshot();
        Path f = overlayFiles(killed).get(0);
        killed.abandonAsKilled();
        try (Stream<Path> walk = Files.walk(dir.resolve("v"))) {
            for (Path p : walk.sorted(java.util.Comparator.reverseOrder()).toList()) {
                Files.delete(p);        // rm -r of the data directory, the server down
            }
        }
        assertTrue(Files.exists(f));
        Volume.create(dir.resolve("w"), "w", (long) BLOCKS * BS, BS, (long) BLOCKS * 2 * BS, false, new JavaFileSpace());
        try (Volume w = Volume.open(dir.resolve("w"), new JavaFileSpace())) {
            assertTrue(Files.notExists(f), "the orphan " + f + " was swept");
        }
    }

    @Test
    void deletingTheVolumeDeletesItsOverlayFiles() throws IOException {
        Volume killed = stageAfterSnapshot();
        Path f = overlayFiles(killed).get(0);
        killed.abandonAsKilled();
        Volume.deleteFiles(dir.resolve("v"));
        assertTrue(Files.notExists(f), f + " went with the volume");
    }
}

package io.snapbd.engine.lun;

import io.snapbd.engine.BlockDevice;
import io.snapbd.engine.TestVolumes;
import io.snapbd.engine.snapshot.CloneCopier;
import io.snapbd.engine.volume.Volume;
import io.snapbd.engine.volume.VolumeHeader;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Comparator;
import java.util.stream.Stream;

import static io.snapbd.engine.TestVolumes.pattern;
import static io.snapbd.engine.TestVolumes.write;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * What a saved LUN state value identifies: the life of the volume (its UUID) and the counter, never a counter
 * alone; a new volume's timestamp is its creation time; a clone's own writes are counted.
 */
class LunStateTokenTest {

    private static final int BS = 4096;
    private static final long SIZE = 16L << 20;

    @TempDir
    Path tmp;

    private Volume create(String name) throws IOException {
        Volume.create(tmp.resolve(name), name, SIZE, BS, SIZE, false, TestVolumes.java());
        return Volume.open(tmp.resolve(name), TestVolumes.java());
    }

    private void delete(String name) throws IOException {
        try (Stream<Path> s = Files.walk(tmp.resolve(name))) {
            for (Path p : (Iterable<Path>) s.sorted(Comparator.reverseOrder())::iterator) {
                Files.delete(p);
            }
        }
    }

    @Test
    void aNewVolumesTimestampIsItsCreationTime() throws IOException {
        long before = System.currentTimeMillis() * 1_000_000L;
        try (Volume v = create("fresh")) {
            LunState.Value val = v.lunState().get();
            VolumeHeader h = VolumeHeader.read(tmp.resolve("fresh").resolve(Volume.HEADER_FILE));
            assertEquals(0, val.counter());
            assertEquals(h.createdNanos(), val.timestamp(), "the timestamp of a never-written volume is its creation time, not 0");
            assertTrue(val.timestamp() >= before - 1_000_000L, "creation time is now: " + val.timestamp() + " vs " + before);
        }
    }

    @Test
    void deleteAndCreateUnderTheSameNameNeverRepeatsAToken() throws IOException {
        String saved;
        try (Volume v = create("backup")) {
            v.lunState().enable();
            try (BlockDevice.Session s = v.openSession()) {
                v.lunState().onAlteringRequest();
                write(v, s, 0, pattern(1, BS));
            }
            LunState.Value val = v.lunState().get();
            saved = v.lunState().token(val);
            assertEquals(v.header().uuid() + ":1", saved);
        }
        delete("backup");
        try (Volume again = create("backup")) {
            again.lunState().enable();
            try (BlockDevice.Session s = again.openSession()) {
                again.lunState().onAlteringRequest();
                write(again, s, 0, pattern(2, BS));
            }
            LunState.Value val = again.lunState().get();
            assertEquals(1, val.counter(), "the same counter as the saved life: a bare counter would match");
            assertNotEquals(saved, again.lunState().token(val), "a new life of the name has a new token");
        }
    }

    @Test
    void noTokenWhileTrackingIsDisabled() throws IOException {
        try (Volume v = create("off")) {
            assertNull(v.lunState().token(v.lunState().get()), "writes are not counted: nothing to save");
            v.lunState().enable();
            v.lunState().disable();
            assertNull(v.lunState().token(v.lunState().get()));
        }
    }

    @Test
    void theClonesOwnWritesAreCounted() throws IOException {
        try (Volume src = create("src"); Volume dst = create("dst")) {
            try (BlockDevice.Session s = src.openSession()) {
                write(src, s, 0, pattern(3, BS));                           // extent 1: one block
                write(src, s, 1L << 20, pattern(4, 5 << 20));                // extent 2: 5 MiB, two 4 MiB chunks
                write(src, s, 12L << 20, pattern(5, 2 * BS));               // extent 3
            }
            src.createSnapshot("s");
            LunState.Value enabled = dst.lunState().enable();
            String before = dst.lunState().token(enabled);
            assertTrue(new CloneCopier(src.snapshotView("s"), dst).run(() -> false));
            LunState.Value after = dst.lunState().get();
            assertEquals(enabled.counter() + 4, after.counter(), "one count per write of the copy: 1 + 2 + 1 chunks");
            assertTrue(after.timestamp() > enabled.timestamp());
            assertNotEquals(before, dst.lunState().token(after), "a value taken before the copy no longer matches");
        }
    }
}

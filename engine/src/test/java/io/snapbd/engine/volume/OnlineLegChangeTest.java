package io.snapbd.engine.volume;

import io.snapbd.engine.BlockDevice;
import io.snapbd.engine.TestVolumes;
import io.snapbd.engine.io.FileSpace;
import io.snapbd.engine.mirror.FileLegOpener;
import io.snapbd.engine.mirror.ForwardingLegIo;
import io.snapbd.engine.mirror.LegIo;
import io.snapbd.engine.mirror.MirrorLeg;
import io.snapbd.engine.mirror.LegOpener;
import io.snapbd.engine.mirror.MirrorConfig;
import io.snapbd.engine.mirror.MirrorSet;
import io.snapbd.engine.mirror.TagTable;
import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;

import static io.snapbd.engine.volume.MirroredVolumeTest.sha;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * {@code mirror add} and {@code mirror remove} on an open volume while a writer changes it (docs/mirrors.md,
 * "Adding and removing legs"): the new leg takes every change from the moment it joins and the copier fills in the
 * rest under the range locks, so afterwards it is byte-identical to data.img; it is {@code resyncing} and unlisted
 * until the copy is forced; a removal takes the leg out of the list and the write path at once; bad arguments fail
 * naming the leg.
 */
class OnlineLegChangeTest extends LegTestSupport {

    static final long SIZE = 16L << 20;

    /** Writes random 4–64 KiB pieces on its own session until stopped; counts them; keeps the first error. */
    private static final class Writer implements AutoCloseable {
        final AtomicBoolean stop = new AtomicBoolean();
        final AtomicLong writes = new AtomicLong();
        final AtomicReference<Throwable> error = new AtomicReference<>();
        final Thread thread;

        Writer(Volume v) {
            thread = new Thread(() -> {
                Random r = new Random(24);
                try (BlockDevice.Session s = v.openSession()) {
                    while (!stop.get()) {
                        int n = (1 + r.nextInt(16)) * BS;
                        long off = (long) r.nextInt((int) ((SIZE - n) / BS)) * BS;
                        TestVolumes.write(v, s, off, TestVolumes.pattern(r.nextLong(), n));
                        writes.incrementAndGet();
                    }
                } catch (Throwable t) {
                    error.set(t);
                }
            }, "writer");
            thread.start();
        }

        void awaitWrites(long n) throws InterruptedException {
            long until = writes.get() + n;
            while (writes.get() < until && error.get() == null) {
                Thread.sleep(5);
            }
        }

        @Override
        public void close() throws InterruptedException {
            stop.set(true);
            thread.join();
            assertNull(error.get(), () -> "the writer failed: " + error.get());
        }
    }

    @Test
    void onlineAddCopiesUnderLoadThenListsTheLegAndOnlineRemoveTakesOneOut() throws Exception {
        Volume.create(dir(), "v", SIZE, BS, 4L << 20, false, space, List.of(leg(1).toString()));
        Volume v = Volume.open(dir(), space);
        MirrorSet m = v.mirror();
        List<String> states = new ArrayList<>();
        List<Boolean> listed = new ArrayList<>();
        int place;
        try (Writer w = new Writer(v)) {
            w.awaitWrites(20);
            long before = w.writes.get();
            place = m.addLeg(leg(2).toString(), false, false, space, v, (done, total) -> {
                if (done == total / 2) {
                    states.add(m.status().get(2).state());
                    try {
                        listed.add(MirrorConfig.read(dir(), null).extraLegs().contains(leg(2).toString()));
                        w.awaitWrites(10);        // changes go on while the copy runs
                    } catch (Exception e) {
                        throw new RuntimeException(e);
                    }
                }
            });
            assertTrue(w.writes.get() > before + 10, "writes went on during the add");
            w.awaitWrites(20);
        }
        assertEquals(2, place);
        assertEquals(List.of("resyncing"), states, "the new leg is resyncing during the copy");
        assertEquals(List.of(false), listed, "and not listed before the copy is forced");
        assertEquals(List.of(leg(1).toString(), leg(2).toString()), MirrorConfig.read(dir(), null).extraLegs());
        assertEquals("in-sync", m.status().get(2).state());
        String h = sha(dir().resolve(Volume.DATA_FILE), SIZE);
        assertEquals(h, sha(leg(2), SIZE), "the added leg is identical to data.img after writes during the add");
        assertEquals(h, sha(leg(1), SIZE));

        try (Writer w = new Writer(v)) {
            w.awaitWrites(20);
            m.removeLeg(leg(1).toString());
            w.awaitWrites(20);
        }
        assertEquals(List.of(leg(2).toString()), MirrorConfig.read(dir(), null).extraLegs());
        assertEquals(2, MirrorConfig.read(dir(), null).id(1), "leg 2 keeps its id in place 1");
        assertEquals(2, m.legCount());
        assertEquals(leg(2).toString(), m.status().get(1).uri());
        String removed = sha(leg(1), SIZE);

        IllegalArgumentException unknown = assertThrows(IllegalArgumentException.class, () -> m.removeLeg("/no/such.leg"));
        assertTrue(unknown.getMessage().contains("/no/such.leg") && unknown.getMessage().contains("not a leg"), unknown.getMessage());
        IllegalArgumentException last = assertThrows(IllegalArgumentException.class, () -> m.removeLeg(leg(2).toString()));
        assertTrue(last.getMessage().contains("last extra leg"), last.getMessage());
        IllegalArgumentException twice = assertThrows(IllegalArgumentException.class,
                () -> m.addLeg(leg(2).toString(), false, false, space, v, (d, t) -> { }));
        assertTrue(twice.getMessage().contains("already"), twice.getMessage());
        v.close();

        h = sha(dir().resolve(Volume.DATA_FILE), SIZE);
        assertEquals(h, sha(leg(2), SIZE));
        assertEquals(removed, sha(leg(1), SIZE), "the removed leg took no change after its removal");
        try (Volume again = Volume.open(dir(), space)) {
            assertEquals(2, again.mirror().legCount());
            assertNull(again.mirror().lastReconciliation(), "a clean stop: nothing to reconcile");
        }
    }

    /** A leg that fails during the add is dropped: the add fails naming it, nothing is listed, the volume goes on. */
    @Test
    void aLegFailingDuringTheAddIsDroppedAndNotListed() throws Exception {
        Volume.create(dir(), "v", SIZE, BS, 4L << 20, false, space, List.of(leg(1).toString()));
        AtomicBoolean broken = new AtomicBoolean();
        LegOpener.install(new LegOpener() {
            @Override
            public MirrorLeg create(String uri, long size, long tableBytes, boolean sparse, FileSpace sp) throws IOException {
                MirrorLeg l = FILES.create(uri, size, tableBytes, sparse, sp);
                LegIo d = l.data();
                return MirrorLeg.of(uri, new ForwardingLegIo(d) {
                    @Override
                    public void write(ByteBuffer src, long pos) throws IOException {
                        if (broken.get() && pos >= SIZE / 2) {
                            throw new IOException("injected I/O error");
                        }
                        d.write(src, pos);
                    }
                }, l.table());
            }

            @Override
            public MirrorLeg open(String uri) throws IOException {
                return FILES.open(uri);
            }

            @Override
            public void delete(String uri) throws IOException {
                FILES.delete(uri);
            }
        });
        try (Volume v = Volume.open(dir(), space); Writer w = new Writer(v)) {
            broken.set(true);
            IOException e = assertThrows(IOException.class, () ->
                    v.mirror().addLeg(leg(2).toString(), false, false, space, v, (d, t) -> { }));
            assertTrue(e.getMessage().contains(leg(2).toString()) && e.getMessage().contains("dropped"), e.getMessage());
            assertEquals(2, v.mirror().legCount());
            assertEquals(List.of(leg(1).toString()), MirrorConfig.read(dir(), null).extraLegs());
            assertFalse(Files.exists(leg(2)) || Files.exists(FileLegOpener.tableFile(leg(2))), "the leg's files are gone");
            w.awaitWrites(10);
            for (MirrorSet.LegStatus l : v.mirror().status()) {
                assertEquals("in-sync", l.state(), l.toString());
            }
        }
        assertEquals(sha(dir().resolve(Volume.DATA_FILE), SIZE), sha(leg(1), SIZE));
        assertEquals(new TagTable.Identity(MirrorConfig.read(dir(), null).owner(), 1),
                LegOpener.FILES.identify(leg(1).toString(), SIZE));
    }

    @Test
    void anUnmirroredVolumeHasNoOnlineChanges() throws Exception {
        Volume.create(dir(), "v", SIZE, BS, 4L << 20, false, space);
        try (Volume v = Volume.open(dir(), space)) {
            assertNull(v.mirror(), "unmirrored: the admin socket says so (MirrorHandler)");
        }
    }
}

package io.snapbd.engine.volume;

import io.snapbd.engine.BlockDevice;
import io.snapbd.engine.TestVolumes;
import io.snapbd.engine.io.FileSpace;
import io.snapbd.engine.mirror.FileLegOpener;
import io.snapbd.engine.mirror.ForwardingLegIo;
import io.snapbd.engine.mirror.ForwardingTagStore;
import io.snapbd.engine.mirror.LegIo;
import io.snapbd.engine.mirror.LegOpener;
import io.snapbd.engine.mirror.MirrorConfig;
import io.snapbd.engine.mirror.MirrorLeg;
import io.snapbd.engine.mirror.MirrorSet;
import io.snapbd.engine.mirror.Reconciler;
import io.snapbd.engine.mirror.FileTagStore;
import io.snapbd.engine.mirror.TagTable;
import io.snapbd.engine.mirror.TagTableChecker;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.util.HexFormat;
import java.util.List;
import java.util.UUID;
import java.util.concurrent.atomic.AtomicBoolean;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertDoesNotThrow;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * A mirrored volume with two file legs (docs/mirrors.md; Symantec behaviours cited per test): every change
 * reaches every leg before it is answered, a clean stop needs no reconciliation, an unclean one is reconciled at
 * open copying only the ranges in flight.
 */
class MirroredVolumeTest extends LegTestSupport {

    static final long SIZE = 8L << 20;

    @AfterEach
    void answerWhenForced() {
        MirrorSet.answerWhenWritten(true);      // the default: answered once written to every leg, forced behind
        MirrorSet.forcedEntries(false);         // the default: hot regions
        MirrorSet.skipRegionEntriesForTest(false);
    }

    private UUID volumeOwner() throws IOException {
        return MirrorConfig.read(dir(), null).owner();
    }

    private Volume create() throws IOException {
        Volume.create(dir(), "v", SIZE, BS, 4L << 20, false, space, List.of(leg(1).toString(), leg(2).toString()));
        return Volume.open(dir(), space);
    }

    static String sha(Path f, long size) throws Exception {
        MessageDigest md = MessageDigest.getInstance("SHA-256");
        byte[] b = Files.readAllBytes(f);
        md.update(b, 0, (int) Math.min(size, b.length));
        return HexFormat.of().formatHex(md.digest());
    }

    private void assertLegsIdentical() throws Exception {
        String local = sha(dir().resolve(Volume.DATA_FILE), SIZE);
        assertEquals(local, sha(leg(1), SIZE), "leg 1 differs from leg 0");
        assertEquals(local, sha(leg(2), SIZE), "leg 2 differs from leg 0");
    }

    /** Behaviours 1, 8: writes, TRIM, WRITE_ZEROES and restore are on every leg when they return; clean stop leaves empty tables. */
    @Test
    void symantec1_8_everyChangeIsOnEveryLegWhenAnswered() throws Exception {
        Volume v = create();
        assertNotNull(v.mirror());
        assertEquals(3, v.mirror().legCount());
        assertTrue(Files.isRegularFile(FileLegOpener.tableFile(leg(1))));
        assertTrue(Files.isRegularFile(dir().resolve(MirrorConfig.LOCAL_TABLE)));
        BlockDevice.Session s = v.openSession();
        TestVolumes.write(v, s, 0, TestVolumes.pattern(1, 3 * BS));
        TestVolumes.write(v, s, 5 * BS + 100, TestVolumes.pattern(2, 1000));
        TestVolumes.write(v, s, (1 << 20) - BS, TestVolumes.pattern(3, (2 << 20) + 2 * BS));  // crosses range-lock stripes
        assertLegsIdentical();
        v.trim(s, BS, 2 * BS, false);
        v.writeZeroes(s, (1 << 20) + 10, 5000, false, false, false);
        v.writeZeroes(s, (2 << 20), 3 * BS, true, false, false);
        assertLegsIdentical();
        v.createSnapshot("s1");
        TestVolumes.write(v, s, 0, TestVolumes.pattern(4, 4 * BS));
        v.trim(s, 1 << 20, 1 << 20, false);
        v.restore("s1");
        assertLegsIdentical();
        assertArrayEquals(TestVolumes.pattern(2, 1000), TestVolumes.read(v, s, 5 * BS + 100, 1000));
        for (MirrorSet.LegStatus l : v.mirror().status()) {
            assertEquals("in-sync", l.state(), l.toString());
            assertTrue(l.writes() > 0);
        }
        s.close();
        v.close();
        for (Path t : List.of(dir().resolve(MirrorConfig.LOCAL_TABLE), FileLegOpener.tableFile(leg(1)), FileLegOpener.tableFile(leg(2)))) {
            TagTableChecker.Report r = TagTableChecker.check(t);
            assertTrue(r.ok(), r.problems().toString());
            assertEquals(0, r.liveEntries(), t + " has live entries after a clean stop");
        }
        Volume again = Volume.open(dir(), space);
        assertNull(again.mirror().lastReconciliation(), "a clean stop needs no reconciliation");
        again.close();
    }

    /**
     * Behaviours 16, 23, 26: a crash after the client's FLUSH of answered writes (their data forced on every leg in a
     * batch, DONE, retired): reconciliation at open finds nothing unmatched and copies nothing.
     */
    @Test
    void symantec16_23_26_crashAfterAnsweredWritesCopiesNothing() throws Exception {
        Volume v = create();
        BlockDevice.Session s = v.openSession();
        for (int i = 0; i < 5; i++) {
            TestVolumes.write(v, s, i * 3L * BS, TestVolumes.pattern(10 + i, BS));
        }
        v.flush();          // the client's FLUSH: every leg's data forced, DONE, the batch retired
        int hot = v.mirror().hotRegions();
        assertEquals(1, hot, "the writes' region is hot");
        v.abandon();        // kill -9 after the FLUSH answered
        Volume r = Volume.open(dir(), space);
        MirrorSet.Reconciliation rec = r.mirror().lastReconciliation();
        assertNotNull(rec, "an unclean stop is reconciled at open");
        assertTrue(rec.atOpen());
        // every answered, flushed write is complete on every leg (matched); only the hot region's entry is unmatched
        assertEquals(hot, rec.report().entriesUnmatched(), rec.report().toString());
        assertEquals(1 << 20, rec.report().bytesCompared(), "the hot region is compared");
        assertEquals(0, rec.report().bytesCopied());
        r.close();
        assertLegsIdentical();
    }

    /**
     * Issue 24: a region stays hot across a short idle gap (a client between bursts), so the next change in it makes
     * no new region entry (a forced record on every leg before its data); and changes in hot regions alone start no
     * data-force batch within seconds (their region entries cover them; a FLUSH still forces them). Until then the
     * forcer forced them 1 s after the oldest one and an idle mirror cooled every hot region after 1 s without a
     * change, so every burst paid a forced region entry per region again.
     */
    @Test
    void issue24_aShortIdleGapKeepsTheRegionHotAndForcesNothing() throws Exception {
        Volume v = create();
        BlockDevice.Session s = v.openSession();
        TestVolumes.write(v, s, 0, TestVolumes.pattern(1, BS));
        v.flush();          // its data forced on every leg
        assertEquals(1, v.mirror().regionEntries());
        long batches = v.mirror().dataForceBatches();
        TestVolumes.write(v, s, BS, TestVolumes.pattern(2, BS));       // in the hot region: no force
        Thread.sleep(3_000);        // three of the old periods (1 s); far below the new ones (30 s, 60 s)
        TestVolumes.write(v, s, 2 * BS, TestVolumes.pattern(3, BS));
        assertEquals(batches, v.mirror().dataForceBatches(), "no data-force batch for hot-path changes alone");
        assertEquals(0, v.mirror().regionsCooled(), "the region did not cool in a 3 s gap");
        assertEquals(1, v.mirror().regionEntries(), "the third write found its region hot: no new region entry");
        assertEquals(1, v.mirror().hotRegions());
        v.flush();          // a FLUSH still forces them
        assertEquals(batches + 1, v.mirror().dataForceBatches());
        s.close();
        v.close();
        assertLegsIdentical();
    }

    /**
     * Issue 24: a WRITE whose regions are all hot, on file legs only, waits for nothing slow
     * ({@link Volume#slowChange} false), so the protocol runs it on the connection's reader instead of handing it to a
     * task; a cold region, {@code entries=forced} or a leg whose writes are not known quick (an NBD leg; here a
     * wrapped file) keep it slow.
     */
    @Test
    void issue24_aChangeInHotRegionsOnFileLegsIsNotSlow() throws Exception {
        Volume v = create();
        BlockDevice.Session s = v.openSession();
        assertTrue(v.slowChange(0, BS), "a cold region: its first change forces a region entry");
        TestVolumes.write(v, s, 0, TestVolumes.pattern(1, BS));
        assertFalse(v.slowChange(BS, BS), "its region is hot and both legs are files");
        assertTrue(v.slowChange((1 << 20) - BS, 2 * BS), "the next region is cold");
        MirrorSet.forcedEntries(true);
        assertTrue(v.slowChange(BS, BS), "entries=forced: every change forces its own ENTRY");
        MirrorSet.forcedEntries(false);
        s.close();
        v.close();
        LegOpener.install(hooked(leg(2).toString(), pos -> { }));
        try {
            Volume w = Volume.open(dir(), space);
            BlockDevice.Session s2 = w.openSession();
            TestVolumes.write(w, s2, 0, TestVolumes.pattern(2, BS));
            assertFalse(w.mirror().hotRegions() == 0, "the region is hot");
            assertTrue(w.slowChange(BS, BS), "leg 2's writes are not known quick");
            s2.close();
            w.close();
        } finally {
            LegOpener.install(LegOpener.FILES);
        }
        assertLegsIdentical();
    }

    /**
     * Issue 24, NBD legs' asynchronous writes (docs/mirrors.md, "NBD legs"): leg 2 stands for an NBD leg, its writes
     * sent without waiting ({@link LegIo#submitWrite}: the data taken at once) and completed when the test says. A
     * WRITE in a hot region ({@link Volume#asyncChange}) is started by {@link Volume#writeThen} and answered only once
     * leg 2 completed it (behaviour 8); an overlapping change waits for it (the range lock stays held until then);
     * a completion with an error degrades leg 2 and the change is answered as the synchronous path answers it (the
     * other legs have it); later changes then take the strict path (no asynchronous change while a leg is degraded).
     */
    @Test
    void issue24_anAsynchronousLegsWriteIsAnsweredFromItsCompletionAndAFailedOneDegradesTheLeg() throws Exception {
        create().close();
        java.util.concurrent.BlockingQueue<Object[]> held = new java.util.concurrent.LinkedBlockingQueue<>();
        String slow = leg(2).toString();
        LegOpener.install(new LegOpener() {
            @Override
            public MirrorLeg create(String uri, long size, long tableBytes, boolean sparse, FileSpace sp) throws IOException {
                return FILES.create(uri, size, tableBytes, sparse, sp);
            }

            @Override
            public MirrorLeg open(String uri) throws IOException {
                MirrorLeg l = FILES.open(uri);
                if (!uri.equals(slow)) {
                    return l;
                }
                return MirrorLeg.of(uri, new ForwardingLegIo(l.data()) {
                    @Override
                    public boolean asyncWrites() {
                        return true;
                    }

                    @Override
                    public WriteSlot writeSlot(WriteDone done, int leg) {
                        return new Slot(done, leg);
                    }

                    @Override
                    public void submitWrite(WriteSlot slot, ByteBuffer src, long pos) throws IOException {
                        in.write(src, pos);         // taken before returning, completed later
                        held.add(new Object[] {slot});
                    }
                }, l.table());
            }

            @Override
            public void delete(String uri) throws IOException {
                FILES.delete(uri);
            }
        });
        try {
            Volume v = Volume.open(dir(), space);
            BlockDevice.Session s = v.openSession();
            assertFalse(v.asyncChange(0, BS), "a cold region: its first change forces a region entry");
            TestVolumes.write(v, s, 0, TestVolumes.pattern(1, BS));
            assertTrue(held.isEmpty(), "the strict path writes leg 2 synchronously");
            assertTrue(v.asyncChange(BS, BS), "a hot region, leg 2 asynchronous");
            java.util.concurrent.atomic.AtomicInteger answers = new java.util.concurrent.atomic.AtomicInteger();
            java.util.concurrent.atomic.AtomicReference<IOException> failure = new java.util.concurrent.atomic.AtomicReference<>();
            BlockDevice.ChangeDone done = e -> {
                failure.set(e);
                answers.incrementAndGet();
            };
            byte[] a = TestVolumes.pattern(2, BS);
            v.writeThen(s, BS, BS, source(a), done);
            assertEquals(0, answers.get(), "answered before leg 2 completed the write");
            Object[] first = held.take();
            // an overlapping change (another session) waits on the range lock until leg 2 completed the first
            BlockDevice.Session s2 = v.openSession();
            byte[] b = TestVolumes.pattern(3, BS);
            Thread overlap = new Thread(() -> assertDoesNotThrow(() -> TestVolumes.write(v, s2, BS, b)));
            overlap.start();
            while (overlap.getState() != Thread.State.WAITING && overlap.getState() != Thread.State.TIMED_WAITING
                    && overlap.isAlive()) {
                Thread.onSpinWait();
            }
            assertTrue(overlap.isAlive(), "the overlapping change went ahead of the one in flight on leg 2");
            ((Slot) first[0]).complete(null);
            assertEquals(1, answers.get());
            assertNull(failure.get());
            overlap.join();
            assertArrayEquals(b, TestVolumes.read(v, s, BS, BS));
            assertTrue(held.isEmpty(), "the overlapping change wrote leg 2 synchronously (v.write)");
            // a failed completion: leg 2 degraded, the change answered (done on the other legs)
            v.writeThen(s, 2 * BS, BS, source(TestVolumes.pattern(4, BS)), done);
            ((Slot) held.take()[0]).complete(new IOException("injected: the leg's server answered EIO"));
            assertEquals(2, answers.get(), "the failed write answered");
            assertNull(failure.get(), "a degraded leg does not fail the change");
            MirrorSet.LegStatus st = v.mirror().status().get(2);
            assertEquals("degraded", st.state());
            assertTrue(st.error().contains("injected"), st.error());
            assertTrue(Files.isRegularFile(dir().resolve("leg2.rmap")), "the degraded mark is durable");
            assertFalse(v.asyncChange(BS, BS), "no asynchronous change while a leg is degraded");
            assertArrayEquals(TestVolumes.pattern(4, BS), TestVolumes.read(v, s, 2 * BS, BS));
            s2.close();
            s.close();
            v.close();
            assertEquals(sha(dir().resolve(Volume.DATA_FILE), SIZE), sha(leg(1), SIZE), "leg 1 has every change");
        } finally {
            LegOpener.install(LegOpener.FILES);
        }
    }

    /** A test leg's completion slot: {@link #complete} is what an NBD leg's reply reader does. */
    private record Slot(LegIo.WriteDone done, int leg) implements LegIo.WriteSlot {
        void complete(IOException e) {
            done.legWritten(leg, e);
        }
    }

    /** The bytes of {@code b} as a volume write's source. */
    private static io.snapbd.engine.io.ByteSource source(byte[] b) {
        ByteBuffer src = ByteBuffer.wrap(b);
        return dst -> {
            int n = dst.remaining();
            dst.put(src.slice(src.position(), n));
            src.position(src.position() + n);
        };
    }

    /**
     * Degraded mode, behaviours 8, 17, 19, 21, 26: a leg whose data write fails is left behind: the client's write
     * succeeds on the other legs, the leg is {@code degraded} (its region map {@code leg2.rmap} made in the volume's
     * directory: the durable mark), later changes succeed and skip it; after a crash, the open resyncs it copying
     * exactly the two missed writes' ranges from leg 0, and the legs are identical.
     */
    @Test
    void symantec8_17_21_degradedLegKeepsTheVolumeWritingAndOpenResyncsOnlyTheMissedRanges() throws Exception {
        Volume v0 = create();
        v0.close();
        AtomicBoolean broken = new AtomicBoolean();
        String bad = leg(2).toString();
        LegOpener.install(hooked(bad, pos -> {
            if (broken.get()) {
                throw new java.io.UncheckedIOException(new IOException("injected I/O error"));
            }
        }));
        Volume v = Volume.open(dir(), space);
        BlockDevice.Session s = v.openSession();
        TestVolumes.write(v, s, 0, TestVolumes.pattern(1, 2 * BS));
        v.flush();          // forced on every leg: the crash below leaves only the missed writes to copy
        broken.set(true);
        TestVolumes.write(v, s, 10 * BS, TestVolumes.pattern(2, 3 * BS));
        MirrorSet.LegStatus st = v.mirror().status().get(2);
        assertEquals("degraded", st.state());
        assertTrue(st.error().contains(bad), st.error());
        assertEquals("in-sync", v.mirror().status().get(1).state());
        assertTrue(Files.isRegularFile(dir().resolve("leg2.rmap")), "the degraded mark is durable");
        TestVolumes.write(v, s, 20 * BS, TestVolumes.pattern(3, BS));
        assertArrayEquals(TestVolumes.pattern(3, BS), TestVolumes.read(v, s, 20 * BS, BS));
        assertEquals(sha(dir().resolve(Volume.DATA_FILE), SIZE), sha(leg(1), SIZE), "leg 1 stays current");
        assertTrue(!sha(leg(1), SIZE).equals(sha(leg(2), SIZE)), "leg 2 missed the writes");
        v.abandon();
        io.snapbd.engine.fsck.VolumeChecker.Report ok = io.snapbd.engine.fsck.VolumeChecker.check(dir(), false);
        assertTrue(ok.ok(), ok.problems().toString());
        assertTrue(ok.notes().stream().anyMatch(n -> n.contains("leg 2") && n.contains("degraded")), ok.notes().toString());
        Path map = dir().resolve("leg2.rmap");
        byte[] kept = Files.readAllBytes(map);
        TestVolumes.flipByte(map, 33);                  // the header's volume size
        io.snapbd.engine.fsck.VolumeChecker.Report damaged = io.snapbd.engine.fsck.VolumeChecker.check(dir(), false);
        assertTrue(damaged.problems().stream().anyMatch(p -> p.contains(map.toString())), damaged.problems().toString());
        Files.write(map, kept);
        LegOpener.install(LegOpener.FILES);
        Volume r = Volume.open(dir(), space);
        MirrorSet.Reconciliation rec = r.mirror().lastReconciliation();
        assertNotNull(rec);
        assertEquals(4L * BS, rec.report().bytesCopied(), rec.report().toString());
        assertEquals(2, rec.report().rangesCopied());
        for (var c : rec.report().copies()) {
            assertEquals(0, c.from(), "resync from leg 0, never from the stale leg");
        }
        assertEquals("from", rec.direction(0));
        assertEquals("to", rec.direction(2));
        assertEquals(0, rec.report().entriesMatched(), "the write before the failure was forced and retired (FLUSH)");
        assertEquals("in-sync", r.mirror().status().get(2).state());
        assertTrue(!Files.exists(dir().resolve("leg2.rmap")), "the region map goes once the leg is resynced");
        BlockDevice.Session s2 = r.openSession();
        assertArrayEquals(TestVolumes.pattern(2, 3 * BS), TestVolumes.read(r, s2, 10 * BS, 3 * BS));
        s2.close();
        r.close();
        assertLegsIdentical();
    }

    /**
     * Degraded mode, behaviour 29 (the region map as the fallback): with tag tables of 16 records per half, 40
     * writes while leg 2 is degraded would overflow leg 0's table (entries of missed writes are never retired);
     * instead the completed entries are folded into leg 2's region map. Every write succeeds; the resync after a
     * crash copies the map's 64 KiB regions plus the live entries, no more than the 5 regions the writes touched.
     */
    @Test
    void symantec29_tableOverflowWhileDegradedFallsBackToTheRegionMap() throws Exception {
        create().close();
        UUID owner = volumeOwner();
        List<Path> tables = List.of(dir().resolve(MirrorConfig.LOCAL_TABLE), FileLegOpener.tableFile(leg(1)),
                FileLegOpener.tableFile(leg(2)));
        for (int i = 0; i < 3; i++) {
            try (FileTagStore st = FileTagStore.open(tables.get(i), true)) {
                TagTable.create(st, owner, i, 16).close();
            }
        }
        AtomicBoolean broken = new AtomicBoolean(true);
        LegOpener.install(hooked(leg(2).toString(), pos -> {
            if (broken.get()) {
                throw new java.io.UncheckedIOException(new IOException("injected I/O error"));
            }
        }));
        Volume v = Volume.open(dir(), space);
        BlockDevice.Session s = v.openSession();
        for (int i = 0; i < 40; i++) {
            TestVolumes.write(v, s, i * 2L * BS, TestVolumes.pattern(100 + i, BS));
        }
        assertEquals("degraded", v.mirror().status().get(2).state());
        assertTrue(v.mirror().folds() > 0, "entries were folded into the region map");
        assertTrue(v.mirror().status().get(2).missedRegionBytes() >= 65536);
        v.abandon();
        LegOpener.install(LegOpener.FILES);
        Volume r = Volume.open(dir(), space);
        MirrorSet.Reconciliation rec = r.mirror().lastReconciliation();
        assertTrue(rec.report().bytesCopied() <= 5 * 65536L, rec.report().toString());
        assertTrue(rec.report().bytesCopied() >= 40L * BS, rec.report().toString());
        r.close();
        assertLegsIdentical();
    }

    /**
     * Degraded mode, behaviour 14 (restartable): the resync at open fails part way (leg 2's second copy write
     * fails, as a crash would cut it): the volume opens with leg 2 still degraded, its missed ranges kept (folded
     * into its region map, as for a leg that cannot be reached at open); after a crash and a reopen with the leg healthy, the resync runs again and the legs are identical.
     */
    @Test
    void symantec14_resyncCutShortLosesNothingAndRunsAgain() throws Exception {
        create().close();
        AtomicBoolean broken = new AtomicBoolean(true);
        LegOpener.install(hooked(leg(2).toString(), pos -> {
            if (broken.get()) {
                throw new java.io.UncheckedIOException(new IOException("injected I/O error"));
            }
        }));
        Volume v = Volume.open(dir(), space);
        BlockDevice.Session s = v.openSession();
        for (int i = 0; i < 6; i++) {
            TestVolumes.write(v, s, (i * 300L + 3) * BS, TestVolumes.pattern(200 + i, 2 * BS));
        }
        assertEquals("degraded", v.mirror().status().get(2).state());
        v.abandon();
        java.util.concurrent.atomic.AtomicInteger copies = new java.util.concurrent.atomic.AtomicInteger();
        LegOpener.install(hooked(leg(2).toString(), pos -> {
            if (copies.incrementAndGet() == 2) {
                throw new java.io.UncheckedIOException(new IOException("injected crash during resync"));
            }
        }));
        Volume mid = Volume.open(dir(), space);
        assertEquals("degraded", mid.mirror().status().get(2).state(), "a resync cut short leaves the leg degraded");
        assertTrue(Files.isRegularFile(dir().resolve("leg2.rmap")));
        assertTrue(copies.get() >= 2, "the resync started copying");
        mid.abandon();
        LegOpener.install(LegOpener.FILES);
        Volume r = Volume.open(dir(), space);
        assertEquals("in-sync", r.mirror().status().get(2).state());
        // the failed resync folded leg 2's entries into its region map (64 KiB regions): the rerun copies those
        long regions = 0;
        for (int i = 0; i < 6; i++) {
            long off = (i * 300L + 3) * BS;
            regions += ((off + 2 * BS - 1) >> 16) - (off >> 16) + 1;
        }
        // compare before copy: every region is compared, only the blocks leg 2 missed (those the cut-short run did
        // not copy yet) are copied
        Reconciler.Report rep = r.mirror().lastReconciliation().report();
        long compared = rep.bytesCompared();
        // plus the 1 MiB region entry the first write made durable before leg 2 failed (folded into the map too)
        assertTrue(compared >= 6 * 2L * BS && compared <= regions * 65536 + (1 << 20), compared + " bytes for " + regions + " regions");
        assertTrue(rep.bytesCopied() > 0 && rep.bytesCopied() <= 6 * 2L * BS, rep.toString());
        r.close();
        assertLegsIdentical();
    }

    /** Behaviour 14: reconciliation on demand with writes stopped; a failed leg is in sync again afterwards. */
    @Test
    void symantec14_reconcileOnDemand() throws Exception {
        Volume v = create();
        BlockDevice.Session s = v.openSession();
        TestVolumes.write(v, s, 0, TestVolumes.pattern(1, BS));
        MirrorSet.Reconciliation rec = v.mirror().reconcile();
        assertEquals(0, rec.report().entriesUnmatched(), "the answered write's data batch runs first: nothing to copy");
        assertEquals(0, rec.report().bytesCopied());
        TestVolumes.write(v, s, BS, TestVolumes.pattern(2, BS));
        s.close();
        v.close();
        assertLegsIdentical();
    }

    /** A damaged leg list refuses the open and names the file; a volume made before mirrors has no list and opens unmirrored. */
    @Test
    void damagedLegListIsRefusedNamingTheFile() throws Exception {
        create().close();
        TestVolumes.flipByte(dir().resolve(MirrorConfig.FILE), 70);
        IOException e = assertThrows(IOException.class, () -> Volume.open(dir(), space));
        assertTrue(e.getMessage().contains(MirrorConfig.FILE), e.getMessage());
        Volume.create(tmp.resolve("plain"), "plain", SIZE, BS, 0, false, space);
        Volume p = Volume.open(tmp.resolve("plain"), space);
        assertNull(p.mirror());
        p.close();
    }

    /** Volume delete removes the legs it created; a leg path that exists already is refused at create. */
    @Test
    void createRefusesAnExistingLegAndDeleteRemovesLegs() throws Exception {
        Files.writeString(leg(2), "someone's data");
        IOException e = assertThrows(IOException.class, this::create);
        assertTrue(e.getMessage().contains(leg(2).toString()), e.getMessage());
        assertTrue(!Files.exists(leg(1)), "a failed create leaves no leg behind");
        assertEquals("someone's data", Files.readString(leg(2)));
        Files.delete(leg(2));
        create().close();
        Volume.deleteFiles(dir());
        assertTrue(!Files.exists(leg(1)) && !Files.exists(FileLegOpener.tableFile(leg(1))));
    }

    /** fsck verifies every leg's tag table (behaviours 4–7: the tables must be trustworthy) and names a damaged one. */
    @Test
    void symantec4_7_fsckReportsADamagedLegTableNamingTheFile() throws Exception {
        MirrorSet.answerWhenWritten(true);      // -Dsnapbd.mirror.answer=written: data forced in batches behind the answers
        Volume v = create();
        BlockDevice.Session s = v.openSession();
        for (int i = 0; i < 4; i++) {
            // one region each (cold: region entry and ENTRY forced): later records carry the commit point past record 0
            TestVolumes.write(v, s, i * (1L << 20), TestVolumes.pattern(i, BS));
        }
        v.abandon();
        io.snapbd.engine.fsck.VolumeChecker.Report ok = io.snapbd.engine.fsck.VolumeChecker.check(dir(), false);
        assertTrue(ok.ok(), ok.problems().toString());
        assertTrue(ok.notes().stream().anyMatch(n -> n.contains("live entr")), ok.notes().toString());
        Path table = FileLegOpener.tableFile(leg(1));
        TestVolumes.flipByte(table, 4096 + 30);        // record 0 of the active half: durable once, now damaged
        io.snapbd.engine.fsck.VolumeChecker.Report bad = io.snapbd.engine.fsck.VolumeChecker.check(dir(), false);
        assertTrue(!bad.ok());
        assertTrue(bad.problems().stream().anyMatch(p -> p.contains(table.toString())), bad.problems().toString());
    }

    /** Behaviour 8 for the clone copier: a snapshot copied into a mirrored volume reaches every leg (it writes through the volume's write path). */
    @Test
    void symantec8_cloneCopierIntoAMirroredVolumeReachesEveryLeg() throws Exception {
        Volume.create(tmp.resolve("src"), "src", SIZE, BS, 4L << 20, false, space);
        Volume src = Volume.open(tmp.resolve("src"), space);
        BlockDevice.Session s = src.openSession();
        TestVolumes.write(src, s, 0, TestVolumes.pattern(7, 5 * BS));
        TestVolumes.write(src, s, 3L << 20, TestVolumes.pattern(8, 3 << 20));
        src.createSnapshot("s");
        s.close();
        Volume target = create();
        assertTrue(new io.snapbd.engine.snapshot.CloneCopier(src.snapshotView("s"), target).run(() -> false));
        BlockDevice.Session t = target.openSession();
        assertArrayEquals(TestVolumes.pattern(8, 3 << 20), TestVolumes.read(target, t, 3L << 20, 3 << 20));
        t.close();
        assertLegsIdentical();
        target.close();
        src.close();
    }

    /**
     * Behaviours 1, 8 under concurrency: four sessions write, TRIM and zero overlapping ranges at once (a stress
     * check of the write path: no error, no deadlock, every leg equal to leg 0 afterwards; the ordering rule
     * itself is pinned deterministically by {@code symantec8_overlappingWriteWaitsForTheEarlierOneOnEveryLeg}).
     * Prints how many forces of leg 1's table group commit needed for the changes.
     */
    @Test
    void symantec1_8_concurrentOverlappingChangesLeaveLegsIdentical() throws Exception {
        Volume v = create();
        int threads = 4;
        int each = 150;
        java.util.List<Thread> ts = new java.util.ArrayList<>();
        java.util.concurrent.ConcurrentLinkedQueue<Throwable> errors = new java.util.concurrent.ConcurrentLinkedQueue<>();
        for (int t = 0; t < threads; t++) {
            int seed = t;
            Thread th = new Thread(() -> {
                java.util.Random rnd = new java.util.Random(seed);
                try (BlockDevice.Session s = v.openSession()) {
                    for (int i = 0; i < each; i++) {
                        long off = rnd.nextInt(64) * 512L + (rnd.nextBoolean() ? (1 << 20) - 16384 : 0);   // a hot 48 KiB, across a stripe edge
                        int len = 512 * (1 + rnd.nextInt(48));
                        int op = rnd.nextInt(10);
                        if (op == 0) {
                            v.trim(s, off, len, false);
                        } else if (op == 1) {
                            v.writeZeroes(s, off, len, rnd.nextBoolean(), false, false);
                        } else {
                            TestVolumes.write(v, s, off, TestVolumes.pattern(seed * 100_000L + i, len));
                        }
                    }
                } catch (Throwable e) {
                    errors.add(e);
                }
            });
            ts.add(th);
            th.start();
        }
        for (Thread th : ts) {
            th.join(300_000);
        }
        assertTrue(errors.isEmpty(), errors.toString());
        assertLegsIdentical();
        long forces = v.mirror().tableForces(1);
        System.out.println("MirroredVolumeTest: " + threads * each + " changes, " + forces + " forces of leg 1's tag table");
        v.close();
        assertLegsIdentical();
    }

    /**
     * Issue 24: changes whose regions are all hot do not count against the bound of answered, unforced changes
     * ({@code DataForcer.MAX_TAGS}, 1024): while a FLUSH's batch has leg 1's data force held back, 1536 such changes
     * are answered, none waits for it; the FLUSH waits for the force, and afterwards every leg holds every change.
     */
    @Test
    void hotPathChangesDoNotWaitForAHeldBackDataForce() throws Exception {
        java.util.concurrent.CountDownLatch started = new java.util.concurrent.CountDownLatch(1);
        java.util.concurrent.CountDownLatch release = new java.util.concurrent.CountDownLatch(1);
        AtomicBoolean hold = new AtomicBoolean();
        LegOpener.install(wrapped(leg(1).toString(), pos -> { }, null, () -> {
            if (hold.get()) {
                started.countDown();
                try {
                    release.await(120, java.util.concurrent.TimeUnit.SECONDS);
                } catch (InterruptedException e) {
                    throw new IOException(e);
                }
            }
        }));
        java.util.concurrent.ExecutorService pool = java.util.concurrent.Executors.newFixedThreadPool(2);
        try {
            Volume v = create();
            try (BlockDevice.Session s = v.openSession()) {
                TestVolumes.write(v, s, 0, TestVolumes.pattern(1, BS));     // makes region 0 hot (forced entries)
            }
            hold.set(true);
            try (BlockDevice.Session s = v.openSession()) {
                TestVolumes.write(v, s, BS, TestVolumes.pattern(2, BS));    // unforced now: the FLUSH needs a batch
            }
            java.util.concurrent.Future<?> flush = pool.submit(() -> {
                v.flush();
                return null;
            });
            assertTrue(started.await(60, java.util.concurrent.TimeUnit.SECONDS), "the FLUSH's batch forces leg 1's data");
            long before = v.mirror().unforcedEntryChanges();
            int n = 1024 + 512;
            java.util.concurrent.Future<?> writes = pool.submit(() -> {
                try (BlockDevice.Session s = v.openSession()) {
                    for (int i = 0; i < n; i++) {
                        TestVolumes.write(v, s, (i % 200) * (long) BS, TestVolumes.pattern(100 + i % 7, BS));
                    }
                }
                return null;
            });
            // a change that waited for the held-back force would never end: the writes would time out here
            assertDoesNotThrow(() -> writes.get(60, java.util.concurrent.TimeUnit.SECONDS),
                    "hot-path changes waited for a data force");
            assertFalse(flush.isDone(), "leg 1's data force was held back all along");
            assertEquals(before + n, v.mirror().unforcedEntryChanges(), "every change took the hot path");
            release.countDown();
            flush.get(60, java.util.concurrent.TimeUnit.SECONDS);
            v.flush();
            assertLegsIdentical();
            v.close();
            assertLegsIdentical();
        } finally {
            release.countDown();
            pool.shutdownNow();
            LegOpener.install(LegOpener.FILES);
        }
    }

    /** A leg opener whose leg {@code path} runs {@code hook} before each data write. */
    private static LegOpener hooked(String path, java.util.function.LongConsumer hook) {
        return wrapped(path, hook, null);
    }

    /**
     * File legs whose data writes run {@code onWrite} first (leg {@code path} only, or every leg when null) and,
     * with {@code onForce}, whose data and table forces run it first.
     */
    private static LegOpener wrapped(String path, java.util.function.LongConsumer onWrite, IoHook onForce) {
        return wrapped(path, onWrite, onForce, onForce);
    }

    /** As above, with {@code onForce} before table forces and {@code onDataForce} before data forces. */
    private static LegOpener wrapped(String path, java.util.function.LongConsumer onWrite, IoHook onForce,
                                     IoHook onDataForce) {
        return new LegOpener() {
            @Override
            public MirrorLeg create(String uri, long size, long tableBytes, boolean sparse, FileSpace sp) throws IOException {
                return FILES.create(uri, size, tableBytes, sparse, sp);
            }

            @Override
            public MirrorLeg open(String uri) throws IOException {
                MirrorLeg l = FILES.open(uri);
                if (path != null && !uri.equals(path)) {
                    return l;
                }
                LegIo d = l.data();
                io.snapbd.engine.mirror.TagStore t = l.table();
                return MirrorLeg.of(uri, new ForwardingLegIo(d) {
                    @Override
                    public void write(ByteBuffer src, long pos) throws IOException {
                        onWrite.accept(pos);
                        d.write(src, pos);
                    }

                    @Override
                    public void force() throws IOException {
                        if (onDataForce != null) {
                            onDataForce.run();
                        }
                        d.force();
                    }
                }, onForce == null ? t : new ForwardingTagStore(t) {
                    @Override
                    public void force() throws IOException {
                        onForce.run();
                        t.force();
                    }
                });
            }

            @Override
            public void delete(String uri) throws IOException {
                FILES.delete(uri);
            }
        };
    }

    /**
     * Overlapping changes reach every leg in the same order (docs/mirrors.md, "Range lock"; behaviour 8): write A
     * is held while it writes leg 1; an overlapping write B must wait for A to finish on every leg rather than
     * overtake it there, else A's older bytes would land on leg 1 after B's and the legs would differ.
     */
    @Test
    void symantec8_overlappingWriteWaitsForTheEarlierOneOnEveryLeg() throws Exception {
        create().close();
        java.util.concurrent.CountDownLatch inLeg = new java.util.concurrent.CountDownLatch(1);
        java.util.concurrent.CountDownLatch release = new java.util.concurrent.CountDownLatch(1);
        holdFirstLeg1WriteAtZero(inLeg, release, 60);
        Volume v = Volume.open(dir(), space);
        java.util.concurrent.ConcurrentLinkedQueue<Throwable> errors = new java.util.concurrent.ConcurrentLinkedQueue<>();
        Thread a = writer(v, 0, TestVolumes.pattern(1, 2 * BS), errors);
        a.start();
        assertTrue(inLeg.await(60, java.util.concurrent.TimeUnit.SECONDS), "write A reached leg 1");
        Thread b = writer(v, BS, TestVolumes.pattern(2, 2 * BS), errors);
        b.start();
        // B either overtakes A (ends) or waits for A's range (parked on the range lock).
        for (int i = 0; i < 3000 && b.getState() != Thread.State.TERMINATED && b.getState() != Thread.State.WAITING; i++) {
            Thread.sleep(10);
        }
        release.countDown();
        a.join(60_000);
        b.join(60_000);
        assertTrue(errors.isEmpty(), errors.toString());
        BlockDevice.Session s = v.openSession();
        byte[] expect = new byte[3 * BS];
        System.arraycopy(TestVolumes.pattern(1, 2 * BS), 0, expect, 0, BS);
        System.arraycopy(TestVolumes.pattern(2, 2 * BS), 0, expect, BS, 2 * BS);
        assertArrayEquals(expect, TestVolumes.read(v, s, 0, 3 * BS));
        s.close();
        assertLegsIdentical();
        v.close();
    }

    /**
     * Issue 24, the range lock's grain (docs/mirrors.md, "Range lock"): while write A's copy to leg 1 is held (a slow
     * leg write on a loaded disk), a write B to another page of the same MiB neither waits for A nor disturbs it: B
     * ends, on every leg, before A is released. (The 1 MiB stripe locks made B wait for A's leg write.)
     */
    @Test
    void issue24_aChangeToAnotherPageDoesNotWaitForASlowLegWriteNearby() throws Exception {
        create().close();
        java.util.concurrent.CountDownLatch inLeg = new java.util.concurrent.CountDownLatch(1);
        java.util.concurrent.CountDownLatch release = new java.util.concurrent.CountDownLatch(1);
        holdFirstLeg1WriteAtZero(inLeg, release, 600);     // longer than B's guard below
        Volume v = Volume.open(dir(), space);
        java.util.concurrent.ConcurrentLinkedQueue<Throwable> errors = new java.util.concurrent.ConcurrentLinkedQueue<>();
        try (BlockDevice.Session s = v.openSession()) {
            TestVolumes.write(v, s, 8 * BS, TestVolumes.pattern(9, BS));     // makes region 0 hot: A and B take the hot path
        }
        Thread a = writer(v, 0, TestVolumes.pattern(1, BS), errors);
        a.start();
        try {
            assertTrue(inLeg.await(60, java.util.concurrent.TimeUnit.SECONDS), "write A reached leg 1");
            Thread b = writer(v, 2 * BS, TestVolumes.pattern(2, BS), errors);
            b.start();
            b.join(120_000);        // a guard only: with the old locks B never ends while A is held
            assertFalse(b.isAlive(), "write B waited for write A's leg write to another page of its MiB");
            assertTrue(a.isAlive(), "write A was still held in leg 1 while B ended");
            assertArrayEquals(TestVolumes.pattern(2, BS), readLeg(leg(1), 2 * BS, BS), "B is on leg 1 already");
            assertArrayEquals(TestVolumes.pattern(2, BS), readLeg(leg(2), 2 * BS, BS), "B is on leg 2 already");
        } finally {
            release.countDown();
            a.join(60_000);
        }
        assertTrue(errors.isEmpty(), errors.toString());
        assertLegsIdentical();
        v.close();
        assertLegsIdentical();
    }

    /** Leg 1's first data write at offset 0 signals {@code inLeg} and waits (up to {@code seconds}) for {@code release}. */
    private void holdFirstLeg1WriteAtZero(java.util.concurrent.CountDownLatch inLeg, java.util.concurrent.CountDownLatch release,
            long seconds) {
        AtomicBoolean armed = new AtomicBoolean(true);
        LegOpener.install(hooked(leg(1).toString(), pos -> {
            if (pos == 0 && armed.compareAndSet(true, false)) {
                inLeg.countDown();
                try {
                    release.await(seconds, java.util.concurrent.TimeUnit.SECONDS);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
            }
        }));
    }

    /** A thread (not started) that writes {@code data} at {@code offset} in a session of its own; failures go to {@code errors}. */
    private static Thread writer(Volume v, long offset, byte[] data, java.util.Collection<Throwable> errors) {
        return new Thread(() -> {
            try (BlockDevice.Session s = v.openSession()) {
                TestVolumes.write(v, s, offset, data);
            } catch (Throwable e) {
                errors.add(e);
            }
        });
    }

    private static byte[] readLeg(Path leg, long pos, int len) throws IOException {
        try (java.nio.channels.FileChannel ch = java.nio.channels.FileChannel.open(leg)) {
            ByteBuffer b = ByteBuffer.allocate(len);
            while (b.hasRemaining() && ch.read(b, pos + b.position()) >= 0) {
                // reads the rest
            }
            return b.array();
        }
    }

    /**
     * Degraded mode and behaviours 14, 17: a leg whose data write fails is degraded and changes go on; a
     * {@code reconcile()} while the leg still fails leaves it degraded (and throws, naming it); once it works,
     * {@code reconcile()} resyncs exactly the two missed changes' ranges into it, and it is in sync again.
     */
    @Test
    void symantec14_17_reconcileOnDemandResyncsADegradedLeg() throws Exception {
        create().close();
        AtomicBoolean broken = new AtomicBoolean();
        LegOpener.install(hooked(leg(1).toString(), pos -> {
            if (broken.get()) {
                throw new java.io.UncheckedIOException(new IOException("injected I/O error"));
            }
        }));
        Volume v = Volume.open(dir(), space);
        BlockDevice.Session s = v.openSession();
        broken.set(true);
        TestVolumes.write(v, s, 4 * BS, TestVolumes.pattern(5, BS));
        assertEquals("degraded", v.mirror().status().get(1).state());
        TestVolumes.write(v, s, 8 * BS, TestVolumes.pattern(6, BS));
        assertEquals(1, v.mirror().degradedLegs());
        IOException still = assertThrows(IOException.class, () -> v.mirror().reconcile());
        assertTrue(still.getMessage().contains(leg(1).toString()), still.getMessage());
        assertEquals("degraded", v.mirror().status().get(1).state());
        broken.set(false);
        MirrorSet.Reconciliation rec = v.mirror().reconcile();
        assertEquals(2L * BS, rec.report().bytesCopied(), rec.report().toString());
        assertEquals("to", rec.direction(1));
        for (MirrorSet.LegStatus l : v.mirror().status()) {
            assertEquals("in-sync", l.state(), l.toString());
        }
        assertEquals(2L * BS, v.mirror().status().get(1).bytesCopiedInTotal());
        TestVolumes.write(v, s, 12 * BS, TestVolumes.pattern(7, BS));
        assertLegsIdentical();
        s.close();
        v.close();
        assertLegsIdentical();
    }

    /**
     * Behaviour 8 and docs/mirrors.md "Cost": the legs' forces of one change run at the same time, not one leg after
     * the other. Legs 1 and 2 each wait in every force (table and data) until the other leg's force has started
     * too (a barrier of two, 10 s): forcing the legs in turn would leave the first one waiting for a force that
     * never starts, its force would fail (the leg degraded) and fewer trips would be counted. Two barrier trips: the
     * ENTRY forces, then the data forces.
     */
    @Test
    void symantec8_legsForceInParallel() throws Exception {
        MirrorSet.answerWhenWritten(true);      // -Dsnapbd.mirror.answer=written: data forced in batches behind the answers
        create().close();
        java.util.concurrent.CyclicBarrier tables = new java.util.concurrent.CyclicBarrier(2);
        java.util.concurrent.CyclicBarrier datas = new java.util.concurrent.CyclicBarrier(2);
        AtomicBoolean armedTables = new AtomicBoolean();
        AtomicBoolean armedData = new AtomicBoolean();
        java.util.concurrent.atomic.AtomicInteger trips = new java.util.concurrent.atomic.AtomicInteger();
        LegOpener.install(wrapped(null, pos -> { }, meetOnce(tables, armedTables, trips), meetOnce(datas, armedData, trips)));
        Volume v = Volume.open(dir(), space);
        BlockDevice.Session s = v.openSession();
        armedTables.set(true);
        armedData.set(true);
        TestVolumes.write(v, s, 4 * BS, TestVolumes.pattern(7, 2 * BS));
        assertEquals(1, trips.get(), "legs 1 and 2 forced their tables together before the write was answered");
        v.flush();
        assertEquals(2, trips.get(), "then, in the data-force batch, their data together");
        assertEquals(0, v.mirror().degradedLegs(), "no leg's force failed");
        s.close();
        v.close();
        assertLegsIdentical();
    }

    /** A force hook that, while {@code armed}, waits for the other leg's force at {@code b}, then disarms itself. */
    private static IoHook meetOnce(java.util.concurrent.CyclicBarrier b, AtomicBoolean armed,
                                   java.util.concurrent.atomic.AtomicInteger trips) {
        return () -> {
            if (armed.get()) {
                try {
                    if (b.await(10, java.util.concurrent.TimeUnit.SECONDS) == 0) {
                        trips.incrementAndGet();
                        armed.set(false);
                    }
                } catch (Exception e) {
                    throw new IOException("the other leg's force did not start: " + e, e);
                }
            }
        };
    }

    /**
     * {@code mirror add} and {@code mirror remove} on a closed volume: a new leg gets a full copy of the volume's
     * blocks (progress reported up to the volume's size) and is then in sync and takes changes; removing the middle
     * leg renumbers the last one (its table made anew), the volume opens with the rest in sync; removing a degraded
     * leg is allowed, and its region map goes.
     */
    @Test
    void mirrorAddCopiesInFullAndRemoveKeepsTheOtherLegsIds() throws Exception {
        Volume v = create();
        BlockDevice.Session s = v.openSession();
        TestVolumes.write(v, s, 3 * BS, TestVolumes.pattern(1, 5 * BS));
        s.close();
        v.close();
        UUID owner = volumeOwner();
        Path added = tmp.resolve("leg3.img");
        long[] last = new long[2];
        int n = io.snapbd.engine.mirror.LegChanges.add(dir(), owner, SIZE, dir().resolve(Volume.DATA_FILE),
                added.toString(), false, space, false, (done, total) -> {
                    last[0] = done;
                    last[1] = total;
                });
        assertEquals(3, n);
        assertEquals(SIZE, last[0]);
        assertEquals(sha(dir().resolve(Volume.DATA_FILE), SIZE), sha(added, SIZE), "a full copy");
        Volume w = Volume.open(dir(), space);
        assertEquals(4, w.mirror().legCount());
        assertNull(w.mirror().lastReconciliation(), "the new leg is in sync: nothing to reconcile");
        BlockDevice.Session s2 = w.openSession();
        TestVolumes.write(w, s2, 40 * BS, TestVolumes.pattern(2, BS));
        s2.close();
        w.close();
        assertEquals(sha(dir().resolve(Volume.DATA_FILE), SIZE), sha(added, SIZE), "the new leg takes changes");

        io.snapbd.engine.mirror.LegChanges.remove(dir(), owner, SIZE, leg(1).toString());
        assertEquals(List.of(leg(2).toString(), added.toString()), MirrorConfig.read(dir(), owner).extraLegs());
        Volume x = Volume.open(dir(), space);
        assertEquals(3, x.mirror().legCount());
        BlockDevice.Session s3 = x.openSession();
        TestVolumes.write(x, s3, 50 * BS, TestVolumes.pattern(3, BS));
        s3.close();
        x.close();
        String h = sha(dir().resolve(Volume.DATA_FILE), SIZE);
        assertEquals(h, sha(leg(2), SIZE));
        assertEquals(h, sha(added, SIZE));
        assertTrue(!h.equals(sha(leg(1), SIZE)), "the removed leg is left as it was");

        AtomicBoolean broken = new AtomicBoolean(true);
        LegOpener.install(hooked(added.toString(), pos -> {
            if (broken.get()) {
                throw new java.io.UncheckedIOException(new IOException("injected I/O error"));
            }
        }));
        Volume y = Volume.open(dir(), space);
        BlockDevice.Session s4 = y.openSession();
        TestVolumes.write(y, s4, 60 * BS, TestVolumes.pattern(4, BS));
        assertEquals("degraded", y.mirror().status().get(2).state());
        s4.close();
        y.close();
        // the map is named by the leg's id (3, the number its table records), not by its place in the list (2)
        assertTrue(Files.exists(dir().resolve("leg3.rmap")), "a degraded leg keeps its mark over a clean close");
        io.snapbd.engine.mirror.LegChanges.remove(dir(), owner, SIZE, added.toString());
        assertTrue(!Files.exists(dir().resolve("leg3.rmap")), "the removed degraded leg's region map goes");
        LegOpener.install(LegOpener.FILES);
        Volume z = Volume.open(dir(), space);
        assertEquals(2, z.mirror().legCount());
        z.close();
        assertEquals(sha(dir().resolve(Volume.DATA_FILE), SIZE), sha(leg(2), SIZE));
    }

    /**
     * Behaviour 6, entry first: on every extra leg, each data write lands only inside the range of an ENTRY whose
     * table force had completed before the write started (an ENTRY written but not yet forced does not count),
     * for writes, TRIM and WRITE_ZEROES from two sessions at once, with the data forces running in batches behind
     * the answers. Fails if a leg's data could be written before its entry is durable there. With hot regions (the
     * default) the covering entries are the regions' entries (a change's own ENTRY goes unforced) and a write across
     * a region boundary is covered by two of them.
     */
    @Test
    void symantec6_entryIsDurableOnEveryLegBeforeItsDataIsWritten() throws Exception {
        assertEquals(List.of(), entryFirstViolations());
        assertLegsIdentical();
    }

    /** The same with every change's ENTRY forced ({@code -Dsnapbd.mirror.entries=forced}). */
    @Test
    void symantec6_entryIsDurableBeforeItsDataWithForcedEntries() throws Exception {
        MirrorSet.forcedEntries(true);
        assertEquals(List.of(), entryFirstViolations());
        assertLegsIdentical();
    }

    /** The check can fail: a write path that skips the region entries writes data no durable entry covers. */
    @Test
    void symantec6_selfCheckSkippedRegionEntriesAreCaught() throws Exception {
        MirrorSet.skipRegionEntriesForTest(true);
        assertTrue(entryFirstViolations().size() > 0, "data written under no durable entry must be caught");
    }

    private List<String> entryFirstViolations() throws Exception {
        create().close();
        List<String> violations = java.util.Collections.synchronizedList(new java.util.ArrayList<>());
        java.util.concurrent.atomic.AtomicLong checked = new java.util.concurrent.atomic.AtomicLong();
        LegOpener.install(new LegOpener() {
            @Override
            public MirrorLeg create(String uri, long size, long tableBytes, boolean sparse, FileSpace sp) throws IOException {
                return FILES.create(uri, size, tableBytes, sparse, sp);
            }

            @Override
            public void delete(String uri) throws IOException {
                FILES.delete(uri);
            }

            @Override
            public MirrorLeg open(String uri) throws IOException {
                MirrorLeg l = FILES.open(uri);
                LegIo d = l.data();
                io.snapbd.engine.mirror.TagStore t = l.table();
                List<long[]> written = new java.util.ArrayList<>();     // ENTRY {offset, length}, in write order
                int[] durable = {0};                                    // written[0 .. durable) were forced
                return MirrorLeg.of(uri, new ForwardingLegIo(d) {
                    @Override
                    public void write(ByteBuffer src, long pos) throws IOException {
                        long len = src.remaining();
                        // covered by the durable entries together (a change's own, or its regions' entries)
                        long at = pos;
                        synchronized (written) {
                            for (boolean more = true; more && at < pos + len; ) {
                                more = false;
                                for (int i = 0; i < durable[0]; i++) {
                                    long[] e = written.get(i);
                                    if (e[0] <= at && at < e[0] + e[1]) {
                                        at = e[0] + e[1];
                                        more = true;
                                    }
                                }
                            }
                        }
                        boolean covered = at >= pos + len;
                        if (!covered) {
                            violations.add(uri + ": data [" + pos + ", +" + len + ") written before a durable entry covered it");
                        }
                        checked.incrementAndGet();
                        d.write(src, pos);
                    }
                }, new ForwardingTagStore(t) {
                    @Override
                    public void write(ByteBuffer src, long pos) throws IOException {
                        ByteBuffer b = src.duplicate().order(java.nio.ByteOrder.LITTLE_ENDIAN);
                        synchronized (written) {
                            for (int p = b.position(); pos >= 4096 && p + 64 <= b.limit(); p += 64) {
                                if (b.getShort(p) == 1) {       // ENTRY: offset at +32, length at +40
                                    written.add(new long[] {b.getLong(p + 32), b.getLong(p + 40)});
                                }
                            }
                        }
                        t.write(src, pos);
                    }

                    @Override
                    public void force() throws IOException {
                        int upTo;
                        synchronized (written) {
                            upTo = written.size();
                        }
                        t.force();
                        synchronized (written) {
                            durable[0] = Math.max(durable[0], upTo);
                        }
                    }
                });
            }
        });
        Volume v = Volume.open(dir(), space);
        java.util.concurrent.ExecutorService pool = java.util.concurrent.Executors.newFixedThreadPool(2);
        try {
            List<java.util.concurrent.Future<?>> fs = new java.util.ArrayList<>();
            for (int t = 0; t < 2; t++) {
                int seed = t;
                fs.add(pool.submit(() -> {
                    java.util.Random rnd = new java.util.Random(seed);
                    try (BlockDevice.Session s = v.openSession()) {
                        for (int i = 0; i < 60; i++) {
                            long off = (long) rnd.nextInt((int) (SIZE / BS) - 8) * BS;
                            switch (i % 6) {
                                case 4 -> v.trim(s, off, 2 * BS, false);
                                case 5 -> v.writeZeroes(s, off, 3 * BS, true, false, false);
                                default -> TestVolumes.write(v, s, off, TestVolumes.pattern(seed * 100 + i, (1 + i % 3) * BS));
                            }
                        }
                    }
                    return null;
                }));
            }
            for (java.util.concurrent.Future<?> f : fs) {
                f.get(120, java.util.concurrent.TimeUnit.SECONDS);
            }
        } finally {
            pool.shutdownNow();
        }
        v.close();
        assertTrue(checked.get() > 100, "data writes checked: " + checked.get());
        return violations;
    }

    /**
     * Behaviour 8 with the data forces in batches: a write is answered before leg 1's data force (which is held
     * back here), but a FLUSH is answered only after it: while leg 1's force is held, FLUSH waits; once it runs,
     * FLUSH returns and every leg's table is empty (DONE and RETIRE written behind the force). Fails if a FLUSH
     * could answer before every leg's data force.
     */
    @Test
    void symantec8_flushAnswersOnlyAfterEveryLegsDataForce() throws Exception {
        MirrorSet.answerWhenWritten(true);      // -Dsnapbd.mirror.answer=written: data forced in batches behind the answers
        create().close();
        java.util.concurrent.CountDownLatch started = new java.util.concurrent.CountDownLatch(1);
        java.util.concurrent.CountDownLatch release = new java.util.concurrent.CountDownLatch(1);
        LegOpener.install(wrapped(leg(1).toString(), pos -> { }, null, () -> {
            started.countDown();
            try {
                release.await(60, java.util.concurrent.TimeUnit.SECONDS);
            } catch (InterruptedException e) {
                throw new IOException(e);
            }
        }));
        Volume v = Volume.open(dir(), space);
        java.util.concurrent.ExecutorService pool = java.util.concurrent.Executors.newFixedThreadPool(2);
        try (BlockDevice.Session s = v.openSession()) {
            // answered although leg 1's data force cannot complete (a hang guard, not a time limit)
            pool.submit(() -> {
                TestVolumes.write(v, s, 8 * BS, TestVolumes.pattern(5, 2 * BS));
                return null;
            }).get(60, java.util.concurrent.TimeUnit.SECONDS);
            assertTrue(started.await(60, java.util.concurrent.TimeUnit.SECONDS), "the batch's data force started");
            java.util.concurrent.Future<?> flush = pool.submit(() -> {
                v.flush();
                return null;
            });
            Thread.sleep(300);
            assertTrue(!flush.isDone(), "FLUSH answered while leg 1's data force was held back");
            release.countDown();
            flush.get(60, java.util.concurrent.TimeUnit.SECONDS);
            // the write's own entry retired; its region's entry stays live while the region is hot (it cools after
            // a long idle, not at a FLUSH)
            assertEquals(1, v.mirror().hotRegions());
            for (Path t : List.of(FileLegOpener.tableFile(leg(1)), FileLegOpener.tableFile(leg(2)))) {
                assertEquals(1, TagTableChecker.check(t).liveEntries(), t + ": retired once FLUSH answered, but the region entry");
            }
        } finally {
            release.countDown();
            pool.shutdownNow();
        }
        assertEquals(0, v.mirror().degradedLegs());
        v.close();
        assertLegsIdentical();
    }

    /**
     * The crash bound with the data forces behind the answers (behaviours 17, 19, 21): writes answered while their
     * data-force batch cannot complete (leg 1's force held back), then kill -9: at open their entries are unmatched
     * (not DONE on every leg) and reconciliation compares exactly their ranges, nothing else, and copies nothing
     * (the process died, the page cache kept their data on both legs: compare before copy); the legs end identical
     * with every answered write on them.
     */
    @Test
    void symantec17_19_crashBeforeTheDataBatchCopiesOnlyTheWritesSinceIt() throws Exception {
        crashBeforeTheDataBatch(true);
    }

    /**
     * The same crash with hot regions (the default): the five writes' ENTRY records went unforced under their
     * region's entry (one, made durable by the first write); kill -9 keeps the page cache: the region is compared
     * (1 MiB, the bound a hot region costs), nothing is copied (at most the writes in flight: none here), every answered
     * write is there and the legs are identical.
     */
    @Test
    void symantec17_19_hotRegionAfterKill9ComparesTheRegionAndCopiesNothing() throws Exception {
        crashBeforeTheDataBatch(false);
    }

    private void crashBeforeTheDataBatch(boolean forcedEntries) throws Exception {
        MirrorSet.answerWhenWritten(true);      // -Dsnapbd.mirror.answer=written: data forced in batches behind the answers
        MirrorSet.forcedEntries(forcedEntries);
        Volume v0 = create();
        try (BlockDevice.Session s = v0.openSession()) {
            TestVolumes.write(v0, s, 100 * BS, TestVolumes.pattern(1, 4 * BS));
        }
        v0.close();
        java.util.concurrent.CountDownLatch started = new java.util.concurrent.CountDownLatch(1);
        java.util.concurrent.CountDownLatch release = new java.util.concurrent.CountDownLatch(1);
        LegOpener.install(wrapped(leg(1).toString(), pos -> { }, null, () -> {
            started.countDown();
            try {
                release.await(60, java.util.concurrent.TimeUnit.SECONDS);
            } catch (InterruptedException e) {
                throw new IOException(e);
            }
            throw new IOException("the process is gone");
        }));
        Volume v = Volume.open(dir(), space);
        java.util.concurrent.ExecutorService pool = java.util.concurrent.Executors.newSingleThreadExecutor();
        try {
            pool.submit(() -> {
                try (BlockDevice.Session s = v.openSession()) {
                    for (int i = 0; i < 5; i++) {
                        TestVolumes.write(v, s, i * 4L * BS, TestVolumes.pattern(20 + i, BS));
                    }
                }
                return null;
            }).get(60, java.util.concurrent.TimeUnit.SECONDS);
            assertTrue(started.await(60, java.util.concurrent.TimeUnit.SECONDS));
            v.abandon();        // kill -9 while the batch's data force runs
        } finally {
            release.countDown();
            pool.shutdownNow();
        }
        LegOpener.install(LegOpener.FILES);
        Volume r = Volume.open(dir(), space);
        MirrorSet.Reconciliation rec = r.mirror().lastReconciliation();
        assertNotNull(rec);
        long compared = forcedEntries ? 5L * BS : 1 << 20;     // the answered writes since the last batch, or their region
        // forced: the five ENTRY records; hot: the region's entry and the five (hotEntries=unforced) or the first
        // write's only (hotEntries=none: the four hot-path writes appended none)
        assertEquals(forcedEntries ? 5 : MirrorSet.hotEntriesNone() ? 2 : 6, rec.report().entriesUnmatched(), rec.report().toString());
        assertEquals(compared, rec.report().bytesCompared(), "exactly the answered writes since the last batch");
        assertEquals(0, rec.report().bytesCopied(), "the legs agree on them: " + rec.report());
        for (MirrorSet.LegStatus l : r.mirror().status()) {
            assertEquals(compared, l.bytesCompared(), "mirror status: bytes compared on leg " + l.leg());
            assertEquals(0, l.bytesCopiedIn(), "mirror status: bytes copied into leg " + l.leg());
        }
        try (BlockDevice.Session s = r.openSession()) {
            for (int i = 0; i < 5; i++) {
                assertArrayEquals(TestVolumes.pattern(20 + i, BS), TestVolumes.read(r, s, i * 4L * BS, BS));
            }
        }
        r.close();
        assertLegsIdentical();
    }

    @FunctionalInterface
    private interface IoHook {
        void run() throws IOException;
    }
}

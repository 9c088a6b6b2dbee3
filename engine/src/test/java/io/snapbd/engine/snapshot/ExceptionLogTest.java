package io.snapbd.engine.snapshot;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.util.Arrays;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.UUID;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

class ExceptionLogTest {

    @TempDir
    Path tmp;

    private final UUID owner = UUID.randomUUID();

    private static void append(ExceptionLog log, long snap, long block, int chunk) {
        log.append(snap, block, chunk);
    }

    private List<ExceptionLog.Entry> read(Path p) throws IOException {
        List<ExceptionLog.Entry> out = new ArrayList<>();
        ExceptionLog.open(p, owner, (s, b, c) -> out.add(new ExceptionLog.Entry(s, b, c)), new ExceptionLog.Scan(), false).close();
        return out;
    }

    @Test
    void appendsStayInMemoryUntilForcedThenReachTheFileInOrder() throws IOException {
        Path p = tmp.resolve("exceptions.log");
        try (ExceptionLog log = ExceptionLog.create(p, owner)) {
            for (int i = 0; i < 5000; i++) {       // more than the initial buffer holds
                append(log, 1, i, i);
            }
            assertEquals(5000, log.records());
            assertEquals(ExceptionLog.HEADER_BYTES, Files.size(p));   // no write on the appender's path
            log.force();
            assertEquals(5000, log.records());
            append(log, 2, 7, 5000);
            log.force();
        }
        List<ExceptionLog.Entry> e = read(p);
        assertEquals(5001, e.size());
        for (int i = 0; i < 5000; i++) {
            assertEquals(new ExceptionLog.Entry(1, i, i), e.get(i));
        }
        assertEquals(new ExceptionLog.Entry(2, 7, 5000), e.get(5000));
    }

    @Test
    void appendsContinueAfterReopen() throws IOException {
        Path p = tmp.resolve("exceptions.log");
        try (ExceptionLog log = ExceptionLog.create(p, owner)) {
            append(log, 1, 1, 1);
            log.force();
        }
        try (ExceptionLog log = ExceptionLog.open(p, owner, (s, b, c) -> { }, new ExceptionLog.Scan(), true)) {
            append(log, 1, 2, 2);
            log.force();
        }
        assertEquals(List.of(new ExceptionLog.Entry(1, 1, 1), new ExceptionLog.Entry(1, 2, 2)), read(p));
    }

    @Test
    void aRewriteReplacesRecordsStillBuffered() throws IOException {
        Path p = tmp.resolve("exceptions.log");
        try (ExceptionLog log = ExceptionLog.create(p, owner)) {
            append(log, 1, 1, 1);
            log.force();
            append(log, 1, 2, 2);       // buffered: its entry was, say, freed by a delete
            log.rewrite(List.of(new ExceptionLog.Entry(1, 1, 1)));
            log.force();                // must not bring the stale record back
            append(log, 3, 4, 5);
            log.force();
        }
        assertEquals(List.of(new ExceptionLog.Entry(1, 1, 1), new ExceptionLog.Entry(3, 4, 5)), read(p));
    }

    private static final int R = ExceptionLog.RECORD_BYTES;
    private static final int H = ExceptionLog.HEADER_BYTES;

    private static List<ExceptionLog.Entry> batch(long snap, long first, int n) {
        List<ExceptionLog.Entry> out = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            out.add(new ExceptionLog.Entry(snap, first + i, (int) (first + i)));
        }
        return out;
    }

    private static void appendAll(ExceptionLog log, List<ExceptionLog.Entry> es) {
        for (ExceptionLog.Entry e : es) {
            append(log, e.snapshot(), e.block(), e.chunk());
        }
    }

    private List<ExceptionLog.Entry> open(Path p, ExceptionLog.Scan scan, boolean repair, List<ExceptionLog.Entry> appendAfter)
            throws IOException {
        List<ExceptionLog.Entry> out = new ArrayList<>();
        try (ExceptionLog log = ExceptionLog.open(p, owner, (s, b, c) -> out.add(new ExceptionLog.Entry(s, b, c)), scan, repair)) {
            if (appendAfter != null) {
                appendAll(log, appendAfter);
                log.force();
            }
        }
        return out;
    }

    /**
     * Crash points inside a copy-on-write force: two batches forced, a third written to the page cache but not
     * forced when the "crash" comes. Every way the third batch can reach the disk (cut at any byte, or with any
     * 512-byte sector of it lost while later ones arrived) is a torn tail: cut off at open, not reported as
     * damage, the forced batches intact; appends continue and the next open finds a clean log.
     */
    @Test
    void aTornTailAtAnyCrashPointIsCutOffAndNotReportedAsDamage() throws IOException {
        Path p = tmp.resolve("exceptions.log");
        List<ExceptionLog.Entry> b1 = batch(1, 0, 10);
        List<ExceptionLog.Entry> b2 = batch(1, 10, 10);
        List<ExceptionLog.Entry> b3 = batch(2, 100, 70);
        try (ExceptionLog log = ExceptionLog.create(p, owner)) {
            appendAll(log, b1);
            log.force();
            appendAll(log, b2);
            log.force();
            appendAll(log, b3);
            log.writeBuffered();            // in the page cache, the force never returned
        }
        byte[] image = Files.readAllBytes(p);
        long start = H + 20L * R;
        long end = start + 70L * R;
        List<long[]> crashes = new ArrayList<>();    // {zero from, zero to}
        for (long c = start; c <= end; c += 24) {
            crashes.add(new long[]{c, end});          // the write stopped at byte c
        }
        for (long sector = start & ~511L; sector < end; sector += 512) {
            crashes.add(new long[]{Math.max(sector, start), Math.min(sector + 512, end)});   // one sector lost
        }
        Path q = tmp.resolve("crashed.log");
        for (long[] c : crashes) {
            byte[] img = image.clone();
            Arrays.fill(img, (int) c[0], (int) c[1], (byte) 0);
            Files.write(q, img);
            int kept = (int) ((c[0] - start) / R);     // whole records of the third batch before the first lost byte
            if (c[1] == end && (c[1] - c[0]) % R == 0 && c[0] == end) {
                kept = 70;
            }
            ExceptionLog.Scan scan = new ExceptionLog.Scan();
            List<ExceptionLog.Entry> got = open(q, scan, true, batch(3, 500, 3));
            String what = "crash zeroing bytes " + c[0] + " … " + c[1];
            assertEquals(0, scan.damaged, what + ": reported as damage");
            List<ExceptionLog.Entry> expected = new ArrayList<>(b1);
            expected.addAll(b2);
            expected.addAll(b3.subList(0, kept));
            assertEquals(expected, got, what);
            ExceptionLog.Scan again = new ExceptionLog.Scan();
            List<ExceptionLog.Entry> after = open(q, again, false, null);
            expected.addAll(batch(3, 500, 3));
            assertEquals(expected, after, what + ": appends after the repair");
            assertEquals(0, again.damaged, what);
            assertEquals(0, again.torn, what + ": the torn tail was cut off in place");
        }
    }

    /**
     * Damage below the commit point: any byte of any forced record, or a forced record zeroed, is damage with
     * the snapshots it may belong to; never a torn record silently skipped, and never a wrong entry returned.
     */
    @Test
    void damageToAForcedRecordIsReportedNotSkipped() throws IOException {
        Path p = tmp.resolve("exceptions.log");
        List<ExceptionLog.Entry> all = new ArrayList<>(batch(1, 0, 10));
        all.addAll(batch(2, 10, 10));
        try (ExceptionLog log = ExceptionLog.create(p, owner)) {
            appendAll(log, all.subList(0, 10));
            log.force();
            appendAll(log, all.subList(10, 20));
            log.force();
            log.commitPoint(2);             // a clean close
        }
        byte[] image = Files.readAllBytes(p);
        Path q = tmp.resolve("damaged.log");
        for (int slot = 0; slot < 20; slot++) {
            for (int off : new int[]{0, 4, 9, 17, 25, 33, 41, 45, 50, 61}) {
                byte[] img = image.clone();
                img[H + slot * R + off] ^= 0x5a;
                Files.write(q, img);
                ExceptionLog.Scan scan = new ExceptionLog.Scan();
                List<ExceptionLog.Entry> got = open(q, scan, false, null);
                String what = "byte " + (H + slot * R + off) + " (record " + slot + " +" + off + ")";
                assertEquals(1, scan.damaged, what);
                assertEquals(H + (long) slot * R, scan.firstDamagedOffset, what);
                assertTrue(scan.damageBound >= all.get(slot).snapshot(), what + ": bound " + scan.damageBound);
                List<ExceptionLog.Entry> expected = new ArrayList<>(all);
                expected.remove(slot);
                assertEquals(expected, got, what);
            }
            byte[] img = image.clone();
            Arrays.fill(img, H + slot * R, H + slot * R + R, (byte) 0);
            Files.write(q, img);
            ExceptionLog.Scan scan = new ExceptionLog.Scan();
            open(q, scan, false, null);
            assertEquals(1, scan.damaged, "record " + slot + " zeroed");
        }
        // The commit record carries no entry, but the commit stamp says it was durable and an unreadable record
        // cannot tell what it held: damage (every entry still read). Without the stamp (a log written before
        // stamps) it reads as a torn tail, as it did then.
        byte[] img = image.clone();
        img[H + 20 * R + 30] ^= 0x5a;
        Files.write(q, img);
        ExceptionLog.Scan scan = new ExceptionLog.Scan();
        assertEquals(all, open(q, scan, false, null));
        assertEquals(1, scan.damaged);
        Arrays.fill(img, ExceptionLog.STAMP_OFFSET, ExceptionLog.STAMP_OFFSET + 20, (byte) 0);
        Files.write(q, img);
        scan = new ExceptionLog.Scan();
        assertEquals(all, open(q, scan, false, null));
        assertEquals(0, scan.damaged);
        assertEquals(1, scan.torn);
    }

    /** A rewritten log is durable as a whole before it is visible: damage to its last record is damage too. */
    @Test
    void aRewrittenLogIsCommittedAsAWhole() throws IOException {
        Path p = tmp.resolve("exceptions.log");
        try (ExceptionLog log = ExceptionLog.create(p, owner)) {
            log.rewrite(batch(4, 0, 5));
        }
        TestFiles.flip(p, H + 4L * R + 20);
        ExceptionLog.Scan scan = new ExceptionLog.Scan();
        assertEquals(batch(4, 0, 4), open(p, scan, false, null));
        assertEquals(1, scan.damaged);
        assertTrue(scan.damageBound >= 4, "no record after it bounds it: any snapshot may have lost it");
    }

    private static final class TestFiles {
        static void flip(Path file, long pos) throws IOException {
            byte[] b = Files.readAllBytes(file);
            b[(int) pos] ^= 0x5a;
            Files.write(file, b);
        }
    }
}

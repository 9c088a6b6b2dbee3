package io.snapbd.engine.mirror;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.UUID;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

/**
 * Single crash scenarios of reconciliation on two file-backed legs, one per rule (docs/glossary.md: Symantec
 * behaviours 16, 17, 21–23; docs/mirrors.md "Reconciliation"), each with the exact bytes and the report.
 */
class ReconcilerTest {

    static final int SIZE = 32 * 1024;

    @TempDir
    Path dir;

    private final UUID owner = UUID.randomUUID();
    private final List<TagTable> tables = new ArrayList<>();
    private final List<LegIo> legs = new ArrayList<>();

    @BeforeEach
    void legs() throws IOException {
        for (int i = 0; i < 2; i++) {
            Path lf = dir.resolve("leg-" + i + ".img");
            Files.write(lf, new byte[SIZE]);
            legs.add(new FileLegIo(lf));
            tables.add(TagTable.create(FileTagStore.create(dir.resolve("leg-" + i + ".tags"), TagTable.areaBytes(64)), owner, i, 64));
        }
    }

    @AfterEach
    void close() throws IOException {
        for (TagTable t : tables) {
            t.close();
        }
        for (LegIo l : legs) {
            l.close();
        }
    }

    private static byte[] fill(int len, int v) {
        byte[] b = new byte[len];
        Arrays.fill(b, (byte) v);
        return b;
    }

    private void data(int leg, long off, byte[] b) throws IOException {
        legs.get(leg).write(ByteBuffer.wrap(b), off);
    }

    private byte[] leg(int i) throws IOException {
        return Files.readAllBytes(dir.resolve("leg-" + i + ".img"));
    }

    /** Symantec behaviour 21: crash after leg 0's entry and data, before leg 1's: leg 1 gets leg 0's new data. */
    @Test
    void symantec21_crashBetweenLegsRollsForward() throws IOException {
        tables.get(0).record(1, 4096, 8192);
        data(0, 4096, fill(8192, 7));
        Reconciler.Report r = Reconciler.reconcile(tables, legs);
        assertArrayEquals(leg(0), leg(1));
        assertEquals(7, leg(1)[4096 + 8191]);
        assertEquals(List.of(new Reconciler.Copy(1, 4096, 8192, 0, 2)), r.copies());
        assertEquals(8192, r.bytesCopied());
        assertEquals(8192, r.bytes(0, 1));
        assertEquals(List.of(), tables.get(0).live());
    }

    /** Symantec behaviour 22: crash before any leg got an entry: nothing copied. */
    @Test
    void symantec22_crashBeforeAnyLegCopiesNothing() throws IOException {
        Reconciler.Report r = Reconciler.reconcile(tables, legs);
        assertEquals(0, r.bytesCopied() + r.entriesMatched() + r.entriesUnmatched());
    }

    /** Symantec behaviours 16 and 23: every leg completed (DONE) but the batch was not retired: matched, no data moves. */
    @Test
    void symantec16_23_completedOnEveryLegMatchesAndCopiesNothing() throws IOException {
        for (int i = 0; i < 2; i++) {
            tables.get(i).record(9, 0, 4096);
            data(i, 0, fill(4096, 3));
            tables.get(i).markDone(new long[]{9}, 1);
        }
        Reconciler.Report r = Reconciler.reconcile(tables, legs);
        assertEquals(1, r.entriesMatched());
        assertEquals(0, r.bytesCopied());
        assertEquals(List.of(), tables.get(1).live());
    }

    /**
     * Entry first makes an entry mean "the data may be there", not "it is": an entry on every leg with the data on
     * one leg only (crash between entry and data on leg 1) is not a match; it is copied from leg 0.
     */
    @Test
    void symantec17_entryOnEveryLegButDataOnOneIsCopiedNotMatched() throws IOException {
        tables.get(0).record(4, 0, 4096);
        tables.get(1).record(4, 0, 4096);
        data(0, 0, fill(4096, 5));
        Reconciler.Report r = Reconciler.reconcile(tables, legs);
        assertEquals(0, r.entriesMatched());
        assertArrayEquals(leg(0), leg(1));
        assertEquals(5, leg(1)[0]);
        assertEquals(4096, r.bytesCopied());
    }

    /** The copy comes from a leg where the entry is DONE (its data durable there), whatever its number. */
    @Test
    void symantec17_sourceIsALegWhereTheEntryIsDone() throws IOException {
        tables.get(0).record(4, 0, 4096);
        tables.get(1).record(4, 0, 4096);
        data(1, 0, fill(4096, 6));
        tables.get(1).markDone(new long[]{4}, 1);
        Reconciler.Report r = Reconciler.reconcile(tables, legs);
        assertEquals(6, leg(0)[100]);
        assertEquals(4096, r.bytes(1, 0));
    }

    /**
     * Overlapping unmatched entries held by different legs: the higher tag wins where they overlap. Tag 5 covers
     * [0, 8K) on leg 0 only, tag 7 covers [4K, 12K) on leg 1 only: afterwards both legs hold tag 5's bytes in
     * [0, 4K) and tag 7's in [4K, 12K). (Copying whole entries in tag order would carry tag 5's bytes over tag 7's.)
     */
    @Test
    void overlappingUnmatchedEntriesHigherTagWins() throws IOException {
        tables.get(0).record(5, 0, 8192);
        data(0, 0, fill(8192, 5));
        tables.get(1).record(7, 4096, 8192);
        data(1, 4096, fill(8192, 7));
        Reconciler.Report r = Reconciler.reconcile(tables, legs);
        byte[] a = leg(0);
        assertArrayEquals(a, leg(1));
        assertEquals(5, a[0]);
        assertEquals(5, a[4095]);
        assertEquals(7, a[4096]);
        assertEquals(7, a[8191]);
        assertEquals(7, a[12287]);
        assertEquals(0, a[12288]);
        assertEquals(12288, r.bytesCopied(), "only the two ranges, each byte once: " + r.copies());
        assertEquals(List.of(new Reconciler.Copy(5, 0, 4096, 0, 2), new Reconciler.Copy(7, 4096, 8192, 1, 1)), r.copies());
    }

    /**
     * Degraded mode (docs/mirrors.md): leg 1 is stale. Its own DONE entry (a write retired on leg 0 whose RETIRE it
     * missed) is copied from leg 0, never from leg 1, though leg 1 is the only holder: leg 0 has newer data there
     * (a write folded into leg 1's region map). The map's range is copied from leg 0 too, below the entries.
     */
    @Test
    void degradedLegIsNeverASourceAndItsMissedRangesComeFromTheCurrentLeg() throws IOException {
        tables.get(1).record(5, 0, 4096);
        tables.get(1).markDone(new long[]{5}, 1);
        data(1, 0, fill(4096, 1));           // old data on the stale leg
        data(0, 0, fill(4096, 9));           // newer data on leg 0, recorded only in leg 1's region map
        data(0, 16384, fill(8192, 3));
        Reconciler.Report r = Reconciler.reconcile(tables, legs, new boolean[]{false, true},
                List.of(new long[]{0, 4096}, new long[]{16384, 8192}), Reconciler.Progress.NONE);
        assertArrayEquals(leg(0), leg(1));
        assertEquals(9, leg(1)[0], "the stale leg's entry did not overwrite the current leg");
        for (Reconciler.Copy c : r.copies()) {
            assertEquals(0, c.from(), c.toString());
        }
        assertEquals(4096 + 8192, r.bytesCopied(), "the entry's range wins over the overlapping map range, copied once");
        assertEquals(List.of(), tables.get(1).live());
    }

    /**
     * Compare before copy (docs/mirrors.md, "Reconciliation"): unmatched entries (not DONE, as a crash leaves the
     * changes answered since the last data-force batch in the {@code written} order) whose ranges hold the same
     * bytes on both legs (the page cache kept them after a process crash) copy nothing: every byte is compared,
     * none copied, and the entries are retired.
     */
    @Test
    void unmatchedEntriesWhoseRangesAreIdenticalOnTheLegsCopyNothing() throws IOException {
        long compared = 0;
        for (int t = 1; t <= 5; t++) {
            long off = t * 4096L + (t % 2) * 100;          // some unaligned, none overlapping
            int len = 3000 + t * 100;
            for (int i = 0; i < 2; i++) {
                tables.get(i).record(t, off, len);
                data(i, off, fill(len, 10 + t));
            }
            compared += len;
        }
        Reconciler.Report r = Reconciler.reconcile(tables, legs);
        assertEquals(5, r.entriesUnmatched());
        assertEquals(0, r.bytesCopied(), r.toString());
        assertEquals(0, r.rangesCopied(), r.toString());
        assertEquals(compared, r.bytesCompared(), r.toString());
        assertEquals(List.of(), r.copies());
        assertArrayEquals(leg(0), leg(1));
        assertEquals(List.of(), tables.get(0).live());
        assertEquals(List.of(), tables.get(1).live());
    }

    /**
     * Compare before copy, block by block: of an unmatched 16 KiB range, only the 4 KiB block where leg 1 differs
     * from leg 0 (the entry's source) is copied, into leg 1; the other blocks are compared and left alone.
     */
    @Test
    void onlyTheBlocksThatDifferAreCopied() throws IOException {
        tables.get(0).record(3, 8192, 16384);
        tables.get(1).record(3, 8192, 16384);
        byte[] d = fill(16384, 4);
        data(0, 8192, d);
        data(1, 8192, d);
        data(0, 8192 + 4096 + 10, fill(1, 9));     // leg 0's newer byte in the second block
        Reconciler.Report r = Reconciler.reconcile(tables, legs);
        assertArrayEquals(leg(0), leg(1));
        assertEquals(9, leg(1)[8192 + 4096 + 10]);
        assertEquals(16384, r.bytesCompared());
        assertEquals(4096, r.bytesCopied(), r.toString());
        assertEquals(List.of(new Reconciler.Copy(3, 8192 + 4096, 4096, 0, 2)), r.copies());
    }
}

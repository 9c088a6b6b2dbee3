package io.snapbd.engine.mirror;

import io.snapbd.engine.format.CorruptMetadataException;
import io.snapbd.engine.format.Crc32c;
import io.snapbd.engine.mirror.TagTable.Entry;
import io.snapbd.engine.mirror.TagTable.Loaded;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.BitSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.UUID;

import static io.snapbd.engine.mirror.TagTable.FLAG_DONE;
import static io.snapbd.engine.mirror.TagTable.HEADER_AREA;
import static io.snapbd.engine.mirror.TagTable.HEADER_SLOT_OFFSET;
import static io.snapbd.engine.mirror.TagTable.MAGIC;
import static io.snapbd.engine.mirror.TagTable.RECORD_BYTES;
import static io.snapbd.engine.mirror.TagTable.TAGS_PER_RECORD;
import static io.snapbd.engine.mirror.TagTable.TYPE_DONE;
import static io.snapbd.engine.mirror.TagTable.TYPE_ENTRY;
import static io.snapbd.engine.mirror.TagTable.TYPE_RETIRE;
import static io.snapbd.engine.mirror.TagTable.VERSION;

/**
 * The read-only pass over a {@link TagTable}'s area (docs/mirrors.md, "Tag table format", "Reading"): picks the
 * header copy in force, scans the active half along its checksum chain, tells a torn tail (dropped) from damage
 * below the commit point (reported), and replays ENTRY/DONE/RETIRE into the live entries. Never writes; used by
 * {@link TagTable#open}, compaction, the reconciler and fsck through {@link TagTable#read}.
 */
final class TagTableReader {

    private TagTableReader() {
    }

    static Loaded read(TagStore store) throws IOException {
        Path p = Path.of(store.describe());
        List<String> problems = new ArrayList<>();
        List<String> notes = new ArrayList<>();
        ByteBuffer h = ByteBuffer.allocate(HEADER_AREA).order(ByteOrder.LITTLE_ENDIAN);
        store.read(h, 0);
        int best = -1;
        int bestGen = -1;
        int badMagic = 0;
        boolean[] readable = new boolean[2];
        for (int s = 0; s < 2; s++) {
            int o = HEADER_SLOT_OFFSET[s];
            if (h.getLong(o) != MAGIC) {
                badMagic++;
                continue;
            }
            if (h.getInt(o + 60) != Crc32c.of(h, o, o + 60)) {
                notes.add("header copy " + s + " fails its checksum (a header write cut short by a crash, or damage)");
                continue;
            }
            readable[s] = true;
            if (h.getInt(o + 8) != VERSION) {
                throw new CorruptMetadataException(p, "unsupported tag table version " + h.getInt(o + 8));
            }
            int g = h.getInt(o + 40);
            if (g > bestGen) {
                bestGen = g;
                best = s;
            }
        }
        if (best < 0) {
            throw new CorruptMetadataException(p, badMagic == 2 ? "bad magic (not a snapbd tag table)"
                    : "no header copy passes its checksum");
        }
        int o = HEADER_SLOT_OFFSET[best];
        if (h.getInt(o + 12) != RECORD_BYTES) {
            throw new CorruptMetadataException(p, "record_bytes " + h.getInt(o + 12) + ", expected " + RECORD_BYTES);
        }
        UUID owner = new UUID(h.getLong(o + 16), h.getLong(o + 24));
        int leg = h.getInt(o + 32);
        int half = h.getInt(o + 36);
        long halfRecords = h.getLong(o + 48);
        int hcrc = h.getInt(o + 60);
        if (half != 0 && half != 1) {
            throw new CorruptMetadataException(p, "active half " + half + " is not 0 or 1");
        }
        // Compared by division: areaBytes(halfRecords) overflows for a damaged huge value, which then "fitted"
        // and had the scan below read (zeros past the end) for ever.
        if (halfRecords < 2 || halfRecords > (store.size() - HEADER_AREA) / (2L * RECORD_BYTES)) {
            throw new CorruptMetadataException(p, "half_records " + halfRecords + " does not fit the area of " + store.size() + " bytes");
        }
        if (best != bestGen % 2) {
            problems.add("header generation " + bestGen + " is in copy " + best + ", expected copy " + (bestGen % 2));
        }
        if (!readable[1 - best] && appendedUnder(store, HEADER_AREA + (1 - half) * halfRecords * RECORD_BYTES, halfRecords, bestGen + 1)) {
            // Without this the table fell back to generation G silently, losing every entry, DONE and RETIRE since.
            problems.add("header copy " + (1 - best) + " is unreadable, but half " + (1 - half) + " holds records appended"
                    + " under generation " + (bestGen + 1) + ": that header was in force and is damaged (entries may be lost)");
        }

        // Scan the active half.
        long base = HEADER_AREA + half * halfRecords * RECORD_BYTES;
        int chunk = 1024;
        ByteBuffer b = ByteBuffer.allocate(chunk * RECORD_BYTES).order(ByteOrder.LITTLE_ENDIAN);
        long end = -1;              // first slot that is not a valid record continuing the chain
        long lastOfGen = -1;        // last slot holding a checksummed record of this generation
        long commit = 0;            // highest committed of any checksummed record of this generation
        int prev = hcrc;
        String firstBad = null;
        boolean endWritten = false;  // the slot at end holds bytes of this generation's writing (not zero, not stale)
        List<long[]> records = new ArrayList<>();   // {type, count, a, b, c, d, flags} for slots < end
        for (long i0 = 0; i0 < halfRecords; i0 += chunk) {
            int n = (int) Math.min(chunk, halfRecords - i0);
            b.clear().limit(n * RECORD_BYTES);
            store.read(b, base + i0 * RECORD_BYTES);
            for (int k = 0; k < n; k++) {
                long i = i0 + k;
                int r = k * RECORD_BYTES;
                boolean crcOk = b.getInt(r + 60) == Crc32c.of(b, r, r + 60);
                boolean ofGen = crcOk && b.getInt(r + 4) == bestGen && b.getLong(r + 8) == i;
                if (ofGen) {
                    lastOfGen = i;
                    commit = Math.max(commit, b.getLong(r + 16));
                }
                if (end >= 0) {
                    continue;
                }
                int type = b.getShort(r) & 0xffff;
                int count = b.getShort(r + 2) & 0xffff;
                boolean wellFormed = ofGen && b.getInt(r + 56) == prev
                        && (type == TYPE_ENTRY ? count == 1 && b.getLong(r + 32) >= 0 && b.getLong(r + 40) > 0
                        : (type == TYPE_DONE || type == TYPE_RETIRE) && count >= 1 && count <= TAGS_PER_RECORD);
                if (!wellFormed) {
                    end = i;
                    boolean stale = crcOk && b.getInt(r + 4) != bestGen;
                    endWritten = !isZero(b, r) && !stale;
                    firstBad = isZero(b, r) ? "hole" : stale ? "record of generation " + b.getInt(r + 4)
                            : crcOk ? "record out of place (slot or chain)" : "checksum mismatch";
                    continue;
                }
                prev = b.getInt(r + 60);
                records.add(new long[]{type, count, b.getLong(r + 24), b.getLong(r + 32), b.getLong(r + 40), b.getLong(r + 48)});
            }
        }
        if (end < 0) {
            end = halfRecords;
        }
        boolean torn = false;
        if (end < commit) {
            problems.add("half " + half + " slot " + end + ": " + firstBad + " below the commit point " + commit
                    + " (durable once: damage, entries may be lost)");
        } else if (endWritten || lastOfGen >= end) {
            torn = true;
            notes.add("torn tail: slots " + end + " … " + Math.max(end, lastOfGen)
                    + " were being written when the table stopped (dropped)");
        }

        // Replay.
        Map<Long, Entry> live = new LinkedHashMap<>();
        long unknownRetire = 0;
        for (long[] r : records) {
            if (r[0] == TYPE_ENTRY) {
                long tag = r[2];
                if (live.containsKey(tag)) {
                    problems.add("tag " + tag + " has two live entries");
                }
                live.put(tag, new Entry(tag, r[3], r[4], (r[5] & FLAG_DONE) != 0));
            } else {
                for (int k = 0; k < r[1]; k++) {
                    long tag = r[2 + k];
                    Entry e = live.get(tag);
                    if (e == null) {
                        unknownRetire++;
                    } else if (r[0] == TYPE_RETIRE) {
                        live.remove(tag);
                    } else {
                        live.put(tag, new Entry(tag, e.offset(), e.length(), true));
                    }
                }
            }
        }
        if (unknownRetire > 0) {
            notes.add(unknownRetire + " DONE/RETIRE tag(s) name no live entry (harmless: already retired)");
        }
        return new Loaded(owner, leg, bestGen, half, halfRecords, end,
                List.copyOf(live.values()), problems, notes, torn);
    }

    /**
     * True when the half at {@code base} shows writes made after generation {@code gen}'s header was written: a
     * valid record of {@code gen} whose lsn (its slot) is at least its {@code committed}, or anything but zeros in
     * the slot just after the compaction batch. Compaction writes its records (lsn below committed, all with
     * committed = the batch size) and zeros that slot before the header; appends come only once it is durable.
     */
    private static boolean appendedUnder(TagStore store, long base, long halfRecords, int gen) throws IOException {
        int chunk = 1024;
        ByteBuffer b = ByteBuffer.allocate(chunk * RECORD_BYTES).order(ByteOrder.LITTLE_ENDIAN);
        long batch = -1;
        BitSet nonZero = new BitSet();
        for (long i0 = 0; i0 < halfRecords; i0 += chunk) {
            int n = (int) Math.min(chunk, halfRecords - i0);
            b.clear().limit(n * RECORD_BYTES);
            store.read(b, base + i0 * RECORD_BYTES);
            for (int k = 0; k < n; k++) {
                int r = k * RECORD_BYTES;
                long lsn = b.getLong(r + 8);
                if (!isZero(b, r) && i0 + k < Integer.MAX_VALUE) {
                    nonZero.set((int) (i0 + k));
                }
                if (b.getInt(r + 4) == gen && lsn == i0 + k && b.getInt(r + 60) == Crc32c.of(b, r, r + 60)) {
                    if (lsn >= b.getLong(r + 16)) {
                        return true;
                    }
                    batch = b.getLong(r + 16);
                }
            }
        }
        return batch >= 0 && batch < halfRecords && batch < Integer.MAX_VALUE && nonZero.get((int) batch);
    }

    private static boolean isZero(ByteBuffer b, int r) {
        for (int k = 0; k < RECORD_BYTES; k += 8) {
            if (b.getLong(r + k) != 0) {
                return false;
            }
        }
        return true;
    }
}

package io.snapbd.engine.snapshot;

import io.snapbd.engine.format.AtomicFile;
import io.snapbd.engine.format.CorruptMetadataException;
import io.snapbd.engine.format.Crc32c;
import io.snapbd.engine.io.Forces;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.FileSystemException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.BitSet;
import java.util.UUID;

import static io.snapbd.engine.format.ChannelIo.readFully;
import static io.snapbd.engine.format.ChannelIo.writeFully;

/**
 * {@code exceptions.log}: the persistent block maps of all snapshots of a volume, as an append-only log of
 * 64-byte records {snapshot, block, chunk} (the role of dm-snapshot's persistent exception store). A record
 * is forced together with its save chunk before the production block may be overwritten.
 *
 * <p>Version 2 tells a crash artefact from damage: every record carries its sequence number (its index in the
 * file), the file's durable commit point when it was written ({@code committed}: every record below it had been
 * forced), and the checksum of the record before it (a chain seeded by the header). Batches are forced one after
 * another, so only records at or past the highest {@code committed} found can have been torn by a crash; a bad
 * or missing record below it was durable once and is damage. A torn tail is cut off in place at open; a log with
 * damage is never rewritten by open, so the evidence stays until the snapshots it affects are deleted.
 *
 * <p>Over 600 lines on purpose: the record format, the batched append and its retry after a full file system,
 * and the torn-tail/damage decision at open are one state machine over one file, each part relying on the
 * others' invariants about {@code committed} and the checksum chain.
 */
final class ExceptionLog implements AutoCloseable {

    static final long MAGIC = 0x474f4c5844424e53L;   // "SNBDXLOG" little-endian
    static final int VERSION = 2;
    static final int HEADER_BYTES = 4096;
    static final int RECORD_BYTES = 64;
    static final int V1_RECORD_BYTES = 32;
    static final int TYPE_COW = 1;
    /** Marks a commit point: every record before it, and itself, were durable when it was written. */
    static final int TYPE_COMMIT = 2;
    /**
     * The commit stamp in the header's reserved, uncovered bytes (docs/on-disk-format.md): {records u64, generation
     * u64, crc u32 of the 16 bytes}, written and forced after every commit point (each open and clean close). A
     * lower bound on the records that are durable: whole records lost from the end of the log (zeroed, or the file
     * cut on a record boundary) read as damage instead of as a log that ended there. Older builds ignore it.
     */
    static final int STAMP_OFFSET = 64;

    /** One block-map entry. */
    record Entry(long snapshot, long block, int chunk) {
    }

    interface EntrySink {
        void accept(long snapshot, long block, int chunk) throws IOException;
    }

    /**
     * What a scan of the log found. {@code damaged} records lie below the durable commit point: they were forced
     * once and are now unreadable (bit rot, a lost sector), so every snapshot with sequence ≤ {@code damageBound}
     * may have lost a before-image. {@code torn} slots lie past it: what a crash leaves of a batch whose force had
     * not returned; they are cut off.
     */
    static final class Scan {
        int version;
        long records;            // slots holding a valid record kept
        long damaged;            // unexplained: below the durable point
        long firstDamagedOffset = -1;
        String firstDamage;
        long damageBound = -1;   // highest snapshot sequence a damaged record may belong to
        long torn;               // slots cut off past the durable point (bad, holes or valid records after them)
        long durable;            // records known durable (the commit point)
        long cutOffset;          // byte offset where appends continue

        boolean hasDamage() {
            return damaged > 0;
        }

        String describeDamage(Path file) {
            return file.getFileName() + ": " + damaged + " record(s) written by an earlier commit are damaged (first at byte "
                    + firstDamagedOffset + ": " + firstDamage + "); before-images of snapshot(s) with sequence ≤ "
                    + damageBound + " are lost";
        }
    }

    private final Path path;
    private final UUID owner;
    private volatile FileChannel channel;
    /** Byte offset where the next buffered record goes. */
    private long end;
    /** Records appended since the last {@link #writeBuffered}; swapped with {@code spare} when written. */
    private ByteBuffer buffer = ByteBuffer.allocateDirect(64 << 10).order(ByteOrder.LITTLE_ENDIAN);
    private ByteBuffer spare = ByteBuffer.allocateDirect(64 << 10).order(ByteOrder.LITTLE_ENDIAN);
    private final Object bufferLock = new Object();
    /** Serialises file writes of buffered records with {@link #rewrite}. */
    private final Object writeLock = new Object();
    /** Bytes of the file already written (zeros ahead of {@link #end}): appends then never change the file size, so forcing them needs no metadata commit. */
    private volatile long allocated;
    static final long GROW = 1 << 20;
    // Chain state, guarded by bufferLock: sequence number of the next record, crc of the last one, commit point.
    private long nextLsn;
    private int lastCrc;
    private long durableLsn;
    /** Sequence number after the last record handed to the file by {@link #writeBuffered} (guarded by writeLock). */
    private long writtenLsn;
    private long generation;

    private ExceptionLog(Path path, UUID owner, FileChannel channel, long end) {
        this.path = path;
        this.owner = owner;
        this.channel = channel;
        this.end = end;
    }

    static ExceptionLog create(Path path, UUID owner) throws IOException {
        ByteBuffer h = header(owner, 1);
        AtomicFile.write(path, h);
        ExceptionLog log = new ExceptionLog(path, owner, FileChannel.open(path, StandardOpenOption.READ, StandardOpenOption.WRITE), HEADER_BYTES);
        log.allocated = HEADER_BYTES;
        log.generation = 1;
        log.lastCrc = h.getInt(60);
        return log;
    }

    /**
     * Scans the log and hands every valid block-map entry below the cut to {@code sink}. With {@code repair} a
     * torn tail is overwritten with zeros and the log forced, so appends continue at the cut; without it (fsck)
     * nothing is written. A version-1 log is read with its own rules (see {@link #scanV1}); the caller converts it.
     */
    static ExceptionLog open(Path path, UUID owner, EntrySink sink, Scan scan, boolean repair) throws IOException {
        FileChannel ch = FileChannel.open(path, repair ? new StandardOpenOption[]{StandardOpenOption.READ, StandardOpenOption.WRITE}
                : new StandardOpenOption[]{StandardOpenOption.READ});
        try {
            ByteBuffer h = ByteBuffer.allocate(HEADER_BYTES).order(ByteOrder.LITTLE_ENDIAN);
            readFully(ch, h, 0, path);
            int version = checkHeader(path, h, owner);
            scan.version = version;
            if (version == 1) {
                scanV1(ch, path, sink, scan);
                return new ExceptionLog(path, owner, ch, -1);     // read only: the caller rewrites it as version 2
            }
            long size = ch.size();
            long slots = (size - HEADER_BYTES) / RECORD_BYTES;
            int headerCrc = h.getInt(60);
            // Pass 1: the commit point, the last used slot, the damaged and torn slots.
            long durable = 0;
            long lastUsed = 0;
            ByteBuffer buf = ByteBuffer.allocate(RECORD_BYTES * 1024).order(ByteOrder.LITTLE_ENDIAN);
            BitSet bad = new BitSet();
            int prev = headerCrc;
            boolean prevValid = true;
            for (long base = 0; base < slots; base += 1024) {
                int n = (int) Math.min(1024, slots - base);
                buf.clear().limit(n * RECORD_BYTES);
                readFully(ch, buf, HEADER_BYTES + base * RECORD_BYTES, path);
                for (int i = 0; i < n; i++) {
                    long slot = base + i;
                    int o = i * RECORD_BYTES;
                    if (isZero(buf, o)) {
                        bad.set((int) slot);
                        prevValid = false;
                        continue;
                    }
                    lastUsed = slot + 1;
                    String problem = validate(buf, o, slot, prevValid, prev);
                    if (problem != null) {
                        bad.set((int) slot);
                        prevValid = false;
                        continue;
                    }
                    prev = buf.getInt(o + 60);
                    prevValid = true;
                    durable = Math.max(durable, buf.getLong(o + 16));
                }
            }
            // Pass 2: damage below the commit point, the cut past it, the entries below the cut.
            durable = Math.min(durable, lastUsed);
            long stamped = stamp(h);
            durable = Math.max(durable, Math.min(stamped, lastUsed));   // durable once: a bad slot below is damage
            long cut = lastUsed;
            int firstTorn = bad.nextSetBit((int) durable);
            if (firstTorn >= 0 && firstTorn < lastUsed) {
                cut = firstTorn;
            }
            scan.durable = durable;
            scan.cutOffset = HEADER_BYTES + cut * RECORD_BYTES;
            scan.torn = lastUsed - cut;
            // Walk backwards so each damaged slot knows the snapshot of the nearest valid record after it: records
            // are appended in non-decreasing snapshot order (the tail only leaves the queue through a rewrite), so
            // a damaged record belongs to that snapshot or an older one.
            long nextSeq = -1;
            long[] bound = {-1};
            int firstBad = bad.nextSetBit(0);
            boolean damage = firstBad >= 0 && firstBad < cut;     // else no need to read the log a second time
            for (long base = ((lastUsed - 1) / 1024) * 1024; damage && base >= 0; base -= 1024) {
                int n = (int) Math.min(1024, lastUsed - base);
                buf.clear().limit(n * RECORD_BYTES);
                readFully(ch, buf, HEADER_BYTES + base * RECORD_BYTES, path);
                for (int i = n - 1; i >= 0; i--) {
                    long slot = base + i;
                    if (slot >= cut) {
                        continue;
                    }
                    if (bad.get((int) slot)) {
                        scan.damaged++;
                        scan.firstDamagedOffset = HEADER_BYTES + slot * RECORD_BYTES;
                        bound[0] = nextSeq < 0 ? Long.MAX_VALUE : Math.max(bound[0], nextSeq);
                        continue;
                    }
                    nextSeq = buf.getLong(i * RECORD_BYTES + 24);
                }
            }
            if (scan.damaged > 0) {
                long first = (scan.firstDamagedOffset - HEADER_BYTES) / RECORD_BYTES;
                scan.firstDamage = describeSlot(ch, path, first, headerCrc);
                scan.damageBound = bound[0] < 0 ? Long.MAX_VALUE : bound[0];
            }
            if ((size - HEADER_BYTES) % RECORD_BYTES != 0) {
                // Records are written whole and the file grows by whole records (zeros): one that ends inside a
                // record was cut short (truncated), and records after the cut may have been durable. Reading it as
                // a log that simply ended there served snapshots without their before-images.
                if (scan.damaged == 0) {
                    scan.firstDamagedOffset = HEADER_BYTES + slots * RECORD_BYTES;
                    scan.firstDamage = "the file ends " + (size - scan.firstDamagedOffset) + " bytes into a record: it was "
                            + "truncated, records after the cut are lost";
                }
                scan.damaged++;
                scan.damageBound = Long.MAX_VALUE;
            }
            if (stamped > lastUsed) {
                // The stamp says these records were durable; they are gone (zeroed, or the file cut on a record
                // boundary). Reading it as a log that ended there would serve snapshots without before-images.
                if (scan.damaged == 0) {
                    scan.firstDamagedOffset = HEADER_BYTES + lastUsed * RECORD_BYTES;
                    scan.firstDamage = (stamped - lastUsed) + " record(s) missing from the end: the commit stamp says "
                            + stamped + " were durable, " + lastUsed + " are there (zeroed, or the file truncated)";
                }
                scan.damaged += stamped - lastUsed;
                scan.damageBound = Long.MAX_VALUE;
            }
            // Entries, in file order.
            for (long base = 0; base < cut; base += 1024) {
                int n = (int) Math.min(1024, cut - base);
                buf.clear().limit(n * RECORD_BYTES);
                readFully(ch, buf, HEADER_BYTES + base * RECORD_BYTES, path);
                for (int i = 0; i < n; i++) {
                    int o = i * RECORD_BYTES;
                    if (bad.get((int) (base + i))) {
                        continue;
                    }
                    scan.records++;
                    if (buf.getInt(o) == TYPE_COW) {
                        sink.accept(buf.getLong(o + 24), buf.getLong(o + 32), buf.getInt(o + 40));
                    }
                }
            }
            ExceptionLog log = new ExceptionLog(path, owner, ch, HEADER_BYTES + cut * RECORD_BYTES);
            log.allocated = size;
            log.generation = h.getLong(40);
            log.nextLsn = cut;
            log.writtenLsn = cut;
            log.lastCrc = lastCrcBefore(ch, path, cut, headerCrc);
            if (repair) {
                if (cut < lastUsed) {
                    ByteBuffer zeros = ByteBuffer.allocate(64 << 10);
                    long from = HEADER_BYTES + cut * RECORD_BYTES;
                    long to = HEADER_BYTES + lastUsed * RECORD_BYTES;
                    for (long p = from; p < to; p += zeros.capacity()) {
                        zeros.clear().limit((int) Math.min(zeros.capacity(), to - p));
                        writeFully(ch, zeros, p);
                    }
                }
                Forces.forcing(path);
                ch.force(false);       // what was read is durable now: later records may say so
                log.durableLsn = cut;
            }
            return log;
        } catch (IOException | RuntimeException e) {
            ch.close();
            throw e;
        }
    }

    private static boolean isZero(ByteBuffer b, int o) {
        for (int i = 0; i < RECORD_BYTES; i += 8) {
            if (b.getLong(o + i) != 0) {
                return false;
            }
        }
        return true;
    }

    /** Null if the record in {@code b} at {@code o} is valid in slot {@code slot}, else what is wrong with it. */
    private static String validate(ByteBuffer b, int o, long slot, boolean prevValid, int prevCrc) {
        if (b.getInt(o + 60) != Crc32c.of(b, o, o + 60)) {
            return "checksum mismatch";
        }
        int type = b.getInt(o);
        if (type != TYPE_COW && type != TYPE_COMMIT) {
            return "unknown record type " + type;
        }
        if (b.getLong(o + 8) != slot) {
            return "sequence number " + b.getLong(o + 8) + " in slot " + slot;
        }
        if (prevValid && b.getInt(o + 44) != prevCrc) {
            return "does not chain to the record before it";
        }
        return null;
    }

    private static String describeSlot(FileChannel ch, Path path, long slot, int headerCrc) throws IOException {
        ByteBuffer r = ByteBuffer.allocate(RECORD_BYTES).order(ByteOrder.LITTLE_ENDIAN);
        readFully(ch, r, HEADER_BYTES + slot * RECORD_BYTES, path);
        if (isZero(r, 0)) {
            return "zeroed";
        }
        int prev = slot == 0 ? headerCrc : 0;
        boolean prevKnown = slot == 0;
        if (slot > 0) {
            ByteBuffer p = ByteBuffer.allocate(RECORD_BYTES).order(ByteOrder.LITTLE_ENDIAN);
            readFully(ch, p, HEADER_BYTES + (slot - 1) * RECORD_BYTES, path);
            prev = p.getInt(60);
            prevKnown = true;
        }
        String s = validate(r, 0, slot, prevKnown, prev);
        return s == null ? "unreadable" : s;
    }

    private static int lastCrcBefore(FileChannel ch, Path path, long cut, int headerCrc) throws IOException {
        if (cut == 0) {
            return headerCrc;
        }
        ByteBuffer r = ByteBuffer.allocate(RECORD_BYTES).order(ByteOrder.LITTLE_ENDIAN);
        readFully(ch, r, HEADER_BYTES + (cut - 1) * RECORD_BYTES, path);
        return r.getInt(60);
    }

    /**
     * Version 1 (32-byte records with a CRC each, no sequence or commit point): a bad record cannot be told from a
     * torn one. The previous release rewrote the log at every open that found one, so a bad record in a version-1
     * log is most likely damage; it is reported as damage (bound: the highest snapshot of the valid records after
     * it), never skipped silently. Holes (all zero) are skipped.
     */
    private static void scanV1(FileChannel ch, Path path, EntrySink sink, Scan scan) throws IOException {
        long size = ch.size();
        long slots = (size - HEADER_BYTES) / V1_RECORD_BYTES;
        ByteBuffer buf = ByteBuffer.allocate(V1_RECORD_BYTES * 2048).order(ByteOrder.LITTLE_ENDIAN);
        long bound = -1;
        boolean pending = false;          // a damaged record not yet followed by a valid one
        for (long base = 0; base < slots; base += 2048) {
            int n = (int) Math.min(2048, slots - base);
            buf.clear().limit(n * V1_RECORD_BYTES);
            readFully(ch, buf, HEADER_BYTES + base * V1_RECORD_BYTES, path);
            for (int i = 0; i < n; i++) {
                int o = i * V1_RECORD_BYTES;
                int type = buf.getInt(o);
                if (type == 0 && buf.getLong(o + 8) == 0 && buf.getLong(o + 16) == 0 && buf.getInt(o + 28) == 0) {
                    continue;
                }
                if (type != TYPE_COW || buf.getInt(o + 28) != Crc32c.of(buf, o, o + 28)) {
                    if (scan.damaged++ == 0) {
                        scan.firstDamagedOffset = HEADER_BYTES + (base + i) * V1_RECORD_BYTES;
                    }
                    pending = true;
                    continue;
                }
                long seq = buf.getLong(o + 8);
                if (pending) {
                    bound = Math.max(bound, seq);
                    pending = false;
                }
                scan.records++;
                sink.accept(seq, buf.getLong(o + 16), buf.getInt(o + 24));
            }
        }
        if (scan.damaged > 0) {
            scan.firstDamage = "version-1 record fails its checksum (version 1 cannot tell a torn record from damage)";
            // Records were appended in snapshot order, so a damaged one belongs to the snapshot of the next valid
            // record or an older one; with none after it, it may belong to any snapshot.
            scan.damageBound = pending ? Long.MAX_VALUE : bound;
        }
    }

    private static ByteBuffer header(UUID owner, long generation) {
        ByteBuffer h = ByteBuffer.allocate(HEADER_BYTES).order(ByteOrder.LITTLE_ENDIAN);
        h.putLong(0, MAGIC).putInt(8, VERSION).putInt(12, HEADER_BYTES).putInt(16, RECORD_BYTES)
                .putLong(24, owner.getMostSignificantBits()).putLong(32, owner.getLeastSignificantBits())
                .putLong(40, generation);
        h.putInt(60, Crc32c.of(h, 0, 60));
        return h;
    }

    /** Checks the header and returns its version (1 or 2). */
    private static int checkHeader(Path path, ByteBuffer h, UUID owner) throws CorruptMetadataException {
        if (h.getLong(0) != MAGIC) {
            throw new CorruptMetadataException(path, "bad magic (not a snapbd exception log)");
        }
        if (h.getInt(60) != Crc32c.of(h, 0, 60)) {
            throw new CorruptMetadataException(path, "header checksum mismatch");
        }
        int version = h.getInt(8);
        if (version != VERSION && version != 1) {
            throw new CorruptMetadataException(path, "unsupported version " + version + " (this build reads 1 and 2)");
        }
        int recordBytes = version == 1 ? V1_RECORD_BYTES : RECORD_BYTES;
        if (h.getInt(16) != recordBytes) {
            throw new CorruptMetadataException(path, "record size " + h.getInt(16) + ", expected " + recordBytes);
        }
        UUID stored = new UUID(h.getLong(24), h.getLong(32));
        if (!stored.equals(owner)) {
            throw new CorruptMetadataException(path, "belongs to " + stored + ", not " + owner);
        }
        return version;
    }

    /** Encodes a record of {@code type} into {@code out} at its position; returns its crc. */
    private static int encode(ByteBuffer out, int at, int type, long lsn, long committed, long snapshot, long block, int chunk,
                              int prevCrc) {
        out.putInt(at, type).putInt(at + 4, 0).putLong(at + 8, lsn).putLong(at + 16, committed)
                .putLong(at + 24, snapshot).putLong(at + 32, block).putInt(at + 40, chunk).putInt(at + 44, prevCrc)
                .putLong(at + 48, 0).putInt(at + 56, 0);
        int crc = Crc32c.of(out, at, at + 60);
        out.putInt(at + 60, crc);
        return crc;
    }

    /**
     * Appends a record to the in-memory tail of the log: no system call on the writer's path. The records reach
     * the file at the next {@link #writeBuffered} (done by {@link #force}), in one write. Nothing may depend on a
     * record before {@link #force} returns, so keeping it in memory until then loses nothing a crash could not
     * lose anyway.
     */
    void append(long snapshot, long block, int chunk) {
        appendRecord(TYPE_COW, snapshot, block, chunk);
    }

    private void appendRecord(int type, long snapshot, long block, int chunk) {
        synchronized (bufferLock) {
            if (buffer.remaining() < RECORD_BYTES) {
                ByteBuffer bigger = ByteBuffer.allocateDirect(buffer.capacity() * 2).order(ByteOrder.LITTLE_ENDIAN);
                buffer.flip();
                bigger.put(buffer);
                buffer = bigger;
            }
            int at = buffer.position();
            long lsn = nextLsn++;
            long committed = type == TYPE_COMMIT ? lsn + 1 : durableLsn;
            lastCrc = encode(buffer, at, type, lsn, committed, snapshot, block, chunk, lastCrc);
            buffer.position(at + RECORD_BYTES);
        }
    }

    /**
     * Makes everything durable and then appends and forces a commit record: every record before it is known
     * durable from now on, so damage to any of them is reported as damage, not as a torn tail. {@code tail}: the
     * sequence of the youngest snapshot (recorded so a damaged record before it is bounded).
     */
    void commitPoint(long tail) throws IOException {
        force();
        appendRecord(TYPE_COMMIT, tail, 0, 0);
        force();
        long records;
        synchronized (bufferLock) {
            records = durableLsn;
        }
        ByteBuffer st = ByteBuffer.allocate(20).order(ByteOrder.LITTLE_ENDIAN);
        st.putLong(0, records).putLong(8, generation).putInt(16, Crc32c.of(st, 0, 16));
        synchronized (writeLock) {
            writeFully(channel, st, STAMP_OFFSET);
            Forces.forcing(path);
            channel.force(false);
        }
    }

    /** The records the header's commit stamp says are durable; 0 without a valid stamp of this generation. */
    private static long stamp(ByteBuffer h) {
        long records = h.getLong(STAMP_OFFSET);
        if (h.getInt(STAMP_OFFSET + 16) != Crc32c.of(h, STAMP_OFFSET, STAMP_OFFSET + 16)
                || h.getLong(STAMP_OFFSET + 8) != h.getLong(40) || records < 0) {
            return 0;       // none (a log written before stamps, or rewritten since), or unreadable: no bound
        }
        return records;
    }

    /** Records appended and not yet written to the file. */
    int buffered() {
        synchronized (bufferLock) {
            return buffer.position() / RECORD_BYTES;
        }
    }

    /** Writes the records appended so far to the file (page cache), in one positional write. */
    void writeBuffered() throws IOException {
        synchronized (writeLock) {
            ByteBuffer out;
            long upTo;
            synchronized (bufferLock) {
                if (buffer.position() == 0) {
                    return;
                }
                out = buffer;
                upTo = nextLsn;
                buffer = spare.capacity() >= out.capacity() ? spare : ByteBuffer.allocateDirect(out.capacity()).order(ByteOrder.LITTLE_ENDIAN);
                buffer.clear();
                spare = out;
            }
            out.flip();
            long pos = end;
            long needed = pos + out.remaining();
            if (needed > allocated) {
                try {
                    grow(needed);
                } catch (IOException e) {
                    putBack(out);
                    throw e;
                }
            }
            while (out.hasRemaining()) {
                pos += channel.write(out, pos);
            }
            end = pos;
            writtenLsn = upTo;
            out.clear();
        }
    }

    /**
     * Returns records taken by a {@link #writeBuffered} that could not write them (the file could not grow: a full
     * file system) to the front of the buffer, before those appended since. Dropping them would leave a gap in the
     * sequence numbers and the checksum chain the later records continue, and the next open would cut every
     * record after the gap off as a torn tail, losing before-images a snapshot still reads.
     */
    private void putBack(ByteBuffer out) {
        synchronized (bufferLock) {
            buffer.flip();
            int total = out.remaining() + buffer.remaining();
            ByteBuffer merged = out;
            if (out.capacity() < total) {
                merged = ByteBuffer.allocateDirect(Integer.highestOneBit(total - 1) << 1).order(ByteOrder.LITTLE_ENDIAN);
                merged.put(out);
            } else {
                merged.position(out.limit()).limit(merged.capacity());
            }
            merged.put(buffer);
            buffer.clear();
            spare = buffer;
            buffer = merged;
        }
    }

    /** Extends the file with written zeros (read back as holes) so the next appends stay inside it. */
    private synchronized void grow(long needed) throws IOException {
        long a = Math.max(allocated, channel.size());
        if (a >= needed) {
            allocated = a;
            return;
        }
        ByteBuffer zeros = ByteBuffer.allocate(64 << 10);
        long target = ((needed + GROW - 1) / GROW) * GROW;
        try {
            for (long p = a; p < target; p += zeros.capacity()) {
                zeros.clear().limit((int) Math.min(zeros.capacity(), target - p));
                writeFully(channel, zeros, p);
            }
            Forces.forcing(path);
            channel.force(true);
        } catch (FileSystemException e) {
            throw e;
        } catch (IOException e) {
            // The JDK's message ("No space left on device") names no file: say which one could not grow.
            throw new FileSystemException(path.toString(), null, e.getMessage());
        }
        allocated = target;
    }

    /** Writes the buffered records and makes every record written so far durable. */
    void force() throws IOException {
        synchronized (writeLock) {
            writeBuffered();
            long upTo = writtenLsn;
            Forces.forcing(path);
            channel.force(false);
            synchronized (bufferLock) {
                durableLsn = Math.max(durableLsn, upTo);   // the next batch says so: a bad record below it is damage
            }
        }
    }

    long records() {
        synchronized (writeLock) {
            return (end - HEADER_BYTES) / RECORD_BYTES + buffered();
        }
    }

    /** Replaces the log by exactly {@code entries}, atomically, as a new generation. Callers hold every writer off. */
    void rewrite(Iterable<Entry> entries) throws IOException {
        synchronized (writeLock) {
            // The entries include every buffered record that still matters; the others belong to entries that
            // were moved or freed. Either way the rewritten log replaces them.
            synchronized (bufferLock) {
                buffer.clear();
                rewriteLocked(entries);
            }
        }
    }

    private void rewriteLocked(Iterable<Entry> entries) throws IOException {
        Path tmp = path.resolveSibling(path.getFileName() + ".new");
        int n = 0;
        for (Entry ignored : entries) {
            n++;
        }
        long gen = generation + 1;
        ByteBuffer h = header(owner, gen);
        int prev = h.getInt(60);
        long pos;
        try (FileChannel out = FileChannel.open(tmp, StandardOpenOption.CREATE, StandardOpenOption.WRITE,
                StandardOpenOption.TRUNCATE_EXISTING)) {
            writeFully(out, h, 0);
            pos = HEADER_BYTES;
            ByteBuffer recs = ByteBuffer.allocate(RECORD_BYTES * 1024).order(ByteOrder.LITTLE_ENDIAN);
            long lsn = 0;
            // Every record of a rewritten log is durable before the file becomes visible: committed = n.
            for (Entry e : entries) {
                prev = encode(recs, recs.position(), TYPE_COW, lsn++, n, e.snapshot(), e.block(), e.chunk(), prev);
                recs.position(recs.position() + RECORD_BYTES);
                if (!recs.hasRemaining()) {
                    recs.flip();
                    pos += writeAll(out, recs, pos);
                    recs.clear();
                }
            }
            recs.flip();
            pos += writeAll(out, recs, pos);
            Forces.forcing(tmp);
            out.force(true);
        }
        channel.close();
        Files.move(tmp, path, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        AtomicFile.fsyncDirectory(path.getParent());
        channel = FileChannel.open(path, StandardOpenOption.READ, StandardOpenOption.WRITE);
        generation = gen;
        end = pos;
        allocated = pos;
        nextLsn = n;
        writtenLsn = n;
        durableLsn = n;
        lastCrc = prev;
    }

    private static long writeAll(FileChannel ch, ByteBuffer b, long pos) throws IOException {
        long start = pos;
        while (b.hasRemaining()) {
            pos += ch.write(b, pos);
        }
        return pos - start;
    }

    @Override
    public void close() throws IOException {
        channel.close();
    }
}

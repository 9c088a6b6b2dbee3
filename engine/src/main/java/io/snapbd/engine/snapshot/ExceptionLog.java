package io.snapbd.engine.snapshot;

import io.snapbd.engine.format.AtomicFile;
import io.snapbd.engine.format.CorruptMetadataException;
import io.snapbd.engine.format.Crc32c;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.UUID;
import java.util.concurrent.atomic.AtomicLong;

/**
 * {@code exceptions.log}: the persistent block maps of all snapshots of a volume, as an append-only log of
 * 32-byte records {snapshot, block, chunk} (the role of dm-snapshot's persistent exception store). A record
 * is forced together with its save chunk before the production block may be overwritten. Concurrent
 * writers reserve distinct slots, so a crash can leave holes or one torn record; both are skipped when the
 * log is read, and the log is rewritten compactly at open and whenever snapshots are deleted.
 */
final class ExceptionLog implements AutoCloseable {

    static final long MAGIC = 0x474f4c5844424e53L;   // "SNBDXLOG" little-endian
    static final int VERSION = 1;
    static final int HEADER_BYTES = 4096;
    static final int RECORD_BYTES = 32;
    static final int TYPE_COW = 1;

    /** One block-map entry. */
    record Entry(long snapshot, long block, int chunk) {
    }

    interface EntrySink {
        void accept(long snapshot, long block, int chunk) throws IOException;
    }

    private final Path path;
    private final UUID owner;
    private volatile FileChannel channel;
    private final AtomicLong end = new AtomicLong();
    /** Records appended since the last {@link #writeBuffered}; swapped with {@code spare} when written. */
    private ByteBuffer buffer = ByteBuffer.allocateDirect(64 << 10);
    private ByteBuffer spare = ByteBuffer.allocateDirect(64 << 10);
    private final Object bufferLock = new Object();
    /** Serialises file writes of buffered records with {@link #rewrite}. */
    private final Object writeLock = new Object();
    /** Bytes of the file already written (zeros ahead of {@link #end}): appends then never change the file size, so forcing them needs no metadata commit. */
    private volatile long allocated;
    static final long GROW = 1 << 20;

    private ExceptionLog(Path path, UUID owner, FileChannel channel, long end) {
        this.path = path;
        this.owner = owner;
        this.channel = channel;
        this.end.set(end);
    }

    static ExceptionLog create(Path path, UUID owner) throws IOException {
        AtomicFile.write(path, header(owner));
        ExceptionLog log = new ExceptionLog(path, owner, FileChannel.open(path, StandardOpenOption.READ, StandardOpenOption.WRITE), HEADER_BYTES);
        log.allocated = HEADER_BYTES;
        return log;
    }

    /** Reads every valid record into {@code sink}; returns the number of damaged (torn) records skipped. */
    static ExceptionLog open(Path path, UUID owner, EntrySink sink, long[] damaged) throws IOException {
        FileChannel ch = FileChannel.open(path, StandardOpenOption.READ, StandardOpenOption.WRITE);
        try {
            ByteBuffer h = ByteBuffer.allocate(HEADER_BYTES).order(ByteOrder.LITTLE_ENDIAN);
            readFully(ch, h, 0, path);
            checkHeader(path, h, owner);
            long size = ch.size();
            ByteBuffer buf = ByteBuffer.allocate(RECORD_BYTES * 2048).order(ByteOrder.LITTLE_ENDIAN);
            long pos = HEADER_BYTES;
            long lastUsed = HEADER_BYTES;     // end of the last slot that is not a hole: appends continue there
            long bad = 0;
            while (pos + RECORD_BYTES <= size) {
                buf.clear().limit((int) Math.min(buf.capacity(), (size - pos) / RECORD_BYTES * RECORD_BYTES));
                readFully(ch, buf, pos, path);
                for (int i = 0; i < buf.limit(); i += RECORD_BYTES) {
                    int type = buf.getInt(i);
                    if (type == 0 && buf.getLong(i + 8) == 0 && buf.getLong(i + 16) == 0 && buf.getInt(i + 28) == 0) {
                        continue;     // a hole: preallocated space, or a slot whose writer never finished
                    }
                    lastUsed = pos + i + RECORD_BYTES;
                    if (type != TYPE_COW || buf.getInt(i + 28) != Crc32c.of(buf, i, i + 28)) {
                        bad++;        // torn: its writer had not forced it, so nothing depended on it
                        continue;
                    }
                    sink.accept(buf.getLong(i + 8), buf.getLong(i + 16), buf.getInt(i + 24));
                }
                pos += buf.limit();
            }
            damaged[0] = bad;
            ExceptionLog log = new ExceptionLog(path, owner, ch, lastUsed);
            log.allocated = size;
            return log;
        } catch (IOException | RuntimeException e) {
            ch.close();
            throw e;
        }
    }

    private static ByteBuffer header(UUID owner) {
        ByteBuffer h = ByteBuffer.allocate(HEADER_BYTES).order(ByteOrder.LITTLE_ENDIAN);
        h.putLong(0, MAGIC).putInt(8, VERSION).putInt(12, HEADER_BYTES).putInt(16, RECORD_BYTES)
                .putLong(24, owner.getMostSignificantBits()).putLong(32, owner.getLeastSignificantBits());
        h.putInt(60, Crc32c.of(h, 0, 60));
        return h;
    }

    private static void checkHeader(Path path, ByteBuffer h, UUID owner) throws CorruptMetadataException {
        if (h.getLong(0) != MAGIC) {
            throw new CorruptMetadataException(path, "bad magic (not a snapbd exception log)");
        }
        if (h.getInt(60) != Crc32c.of(h, 0, 60)) {
            throw new CorruptMetadataException(path, "header checksum mismatch");
        }
        if (h.getInt(8) != VERSION) {
            throw new CorruptMetadataException(path, "unsupported version " + h.getInt(8));
        }
        if (h.getInt(16) != RECORD_BYTES) {
            throw new CorruptMetadataException(path, "record size " + h.getInt(16) + ", expected " + RECORD_BYTES);
        }
        UUID stored = new UUID(h.getLong(24), h.getLong(32));
        if (!stored.equals(owner)) {
            throw new CorruptMetadataException(path, "belongs to " + stored + ", not " + owner);
        }
    }

    /** Encodes a record into {@code rec} (32 bytes, little-endian, reused by the caller). */
    static void encode(ByteBuffer rec, long snapshot, long block, int chunk) {
        rec.clear();
        rec.putInt(0, TYPE_COW).putInt(4, 0).putLong(8, snapshot).putLong(16, block).putInt(24, chunk);
        rec.putInt(28, Crc32c.of(rec, 0, 28));
    }

    /**
     * Appends an encoded record to the in-memory tail of the log: no system call on the writer's path. The
     * records reach the file at the next {@link #writeBuffered} (done by {@link #force}), in one write. Nothing
     * may depend on a record before {@link #force} returns, so keeping it in memory until then loses nothing a
     * crash could not lose anyway.
     */
    void append(ByteBuffer rec) {
        synchronized (bufferLock) {
            if (buffer.remaining() < RECORD_BYTES) {
                ByteBuffer bigger = ByteBuffer.allocateDirect(buffer.capacity() * 2);
                buffer.flip();
                bigger.put(buffer);
                buffer = bigger;
            }
            rec.position(0).limit(RECORD_BYTES);
            buffer.put(rec);
        }
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
            synchronized (bufferLock) {
                if (buffer.position() == 0) {
                    return;
                }
                out = buffer;
                buffer = spare.capacity() >= out.capacity() ? spare : ByteBuffer.allocateDirect(out.capacity());
                buffer.clear();
                spare = out;
            }
            out.flip();
            long pos = end.get();
            long needed = pos + out.remaining();
            if (needed > allocated) {
                grow(needed);
            }
            while (out.hasRemaining()) {
                pos += channel.write(out, pos);
            }
            end.set(pos);
            out.clear();
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
        for (long p = a; p < target; p += zeros.capacity()) {
            zeros.clear().limit((int) Math.min(zeros.capacity(), target - p));
            writeFully(channel, zeros, p);
        }
        channel.force(true);
        allocated = target;
    }

    /** Writes the buffered records and makes every record written so far durable. */
    void force() throws IOException {
        writeBuffered();
        channel.force(false);
    }

    long records() {
        return (end.get() - HEADER_BYTES) / RECORD_BYTES + buffered();
    }

    /** Replaces the log by exactly {@code entries}, atomically. Callers hold every writer off. */
    void rewrite(Iterable<Entry> entries) throws IOException {
        synchronized (writeLock) {
            // The entries include every buffered record that still matters; the others belong to entries that
            // were moved or freed. Either way the rewritten log replaces them.
            synchronized (bufferLock) {
                buffer.clear();
            }
            rewriteLocked(entries);
        }
    }

    private void rewriteLocked(Iterable<Entry> entries) throws IOException {
        Path tmp = path.resolveSibling(path.getFileName() + ".new");
        long pos;
        try (FileChannel out = FileChannel.open(tmp, StandardOpenOption.CREATE, StandardOpenOption.WRITE,
                StandardOpenOption.TRUNCATE_EXISTING)) {
            ByteBuffer h = header(owner);
            writeFully(out, h, 0);
            pos = HEADER_BYTES;
            ByteBuffer rec = ByteBuffer.allocate(RECORD_BYTES).order(ByteOrder.LITTLE_ENDIAN);
            for (Entry e : entries) {
                encode(rec, e.snapshot(), e.block(), e.chunk());
                writeFully(out, rec, pos);
                pos += RECORD_BYTES;
            }
            out.force(true);
        }
        channel.close();
        Files.move(tmp, path, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        AtomicFile.fsyncDirectory(path.getParent());
        channel = FileChannel.open(path, StandardOpenOption.READ, StandardOpenOption.WRITE);
        end.set(pos);
        allocated = pos;
    }

    @Override
    public void close() throws IOException {
        channel.close();
    }

    private static void writeFully(FileChannel ch, ByteBuffer b, long pos) throws IOException {
        b.position(0);
        while (b.hasRemaining()) {
            pos += ch.write(b, pos);
        }
    }

    private static void readFully(FileChannel ch, ByteBuffer b, long pos, Path path) throws IOException {
        while (b.hasRemaining()) {
            int n = ch.read(b, pos);
            if (n < 0) {
                throw new CorruptMetadataException(path, "truncated at byte " + pos);
            }
            pos += n;
        }
    }
}

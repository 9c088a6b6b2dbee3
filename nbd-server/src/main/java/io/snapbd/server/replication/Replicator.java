package io.snapbd.server.replication;

import io.snapbd.server.client.Extent;
import io.snapbd.server.client.NbdClient;
import io.snapbd.server.client.NbdUri;
import io.snapbd.server.export.MetaContext;
import io.snapbd.server.protocol.Nbd;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;
import java.util.zip.CRC32C;

/**
 * Pushes a snapshot to any NBD server, speaking only NBD on both sides (docs/glossary.md: EMC FIG. 36–38, replication of the
 * differential). The source is the snapshot export {@code VOLUME@YOUNGER}; with an older snapshot it copies
 * only the extents its {@code snapbd:changed:OLDER} context flags, otherwise every in-use extent of
 * {@code base:allocation}. Extents not in use in YOUNGER are zeroed on the target (WRITE_ZEROES when the
 * target has it, else written zeros). The target is flushed at the end. Re-running after a failure redoes
 * the same idempotent work, so an interrupted replication completes on the next run.
 */
public final class Replicator {

    /** Progress callback: bytes done of total. */
    @FunctionalInterface
    public interface Progress {
        void update(long done, long total, boolean finished);
    }

    public record Result(long bytesCopied, long bytesZeroed, long extentsCopied, boolean verified) {
    }

    private static final int CHUNK = 4 << 20;
    private static final long STATUS_WINDOW = 1L << 30;

    private final NbdUri source;
    private final NbdUri olderSource;     // VOLUME@OLDER, for its in-use map; null for a full copy
    private final NbdUri target;
    private final String older;           // null: full copy

    /**
     * @param source      the snapshot to send, e.g. nbd+unix:///vol@s2?socket=...
     * @param olderSource the snapshot the target already holds (same server), or null for a full copy
     */
    public Replicator(NbdUri source, NbdUri olderSource, NbdUri target, String older) {
        this.source = source;
        this.olderSource = olderSource;
        this.target = target;
        this.older = older;
    }

    public Result run(boolean verify, Progress progress) throws IOException {
        String changed = older == null ? null : MetaContext.CHANGED_PREFIX + older;
        NbdClient.Options srcOpts = NbdClient.Options.defaults().withMetaContexts(
                changed == null ? new String[]{Nbd.BASE_ALLOCATION} : new String[]{Nbd.BASE_ALLOCATION, changed});
        try (NbdClient src = NbdClient.connect(source, srcOpts);
             NbdClient dst = NbdClient.connect(target)) {
            if (changed != null && !src.metaContexts().containsKey(changed)) {
                throw new IOException(source + " does not offer " + changed + ": is " + older
                        + " an active snapshot older than the one being sent?");
            }
            if (dst.isReadOnly()) {
                throw new IOException("target " + target + " is read-only");
            }
            if (dst.size() < src.size()) {
                throw new IOException("target " + target + " has " + dst.size() + " bytes, less than the "
                        + src.size() + " of " + source);
            }
            List<long[]> copy = new ArrayList<>();      // {offset, length}
            List<long[]> zero = new ArrayList<>();
            plan(src, changed, copy, zero);
            if (olderSource != null) {
                zero = usedIn(olderSource, zero);   // only what the target may still hold needs zeroing
            }
            long total = 0;
            for (long[] e : copy) {
                total += e[1];
            }
            ByteBuffer buf = ByteBuffer.allocateDirect(CHUNK);
            long done = 0;
            for (long[] e : copy) {
                for (long off = e[0]; off < e[0] + e[1]; off += CHUNK) {
                    int n = (int) Math.min(CHUNK, e[0] + e[1] - off);
                    buf.clear().limit(n);
                    src.read(off, buf);
                    buf.flip();
                    dst.write(off, buf, false);
                    done += n;
                    if (progress != null) {
                        progress.update(done, total, false);
                    }
                }
            }
            long zeroed = 0;
            for (long[] e : zero) {
                zeroRange(dst, e[0], e[1], buf);
                zeroed += e[1];
            }
            if (dst.canFlush()) {
                dst.flush();
            }
            if (progress != null) {
                progress.update(done, total, true);
            }
            boolean verified = false;
            if (verify) {
                verify(src, dst, copy);
                verified = true;
            }
            return new Result(done, zeroed, copy.size(), verified);
        }
    }

    /** Splits the export into extents to copy (changed, or in use for a full copy) and extents to zero (not in use). */
    private static void plan(NbdClient src, String changed, List<long[]> copy, List<long[]> zero) throws IOException {
        long size = src.size();
        for (long pos = 0; pos < size; ) {
            List<Extent> ext = src.blockStatus(Nbd.BASE_ALLOCATION, pos, Math.min(STATUS_WINDOW, size - pos), false);
            for (Extent e : ext) {
                long end = Math.min(size, e.end());
                if (e.offset() >= end) {
                    continue;
                }
                if (e.isHole() && e.isZero()) {
                    add(zero, e.offset(), end - e.offset());
                } else if (changed == null) {
                    add(copy, e.offset(), end - e.offset());
                }
                pos = end;
            }
            if (ext.isEmpty()) {
                throw new IOException("server described no extent at offset " + pos);
            }
        }
        if (changed == null) {
            return;
        }
        for (long pos = 0; pos < size; ) {
            List<Extent> ext = src.blockStatus(changed, pos, Math.min(STATUS_WINDOW, size - pos), false);
            for (Extent e : ext) {
                long end = Math.min(size, e.end());
                if ((e.flags() & 1) != 0 && e.offset() < end) {
                    add(copy, e.offset(), end - e.offset());
                }
                pos = Math.max(pos, end);
            }
            if (ext.isEmpty()) {
                throw new IOException("server described no extent at offset " + pos);
            }
        }
    }

    /** The parts of {@code ranges} that are in use in the snapshot at {@code uri}. */
    private static List<long[]> usedIn(NbdUri uri, List<long[]> ranges) throws IOException {
        List<long[]> out = new ArrayList<>();
        try (NbdClient c = NbdClient.connect(uri, NbdClient.Options.defaults().withMetaContexts(Nbd.BASE_ALLOCATION))) {
            for (long[] r : ranges) {
                for (long pos = r[0]; pos < r[0] + r[1]; ) {
                    List<Extent> ext = c.blockStatus(Nbd.BASE_ALLOCATION, pos, Math.min(STATUS_WINDOW, r[0] + r[1] - pos), false);
                    if (ext.isEmpty()) {
                        throw new IOException(uri + " described no extent at offset " + pos);
                    }
                    for (Extent e : ext) {
                        long end = Math.min(r[0] + r[1], e.end());
                        if (!(e.isHole() && e.isZero()) && e.offset() < end) {
                            add(out, Math.max(pos, e.offset()), end - Math.max(pos, e.offset()));
                        }
                        pos = Math.max(pos, end);
                    }
                }
            }
        }
        return out;
    }

    private static void add(List<long[]> list, long off, long len) {
        if (!list.isEmpty()) {
            long[] last = list.get(list.size() - 1);
            if (last[0] + last[1] == off) {
                last[1] += len;
                return;
            }
        }
        list.add(new long[]{off, len});
    }

    private static void zeroRange(NbdClient dst, long off, long len, ByteBuffer buf) throws IOException {
        long max = Math.min(Integer.MAX_VALUE & ~4095L, dst.blockSize().maximum() > 0 ? Math.max(dst.blockSize().maximum(), CHUNK) : CHUNK);
        if (dst.canZero()) {
            for (long p = off; p < off + len; p += max) {
                dst.writeZeroes(p, Math.min(max, off + len - p));
            }
            return;
        }
        for (long p = off; p < off + len; p += CHUNK) {
            int n = (int) Math.min(CHUNK, off + len - p);
            buf.clear();
            while (buf.position() < n) {
                buf.putLong(0);
            }
            buf.position(0).limit(n);
            dst.write(p, buf, false);
        }
    }

    /** Reads the copied extents back from the target and compares CRC-32C with the source. */
    private static void verify(NbdClient src, NbdClient dst, List<long[]> copy) throws IOException {
        ByteBuffer a = ByteBuffer.allocateDirect(CHUNK);
        ByteBuffer b = ByteBuffer.allocateDirect(CHUNK);
        for (long[] e : copy) {
            for (long off = e[0]; off < e[0] + e[1]; off += CHUNK) {
                int n = (int) Math.min(CHUNK, e[0] + e[1] - off);
                a.clear().limit(n);
                b.clear().limit(n);
                src.read(off, a);
                dst.read(off, b);
                a.flip();
                b.flip();
                CRC32C ca = new CRC32C();
                CRC32C cb = new CRC32C();
                ca.update(a);
                cb.update(b);
                if (ca.getValue() != cb.getValue()) {
                    throw new IOException("verify failed: target differs from " + "source in [" + off + ", +" + n + ")");
                }
            }
        }
    }
}

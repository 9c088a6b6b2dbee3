package io.snapbd.engine.fuzz;

import com.code_intelligence.jazzer.api.FuzzedDataProvider;
import io.snapbd.engine.format.Crc32c;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Arrays;

/**
 * Damage a fuzz target does to one file: a few overwrites (bytes, little-endian ints and longs, a length
 * change), then optionally the file's checksums recomputed ("forged") so that the damaged fields get past the
 * CRC checks and reach the semantic ones (geometry, counts, lengths), which no checksum would otherwise let a
 * random mutation reach.
 */
final class Damage {

    /** Where a format keeps its checksums, for {@link #forge}. */
    enum Format { VOLUME_HEADER, BITMAP_V1, SNAPSHOT_META_V2, EXCEPTION_LOG, WHOLE_FILE_CRC_AT_60, CRC_AT_60, TAG_TABLE, REGION_MAP }

    private Damage() {
    }

    /** What the last {@link #mutate} on this thread did, for failure messages. */
    static final ThreadLocal<StringBuilder> LAST = ThreadLocal.withInitial(StringBuilder::new);

    /** Applies the fuzzer's mutations to {@code b} (never larger than {@code maxLength}); returns the new content. */
    static byte[] mutate(FuzzedDataProvider in, byte[] b, int maxLength) {
        StringBuilder log = LAST.get();
        log.setLength(0);
        int n = in.consumeInt(1, 6);
        for (int i = 0; i < n && in.remainingBytes() > 0; i++) {
            int kind = in.consumeInt(0, 4);
            if (kind == 4) {
                b = Arrays.copyOf(b, in.consumeInt(0, maxLength));
                log.append(" length=").append(b.length);
                continue;
            }
            if (b.length == 0) {
                continue;
            }
            // Bias towards the headers and tables: most fields live in the first 4 KiB and just after.
            int at = in.consumeBoolean() ? in.consumeInt(0, Math.min(b.length, 4096 + 256) - 1) : in.consumeInt(0, b.length - 1);
            ByteBuffer w = ByteBuffer.wrap(b).order(ByteOrder.LITTLE_ENDIAN);
            switch (kind) {
                case 0 -> {
                    int x = in.consumeInt(1, 255);
                    b[at] ^= (byte) x;
                    log.append(" xor@").append(at).append("=").append(x);
                }
                case 1 -> {
                    if (at + 4 <= b.length) {
                        int v = in.consumeInt();
                        w.putInt(at, v);
                        log.append(" int@").append(at).append("=").append(v);
                    }
                }
                case 2 -> {
                    if (at + 8 <= b.length) {
                        long v = in.consumeLong();
                        w.putLong(at, v);
                        log.append(" long@").append(at).append("=").append(v);
                    }
                }
                default -> {
                    byte[] bytes = in.consumeBytes(64);
                    System.arraycopy(bytes, 0, b, at, Math.min(bytes.length, b.length - at));
                    log.append(" bytes@").append(at).append("+").append(Math.min(bytes.length, b.length - at));
                }
            }
        }
        return b;
    }

    /** Recomputes the checksums of {@code f} in place, as far as its (possibly damaged) fields allow. */
    static void forge(Format f, byte[] b) {
        LAST.get().append(" (checksums forged)");
        ByteBuffer w = ByteBuffer.wrap(b).order(ByteOrder.LITTLE_ENDIAN);
        switch (f) {
            case VOLUME_HEADER -> crc(w, 0, 252, 252);
            case CRC_AT_60 -> crc(w, 0, 60, 60);
            case WHOLE_FILE_CRC_AT_60 -> {
                if (b.length >= 64) {
                    w.putInt(60, 0);
                    w.putInt(60, Crc32c.of(b, 0, b.length));
                }
            }
            case BITMAP_V1, SNAPSHOT_META_V2 -> {
                crc(w, 0, 60, 60);
                if (b.length < 64) {
                    return;
                }
                long pagesOffset = w.getLong(52);
                int entry = f == Format.BITMAP_V1 ? 8 : 16;
                for (int p = 0; 4096 + (p + 1) * entry <= Math.min(b.length, pagesOffset) && p < 4096; p++) {
                    int e = 4096 + p * entry;
                    long page = pagesOffset + 4096L * p;
                    if ((w.getInt(e + 4) & 1) != 0 && page + 4096 <= b.length) {
                        w.putInt(e, Crc32c.of(b, (int) page, (int) page + 4096));
                    }
                    if (f == Format.SNAPSHOT_META_V2) {
                        crc(w, e, e + 12, e + 12);
                    }
                }
            }
            case EXCEPTION_LOG -> {
                crc(w, 0, 60, 60);
                chain(w, 4096, b.length, 44, 60, b.length >= 64 ? w.getInt(60) : 0);
            }
            case TAG_TABLE -> {
                crc(w, 0, 60, 60);
                crc(w, 2048, 2108, 2108);
                if (b.length < 2112) {
                    return;
                }
                int copy = Integer.compareUnsigned(w.getInt(40), w.getInt(2048 + 40)) >= 0 ? 0 : 2048;
                long half = w.getLong(copy + 48);
                if (half <= 0 || half > b.length) {
                    return;
                }
                long start = 4096 + (w.getInt(copy + 36) == 1 ? half * 64 : 0);
                chain(w, start, Math.min(b.length, start + half * 64), 56, 60, w.getInt(copy + 60));
            }
            case REGION_MAP -> {
                crc(w, 0, 60, 60);
                for (int p = 0; 64 + 4 * p + 4 <= 4096 && 4096L * (p + 2) <= b.length; p++) {
                    w.putInt(64 + 4 * p, Crc32c.of(b, 4096 * (p + 1), 4096 * (p + 2)));
                }
            }
        }
    }

    private static void crc(ByteBuffer w, int from, int to, int at) {
        if (w.capacity() >= at + 4) {
            w.putInt(at, Crc32c.of(w.array(), from, to));
        }
    }

    /** Chains the 64-byte records in [start, end): prev_crc at {@code prevAt}, crc at {@code crcAt}; zero slots stay holes. */
    private static void chain(ByteBuffer w, long start, long end, int prevAt, int crcAt, int seed) {
        int prev = seed;
        byte[] b = w.array();
        for (long o = start; o + 64 <= end; o += 64) {
            int s = (int) o;
            boolean hole = true;
            for (int i = s; i < s + 64 && hole; i++) {
                hole = b[i] == 0;
            }
            if (hole) {
                continue;
            }
            w.putInt(s + prevAt, prev);
            w.putInt(s + crcAt, Crc32c.of(b, s, s + crcAt));
            prev = w.getInt(s + crcAt);
        }
    }
}

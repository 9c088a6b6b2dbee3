package io.snapbd.engine.format;

import java.nio.ByteBuffer;
import java.util.zip.CRC32C;

/** CRC-32C (Castagnoli), the checksum of every snapbd on-disk structure. */
public final class Crc32c {
    private Crc32c() {
    }

    /** CRC-32C of {@code buf} between {@code from} (inclusive) and {@code to} (exclusive); position untouched. */
    public static int of(ByteBuffer buf, int from, int to) {
        CRC32C crc = new CRC32C();
        ByteBuffer view = buf.duplicate();
        view.limit(to).position(from);
        crc.update(view);
        return (int) crc.getValue();
    }

    public static int of(byte[] bytes, int from, int to) {
        CRC32C crc = new CRC32C();
        crc.update(bytes, from, to - from);
        return (int) crc.getValue();
    }
}

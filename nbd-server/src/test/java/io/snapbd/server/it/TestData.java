package io.snapbd.server.it;

import org.junit.jupiter.api.Assertions;

import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Random;

/** Reproducible test images (seeded {@link Random}, never /dev/urandom) and byte-exact comparison. */
public final class TestData {

    public static final int MiB = 1 << 20;

    private TestData() {
    }

    /**
     * {@code size} bytes of seeded random data with zero regions of several shapes: whole MiB runs, single
     * aligned 4 KiB blocks, and unaligned runs that straddle block boundaries.
     */
    public static byte[] imageWithZeroRegions(long seed, int size) {
        Random r = new Random(seed);
        byte[] b = new byte[size];
        r.nextBytes(b);
        // Every fourth MiB is all zeros (nbdcopy sends these as zero requests).
        for (int off = 3 * MiB; off + MiB <= size; off += 4 * MiB) {
            Arrays.fill(b, off, off + MiB, (byte) 0);
        }
        // Some aligned zero blocks and some unaligned zero runs.
        for (int i = 0; i < 64; i++) {
            int blk = r.nextInt(size / 4096);
            Arrays.fill(b, blk * 4096, blk * 4096 + 4096, (byte) 0);
            int off = r.nextInt(size - 20000);
            Arrays.fill(b, off, off + 1 + r.nextInt(19000), (byte) 0);
        }
        return b;
    }

    /** Seeded random bytes without whole zero blocks (in practice). */
    public static byte[] random(long seed, int size) {
        byte[] b = new byte[size];
        new Random(seed).nextBytes(b);
        return b;
    }

    public static Path write(Path file, byte[] data) {
        try {
            Files.write(file, data);
            return file;
        } catch (IOException e) {
            throw new IllegalStateException(e);
        }
    }

    /** Byte-for-byte comparison that names the first differing offset. */
    public static void assertSameContent(byte[] expected, Path actualFile) {
        try {
            long size = Files.size(actualFile);
            Assertions.assertEquals(expected.length, size, "size of " + actualFile);
            byte[] buf = new byte[1 << 20];
            long pos = 0;
            try (InputStream in = Files.newInputStream(actualFile)) {
                int n;
                while ((n = in.readNBytes(buf, 0, buf.length)) > 0) {
                    int mismatch = Arrays.mismatch(expected, (int) pos, (int) pos + n, buf, 0, n);
                    if (mismatch >= 0) {
                        long at = pos + mismatch;
                        Assertions.fail(actualFile + " differs at offset " + at + " (block " + (at / 4096) + "): expected 0x"
                                + Integer.toHexString(expected[(int) at] & 0xff) + ", got 0x" + Integer.toHexString(buf[mismatch] & 0xff));
                    }
                    pos += n;
                }
            }
        } catch (IOException e) {
            throw new IllegalStateException(e);
        }
    }
}

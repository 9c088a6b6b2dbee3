package io.snapbd.engine;

import io.snapbd.engine.io.FileSpace;
import io.snapbd.engine.io.JavaFileSpace;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.concurrent.atomic.AtomicLong;

/** Shared helpers for engine tests: file spaces with known zeroing behaviour and byte-array I/O on devices. */
public final class TestVolumes {

    private TestVolumes() {
    }

    /** The portable fallback: zero-fill preallocation, zeroer unsupported. */
    public static FileSpace java() {
        return new JavaFileSpace();
    }

    /** Sparse "preallocation" (setLength) and a zeroer that answers false to everything. */
    public static FileSpace noZeroer() {
        return new Space("no-zeroer", Mode.UNSUPPORTED);
    }

    /** A zeroer that really zeroes (by writing zeros through a channel, coherent with the mapping) and says so. */
    public static Space fastZeroer() {
        return new Space("fast-zeroer", Mode.FAST);
    }

    /** The probe answers true, every real call answers false: the engine must fall back to zeroing itself. */
    public static Space flakyZeroer() {
        return new Space("flaky-zeroer", Mode.FLAKY);
    }

    public enum Mode { UNSUPPORTED, FAST, FLAKY }

    public static final class Space implements FileSpace {
        private final String name;
        private final Mode mode;
        /** Bytes zeroed by the zeroer (not by the engine's own fill). */
        public final AtomicLong zeroedBytes = new AtomicLong();
        public final AtomicLong calls = new AtomicLong();

        Space(String name, Mode mode) {
            this.name = name;
            this.mode = mode;
        }

        @Override
        public void preallocate(Path file, long size) throws IOException {
            try (RandomAccessFile f = new RandomAccessFile(file.toFile(), "rw")) {
                f.setLength(size);
            }
        }

        @Override
        public Zeroer openZeroer(Path file) throws IOException {
            FileChannel ch = mode == Mode.FAST ? FileChannel.open(file, StandardOpenOption.WRITE) : null;
            return new Zeroer() {
                @Override
                public boolean zeroRange(long offset, long length) throws IOException {
                    calls.incrementAndGet();
                    switch (mode) {
                        case UNSUPPORTED:
                            return false;
                        case FLAKY:
                            return length == 0;
                        default:
                            ByteBuffer zeros = ByteBuffer.allocate(65536);
                            long pos = offset;
                            long end = offset + length;
                            while (pos < end) {
                                zeros.clear().limit((int) Math.min(zeros.capacity(), end - pos));
                                pos += ch.write(zeros, pos);
                            }
                            zeroedBytes.addAndGet(length);
                            return true;
                    }
                }

                @Override
                public void close() throws IOException {
                    if (ch != null) {
                        ch.close();
                    }
                }
            };
        }

        @Override
        public String describe() {
            return name;
        }

        @Override
        public String toString() {
            return name;
        }
    }

    // ---- byte-array I/O ----------------------------------------------------------------------------------------

    public static void write(BlockDevice d, BlockDevice.Session s, long offset, byte[] bytes) throws IOException {
        write(d, s, offset, bytes, false);
    }

    public static void write(BlockDevice d, BlockDevice.Session s, long offset, byte[] bytes, boolean fua) throws IOException {
        int[] at = {0};
        d.write(s, offset, bytes.length, dst -> {
            int n = dst.remaining();
            dst.put(bytes, at[0], n);
            at[0] += n;
        }, fua);
        if (at[0] != bytes.length) {
            throw new AssertionError("write consumed " + at[0] + " of " + bytes.length + " bytes");
        }
    }

    public static byte[] read(BlockDevice d, BlockDevice.Session s, long offset, int length) throws IOException {
        byte[] out = new byte[length];
        int[] at = {0};
        d.read(s, offset, length, src -> {
            int n = src.remaining();
            src.get(out, at[0], n);
            at[0] += n;
        });
        if (at[0] != length) {
            throw new AssertionError("read produced " + at[0] + " of " + length + " bytes");
        }
        return out;
    }

    /** {@code n} bytes of {@code value}. */
    public static byte[] filled(int n, int value) {
        byte[] b = new byte[n];
        java.util.Arrays.fill(b, (byte) value);
        return b;
    }

    public static boolean isZero(byte[] b) {
        for (byte x : b) {
            if (x != 0) {
                return false;
            }
        }
        return true;
    }

    public static boolean isZero(byte[] b, int from, int to) {
        for (int i = from; i < to; i++) {
            if (b[i] != 0) {
                return false;
            }
        }
        return true;
    }

    /** Non-zero pattern bytes: every byte differs from zero, and from the same range at another offset. */
    public static byte[] pattern(long seed, int length) {
        byte[] b = new byte[length];
        long x = seed * 0x9E3779B97F4A7C15L + 1;
        for (int i = 0; i < length; i++) {
            x ^= x << 13;
            x ^= x >>> 7;
            x ^= x << 17;
            byte v = (byte) x;
            b[i] = v == 0 ? 1 : v;
        }
        return b;
    }

    /** XORs one byte of a file with 0xFF (what a torn or rotted sector looks like to a checksum). */
    public static void flipByte(Path file, long position) throws IOException {
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ, StandardOpenOption.WRITE)) {
            ByteBuffer b = ByteBuffer.allocate(1);
            if (ch.read(b, position) != 1) {
                throw new AssertionError(file + " has no byte at " + position);
            }
            b.put(0, (byte) (b.get(0) ^ 0xFF)).position(0);
            ch.write(b, position);
        }
    }

    public static void writeRaw(Path file, long position, byte[] bytes) throws IOException {
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.WRITE)) {
            ByteBuffer b = ByteBuffer.wrap(bytes);
            while (b.hasRemaining()) {
                position += ch.write(b, position);
            }
        }
    }

    public static byte[] readRaw(Path file, long position, int length) throws IOException {
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
            ByteBuffer b = ByteBuffer.allocate(length);
            while (b.hasRemaining()) {
                if (ch.read(b, position + b.position()) < 0) {
                    throw new AssertionError(file + " ends before " + (position + length));
                }
            }
            return b.array();
        }
    }
}

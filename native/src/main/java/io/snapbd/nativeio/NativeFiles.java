package io.snapbd.nativeio;

import java.io.Closeable;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import jnr.constants.platform.Errno;
import jnr.constants.platform.OpenFlags;

/** File-space operations the JDK lacks: real preallocation and zeroing a range without writing it. */
public final class NativeFiles {

    private static final int O_WRONLY_CLOEXEC = OpenFlags.O_WRONLY.intValue() | OpenFlags.O_CLOEXEC.intValue();
    private static final int FALLOC_FL_KEEP_SIZE = 0x01;
    private static final int FALLOC_FL_ZERO_RANGE = 0x10;
    private static final int ZERO_RANGE_MODE = FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;
    private static final int PROBE_SIZE = 8192;

    private NativeFiles() {
    }

    /** True when libc could be loaded; otherwise callers fall back to pure Java. */
    public static boolean available() {
        return Native.available();
    }

    /**
     * Allocates disk blocks for the first {@code size} bytes of an existing file and makes the
     * allocation durable, so later writes through a memory map cannot fail with SIGBUS for lack
     * of space. Grows the file to {@code size} if it is shorter.
     */
    public static void preallocate(Path file, long size) throws IOException {
        if (size < 0) {
            throw new IllegalArgumentException("negative size " + size + " for " + file);
        }
        LibC libc = Native.libc();
        int fd = open(file);
        try {
            // posix_fallocate rejects a zero length; there is nothing to allocate then anyway.
            int err = size == 0 ? 0 : libc.posix_fallocate(fd, 0, size);
            if (err == Errno.ENOSPC.intValue()) {
                throw new IOException("not enough disk space to preallocate " + size + " bytes for " + file);
            }
            if (err != 0) {
                throw new IOException("cannot preallocate " + size + " bytes for " + file + ": " + Native.strerror(err));
            }
            if (libc.fsync(fd) != 0) {
                throw new IOException("cannot fsync " + file + ": " + Native.strerror(Native.errno()));
            }
        } finally {
            libc.close(fd);
        }
    }

    /**
     * Opens {@code file} for {@link Zeroer#zeroRange}. Probes once, with a scratch file in the same
     * directory, whether the file system really supports FALLOC_FL_ZERO_RANGE.
     */
    public static Zeroer openZeroer(Path file) throws IOException {
        int fd = open(file);
        try {
            return new Zeroer(file, fd, probeZeroRange(file.toAbsolutePath().getParent()));
        } catch (IOException | RuntimeException e) {
            Native.libc().close(fd);
            throw e;
        }
    }

    /** Zeroes ranges of one file without writing zeros (ext4 and XFS mark the extents unwritten). */
    public static final class Zeroer implements Closeable {
        private final Path file;
        private final int fd;
        private final boolean supported;
        private volatile boolean closed;

        private Zeroer(Path file, int fd, boolean supported) {
            this.file = file;
            this.fd = fd;
            this.supported = supported;
        }

        /**
         * Makes {@code [offset, offset + length)} read as zeros, keeping the file size and the
         * allocation. Returns false, having done nothing, when the file system cannot do it; the
         * caller then writes zeros itself. {@code zeroRange(0, 0)} only answers that question.
         */
        public boolean zeroRange(long offset, long length) throws IOException {
            if (offset < 0 || length < 0) {
                throw new IllegalArgumentException("bad range " + offset + "+" + length + " for " + file);
            }
            if (closed) {
                // the descriptor number may already belong to another file
                throw new IOException("zeroer for " + file + " is closed");
            }
            if (!supported) {
                return false;
            }
            if (length == 0) {
                return true;
            }
            if (Native.libc().fallocate(fd, ZERO_RANGE_MODE, offset, length) == 0) {
                return true;
            }
            int err = Native.errno();
            if (isUnsupported(err)) {
                return false;
            }
            throw new IOException("cannot zero " + length + " bytes at " + offset + " in " + file + ": "
                    + Native.strerror(err));
        }

        /** Not to be called while another thread is inside {@link #zeroRange}. */
        @Override
        public synchronized void close() throws IOException {
            if (!closed) {
                closed = true;
                Native.libc().close(fd);
            }
        }
    }

    private static int open(Path file) throws IOException {
        int fd = Native.libc().open(file.toString(), O_WRONLY_CLOEXEC, 0);
        if (fd < 0) {
            throw new IOException("cannot open " + file + ": " + Native.strerror(Native.errno()));
        }
        return fd;
    }

    private static boolean isUnsupported(int err) {
        return err == Errno.EOPNOTSUPP.intValue() || err == Errno.EINVAL.intValue() || err == Errno.ENOSYS.intValue();
    }

    // A file system may accept the call yet not zero the data, so the probe checks what it reads back.
    // When the scratch file cannot be written (a full file system) the answer is "no": the caller zeroes by
    // writing zeros into its preallocated file, which needs no new space, instead of failing to open.
    private static boolean probeZeroRange(Path dir) throws IOException {
        Path probe;
        try {
            probe = Files.createTempFile(dir, ".zero-probe-", "");
        } catch (IOException e) {
            return false;
        }
        try {
            byte[] data = new byte[PROBE_SIZE];
            Arrays.fill(data, (byte) 0x5a);
            try {
                Files.write(probe, data);
            } catch (IOException e) {
                return false;
            }
            try (Zeroer zeroer = new Zeroer(probe, open(probe), true)) {
                if (!zeroer.zeroRange(PROBE_SIZE / 2, PROBE_SIZE / 2)) {
                    return false;
                }
            }
            Arrays.fill(data, PROBE_SIZE / 2, PROBE_SIZE, (byte) 0);
            return Arrays.equals(Files.readAllBytes(probe), data);
        } finally {
            Files.deleteIfExists(probe);
        }
    }
}

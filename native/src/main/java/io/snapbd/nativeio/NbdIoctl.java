package io.snapbd.nativeio;

import java.io.IOException;
import jnr.constants.platform.Errno;
import jnr.constants.platform.OpenFlags;

/**
 * The ioctls of the kernel's nbd driver (include/uapi/linux/nbd.h), used to attach a socket
 * that speaks the NBD transmission protocol to a {@code /dev/nbdN} device.
 */
public final class NbdIoctl {

    public static final long NBD_SET_SOCK = io(0);
    public static final long NBD_SET_BLKSIZE = io(1);
    public static final long NBD_SET_SIZE = io(2);
    public static final long NBD_DO_IT = io(3);
    public static final long NBD_CLEAR_SOCK = io(4);
    public static final long NBD_CLEAR_QUE = io(5);
    public static final long NBD_PRINT_DEBUG = io(6);
    public static final long NBD_SET_SIZE_BLOCKS = io(7);
    public static final long NBD_DISCONNECT = io(8);
    public static final long NBD_SET_TIMEOUT = io(9);
    public static final long NBD_SET_FLAGS = io(10);

    private NbdIoctl() {
    }

    /** _IO(0xab, nr) with the asm-generic encoding (x86, arm, riscv): no direction, no size. */
    private static long io(int nr) {
        return (0xab << 8) | nr;
    }

    /** Opens an nbd device read-write and returns its file descriptor. */
    public static int openDevice(String dev) throws IOException {
        int fd = Native.libc().open(dev, OpenFlags.O_RDWR.intValue() | OpenFlags.O_CLOEXEC.intValue(), 0);
        if (fd >= 0) {
            return fd;
        }
        int err = Native.errno();
        if (err == Errno.ENOENT.intValue() || err == Errno.ENXIO.intValue()) {
            throw new NbdException(err, "no such device " + dev + ": load the nbd module (modprobe nbd)");
        }
        if (err == Errno.EBUSY.intValue()) {
            throw new NbdException(err, dev + " is busy (already attached?)");
        }
        if (err == Errno.EACCES.intValue() || err == Errno.EPERM.intValue()) {
            throw new NbdException(err, "permission denied opening " + dev + ": attaching needs root (CAP_SYS_ADMIN)");
        }
        throw new NbdException(err, "cannot open " + dev + ": " + Native.strerror(err));
    }

    public static void closeDevice(int devFd) throws IOException {
        if (Native.libc().close(devFd) != 0) {
            throw new IOException("cannot close nbd device: " + Native.strerror(Native.errno()));
        }
    }

    /** Hands one connected stream socket to the driver; the kernel keeps its own reference. */
    public static void setSock(int devFd, int sockFd) throws IOException {
        ioctl(devFd, NBD_SET_SOCK, sockFd, "NBD_SET_SOCK");
    }

    public static void setBlockSize(int devFd, long bytes) throws IOException {
        ioctl(devFd, NBD_SET_BLKSIZE, bytes, "NBD_SET_BLKSIZE");
    }

    public static void setSizeBlocks(int devFd, long blocks) throws IOException {
        ioctl(devFd, NBD_SET_SIZE_BLOCKS, blocks, "NBD_SET_SIZE_BLOCKS");
    }

    /** Transmission flags as negotiated in the NBD handshake (NBD_FLAG_*). */
    public static void setFlags(int devFd, long flags) throws IOException {
        ioctl(devFd, NBD_SET_FLAGS, flags, "NBD_SET_FLAGS");
    }

    public static void setTimeout(int devFd, long seconds) throws IOException {
        ioctl(devFd, NBD_SET_TIMEOUT, seconds, "NBD_SET_TIMEOUT");
    }

    /** Runs the device; blocks the calling thread until it is disconnected. */
    public static void doIt(int devFd) throws IOException {
        ioctl(devFd, NBD_DO_IT, 0, "NBD_DO_IT");
    }

    public static void clearSock(int devFd) throws IOException {
        ioctl(devFd, NBD_CLEAR_SOCK, 0, "NBD_CLEAR_SOCK");
    }

    public static void clearQueue(int devFd) throws IOException {
        ioctl(devFd, NBD_CLEAR_QUE, 0, "NBD_CLEAR_QUE");
    }

    /**
     * Writes the device's dirty buffers and has the driver send NBD_CMD_FLUSH (fsync of the block device).
     * It does not reach a file system mounted on the device: that one has to be synced or unmounted.
     */
    public static void flush(int devFd) throws IOException {
        if (Native.libc().fsync(devFd) != 0) {
            int err = Native.errno();
            throw new NbdException(err, "fsync of the nbd device failed: " + Native.strerror(err));
        }
    }

    /** Asks the driver to send NBD_CMD_DISC and end {@link #doIt}. */
    public static void disconnect(int devFd) throws IOException {
        ioctl(devFd, NBD_DISCONNECT, 0, "NBD_DISCONNECT");
    }

    private static void ioctl(int fd, long request, long arg, String name) throws IOException {
        if (Native.libc().ioctl(fd, request, arg) < 0) {
            int err = Native.errno();
            throw new NbdException(err, name + " failed: " + Native.strerror(err));
        }
    }

    /** A failed open, ioctl or fsync on an nbd device, with the errno so callers can explain it. */
    public static final class NbdException extends ErrnoException {
        NbdException(int errno, String message) {
            super(errno, message);
        }

        /** EINVAL: e.g. a device set up through netlink (nbd-client) refuses the ioctl interface. */
        public boolean invalid() {
            return errno() == Errno.EINVAL.intValue();
        }

        /** ENOENT or ENXIO: no such device node or driver. */
        public boolean noDevice() {
            return errno() == Errno.ENOENT.intValue() || errno() == Errno.ENXIO.intValue();
        }
    }
}

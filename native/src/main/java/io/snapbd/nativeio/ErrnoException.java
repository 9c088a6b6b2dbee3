package io.snapbd.nativeio;

import jnr.constants.platform.Errno;

import java.io.IOException;

/** A system call the kernel refused, with its errno, so that callers can tell the usual reasons apart. */
public class ErrnoException extends IOException {
    private final int errno;

    ErrnoException(int errno, String message) {
        super(message);
        this.errno = errno;
    }

    public int errno() {
        return errno;
    }

    /** EBUSY: e.g. another task set the device up, or it is already running. */
    public boolean busy() {
        return errno == Errno.EBUSY.intValue();
    }

    /** EPERM or EACCES: e.g. the nbd ioctls and netlink commands need CAP_SYS_ADMIN. */
    public boolean permissionDenied() {
        return errno == Errno.EPERM.intValue() || errno == Errno.EACCES.intValue();
    }
}

package io.snapbd.nativeio;

import java.io.IOException;
import jnr.ffi.LastError;
import jnr.ffi.LibraryLoader;
import jnr.ffi.Runtime;

/** Loads libc once; when that fails every native operation reports why instead of crashing. */
final class Native {

    private static final LibC LIBC;
    private static final Runtime RUNTIME;
    private static final Throwable LOAD_FAILURE;

    static {
        LibC libc = null;
        Runtime runtime = null;
        Throwable failure = null;
        try {
            libc = LibraryLoader.create(LibC.class).load("c");
            runtime = Runtime.getRuntime(libc);
        } catch (LinkageError | RuntimeException e) {
            failure = e;
        }
        LIBC = libc;
        RUNTIME = runtime;
        LOAD_FAILURE = failure;
    }

    private Native() {
    }

    static boolean available() {
        return LIBC != null;
    }

    static LibC libc() throws IOException {
        if (LIBC == null) {
            throw new IOException("libc could not be loaded through jnr-ffi: " + LOAD_FAILURE, LOAD_FAILURE);
        }
        return LIBC;
    }

    static Runtime runtime() throws IOException {
        libc();
        return RUNTIME;
    }

    /** errno of the calling thread's last native call (jnr-ffi saves it right after the call). */
    static int errno() {
        return LastError.getLastError(RUNTIME);
    }

    static String strerror(int errnum) {
        return LIBC.strerror(errnum) + " (errno " + errnum + ")";
    }
}

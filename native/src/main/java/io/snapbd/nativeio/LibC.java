package io.snapbd.nativeio;

import java.nio.ByteBuffer;
import jnr.ffi.annotations.In;
import jnr.ffi.annotations.Out;
import jnr.ffi.annotations.Variadic;

/**
 * The libc functions snapbd needs, bound through jnr-ffi. Functions that report failure
 * through errno are read back with {@link Native#errno()}. Public only because jnr-ffi
 * implements it in a class loader of its own; nothing outside this package may use it.
 */
public interface LibC {

    // open(2) is variadic: the mode only follows when O_CREAT or O_TMPFILE is given.
    @Variadic(fixedCount = 2)
    int open(String path, int flags, int mode);

    int close(int fd);

    int fsync(int fd);

    /** Reads into {@code buf} from its position; jnr-ffi passes heap and direct buffers alike. */
    long read(int fd, @Out ByteBuffer buf, long count);

    /** Writes from {@code buf}'s position; the caller advances the position. */
    long write(int fd, @In ByteBuffer buf, long count);

    // ioctl(2) is variadic too; on x86-64 fixed and variadic integer arguments travel the same
    // way, but the annotation keeps the binding right on ABIs where they do not.
    @Variadic(fixedCount = 2)
    int ioctl(int fd, long request, long arg);

    /** Returns the error number instead of setting errno. */
    int posix_fallocate(int fd, long offset, long len);

    int fallocate(int fd, int mode, long offset, long len);

    String strerror(int errnum);
}

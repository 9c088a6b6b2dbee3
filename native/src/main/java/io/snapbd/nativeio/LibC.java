package io.snapbd.nativeio;

import java.nio.ByteBuffer;
import jnr.ffi.Pointer;
import jnr.ffi.annotations.In;
import jnr.ffi.annotations.Out;
import jnr.ffi.annotations.Variadic;
import jnr.ffi.byref.IntByReference;

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

    /** recv(2) into {@code buf} from its position: {@code flags} e.g. MSG_DONTWAIT for a read that never waits. */
    long recv(int fd, @Out ByteBuffer buf, long count, int flags);

    /** Writes from {@code buf}'s position; the caller advances the position. */
    long write(int fd, @In ByteBuffer buf, long count);

    /** Gathering write: {@code iov} is a direct buffer of {@code iovcnt} struct iovec {base, len} entries. */
    long writev(int fd, @In ByteBuffer iov, int iovcnt);

    // ioctl(2) is variadic too; on x86-64 fixed and variadic integer arguments travel the same
    // way, but the annotation keeps the binding right on ABIs where they do not.
    @Variadic(fixedCount = 2)
    int ioctl(int fd, long request, long arg);

    /** Returns the error number instead of setting errno. */
    int posix_fallocate(int fd, long offset, long len);

    int fallocate(int fd, int mode, long offset, long len);

    String strerror(int errnum);

    // ---- thread priority (ThreadPriority) ----

    int gettid();

    int setpriority(int which, int who, int prio);

    // ---- process exit (ProcessExit) ----

    void _exit(int status);

    // ---- sockets passed by systemd (InheritedSockets, NativeSocket) ----

    int getpid();

    @Variadic(fixedCount = 2)
    int fcntl(int fd, int cmd, int arg);

    int getsockopt(int fd, int level, int optname, @Out ByteBuffer optval, @In @Out IntByReference optlen);

    int setsockopt(int fd, int level, int optname, @In ByteBuffer optval, int optlen);

    int getsockname(int fd, @Out ByteBuffer addr, @In @Out IntByReference addrlen);

    int getpeername(int fd, @Out ByteBuffer addr, @In @Out IntByReference addrlen);

    /** {@code addr} and {@code addrlen} may be null. */
    int accept4(int fd, Pointer addr, Pointer addrlen, int flags);

    /** {@code fds}: a direct buffer of {@code nfds} struct pollfd {int fd; short events; short revents}. */
    int poll(@In @Out ByteBuffer fds, long nfds, int timeout);

    int shutdown(int fd, int how);

    // ---- the admin socket (UnixListeners, PeerCredentials) ----

    int socket(int domain, int type, int protocol);

    int bind(int fd, @In ByteBuffer addr, int addrlen);

    int listen(int fd, int backlog);

    int connect(int fd, @In ByteBuffer addr, int addrlen);

    int geteuid();

    // ---- file descriptors passed over a Unix socket (FdPassing) ----

    /** {@code msg}: a struct msghdr whose iovec and control buffer lie in native memory. */
    long sendmsg(int fd, Pointer msg, int flags);

    long recvmsg(int fd, Pointer msg, int flags);

    int pipe2(@Out int[] fds, int flags);

    int dup3(int oldfd, int newfd, int flags);
}

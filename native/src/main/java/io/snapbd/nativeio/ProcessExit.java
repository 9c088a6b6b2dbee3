package io.snapbd.nativeio;

import java.io.IOException;

/**
 * Ends this process at once with _exit(2): no shutdown hooks and none of the JVM's exit work. For a process that
 * has nothing left to do and whose JVM exit would only cost time others wait for (a server that handed over to its
 * successor would otherwise write a class data sharing archive, -XX:ArchiveClassesAtExit, while the successor
 * takes over on the same CPUs).
 */
public final class ProcessExit {

    private ProcessExit() {
    }

    /** Does not return, unless libc could not be loaded (then the IOException says why). */
    public static void now(int status) throws IOException {
        Native.libc()._exit(status);
    }
}

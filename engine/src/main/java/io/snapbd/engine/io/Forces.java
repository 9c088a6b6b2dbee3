package io.snapbd.engine.io;

import java.nio.file.Path;

/**
 * Announces every force the engine issues (fsync/fdatasync of a file or a directory, msync of a mapped range)
 * just before it is issued. A test seam: the crash-state tests ({@code CrashStateTest}) record what is durable
 * from it. No listener outside tests, so a force costs one volatile read more.
 */
public final class Forces {

    /** Told of a force of [offset, offset+length) of {@code file}; {@code length < 0}: the whole file (or directory). */
    public interface Listener {
        void forcing(Path file, long offset, long length);
    }

    private static volatile Listener listener;

    private Forces() {
    }

    /** Installs {@code l} (null removes it); returns the one it replaces. */
    public static Listener listen(Listener l) {
        Listener old = listener;
        listener = l;
        return old;
    }

    public static void forcing(Path file, long offset, long length) {
        Listener l = listener;
        if (l != null) {
            l.forcing(file, offset, length);
        }
    }

    public static void forcing(Path file) {
        forcing(file, 0, -1);
    }
}

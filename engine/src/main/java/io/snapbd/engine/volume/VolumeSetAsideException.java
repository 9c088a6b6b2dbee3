package io.snapbd.engine.volume;

import java.io.IOException;
import java.nio.file.AccessDeniedException;
import java.nio.file.FileSystemException;
import java.nio.file.NoSuchFileException;

/**
 * A volume could not be opened and is set aside: not served, listed with {@link #reason()}, until it is deleted
 * or repaired and the data directory opened again (docs/production.md, "Volumes set aside").
 */
public final class VolumeSetAsideException extends IOException {

    private final String volume;
    private final String reason;

    public VolumeSetAsideException(String volume, String reason, Throwable cause) {
        super("volume " + volume + " is set aside: " + reason, cause);
        this.volume = volume;
        this.reason = reason;
    }

    public String volume() {
        return volume;
    }

    /** Why, naming the file where there is one. */
    public String reason() {
        return reason;
    }

    /** A one-line reason for {@code e} that names the file: the JDK's own messages do not always. */
    public static String reasonOf(Throwable e) {
        if (e instanceof NoSuchFileException n) {
            return n.getFile() + ": missing";
        }
        if (e instanceof AccessDeniedException a) {
            return a.getFile() + ": permission denied";
        }
        if (e instanceof FileSystemException f && f.getFile() != null && f.getReason() != null) {
            return f.getFile() + ": " + f.getReason();
        }
        if (e instanceof InternalError) {
            return "access through a memory mapping failed (SIGBUS): " + e.getMessage();
        }
        String m = e.getMessage();
        return m == null || m.isBlank() ? e.toString() : m;
    }
}

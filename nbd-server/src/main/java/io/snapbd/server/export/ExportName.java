package io.snapbd.server.export;

import java.util.Objects;

/**
 * The name of an export: {@code VOLUME} (the volume, read-write) or {@code VOLUME@SNAPSHOT} (one of its snapshots,
 * read-only). Volume names cannot hold '@', so the first '@' separates the two parts.
 */
public record ExportName(String volume, String snapshot) {

    public ExportName {
        Objects.requireNonNull(volume, "volume");
    }

    /** Splits {@code VOLUME} or {@code VOLUME@SNAPSHOT} at its first '@'; no check of the parts. */
    public static ExportName parse(String name) {
        int at = name.indexOf('@');
        return at < 0 ? new ExportName(name, null) : new ExportName(name.substring(0, at), name.substring(at + 1));
    }

    public static ExportName ofVolume(String volume) {
        return new ExportName(volume, null);
    }

    public static ExportName ofSnapshot(String volume, String snapshot) {
        return new ExportName(volume, Objects.requireNonNull(snapshot, "snapshot"));
    }

    /** Shorthand for {@code ofSnapshot(volume, snapshot).toString()}. */
    public static String format(String volume, String snapshot) {
        return ofSnapshot(volume, snapshot).toString();
    }

    public boolean isSnapshot() {
        return snapshot != null;
    }

    /** True when this export is volume {@code volume} or one of its snapshots. */
    public boolean belongsTo(String volume) {
        return this.volume.equals(volume);
    }

    /** {@code VOLUME} or {@code VOLUME@SNAPSHOT}: the name clients ask for. */
    @Override
    public String toString() {
        return snapshot == null ? volume : volume + "@" + snapshot;
    }
}

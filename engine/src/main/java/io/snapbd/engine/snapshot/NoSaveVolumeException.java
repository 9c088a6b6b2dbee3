package io.snapbd.engine.snapshot;

/**
 * A snapshot was asked of a volume created without save space ({@code --save-size 0}): it would have nowhere to
 * keep before-images (Mylex refuses an initiate without a log drive: "a log LUN has not been defined").
 * Thrown before anything is created.
 */
public final class NoSaveVolumeException extends IllegalArgumentException {
    public NoSaveVolumeException(String volume) {
        super("no save volume: volume " + volume + " was created with --save-size 0, so a snapshot would have nowhere"
                + " to keep before-images; a volume's save size is fixed at creation (create one with --save-size SIZE"
                + " and copy the data over)");
    }
}

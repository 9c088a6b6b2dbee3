package io.snapbd.server.api;

/** A failure whose message is meant for the user as is; {@code code} names the kinds a script may test. */
public final class OperationException extends Exception {
    /** Error code of {@code snapshot.create} on a volume without save space (CLI exit status 5). */
    public static final String NO_SAVE_VOLUME = "no-save-volume";

    private final String code;

    public OperationException(String message) {
        this(message, null);
    }

    public OperationException(String message, String code) {
        super(message);
        this.code = code;
    }

    /** Null, or a stable code such as {@link #NO_SAVE_VOLUME}. */
    public String code() {
        return code;
    }
}

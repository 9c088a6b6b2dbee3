package io.snapbd.engine;

import java.io.IOException;

/** A request the engine refuses, with a reason the protocol layer maps to its own error code. */
public final class BlockDeviceException extends IOException {

    public enum Reason {
        /** offset/length outside the device, or malformed */
        OUT_OF_RANGE,
        /** write-type request to a read-only device */
        READ_ONLY,
        /** no space to keep the request's promises (save volume full for this snapshot) */
        NO_SPACE,
        /** the device cannot do this quickly (FAST_ZERO) or at all */
        NOT_SUPPORTED,
        /** the device is gone: deleted, terminated snapshot, shutting down */
        UNAVAILABLE
    }

    private final Reason reason;

    public BlockDeviceException(Reason reason, String message) {
        super(message);
        this.reason = reason;
    }

    public Reason reason() {
        return reason;
    }
}

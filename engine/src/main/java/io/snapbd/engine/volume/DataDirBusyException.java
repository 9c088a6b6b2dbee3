package io.snapbd.engine.volume;

import java.io.IOException;

/** Another process (normally a running server) holds the data directory. */
public final class DataDirBusyException extends IOException {
    public DataDirBusyException(String message) {
        super(message);
    }
}

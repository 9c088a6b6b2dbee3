package io.snapbd.server.protocol;

import java.io.IOException;

/** The peer broke the protocol so that the stream cannot be resynchronised: the connection is closed. */
public final class ProtocolViolation extends IOException {
    public ProtocolViolation(String message) {
        super(message);
    }
}

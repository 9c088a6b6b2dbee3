package io.snapbd.server.transmission;

import java.io.IOException;

/** The socket failed under us: nothing more can be sent or received. */
final class PeerGone extends IOException {
    final IOException io;

    PeerGone(IOException io) {
        super(io.getMessage(), io);
        this.io = io;
    }

    @Override
    public synchronized Throwable fillInStackTrace() {
        return this;
    }
}

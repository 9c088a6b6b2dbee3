package io.snapbd.engine.io;

import java.io.IOException;
import java.nio.ByteBuffer;

/** Where read data goes: the NBD connection writes the engine's mapping straight to its socket. */
@FunctionalInterface
public interface ByteSink {
    /** Consumes every byte between {@code src}'s position and limit; the buffer is only lent for the call. */
    void write(ByteBuffer src) throws IOException;
}

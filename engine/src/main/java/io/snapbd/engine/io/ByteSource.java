package io.snapbd.engine.io;

import java.io.IOException;
import java.nio.ByteBuffer;

/** Where write payload comes from: the NBD connection reads its socket straight into the engine's mapping. */
@FunctionalInterface
public interface ByteSource {
    /** Fills {@code dst} from its position to its limit, or throws. */
    void readFully(ByteBuffer dst) throws IOException;
}

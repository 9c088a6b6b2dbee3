package io.snapbd.nativeio;

import java.io.IOException;
import java.nio.ByteBuffer;

/**
 * A blocking socket channel that can also be read without waiting (recv(2) with MSG_DONTWAIT), for a reader that
 * polls its socket briefly before it blocks: a request caught that way costs no wake-up.
 */
public interface ReadNow {

    /**
     * The bytes the socket holds now, up to {@code dst}'s remaining space, without waiting: their count, 0 when it
     * holds none, -1 at end of stream.
     */
    int readNow(ByteBuffer dst) throws IOException;
}

package io.snapbd.server.transmission;

import java.io.IOException;

/** A reply's header and part of its payload are out but the rest cannot come: the connection must end. */
final class ReplyCut extends IOException {
    ReplyCut(String message) {
        super(message);
    }
}

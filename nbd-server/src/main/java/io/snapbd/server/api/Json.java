package io.snapbd.server.api;

import com.fasterxml.jackson.databind.ObjectMapper;

/** The one JSON mapper of the admin socket, the CLI and the state files: JSON is spoken only at those edges. */
public final class Json {

    /** Thread-safe once configured; nobody reconfigures it. */
    public static final ObjectMapper MAPPER = new ObjectMapper();

    private Json() {
    }
}

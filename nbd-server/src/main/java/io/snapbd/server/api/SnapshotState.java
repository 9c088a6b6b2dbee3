package io.snapbd.server.api;

import com.fasterxml.jackson.annotation.JsonValue;

/** A snapshot as listings show it; {@link #label()} is its name in JSON. {@code INVALID}: terminated, with a reason. */
public enum SnapshotState {
    ACTIVE("active"), INVALID("invalid");

    private final String label;

    SnapshotState(String label) {
        this.label = label;
    }

    @JsonValue
    public String label() {
        return label;
    }
}

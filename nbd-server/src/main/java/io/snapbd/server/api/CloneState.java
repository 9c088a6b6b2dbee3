package io.snapbd.server.api;

import com.fasterxml.jackson.annotation.JsonValue;

/** Where a snapshot clone job is; {@link #label()} is its name in JSON ({@code clone.status}, metrics). */
public enum CloneState {
    COPYING("copying"), DONE("done"), CANCELLED("cancelled"), FAILED("failed");

    private final String label;

    CloneState(String label) {
        this.label = label;
    }

    @JsonValue
    public String label() {
        return label;
    }
}

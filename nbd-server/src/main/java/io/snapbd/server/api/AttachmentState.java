package io.snapbd.server.api;

import com.fasterxml.jackson.annotation.JsonValue;

/** Where a kernel attachment ({@code /dev/nbdN}) is; {@link #label()} is its name in JSON and metrics. */
public enum AttachmentState {
    ATTACHING("attaching"), ATTACHED("attached"), DETACHING("detaching"), DETACHED("detached"), FAILED("failed");

    private final String label;

    AttachmentState(String label) {
        this.label = label;
    }

    @JsonValue
    public String label() {
        return label;
    }
}

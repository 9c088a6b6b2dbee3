package io.snapbd.server.api;

import com.fasterxml.jackson.annotation.JsonValue;

/**
 * A volume as listings show it; {@link #label()} is its name in JSON. {@code OPEN}: served, or opened by this
 * command; {@code CLOSED}: offline, not opened; {@code SET_ASIDE}: its open failed, it is not served;
 * {@code DAMAGED}: offline, its volume.meta cannot be read.
 */
public enum VolumeState {
    OPEN("open"), CLOSED("closed"), SET_ASIDE("set-aside"), DAMAGED("damaged");

    private final String label;

    VolumeState(String label) {
        this.label = label;
    }

    @JsonValue
    public String label() {
        return label;
    }
}

package io.snapbd.server.api;

import com.fasterxml.jackson.annotation.JsonIgnoreProperties;
import com.fasterxml.jackson.annotation.JsonValue;

import java.util.List;

/**
 * The result of {@code snapshot.diff}: the extents of VOLUME that changed from snapshot OLDER to snapshot YOUNGER,
 * or are not in use in YOUNGER, ascending (unchanged extents are not listed), their totals in bytes, and how long
 * the scan took.
 */
@JsonIgnoreProperties(ignoreUnknown = true)
public record SnapshotDiff(String volume, String older, String younger, int blockSize, List<Extent> extents,
                          long changedBytes, long unusedBytes, long scanMicros) {

    /** One listed extent, in bytes. */
    @JsonIgnoreProperties(ignoreUnknown = true)
    public record Extent(long offset, long length, State state) {
    }

    /** Why an extent is listed; {@link #label()} is its name in JSON. */
    public enum State {
        CHANGED("changed"), UNUSED("unused");

        private final String label;

        State(String label) {
            this.label = label;
        }

        @JsonValue
        public String label() {
            return label;
        }
    }
}

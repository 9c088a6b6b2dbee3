package io.snapbd.server.api;

import com.fasterxml.jackson.annotation.JsonIgnoreProperties;

/** The result of {@code snapshot.restore}: the blocks of VOLUME it changed back, and how long it took. */
@JsonIgnoreProperties(ignoreUnknown = true)
public record RestoreResult(String volume, String restoredFrom, long blocksChanged, long millis) {
}

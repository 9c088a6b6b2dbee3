package io.snapbd.server.api;

import com.fasterxml.jackson.annotation.JsonIgnoreProperties;
import com.fasterxml.jackson.annotation.JsonInclude;

/**
 * The result of {@code volume.delete} and {@code snapshot.delete}: the name deleted (a volume, or the snapshot's
 * export {@code VOLUME@SNAPSHOT}) and, for a snapshot, the volume's save space after it.
 */
@JsonIgnoreProperties(ignoreUnknown = true)
public record Deleted(String deleted, @JsonInclude(JsonInclude.Include.NON_NULL) SaveSpace saveVolume) {
}

package io.snapbd.server.api;

import com.fasterxml.jackson.annotation.JsonIgnoreProperties;

import java.util.List;

/** The result of {@code volume.list}: every volume of the data directory, by name. */
@JsonIgnoreProperties(ignoreUnknown = true)
public record VolumeList(List<VolumeStatus> volumes) {
}

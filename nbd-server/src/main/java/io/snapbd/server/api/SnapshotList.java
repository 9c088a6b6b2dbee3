package io.snapbd.server.api;

import com.fasterxml.jackson.annotation.JsonIgnoreProperties;
import com.fasterxml.jackson.annotation.JsonInclude;

import java.util.List;

/**
 * The result of {@code snapshot.list}: a volume's snapshots, oldest first, the restore running or failed
 * ({@code restore}, left out when there is none) and its save space.
 */
@JsonIgnoreProperties(ignoreUnknown = true)
public record SnapshotList(String volume, List<SnapshotStatus> snapshots,
                           @JsonInclude(JsonInclude.Include.NON_NULL) RestoreStatus restore, SaveSpace saveVolume) {
}

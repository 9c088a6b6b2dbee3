package io.snapbd.server.api;

import com.fasterxml.jackson.annotation.JsonIgnoreProperties;
import com.fasterxml.jackson.annotation.JsonInclude;
import io.snapbd.engine.volume.RestoreProgress;
import io.snapbd.engine.volume.Volume;

import java.time.Instant;

/**
 * The {@code restore} object of listings: the restore of production running now ({@code state} "in progress"), or
 * the last one if it failed ("failed", with {@code error}). {@code started} is an ISO-8601 instant.
 */
@JsonIgnoreProperties(ignoreUnknown = true)
public record RestoreStatus(String snapshot, String state, String phase, long blocksChanged, String started,
                            @JsonInclude(JsonInclude.Include.NON_NULL) String error) {

    /** Null when no restore runs and the last one did not fail. */
    public static RestoreStatus of(Volume v) {
        RestoreProgress p = v.restoreProgress();
        if (p == null) {
            return null;
        }
        return new RestoreStatus(p.snapshot(), p.error() == null ? "in progress" : "failed", p.phase(), p.blocksChanged(),
                Instant.ofEpochMilli(p.startedMillis()).toString(), p.error());
    }
}

package io.snapbd.server.api;

import com.fasterxml.jackson.annotation.JsonIgnoreProperties;
import com.fasterxml.jackson.annotation.JsonInclude;

/**
 * One clone job as {@code clone.status} answers it (and {@code status} lists it). {@code bytesTotal} is -1 until the
 * copy has started; {@code error} only once failed; {@code lunState} only when done: the target's LUN state at the
 * end of the copy, before anyone could connect.
 */
@JsonIgnoreProperties(ignoreUnknown = true)
public record CloneStatus(String source, String target, CloneState state, long bytesDone, long bytesTotal,
                          double percent, double elapsedSeconds,
                          @JsonInclude(JsonInclude.Include.NON_NULL) String error,
                          @JsonInclude(JsonInclude.Include.NON_NULL) LunStatus lunState) {
}

package io.snapbd.server.api;

import com.fasterxml.jackson.annotation.JsonIgnoreProperties;
import com.fasterxml.jackson.annotation.JsonInclude;
import io.snapbd.engine.lun.LunState;

/**
 * An export's LUN state with the token a backup tool saves; {@code token} is null while tracking is disabled (or
 * the snapshot is no longer active). {@code export} comes with the answer of the {@code lun.*} commands (not inside
 * a clone's status), {@code readOnly} with a snapshot export, whose state is fixed at its creation.
 */
@JsonIgnoreProperties(ignoreUnknown = true)
public record LunStatus(@JsonInclude(JsonInclude.Include.NON_NULL) String export,
                        boolean enabled, long counter, long timestamp,
                        @JsonInclude(JsonInclude.Include.NON_NULL) Boolean readOnly,
                        String identity, String token) {

    public static LunStatus of(LunState lun, LunState.Value val) {
        return new LunStatus(null, val.enabled(), val.counter(), val.timestamp(), null, lun.identity().toString(), lun.token(val));
    }

    /** This state as the answer about {@code export}. */
    public LunStatus forExport(String export) {
        return new LunStatus(export, enabled, counter, timestamp, readOnly, identity, token);
    }
}

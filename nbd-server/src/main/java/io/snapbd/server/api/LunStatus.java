package io.snapbd.server.api;

import com.fasterxml.jackson.annotation.JsonIgnoreProperties;
import io.snapbd.engine.lun.LunState;

/** An export's LUN state with the token a backup tool saves; {@code token} is null while tracking is disabled. */
@JsonIgnoreProperties(ignoreUnknown = true)
public record LunStatus(boolean enabled, long counter, long timestamp, String identity, String token) {

    public static LunStatus of(LunState lun, LunState.Value val) {
        return new LunStatus(val.enabled(), val.counter(), val.timestamp(), lun.identity().toString(), lun.token(val));
    }
}

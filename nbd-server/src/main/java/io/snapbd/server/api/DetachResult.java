package io.snapbd.server.api;

import com.fasterxml.jackson.annotation.JsonIgnoreProperties;

/** What {@code detach} answers: the device, the export it showed, whether the flush before the disconnect worked. */
@JsonIgnoreProperties(ignoreUnknown = true)
public record DetachResult(String device, String export, boolean detached, boolean flushed, long millis) {
}

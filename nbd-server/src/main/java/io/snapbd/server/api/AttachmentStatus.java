package io.snapbd.server.api;

import com.fasterxml.jackson.annotation.JsonIgnoreProperties;

/**
 * One kernel attachment as {@code attach} answers it and {@code status} lists it. {@code since} is an ISO-8601
 * instant; {@code timeoutSeconds} is null (and written as null) when the driver's default applies.
 */
@JsonIgnoreProperties(ignoreUnknown = true)
public record AttachmentStatus(String device, String export, boolean readOnly, String since, AttachmentState state,
                               long size, int blockSize, Integer timeoutSeconds, int transmissionFlags, String origin) {
}

package io.snapbd.server.api;

import com.fasterxml.jackson.annotation.JsonIgnoreProperties;

/**
 * One kernel attachment as {@code attach} answers it and {@code status} lists it. {@code since} is an ISO-8601
 * instant; {@code timeoutSeconds} is null (and written as null) when the driver's default applies.
 * {@code kernelInterface} is how the device was set up: {@code "netlink"} (generic netlink, no task bound to
 * the device) or {@code "ioctl"} (the fallback where the kernel has no nbd netlink family); null while attaching.
 */
@JsonIgnoreProperties(ignoreUnknown = true)
public record AttachmentStatus(String device, String export, boolean readOnly, String since, AttachmentState state,
                               long size, int blockSize, Integer timeoutSeconds, int transmissionFlags, String origin,
                               String kernelInterface) {
}

package io.snapbd.server.handshake;

import io.snapbd.server.export.Export;

/**
 * What the handshake settled: the export, whether structured replies are on, and the id of the selected
 * {@code base:allocation} context (0 when none was selected).
 */
public record Negotiated(Export export, boolean structuredReplies, int allocationContextId) {
}

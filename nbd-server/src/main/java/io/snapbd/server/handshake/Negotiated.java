package io.snapbd.server.handshake;

import io.snapbd.server.export.Export;
import io.snapbd.server.export.MetaContext;

import java.util.List;

/**
 * What the handshake settled: the export, whether structured replies are on, and the meta contexts
 * selected for BLOCK_STATUS (context id i+1 is {@code contexts.get(i)}; empty when none).
 */
public record Negotiated(Export export, boolean structuredReplies, List<MetaContext> contexts) {

    /** Transmission without negotiation (the kernel client): simple replies, no contexts. */
    public static Negotiated plain(Export export) {
        return new Negotiated(export, false, List.of());
    }
}

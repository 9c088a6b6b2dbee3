package io.snapbd.server.handshake;

import io.snapbd.server.export.Export;
import io.snapbd.server.export.MetaContext;

import java.util.List;

/**
 * What the handshake settled: the export, whether structured replies are on, the meta contexts
 * selected for BLOCK_STATUS (context id i+1 is {@code contexts.get(i)}; empty when none), and whether the
 * access rules granted this client read-only access (writes then fail with EPERM).
 */
public record Negotiated(Export export, boolean structuredReplies, List<MetaContext> contexts, boolean readOnly) {

    public Negotiated(Export export, boolean structuredReplies, List<MetaContext> contexts) {
        this(export, structuredReplies, contexts, false);
    }

    /** Transmission without negotiation (the kernel client): simple replies, no contexts. */
    public static Negotiated plain(Export export) {
        return new Negotiated(export, false, List.of());
    }
}

package io.snapbd.server.client;

/**
 * Block size constraints of an export ({@code NBD_INFO_BLOCK_SIZE}). When the server did not send them,
 * {@code advertised} is false and the values are the spec's advice to interoperable clients: minimum 1,
 * preferred 4096, and at most 32 MiB per READ or WRITE.
 */
public record BlockSize(long minimum, long preferred, long maximum, boolean advertised) {

    static final BlockSize DEFAULT = new BlockSize(1, 4096, 32L << 20, false);
}

package io.snapbd.server.client;

/** One export named by {@code NBD_OPT_LIST}; the description is {@code ""} when the server offered none. */
public record ExportEntry(String name, String description) {
}

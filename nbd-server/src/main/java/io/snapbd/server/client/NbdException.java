package io.snapbd.server.client;

import io.snapbd.server.protocol.Nbd;

import java.io.IOException;

/**
 * The server refused or failed one request and said so with an NBD error value. The connection stays usable;
 * failures of the connection itself are plain {@link IOException}s.
 */
public final class NbdException extends IOException {

    private static final long serialVersionUID = 1L;

    private final int errno;
    private final String serverMessage;

    /**
     * @param errno         the NBD error value (the Linux errno numbers the protocol uses)
     * @param request       what was asked, e.g. {@code "READ [4096, +512)"}
     * @param serverMessage the text of a structured error chunk, or {@code ""}
     */
    public NbdException(int errno, String request, String serverMessage) {
        super(request + " failed: " + errnoName(errno) + (serverMessage.isEmpty() ? "" : " (server: " + serverMessage + ")"));
        this.errno = errno;
        this.serverMessage = serverMessage;
    }

    /** The NBD error value, e.g. 22 for EINVAL. */
    public int errno() {
        return errno;
    }

    /** The error's symbolic name, e.g. {@code "EINVAL"}. */
    public String errnoName() {
        return errnoName(errno);
    }

    /** The human-readable text the server attached to a structured error, or {@code ""}. */
    public String serverMessage() {
        return serverMessage;
    }

    /** Name of an NBD error value; values outside the protocol's list read {@code "errno N"}. */
    public static String errnoName(int errno) {
        switch (errno) {
            case Nbd.EPERM: return "EPERM";
            case Nbd.EIO: return "EIO";
            case Nbd.ENOMEM: return "ENOMEM";
            case Nbd.EINVAL: return "EINVAL";
            case Nbd.ENOSPC: return "ENOSPC";
            case Nbd.EOVERFLOW: return "EOVERFLOW";
            case Nbd.ENOTSUP: return "ENOTSUP";
            case Nbd.ESHUTDOWN: return "ESHUTDOWN";
            default: return "errno " + errno;
        }
    }
}

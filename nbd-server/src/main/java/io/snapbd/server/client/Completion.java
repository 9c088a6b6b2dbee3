package io.snapbd.server.client;

/**
 * Callback of an asynchronous request ({@link NbdClient#submitRead}, {@link NbdClient#submitWrite}). It runs on
 * the connection's reader thread, so it must be short and must not block: no blocking client calls, no
 * submits. Throwing from it is a bug and fails the connection.
 */
@FunctionalInterface
public interface Completion {

    /** {@code error} of a request that succeeded. */
    int OK = 0;

    /**
     * {@code error} of a request lost with the connection (disconnect, protocol violation, I/O error);
     * {@link NbdClient#failure()} says why.
     */
    int CONNECTION_FAILED = -1;

    /**
     * @param error {@link #OK}, an NBD error value from the server (see {@link NbdException#errnoName}), or
     *              {@link #CONNECTION_FAILED}
     * @param tag   the caller's tag given at submit time
     */
    void complete(int error, long tag);
}

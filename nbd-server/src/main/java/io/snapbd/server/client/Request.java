package io.snapbd.server.client;

import io.snapbd.server.protocol.Nbd;

import java.nio.ByteBuffer;
import java.util.List;

/**
 * One slot of a connection's fixed request pool: the request on the wire and what its reply has said so far.
 * Slots are reused for the life of the connection, so an asynchronous request allocates nothing. The handle
 * sent to the server is the slot index plus a generation count, so a late or duplicated reply can never be
 * matched to a newer request in the same slot.
 */
final class Request {

    static final int FREE = 0;
    static final int ACQUIRED = 1;
    static final int IN_FLIGHT = 2;
    static final int DONE = 3;

    final int index;
    private int generation;
    long handle;
    /** Written by the owner before sending and by the reader when done; read across threads. */
    volatile int state = FREE;

    int type;
    long offset;
    long length;

    /** READ: the destination and the region of it that the request fills. */
    ByteBuffer buffer;
    int bufferStart;
    int bufferEnd;

    /** Asynchronous requests: who to tell. Blocking requests: who waits. */
    Completion completion;
    long tag;
    Thread waiter;

    /** BLOCK_STATUS: the context asked about and the extents received for it. */
    int contextId;
    List<Extent> extents;
    long nextExtentOffset;

    /** Reply state: first error and its text, data bytes received, or lost with the connection. */
    int error;
    String message;
    long received;
    boolean lost;

    Request(int index) {
        this.index = index;
    }

    /** Takes the slot for a new request; called with the pool lock held. */
    void claim(int type, long offset, long length) {
        generation++;
        handle = ((long) generation << 32) | index;
        this.type = type;
        this.offset = offset;
        this.length = length;
        buffer = null;
        completion = null;
        waiter = null;
        extents = null;
        error = 0;
        message = "";
        received = 0;
        lost = false;
        state = ACQUIRED;
    }

    /** Records the first error of the reply; later ones add nothing a caller could act on. */
    void fail(int errno, String text) {
        if (error == 0) {
            error = errno;
            message = text;
        }
    }

    String describe() {
        return type == Nbd.CMD_FLUSH ? "FLUSH" : Nbd.commandName(type) + " [" + offset + ", +" + length + ")";
    }
}

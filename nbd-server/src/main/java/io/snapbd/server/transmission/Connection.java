package io.snapbd.server.transmission;

import io.snapbd.engine.BlockDevice;
import io.snapbd.engine.BlockDeviceException;
import io.snapbd.engine.io.ByteSource;
import io.snapbd.engine.lun.LunState;
import io.snapbd.server.Log;
import io.snapbd.server.export.Export;
import io.snapbd.server.export.ExportStats;
import io.snapbd.server.export.MetaContext;
import io.snapbd.server.handshake.Negotiated;
import io.snapbd.server.protocol.Nbd;
import io.snapbd.server.protocol.ProtocolViolation;
import io.snapbd.server.protocol.RequestHeader;
import io.snapbd.server.tls.TlsChannel;

import java.io.EOFException;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.ByteChannel;
import java.nio.channels.GatheringByteChannel;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.Executor;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * The transmission phase of one connection. A reader thread decodes requests into a reused header
 * flyweight and runs READ, WRITE, TRIM and WRITE_ZEROES inline: a write's payload is received in full (usually
 * in the same read() as its header, into a read-ahead buffer) and then copied into the mapping, so a payload that
 * stops part way is never applied; a read is
 * one copy from the mapping into the socket, and once a reply announcing data is out, exactly that much data
 * follows or the connection ends. Durability work (FLUSH, FUA) goes to a shared
 * pool through {@link SyncTasks} and is answered out of order; so are the WRITE, TRIM and WRITE_ZEROES requests of a
 * device with slow changes (a mirrored volume: {@link ChangeTasks}). Every reply goes out
 * through {@link Replies}, which serialises both sides with a per-connection send lock.
 *
 * <p>Two readers take turns ({@value #READERS_PROPERTY}, default {@value #DEFAULT_READERS}; a TLS connection has
 * one): exactly one thread holds the reading role at a time. The holder that decodes a READ with nothing more
 * received behind it hands the role to the other thread before answering, so that the next request's read() runs
 * while this answer is copied out (and while this thread waits for a CPU). Everything else (WRITE with its payload,
 * TRIM, WRITE_ZEROES, FLUSH, BLOCK_STATUS, a READ with requests queued behind it) is served by the holder with the
 * role kept: a FLUSH is read only after every write read before it has completed. Each reader has its own engine
 * session and per-request state; the read-ahead buffer and payload buffers belong to the role.
 *
 * <p>Handing over (an in-place restart passing the kernel's connection to the successor): {@link #stopAtBoundary()}
 * makes the role holder stop before the next request header instead of reading it, and the other reader stop
 * once it has answered what it holds; {@link #serve()} then returns after every request read is answered (sync
 * pool, change tasks), without closing or shutting the socket down. {@link #handedOver()} gives the bytes read
 * ahead of that boundary, which the successor's Connection consumes first ({@code readAhead} of the constructor). A
 * holder waiting in read() for a request that does not come sees the stop when the channel's receive timeout
 * passes (the read returns 0: {@code SocketPairs.End#setReceiveTimeout}).
 */
public final class Connection {

    private final ByteChannel channel;
    private final Export export;
    private final BlockDevice device;
    /** The export is read-only, or the access rules granted this client read-only access. */
    private final boolean readOnly;
    private final BlockDevice.Session session;
    private final LunState lun;
    /** Threads taking turns on the socket: 1 or 2. */
    private final int readers;
    private final boolean structured;
    private final List<MetaContext> contexts;
    private final String peer;

    private final ByteBuffer requestBuffer = ByteBuffer.allocateDirect(RequestHeader.BYTES);
    private final RequestHeader request = new RequestHeader().wrap(requestBuffer);
    private final Replies replies;
    private final ByteBuffer scratch = ByteBuffer.allocateDirect(64 << 10);
    /**
     * Bytes read from the socket ahead of use, [position, limit) not consumed yet: one read() usually brings a
     * request header with its WRITE payload (and often the next requests), so a small write costs one system call
     * and its payload is copied from here into the mapping once it is complete.
     */
    private final ByteBuffer in = ByteBuffer.allocateDirect(IN_BYTES);
    private static final int IN_BYTES = 128 << 10;

    private final PayloadSource payload = new PayloadSource();
    private final ReceivedPayload received = new ReceivedPayload();
    /** Polls the socket before a read that may block, where that pays; the role's. */
    private final ReadPolling polling = new ReadPolling();
    private final SyncTasks syncTasks;
    /** Changes run as tasks and answered out of order, for devices with slow changes (a mirror); else null. */
    private final ChangeTasks changes;

    /** System property: how many threads take turns reading one connection's requests (1 or 2). */
    static final String READERS_PROPERTY = "snapbd.readers";
    static final int DEFAULT_READERS = 2;
    private static final int READERS = Math.max(1, Math.min(2, Integer.getInteger(READERS_PROPERTY, DEFAULT_READERS)));
    /**
     * With 2 readers, a READ with nothing queued behind it is handed off when other connections are served too (the
     * CPUs are shared: the reader that waited in read() is woken at once, where a thread that just answered waits for a
     * CPU), or when the client shows more than one request in flight (the last socket read brought several, or a
     * handed-off READ is still being answered). A lone connection at depth 1 keeps its READs: nothing can be read
     * meanwhile, and a hand-off would only cost a wake-up. {@code -Dsnapbd.readers.handoff=always} hands off every
     * READ with nothing queued behind it (for comparisons).
     */
    private static final boolean HAND_OFF_ALWAYS = "always".equals(System.getProperty(READERS_PROPERTY + ".handoff"));


    public Connection(ByteChannel channel, GatheringByteChannel out, Negotiated n, Executor syncPool, String peer) {
        this(channel, out, n, syncPool, peer, READERS, null);
    }

    /**
     * A connection handed over by the previous server at a request boundary: {@code readAhead} (its position to its
     * limit) is what that server had read from the socket beyond the boundary; it is served before anything read
     * from the socket.
     */
    public Connection(ByteChannel channel, GatheringByteChannel out, Negotiated n, Executor syncPool, String peer,
            ByteBuffer readAhead) {
        this(channel, out, n, syncPool, peer, READERS, readAhead);
    }

    /** {@code readers}: 1 or 2 threads taking turns on the socket (a TLS channel always gets 1). */
    Connection(ByteChannel channel, GatheringByteChannel out, Negotiated n, Executor syncPool, String peer, int readers) {
        this(channel, out, n, syncPool, peer, readers, null);
    }

    Connection(ByteChannel channel, GatheringByteChannel out, Negotiated n, Executor syncPool, String peer, int readers,
            ByteBuffer readAhead) {
        this.channel = channel;
        this.readers = channel instanceof TlsChannel ? 1 : Math.max(1, Math.min(2, readers));
        this.in.limit(0);
        if (readAhead != null && readAhead.hasRemaining()) {
            if (readAhead.remaining() > IN_BYTES) {
                throw new IllegalArgumentException(readAhead.remaining() + " bytes read ahead, more than the " + IN_BYTES
                        + " byte read-ahead buffer");
            }
            in.clear();
            in.put(readAhead.duplicate());
            in.flip();
        }
        this.export = n.export();
        this.device = export.device();
        this.readOnly = export.readOnly() || n.readOnly();
        this.session = device.openSession();
        this.replies = new Replies(out, device, export.name());
        this.lun = device.lunState();
        this.structured = n.structuredReplies();
        this.contexts = n.contexts();
        this.syncTasks = new SyncTasks(syncPool, export, replies, peer);
        this.changes = device.slowChanges() && !readOnly ? new ChangeTasks(syncPool, export, replies, peer) : null;
        this.peer = peer;
    }

    // The reading role: held by one reader at a time; see the class comment.
    private final Object role = new Object();
    private boolean roleHeld;           // guarded by role
    private volatile boolean ended;     // no more requests are read: DISC, end of stream, an error, or a stop
    /** {@link #stopAtBoundary()} was asked: no reader starts another request. */
    private volatile boolean stopping;
    /** A reader ended otherwise than by the stop (end of stream, DISC, an error): the connection cannot be handed over. */
    private volatile boolean broken;
    /** Connections of this process in their transmission phase (counted once per connection, read per READ). */
    private static final AtomicInteger SERVING = new AtomicInteger();
    /**
     * READs being answered (and then recorded) after their reader handed the role on: the client has several requests
     * in flight.
     */
    private final AtomicInteger handedOff = new AtomicInteger();
    /** Requests decoded from the bytes of the last socket read (the role's): more than one, the client pipelines. */
    private int chunkRequests;

    /**
     * The connection's statistics slot, shared by its readers (one set of latency recorders per connection, not per
     * thread: about 0.5 MB each); it has one writer at a time: the role holder while no READ is handed off, else
     * whoever holds its monitor ({@code Reader.record}).
     */
    private volatile ExportStats.Slot stats;

    /** The statistics slot of a connection that serves, else null (for tests). */
    ExportStats.Slot statsSlot() {
        return stats;
    }

    /** Serves requests until the client disconnects or breaks the protocol; always releases the sessions. */
    public void serve() {
        replies.queued(in::hasRemaining);       // replies gather while requests are queued
        stats = export.stats().openSlot();
        Reader lead = new Reader(session);
        Reader second = null;
        Thread follower = null;
        SERVING.incrementAndGet();
        try {
            if (readers > 1) {
                second = new Reader(device.openSession());
                follower = new Thread(second::run, Thread.currentThread().getName() + " (2nd reader)");
                follower.setDaemon(true);
                follower.start();
            }
            lead.run();
        } finally {
            if (follower != null) {
                joinUninterruptibly(follower);
            }
            stats.close();
            SERVING.decrementAndGet();
            try {
                replies.flush();        // whole replies gathered before the end (e.g. an EINVAL before a violation)
            } catch (IOException e) {
                broken = true;
                Log.debug("%s: could not send the last replies: %s", peer, e.getMessage());
            }
            if (changes != null) {
                changes.awaitAll();
                changes.close();
            }
            syncTasks.awaitAll();
            if (stopping && !broken) {
                Log.debug("%s: stopped at a request boundary, %d bytes read ahead", peer, in.remaining());
            }
            session.close();
            if (second != null) {
                second.session.close();
            }
        }
    }

    /**
     * Asks the connection to stop at the next request boundary, to be handed over: the reader holding the role
     * reads no further request (a partly received one is finished first), the other stops once its READ is
     * answered. Returns at once; {@link #serve()} returns when the connection has stopped and every request read is
     * answered. Never closes or shuts down the socket.
     */
    public void stopAtBoundary() {
        synchronized (role) {
            stopping = true;
            role.notifyAll();       // a reader waiting for the role stops
        }
    }

    /**
     * After {@link #serve()} returned: the bytes read from the socket beyond the request boundary where the
     * connection stopped (a copy, possibly empty), or null when it did not stop at a boundary (it was not asked to,
     * or it ended first: end of stream, DISC, an error) and must not be handed over.
     */
    public byte[] handedOver() {
        if (!stopping || broken) {
            return null;
        }
        byte[] b = new byte[in.remaining()];
        in.duplicate().get(b);
        return b;
    }

    private static void joinUninterruptibly(Thread t) {
        boolean interrupted = false;
        while (true) {
            try {
                t.join();
                break;
            } catch (InterruptedException e) {
                interrupted = true;
            }
        }
        if (interrupted) {
            Thread.currentThread().interrupt();
        }
    }

    /**
     * One of the threads taking turns on the socket, with its own engine session and per-request state
     * (ExportStats: the time of the request it serves). Holding the role it reads and dispatches requests.
     */
    private final class Reader {
        final BlockDevice.Session session;
        final ExtentList extents = new ExtentList();
        final Replies.ReadSender sender;
        final ExportStats.Slot slot = stats;        // the connection's, opened before its readers
        boolean holdsRole;
        long requestStart;
        int type;                   // the request being served (the shared header flyweight moves on after a hand-off)
        long length;
        boolean answerLater;        // answered from the sync pool: it records the time there
        boolean requestFailed;
        /** The request being served is a READ this reader handed the role on for; counted in {@link #handedOff}. */
        boolean handedOffRead;

        Reader(BlockDevice.Session session) {
            this.session = session;
            this.sender = replies.readSender(session);
        }

        void run() {
            boolean stopped = false;    // by stopAtBoundary() (or because the other reader stopped so)
            try {
                while (takeRole()) {
                    requestBuffer.clear();
                    try {
                        readIn(requestBuffer);
                    } catch (AtBoundary e) {
                        stopped = true;
                        return;
                    } catch (EOFException e) {
                        Log.debug("%s: closed without NBD_CMD_DISC", peer);
                        return;
                    }
                    chunkRequests++;
                    requestStart = System.nanoTime();
                    answerLater = false;
                    requestFailed = false;
                    if (!dispatch(this)) {
                        return;
                    }
                    try {
                        if (!answerLater) {     // answered inline: its time is known now (else SyncTasks records it)
                            record(System.nanoTime() - requestStart);
                        }
                    } finally {
                        if (handedOffRead) {
                            handedOffRead = false;
                            handedOff.decrementAndGet();    // after its record: see record()
                        }
                    }
                }
                stopped = stopping && !Thread.currentThread().isInterrupted();
            } catch (ProtocolViolation e) {
                Log.warn("%s: %s; closing the connection", peer, e.getMessage());
            } catch (ReplyCut e) {
                Log.warn("%s: %s; closing the connection (the reply's payload was partly sent: nothing may follow inside it)",
                        peer, e.getMessage());
            } catch (IOException e) {
                if ("Bad address".equals(e.getMessage())) {
                    // EFAULT: the kernel could not move data between the socket and the mapping of the export's file
                    // (read(2)/write(2) straight into or out of it), the system-call twin of a SIGBUS.
                    Log.error("%s: connection to %s ended: the kernel could not copy data between the socket and the memory "
                            + "mapping of its data file (EFAULT: no space left on the file system for a page of a sparse volume, "
                            + "or an I/O error)", peer, export.name());
                } else {
                    Log.debug("%s: connection ended: %s", peer, e.getMessage());
                }
            } finally {
                if (!stopped) {
                    broken = true;
                }
                end();
            }
        }

        /**
         * Records the request just answered in the connection's slot, which has one writer at a time. The role holder
         * records without a lock while no READ is handed off: the other reader then waits for the role (it counts in
         * {@link #handedOff} from handing the role on until after its own record), and what it recorded before was
         * published by that counter or by the role's monitor. A handed-off READ, and the holder while one is out,
         * record under the slot's monitor. So a lone connection at depth 1, whose READs stay on one thread, takes no
         * lock per request.
         */
        private void record(long nanos) {
            if (readers == 1 || (holdsRole && handedOff.get() == 0)) {
                slot.record(type, length, nanos, !requestFailed);
            } else {
                synchronized (slot) {       // the other reader may be recording a request of its own
                    slot.record(type, length, nanos, !requestFailed);
                }
            }
        }

        /** Waits for the reading role; false when the connection ends or stops instead. */
        private boolean takeRole() {
            if (holdsRole) {
                return !ended && !stopping;
            }
            synchronized (role) {
                while (roleHeld && !ended && !stopping) {
                    try {
                        role.wait();
                    } catch (InterruptedException e) {
                        Thread.currentThread().interrupt();
                        return false;
                    }
                }
                if (ended || stopping) {
                    return false;
                }
                roleHeld = true;
                holdsRole = true;
            }
            replies.reader(Thread.currentThread());
            return true;
        }

        /** Gives the reading role to the other reader (a READ is about to be answered; nothing is queued behind it). */
        void handOff() {
            handedOff.incrementAndGet();
            handedOffRead = true;
            replies.reader(null);
            synchronized (role) {
                roleHeld = false;
                holdsRole = false;
                role.notify();
            }
        }

        /**
         * This reader stops, and with it the connection. If the other reader holds the role (it may sit in read()
         * for a request that will never come: the client waits for the answer this reader could not finish), the
         * channel is closed to wake it.
         */
        private void end() {
            boolean wake;
            synchronized (role) {
                wake = !ended && roleHeld && !holdsRole;
                ended = true;
                if (holdsRole) {
                    holdsRole = false;
                    roleHeld = false;
                    replies.reader(null);
                }
                role.notifyAll();
            }
            if (wake && !stopping) {        // a stopping holder sees the stop at its read's timeout, at a boundary
                try {
                    channel.close();
                } catch (IOException e) {
                    Log.debug("%s: close: %s", peer, e.getMessage());
                }
            }
        }
    }

    /** A change task; gathered replies go out first, since the reader may wait here (ChangeTasks.MAX_IN_FLIGHT). */
    private ChangeTasks.Task acquireChange() throws IOException {
        replies.flush();
        return changes.acquire();
    }

    /** Handles the request in {@link #request}; false when the connection must end. */
    private boolean dispatch(Reader r) throws IOException {
        int magic = request.magic();
        if (magic != Nbd.REQUEST_MAGIC) {
            throw new ProtocolViolation("bad request magic 0x" + Integer.toHexString(magic));
        }
        int flags = request.flags();
        int type = request.type();
        long handle = request.handle();
        long offset = request.offset();
        long length = request.length();
        r.type = type;
        r.length = length;
        export.requests().incrementAndGet();
        if (lun != null && (type == Nbd.CMD_WRITE || type == Nbd.CMD_TRIM || type == Nbd.CMD_WRITE_ZEROES)) {
            lun.onAlteringRequest();     // HP order: counted at dispatch, before the request executes
        }

        if (type == Nbd.CMD_WRITE && (length > Nbd.MAX_PAYLOAD)) {
            // The payload cannot be skipped cheaply, so the stream cannot be resynchronised.
            replies.sendSimpleReply(handle, Nbd.EINVAL);
            throw new ProtocolViolation("WRITE of " + length + " bytes exceeds the " + Nbd.MAX_PAYLOAD + " byte maximum");
        }
        if (type == Nbd.CMD_DISC) {
            // Whatever its flags: DISC has no reply, and the client sends nothing after it.
            Log.debug("%s: disconnect requested", peer);
            return false;
        }
        if ((flags & ~Nbd.CMD_FLAGS_KNOWN) != 0) {
            skipPayload(type, length);
            error(r, type, handle, Nbd.EINVAL, "unknown command flags 0x" + Integer.toHexString(flags));
            return true;
        }
        try {
            switch (type) {
                case Nbd.CMD_READ:
                    if (readers > 1 && !in.hasRemaining()
                            && (HAND_OFF_ALWAYS || chunkRequests > 1 || handedOff.get() > 0 || SERVING.get() > 1)) {
                        r.handOff();        // the other reader reads the next request while this one answers
                        read(r, handle, flags, offset, length);     // handedOff goes down once it is recorded
                    } else {
                        read(r, handle, flags, offset, length);
                    }
                    return true;
                case Nbd.CMD_WRITE:
                    write(r, handle, flags, offset, (int) length);
                    return true;
                case Nbd.CMD_FLUSH:
                    submit(r, SyncTasks.FLUSH, handle, 0, 0);
                    return true;
                case Nbd.CMD_TRIM:
                    trim(r, handle, flags, offset, length);
                    return true;
                case Nbd.CMD_WRITE_ZEROES:
                    writeZeroes(r, handle, flags, offset, length);
                    return true;
                case Nbd.CMD_CACHE:
                    checkRequest(type, offset, length);
                    replies.sendSimpleReply(handle, 0);     // the mapping is the cache: nothing to prefetch
                    return true;
                case Nbd.CMD_BLOCK_STATUS:
                    blockStatus(r, handle, flags, offset, length);
                    return true;
                default:
                    error(r, type, handle, Nbd.EINVAL, "unknown command " + type);
                    return true;
            }
        } catch (RequestRefused e) {
            error(r, type, handle, e.errno, e.getMessage());
            return true;
        } catch (BlockDeviceException e) {
            error(r, type, handle, errno(type, e), e.getMessage());
            return true;
        } catch (PeerGone e) {
            throw e.io;
        } catch (ReplyCut e) {
            throw e;
        } catch (IOException e) {
            Log.warn("%s: %s on %s failed: %s", peer, Nbd.commandName(type), export.name(), e.toString());
            // A full file system (a snapshot's exceptions.log that cannot grow): ENOSPC, which the client can
            // tell from a failing disk, and retry once space is free.
            error(r, type, handle, noSpace(e) ? Nbd.ENOSPC : Nbd.EIO, "I/O error: " + e.getMessage());
            return true;
        } catch (RuntimeException e) {
            // A bug must cost one request, not the connection (and its other requests in flight).
            Log.error("%s: internal error in %s on %s: %s", peer, Nbd.commandName(type), export.name(), e.toString());
            error(r, type, handle, Nbd.EIO, "internal error: " + e);
            if (type == Nbd.CMD_WRITE) {
                throw new ProtocolViolation("payload of the failed WRITE may be unread; closing");
            }
            return true;
        } catch (InternalError e) {
            // SIGBUS through the mapping: a page of a sparse volume the full file system cannot allocate, or a read
            // error of the disk. A READ's reply may be half sent, a WRITE's payload half read: end this connection.
            Log.error("%s: %s on %s failed: access through the memory mapping of its data file failed (SIGBUS: no space "
                    + "left on the file system for a page of a sparse volume, or an I/O error): %s", peer, Nbd.commandName(type),
                    export.name(), e.getMessage());
            throw new ProtocolViolation(Nbd.commandName(type) + " failed in the middle of its data; closing");
        }
    }

    // ---- commands ------------------------------------------------------------------------------------------

    private void read(Reader r, long handle, int flags, long offset, long length) throws IOException {
        checkRequest(Nbd.CMD_READ, offset, length);
        int len = (int) length;
        if (!structured) {
            r.sender.sendSimpleRead(handle, offset, len);
            return;
        }
        if ((flags & Nbd.CMD_FLAG_DF) != 0 || !hasHoles(r.extents, offset, len)) {
            r.sender.sendReadChunk(handle, Nbd.REPLY_FLAG_DONE, offset, len);
            return;
        }
        ExtentList extents = r.extents;
        for (int i = 0; i < extents.count; i++) {
            int done = i == extents.count - 1 ? Nbd.REPLY_FLAG_DONE : 0;
            long off = extents.offset[i];
            int n = (int) extents.length[i];
            if (extents.inUse[i]) {
                r.sender.sendReadChunk(handle, done, off, n);
            } else {
                replies.sendHoleChunk(handle, done, off, n);
            }
        }
    }

    /** Fills {@link #extents} for the range; true when some of it is not in use. */
    private boolean hasHoles(ExtentList extents, long offset, int length) throws IOException {
        extents.count = 0;
        extents.limit = Integer.MAX_VALUE;
        try {
            device.extents(offset, length, extents);
        } catch (BlockDeviceException e) {
            return false;       // let the read itself report the device's error (ENOSPC once for a terminated snapshot)
        }
        for (int i = 0; i < extents.count; i++) {
            if (!extents.inUse[i]) {
                return true;
            }
        }
        return false;
    }

    private void write(Reader r, long handle, int flags, long offset, int length) throws IOException {
        if (readOnly) {
            skipPayload(Nbd.CMD_WRITE, length);
            throw new RequestRefused(Nbd.EPERM, export.name() + " is read-only");
        }
        if (length == 0 || offset < 0 || offset > device.size() || length > device.size() - offset) {
            skipPayload(Nbd.CMD_WRITE, length);
            throw new RequestRefused(length == 0 ? Nbd.EINVAL : Nbd.ENOSPC,
                    "write [" + offset + ", +" + length + ") is outside the export (" + device.size() + " bytes)");
        }
        if (changes != null && length <= ChangeTasks.MAX_PAYLOAD && device.slowChange(offset, length)) {
            // a slow change (mirrored volume): received in full into a task's buffer, run and answered by the task;
            // one that waits for nothing slow (a mirror's hot regions, file legs) runs inline below: a hand-off to
            // the pool and back costs more than the change
            ChangeTasks.Task t = acquireChange();
            try {
                readIn(t.payload(length));
            } catch (IOException e) {
                changes.cancel(t);
                throw new PeerGone(e);      // incomplete: nothing of it is applied
            }
            r.answerLater = true;
            if ((flags & Nbd.CMD_FLAG_FUA) == 0 && device.asyncChange(offset, length)) {
                // waits only for an NBD leg's reply (a mirror's hot regions): started here, its leg writes sent
                // without waiting, answered from the leg's reply; the task is its completion slot (docs/mirrors.md,
                // "NBD legs")
                changes.startHere(t, handle, flags, offset, length, r.requestStart);
                return;
            }
            changes.start(t, ChangeTasks.WRITE, handle, flags, offset, length, r.requestStart, Nbd.CMD_WRITE);
            return;
        }
        // Up to WHOLE_WRITE_MAX the payload is received in full before the engine is asked for anything: a
        // client that stops halfway (or dies) leaves the volume untouched, and no writer sits admitted in the
        // volume's write gate waiting for the network. Larger writes stream into the mapping as they arrive.
        if (length <= WHOLE_WRITE_MAX) {
            received.receive(length);
            try {
                device.write(r.session, offset, length, received, false);    // FUA: forced from the sync pool
            } finally {
                received.consumed();        // whatever happened, the stream continues after this payload
            }
        } else {
            payload.consumed = 0;
            try {
                device.write(r.session, offset, length, payload, false);
            } catch (PeerGone e) {
                throw e;
            } catch (IOException e) {
                skipPayload(Nbd.CMD_WRITE, length - payload.consumed);     // what the engine did not take
                throw e;
            }
        }
        if ((flags & Nbd.CMD_FLAG_FUA) != 0) {
            submit(r, SyncTasks.FORCE_RANGE, handle, offset, length);
        } else {
            replies.sendSimpleReply(handle, 0);
        }
    }

    private void trim(Reader r, long handle, int flags, long offset, long length) throws IOException {
        checkRequest(Nbd.CMD_TRIM, offset, length);
        if (changes != null) {
            r.answerLater = true;
            changes.start(acquireChange(), ChangeTasks.TRIM, handle, flags, offset, length, r.requestStart, Nbd.CMD_TRIM);
            return;
        }
        device.trim(r.session, offset, length, false);
        finishMutation(r, handle, flags);
    }

    private void writeZeroes(Reader r, long handle, int flags, long offset, long length) throws IOException {
        checkRequest(Nbd.CMD_WRITE_ZEROES, offset, length);
        boolean noHole = (flags & Nbd.CMD_FLAG_NO_HOLE) != 0;
        boolean fast = (flags & Nbd.CMD_FLAG_FAST_ZERO) != 0;
        if (changes != null) {
            r.answerLater = true;
            changes.start(acquireChange(), ChangeTasks.WRITE_ZEROES, handle, flags, offset, length, r.requestStart,
                    Nbd.CMD_WRITE_ZEROES);
            return;
        }
        device.writeZeroes(r.session, offset, length, noHole, fast, false);
        finishMutation(r, handle, flags);
    }

    private void finishMutation(Reader r, long handle, int flags) throws IOException {
        if ((flags & Nbd.CMD_FLAG_FUA) != 0) {
            submit(r, SyncTasks.FLUSH, handle, 0, 0);
        } else {
            replies.sendSimpleReply(handle, 0);
        }
    }

    /** Hands FLUSH or FUA work to the sync pool, which answers the request (out of order) when it is durable. */
    private void submit(Reader r, int kind, long handle, long offset, long length) throws IOException {
        replies.flush();        // the sync pool may make the reader wait (SyncTasks.MAX_IN_FLIGHT): nothing waits with it
        r.answerLater = true;
        syncTasks.submit(kind, handle, offset, length, r.requestStart, r.type, r.length);
    }

    private void blockStatus(Reader r, long handle, int flags, long offset, long length) throws IOException {
        if (!structured || contexts.isEmpty()) {
            throw new RequestRefused(Nbd.EINVAL, "BLOCK_STATUS needs a meta context selected during the handshake");
        }
        checkRequest(Nbd.CMD_BLOCK_STATUS, offset, length);
        int limit = (flags & Nbd.CMD_FLAG_REQ_ONE) != 0 ? 1 : Replies.MAX_EXTENTS;
        for (int c = 0; c < contexts.size(); c++) {
            int done = c == contexts.size() - 1 ? Nbd.REPLY_FLAG_DONE : 0;
            replies.sendBlockStatus(handle, done, c + 1, contexts.get(c), offset, length, limit);
        }
    }

    private void checkRequest(int type, long offset, long length) throws RequestRefused {
        if (length == 0) {
            throw new RequestRefused(Nbd.EINVAL, Nbd.commandName(type) + " of zero bytes");
        }
        if (type == Nbd.CMD_READ && length > Nbd.MAX_PAYLOAD) {
            throw new RequestRefused(Nbd.EINVAL, "READ of " + length + " bytes exceeds the " + Nbd.MAX_PAYLOAD + " byte maximum");
        }
        if (readOnly && (type == Nbd.CMD_TRIM || type == Nbd.CMD_WRITE_ZEROES)) {
            throw new RequestRefused(Nbd.EPERM, export.name() + " is read-only");
        }
        if (offset < 0 || offset > device.size() || length > device.size() - offset) {
            boolean write = type == Nbd.CMD_WRITE_ZEROES;
            throw new RequestRefused(write ? Nbd.ENOSPC : Nbd.EINVAL, Nbd.commandName(type) + " [" + offset + ", +"
                    + length + ") is outside the export (" + device.size() + " bytes)");
        }
    }

    private void skipPayload(int type, long length) throws IOException {
        if (type == Nbd.CMD_WRITE && length > 0) {
            try {
                for (long n = length; n > 0; n -= scratch.limit()) {
                    scratch.clear().limit((int) Math.min(scratch.capacity(), n));
                    readIn(scratch);
                }
            } catch (IOException e) {
                throw new PeerGone(e);
            }
        }
    }

    /**
     * Fills {@code dst} from the read-ahead buffer, then from the socket: what is at least as large as the buffer
     * goes straight into {@code dst}, anything smaller through the buffer. EOFException if the peer closes first.
     * Before it may wait for the socket, the replies gathered so far go out.
     */
    private void readIn(ByteBuffer dst) throws IOException {
        while (dst.hasRemaining()) {
            if (in.hasRemaining()) {
                take(in, in.position() + Math.min(in.remaining(), dst.remaining()), dst);
                continue;
            }
            replies.flush();
            if (stopping && dst == requestBuffer && dst.position() == 0) {
                throw AtBoundary.INSTANCE;      // nothing of the next request taken: stop here
            }
            if (dst.remaining() >= IN_BYTES) {
                if (channel.read(dst) < 0) {
                    throw new EOFException("peer closed the connection");
                }
            } else {
                in.clear();
                boolean boundary = dst == requestBuffer && dst.position() == 0;     // waiting for the next request
                int n = polling.read(channel, in, idleElsewhere(), boundary);
                in.flip();
                chunkRequests = 0;
                if (n < 0) {
                    throw new EOFException("peer closed the connection");
                }
            }
        }
    }

    /**
     * Polling pays only where a CPU would otherwise idle ({@link ReadPolling}): this is the process's only connection,
     * and none of its requests is being served or answered by another thread (a handed-off READ, the sync pool, change
     * tasks), which would need the CPU the poll takes; and then a client at depth 1 sends nothing before its answer.
     */
    private boolean idleElsewhere() {
        return SERVING.get() == 1 && handedOff.get() == 0 && !syncTasks.busy() && (changes == null || !changes.busy());
    }

    /** Copies src's bytes from its position up to {@code end} into dst, leaving src's limit as it was. */
    private static void take(ByteBuffer src, int end, ByteBuffer dst) {
        int limit = src.limit();
        src.limit(end);
        dst.put(src);
        src.limit(limit);
    }

    static int errno(int type, BlockDeviceException e) {
        switch (e.reason()) {
            case OUT_OF_RANGE:
                return type == Nbd.CMD_WRITE || type == Nbd.CMD_WRITE_ZEROES ? Nbd.ENOSPC : Nbd.EINVAL;
            case READ_ONLY:
                return Nbd.EPERM;
            case NO_SPACE:
                return Nbd.ENOSPC;
            case NOT_SUPPORTED:
                return Nbd.ENOTSUP;
            case UNAVAILABLE:
                return Nbd.ESHUTDOWN;
            default:
                return Nbd.EIO;
        }
    }

    /** True when {@code e} (or a cause) is the file system's "No space left on device" (ENOSPC). */
    static boolean noSpace(Throwable e) {
        for (Throwable t = e; t != null; t = t.getCause()) {
            String m = t instanceof java.nio.file.FileSystemException f ? f.getReason() : t.getMessage();
            if (m != null && m.contains("No space left on device")) {
                return true;
            }
        }
        return false;
    }

    // ---- replies -------------------------------------------------------------------------------------------

    private void error(Reader r, int type, long handle, int errno, String message) throws IOException {
        export.errors().incrementAndGet();
        r.requestFailed = true;
        Log.debug("%s: %s -> errno %d: %s", peer, Nbd.commandName(type), errno, message);
        if (structured && (type == Nbd.CMD_READ || type == Nbd.CMD_BLOCK_STATUS)) {
            replies.sendErrorChunk(handle, errno, message);
        } else {
            replies.sendSimpleReply(handle, errno);
        }
    }

    /**
     * Largest WRITE whose payload is received in full before anything is written (4 MiB: above what the kernel
     * client and common tools send per request). Writes up to it are never applied in part because the payload
     * stopped; see docs/engine.md.
     */
    static final int WHOLE_WRITE_MAX = 4 << 20;

    /**
     * The payload of the current WRITE, received in full before the engine sees it. Usually it is already in the
     * read-ahead buffer {@link #in} and is used from there; otherwise it is collected into a per-connection buffer
     * that grows (powers of two, from 64 KiB to {@link #WHOLE_WRITE_MAX}) to the largest such write and is then
     * reused. No allocation per request in steady state. The engine copies it out like it would read the socket.
     */
    private final class ReceivedPayload implements ByteSource {
        private ByteBuffer staging;
        private ByteBuffer src;     // in or staging
        private int end;            // src's payload ends here

        void receive(int length) throws IOException {
            if (in.remaining() >= length) {
                src = in;
                end = in.position() + length;
                return;
            }
            if (staging == null || staging.capacity() < length) {
                int cap = Math.max(64 << 10, Integer.highestOneBit(Math.max(1, length - 1)) << 1);
                staging = ByteBuffer.allocateDirect(Math.min(cap, WHOLE_WRITE_MAX));
            }
            staging.clear().limit(length);
            try {
                readIn(staging);
            } catch (IOException e) {
                throw new PeerGone(e);      // incomplete: nothing of it is applied
            }
            staging.flip();
            src = staging;
            end = length;
        }

        @Override
        public void readFully(ByteBuffer dst) throws IOException {
            int n = dst.remaining();
            if (n > end - src.position()) {
                throw new IOException("the engine asked for " + n + " more payload bytes, the write has " + (end - src.position()));
            }
            take(src, src.position() + n, dst);
        }

        /** The write is done with its payload (applied or not): the request stream goes on after it. */
        void consumed() {
            if (src == in) {
                in.position(end);
            }
            src = null;
        }
    }

    /**
     * Reads the payload of a WRITE larger than {@link #WHOLE_WRITE_MAX} from the socket straight into the buffer
     * the engine lends (its mapping), counting what it took so that the rest of a refused write can be skipped.
     */
    private final class PayloadSource implements ByteSource {
        int consumed;

        @Override
        public void readFully(ByteBuffer dst) throws IOException {
            int before = dst.remaining();
            try {
                readIn(dst);
            } catch (IOException e) {
                throw new PeerGone(e);
            }
            consumed += before;
        }
    }

    // ---- helpers -------------------------------------------------------------------------------------------

    /** Extents reported by the device, kept in reusable arrays. */
    private static final class ExtentList implements BlockDevice.ExtentConsumer {
        long[] offset = new long[16];
        long[] length = new long[16];
        boolean[] inUse = new boolean[16];
        int count;
        int limit = Integer.MAX_VALUE;

        @Override
        public boolean accept(long off, long len, boolean used) {
            if (count == offset.length) {
                offset = Arrays.copyOf(offset, count * 2);
                length = Arrays.copyOf(length, count * 2);
                inUse = Arrays.copyOf(inUse, count * 2);
            }
            offset[count] = off;
            length[count] = len;
            inUse[count] = used;
            count++;
            return count < limit;
        }
    }

    /** The reader was asked to stop and is at a request boundary with nothing of the next request read. */
    private static final class AtBoundary extends IOException {
        static final AtBoundary INSTANCE = new AtBoundary();

        private AtBoundary() {
            super("stopped at a request boundary");
        }

        @Override
        public synchronized Throwable fillInStackTrace() {
            return this;        // thrown from one shared instance: no stack trace
        }
    }

    /** A request answered with an error; the stream stays in sync. */
    private static final class RequestRefused extends IOException {
        final int errno;

        RequestRefused(int errno, String message) {
            super(message);
            this.errno = errno;
        }

        @Override
        public synchronized Throwable fillInStackTrace() {
            return this;        // an expected outcome, not a bug: no stack trace to pay for
        }
    }
}

package io.snapbd.engine.volume;

import io.snapbd.engine.BlockDevice;
import io.snapbd.engine.BlockDeviceException;
import io.snapbd.engine.bitmap.BitMapFile;
import io.snapbd.engine.bitmap.PagedBitMap;
import io.snapbd.engine.io.ByteSink;
import io.snapbd.engine.io.ByteSource;
import io.snapbd.engine.io.FileSpace;
import io.snapbd.engine.io.GroupCommit;
import io.snapbd.engine.io.MappedData;
import io.snapbd.engine.io.WriteGate;
import io.snapbd.engine.lun.LunState;
import io.snapbd.engine.mirror.MirrorOp;
import io.snapbd.engine.mirror.MirrorSet;
import io.snapbd.engine.snapshot.NoSaveVolumeException;
import io.snapbd.engine.snapshot.SnapshotRecord;
import io.snapbd.engine.snapshot.SnapshotSet;
import io.snapbd.engine.snapshot.SnapshotView;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.util.List;

/**
 * A writable volume: a preallocated, memory-mapped data file plus its production meta bit map. This class is
 * the public facade and the request path (read, FLUSH; WRITE, TRIM and WRITE_ZEROES wrapped for the mirror legs
 * around {@link ProductionWrites}, which writes into production), so that each request stays a few direct calls
 * over final fields. Its parts each do one job: {@link VolumeOpener} (create and open), {@link VolumeRecovery}
 * (crash recovery at open), {@link WriteIntents} (the write-intent log), {@link Committer} (the copy-on-write
 * committer thread), {@link Zeroing} (how blocks become zero), {@link Restorer} (restore from a snapshot),
 * {@link VolumeSession} (one client's state) and {@link VolumeTuning} (the {@code -Dsnapbd.*} knobs).
 *
 * <p>Invariants that make crash recovery exact enough:
 * <ul>
 *   <li><b>Clear bit ⇒ zero data.</b> Blocks leave the in-use set only by TRIM or WRITE_ZEROES, which clear the
 *       bit and then zero the block (FALLOC_FL_ZERO_RANGE, or through the mapping). Reads therefore never need
 *       the bit map, and recovery can tell in-use blocks from the data itself.</li>
 *   <li><b>Write intent before data.</b> Before the first bit of a region is set (or cleared) in memory, the
 *       region's bit in {@code intent.map} is forced to disk. After an unclean stop only those regions can
 *       disagree with the persisted map; each of their blocks whose data is non-zero is marked in use, so a
 *       block whose data may have reached the disk is never reported as a hole.</li>
 *   <li><b>FLUSH order:</b> data first, then the meta bit map pages, so a persisted clear bit always has zeros
 *       on disk beneath it.</li>
 * </ul>
 */
public final class Volume implements BlockDevice, AutoCloseable {

    public static final String HEADER_FILE = "volume.meta";
    public static final String DATA_FILE = "data.img";
    public static final String SAVE_FILE = "save.img";
    public static final String META_FILE = "meta.bitmap";
    public static final String INTENT_FILE = "intent.map";

    private final Path dir;
    private volatile VolumeHeader header;
    private final MappedData data;
    private final PagedBitMap meta;
    private final BitMapFile metaFile;
    private final WriteIntents intents;
    private final Zeroing zeroing;
    private final int blockShift;
    private final Object flushLock = new Object();
    private final GroupCommit flushCommit = new GroupCommit();
    private final RecoveryReport recovery;
    private volatile boolean closed;
    final WriteGate gate = new WriteGate(5000);
    private final SnapshotSet snapshots;
    private final LunState lun;
    /** Staged new data of blocks whose before-images are not durable yet, and the thread that applies it. */
    private final Overlay overlay;
    /** The overlay's arena when it lives in a RAM file (staged writes outlive a kill -9); null otherwise. */
    private final OverlayFile overlayFile;
    /** Blocks the open wrote again from the overlay files of earlier runs, and files it could not use. */
    StagedReplay stagedReplay = new StagedReplay(0, List.of());
    private final Committer committer;
    private final long overlayPreallocateBytes;
    private final Restorer restorer;
    /** The write path into production: gate, before-images, overlay staging, the mapping. */
    private final ProductionWrites writes;
    /** The legs of a mirrored volume (docs/mirrors.md), set by {@link VolumeOpener} before the volume is handed out; else null. */
    MirrorSet mirror;

    /**
     * Called between the durable steps of snapshot create, delete and restore with the step's name (the list is in
     * docs/engine.md). A no-op outside tests, which throw from it to stop an operation there as a kill -9 would.
     */
    interface StepHook {
        void reached(String step) throws IOException;
    }

    static final StepHook NO_STEPS = step -> {
    };
    StepHook steps;      // set by crash tests

    Volume(Path dir, VolumeHeader header, MappedData data, PagedBitMap meta, BitMapFile metaFile,
           WriteIntents intents, Zeroing zeroing, RecoveryReport recovery, SnapshotSet snapshots, LunState lun,
           FileSpace space, VolumeTuning tuning, StepHook steps, OverlayFile overlayFile) {
        this.dir = dir;
        this.overlayFile = overlayFile;
        this.header = header;
        this.data = data;
        this.meta = meta;
        this.metaFile = metaFile;
        this.intents = intents;
        this.zeroing = zeroing;
        this.blockShift = Integer.numberOfTrailingZeros(header.blockSize());
        this.recovery = recovery;
        this.snapshots = snapshots;
        this.lun = lun;
        this.overlay = new Overlay(header.blocks(), header.blockSize(), tuning.overlayBytes(), overlayFile);
        this.overlayPreallocateBytes = tuning.overlayPreallocateBytes();
        this.committer = new Committer(data, overlay, snapshots, space, tuning, header.name(), intents);
        this.steps = steps;
        this.writes = new ProductionWrites(this, header.blockSize(), overlay, snapshots, intents, committer, zeroing);
        this.restorer = new Restorer(this, snapshots, meta, intents, zeroing);
    }

    // ---- lifecycle -------------------------------------------------------------------------------------------

    /** Creates the volume's directory and files (data and save volume preallocated unless {@code sparse}). */
    public static void create(Path dir, String name, long size, int blockSize, long saveSize, boolean sparse,
                              FileSpace space) throws IOException {
        VolumeOpener.create(dir, name, size, blockSize, saveSize, sparse, space, List.of(), false);
    }

    /**
     * {@link #create(Path, String, long, int, long, boolean, FileSpace)} of a mirrored volume: {@code mirrors} are
     * the extra legs' URIs (file paths, or what the installed {@code LegOpener} knows); see docs/mirrors.md.
     */
    public static void create(Path dir, String name, long size, int blockSize, long saveSize, boolean sparse,
                              FileSpace space, List<String> mirrors) throws IOException {
        create(dir, name, size, blockSize, saveSize, sparse, space, mirrors, false);
    }

    /**
     * The same; {@code forceLegs}: make a leg even where it holds another volume's tag table (it is that
     * volume's mirror leg, and is overwritten), or replace an existing file leg's files.
     */
    public static void create(Path dir, String name, long size, int blockSize, long saveSize, boolean sparse,
                              FileSpace space, List<String> mirrors, boolean forceLegs) throws IOException {
        VolumeOpener.create(dir, name, size, blockSize, saveSize, sparse, space, mirrors, forceLegs);
    }

    public static void checkGeometry(long size, int blockSize, long saveSize) {
        VolumeOpener.checkGeometry(size, blockSize, saveSize);
    }

    /**
     * Opens the volume, recovering the meta bit map if the last stop was unclean, and marks it open (not clean).
     * Every file is read and validated (the same readers fsck uses) before anything is written, so a damaged
     * file refuses the open and leaves the volume as it was; on any failure what was opened is closed again. A
     * restore that a crash interrupted ({@code restore.marker}) is finished here, before the volume is handed out.
     * The knobs are {@link VolumeTuning#system()}'s.
     */
    public static Volume open(Path dir, FileSpace space) throws IOException {
        return open(dir, space, VolumeTuning.system());
    }

    /** {@link #open(Path, FileSpace)} with the given knobs. */
    public static Volume open(Path dir, FileSpace space, VolumeTuning tuning) throws IOException {
        return VolumeOpener.open(dir, space, tuning, NO_STEPS);
    }

    /** {@link #open(Path, FileSpace)} with a step hook already in place for the restore it may resume (tests). */
    static Volume open(Path dir, FileSpace space, StepHook hook) throws IOException {
        return VolumeOpener.open(dir, space, VolumeTuning.system(), hook);
    }

    Restorer restores() {
        return restorer;
    }

    /**
     * Flushes everything, clears the intents and marks the volume clean. A restore in progress is let finish first
     * (closing under it would mark a half-restored volume clean; a stop that cannot wait leaves its marker instead).
     */
    @Override
    public void close() throws IOException {
        if (closed) {
            return;
        }
        synchronized (restorer.lock) {
            closeLocked();
        }
    }

    private void closeLocked() throws IOException {
        if (closed) {
            return;
        }
        synchronized (flushLock) {
            committer.stop(true);
            closed = true;
            // Each step only after the ones before it succeeded (the header is marked clean last); whatever
            // fails, the files are closed: the volume is then left marked open and its next open recovers it.
            try {
                data.forceAll();
                if (mirror != null) {
                    mirror.closeClean();
                }
                snapshots.close();
                lun.closeClean();
                metaFile.writeDirty(meta);
                metaFile.force();
                intents.clearOnDisk();
                header = header.withFlags(header.flags() | VolumeHeader.FLAG_CLEAN);
                header.write(dir.resolve(HEADER_FILE));
            } finally {
                if (mirror != null) {
                    try {
                        mirror.abandon();       // closes the legs' files (already closed after a clean close)
                    } catch (IOException e) {
                        // closing a file handle failed: nothing is lost, the files are not used again
                    }
                }
                metaFile.close();
                intents.close();
                zeroing.close();
                data.close();
                closeOverlayFile();     // drained above, or the close failed and the next open recovers anyway
            }
        }
    }

    private void closeOverlayFile() throws IOException {
        if (overlayFile != null) {
            overlayFile.close();
        }
    }

    /**
     * Waits until every write staged behind a copy-on-write force has reached the mapping (page cache).
     * A power cut loses writes still staged, as it loses unflushed ones ({@link #abandon}); a kill -9 does not
     * (they are in the overlay file, {@link #abandonAsKilled}). Tests that model a crash where the page cache
     * survives by copying the files call this first.
     */
    public void awaitStagedApplied() throws IOException {
        overlay.awaitEmpty();
    }

    /** Blocks staged in the overlay and not yet applied to production. */
    int overlayStaged() {
        return overlay.staged();
    }

    /**
     * Closes without marking clean: what a power cut leaves behind (for tests of recovery, and a failed open).
     * Writes still staged are lost, as a power cut loses them: the overlay file goes too.
     */
    public void abandon() throws IOException {
        abandon(false);
    }

    /**
     * Closes without marking clean and keeps the overlay file: what a {@code kill -9} leaves behind, the next
     * open writes the staged blocks again (tests).
     */
    public void abandonAsKilled() throws IOException {
        abandon(true);
    }

    private void abandon(boolean keepStaged) throws IOException {
        committer.stop(false);
        closed = true;
        if (mirror != null) {
            mirror.abandon();
        }
        snapshots.abandon();
        metaFile.close();
        intents.close();
        zeroing.close();
        data.close();
        if (!keepStaged) {
            closeOverlayFile();
        }
    }

    public static void deleteFiles(Path dir) throws IOException {
        VolumeOpener.deleteFiles(dir);
    }

    // ---- identity ----------------------------------------------------------------------------------------------

    @Override
    public String name() {
        return header.name();
    }

    public VolumeHeader header() {
        return header;
    }

    public Path directory() {
        return dir;
    }

    public RecoveryReport recovery() {
        return recovery;
    }

    /**
     * What the open found staged by an earlier run that died (kill -9) before applying it: acknowledged writes
     * written again before any client was served, and overlay files not used (with the reason).
     */
    public record StagedReplay(long blocks, List<String> notUsed) {
    }

    public StagedReplay stagedReplay() {
        return stagedReplay;
    }

    /** fsck: what the overlay files a killed run of the volume in {@code dir} left hold (notes; read-only). */
    public static List<String> overlayFileNotes(Path dir, VolumeHeader h) throws IOException {
        return OverlayFile.notes(OverlayFile.directory(), dir, h.uuid(), h.blockSize(), h.blocks());
    }

    /** Whether staged writes outlive the process (the overlay lives in a RAM file), see docs/snapshots.md. */
    public boolean stagedWritesSurviveKill() {
        return overlayFile != null;
    }

    @Override
    public long size() {
        return header.size();
    }

    @Override
    public int blockSize() {
        return header.blockSize();
    }

    @Override
    public boolean isReadOnly() {
        return false;
    }

    @Override
    public boolean canZeroFast() {
        return zeroing.fast();
    }

    /** Number of blocks in use (meta bit map cardinality). */
    public long blocksInUse() {
        return meta.cardinality();
    }

    public boolean inUse(long block) {
        return meta.get(block);
    }

    // ---- I/O ---------------------------------------------------------------------------------------------------

    @Override
    public Session openSession() {
        VolumeSession s = new VolumeSession(data.cursor(), gate, overlay.view());
        if (mirror != null) {
            s.mirrorOp = mirror.newOp();
        }
        return s;
    }

    /** A mirrored volume's changes wait for their ENTRY group commit on every leg: run them in parallel. */
    @Override
    public boolean slowChanges() {
        return mirror != null;
    }

    /** A mirrored change in hot regions with file legs waits for no force: it may run inline. */
    @Override
    public boolean slowChange(long offset, long length) {
        return mirror != null && !mirror.quickChange(offset, length);
    }

    /** A mirrored change in hot regions whose only slow legs are NBD legs: sent to them, answered from their replies. */
    @Override
    public boolean asyncChange(long offset, long length) {
        return mirror != null && mirror.asyncChange(offset, length);
    }

    /**
     * {@link #write} without FUA; on a mirrored volume the other legs' writes may still be in flight when this
     * returns, and {@code done} hears of the change once every current leg completed it (docs/mirrors.md, "NBD legs").
     */
    @Override
    public void writeThen(Session s, long offset, int length, ByteSource source, ChangeDone done) throws IOException {
        if (mirror == null || length == 0) {
            write(s, offset, length, source, false);
            done.changeDone(null);
            return;
        }
        prepareAndCommit(s, offset, length);
        MirrorOp op = ((VolumeSession) s).mirrorOp;
        boolean written = false;
        try {
            writes.finish(s, offset, length, source);
            written = true;
        } finally {
            if (!written) {
                mirror.end(op, s, this);        // even a write cut short: legs get what leg 0 got
            }
        }
        mirror.endThen(op, s, this, done);
    }

    /** The legs of a mirrored volume, or null when it is not mirrored. */
    public MirrorSet mirror() {
        return mirror;
    }

    /** Saves before-images that snapshots need for blocks [first, last] (no-op without snapshots). */
    void copyOnWrite(VolumeSession s, long first, long last) throws IOException {
        writes.copyOnWrite(s, first, last);
    }

    @Override
    public void read(Session s, long offset, int length, ByteSink sink) throws IOException {
        checkOpen();
        BlockDevice.checkRange(this, offset, length);
        MappedData.Cursor c = ((VolumeSession) s).cursor;
        if (length > 0 && overlay.staged() > 0
                && overlay.anyStaged(offset >>> blockShift, (offset + length - 1) >>> blockShift)) {
            readThroughOverlay((VolumeSession) s, offset, length, sink);
            return;
        }
        long pos = offset;
        long end = offset + length;
        while (pos < end) {
            ByteBuffer v = c.view(pos, end - pos);
            int n = v.remaining();
            sink.write(v);
            pos += n;
        }
    }

    /** Reads a range some of whose blocks are staged: block by block into a session buffer, then out. */
    private void readThroughOverlay(VolumeSession s, long offset, int length, ByteSink sink) throws IOException {
        ByteBuffer buf = s.readBuffer();
        long pos = offset;
        long end = offset + length;
        while (pos < end) {
            buf.clear();
            while (pos < end && buf.hasRemaining()) {
                long b = pos >>> blockShift;
                int n = (int) Math.min(Math.min(end, (b + 1) << blockShift) - pos, buf.remaining());
                overlay.readBlock(b, pos, n, buf, s.cursor, s.overlayView);
                pos += n;
            }
            buf.flip();
            sink.write(buf);
        }
    }

    /** {@link #prepareWrite}, then {@link #commitPrepared} when the before-images need it (aborted if that fails). */
    private void prepareAndCommit(Session s, long offset, int length) throws IOException {
        if (prepareWrite(s, offset, length)) {
            try {
                commitPrepared();
            } catch (IOException | RuntimeException e) {
                abortPrepared(s);
                throw e;
            }
        }
    }

    @Override
    public void write(Session s, long offset, int length, ByteSource source, boolean fua) throws IOException {
        if (length == 0) {
            checkOpen();
            BlockDevice.checkRange(this, offset, length);
            return;
        }
        prepareAndCommit(s, offset, length);
        finishWrite(s, offset, length, source);
        if (fua) {
            forceRange(offset, length);
        }
    }

    /**
     * The engine's two-phase write, which {@link #write} and {@link CopyOnWriteWarmUp} compose (not on
     * {@link BlockDevice}: no protocol sequences it): {@code prepareWrite} makes the before-images snapshots
     * need (not yet durable) and answers whether {@link #commitPrepared} must run before the data may be
     * written; {@link #finishWrite} then writes the data. Every successful prepare is followed by one finish
     * (or {@link #abortPrepared}).
     */
    public boolean prepareWrite(Session s, long offset, int length) throws IOException {
        if (mirror == null) {
            return writes.prepare(s, offset, length);
        }
        checkOpen();
        BlockDevice.checkRange(this, offset, length);
        MirrorOp op = ((VolumeSession) s).mirrorOp;
        mirror.begin(op, offset, length, this, false);
        try {
            return writes.prepare(s, offset, length);
        } catch (IOException | RuntimeException e) {
            mirror.abort(op);
            throw e;
        }
    }

    /** Ends a prepared write whose data will never come. */
    public void abortPrepared(Session s) {
        writes.abort(s);
        if (mirror != null) {
            mirror.abort(((VolumeSession) s).mirrorOp);
        }
    }

    /** Makes the prepared before-images durable, batched with other writers' (group commit). */
    public void commitPrepared() throws IOException {
        snapshots.forceCopies();
    }

    public void finishWrite(Session s, long offset, int length, ByteSource source) throws IOException {
        if (mirror == null) {
            writes.finish(s, offset, length, source);
            return;
        }
        try {
            writes.finish(s, offset, length, source);
        } finally {
            mirror.end(((VolumeSession) s).mirrorOp, s, this);      // even a write cut short: legs get what leg 0 got
        }
    }


    @Override
    public void trim(Session s, long offset, long length, boolean fua) throws IOException {
        if (mirror == null || length == 0) {
            writes.trim(s, offset, length, fua);
            return;
        }
        checkOpen();
        BlockDevice.checkRange(this, offset, length);
        MirrorOp op = ((VolumeSession) s).mirrorOp;
        mirror.begin(op, offset, length, this, true);
        try {
            writes.trim(s, offset, length, fua);
        } finally {
            mirror.end(op, s, this);
        }
        if (fua) {
            mirror.forceAll();
        }
    }

    @Override
    public void writeZeroes(Session s, long offset, long length, boolean noHole, boolean fastOnly, boolean fua)
            throws IOException {
        if (mirror == null || length == 0) {
            writes.writeZeroes(s, offset, length, noHole, fastOnly, fua);
            return;
        }
        checkOpen();
        BlockDevice.checkRange(this, offset, length);
        MirrorOp op = ((VolumeSession) s).mirrorOp;
        mirror.begin(op, offset, length, this, true);
        try {
            writes.writeZeroes(s, offset, length, noHole, fastOnly, fua);
        } finally {
            mirror.end(op, s, this);
        }
        if (fua) {
            mirror.forceAll();
        }
    }


    @Override
    public void flush() throws IOException {
        checkOpen();
        overlay.awaitEmpty();       // acknowledged writes still staged must reach the mapping first
        if (mirror != null) {
            mirror.forceAll();      // every answered change's data on every leg, DONE, retired (docs/mirrors.md)
        }
        flushCommit.sync(() -> {
            data.forceAll();
            snapshots.persistFrozenPages();     // before production's pages: snapshots read through them
            metaFile.writeDirty(meta);
            metaFile.force();
        });
    }

    @Override
    public void forceRange(long offset, long length) throws IOException {
        forceLocal(offset, length);
        if (mirror != null) {
            mirror.forceAll();      // FUA: the change's data on every leg too (with every change answered before it)
        }
    }

    /** Makes [offset, offset+length) of leg 0 ({@code data.img}) durable; a mirror's other legs are not touched. */
    public void forceLocal(long offset, long length) throws IOException {
        checkOpen();
        if (length > 0 && overlay.staged() > 0) {
            overlay.awaitApplied(offset >>> blockShift, (offset + length - 1) >>> blockShift);
        }
        data.force(offset, length);
    }

    @Override
    public void extents(long offset, long length, ExtentConsumer consumer) throws IOException {
        checkOpen();
        BlockDevice.checkRange(this, offset, length);
        long end = offset + length;
        long pos = offset;
        // Search the map only up to the request's last block: a run is cut at 'end' anyway, and a search to the
        // end of the volume made every read of a fully written volume scan the rest of its map.
        long lastBlock = Math.min(header.blocks(), (end - 1 >>> blockShift) + 1);
        while (pos < end) {
            long block = pos >>> blockShift;
            boolean used = meta.get(block);
            long runEndBlock = meta.next(block + 1, lastBlock, !used);
            long runEnd = Math.min(end, runEndBlock << blockShift);
            if (!consumer.accept(pos, runEnd - pos, used)) {
                return;
            }
            pos = runEnd;
        }
    }

    // ---- snapshots ---------------------------------------------------------------------------------------------

    public SnapshotSet snapshots() {
        return snapshots;
    }

    @Override
    public LunState lunState() {
        return lun;
    }

    /** Blocks copied into the save volume by copy-on-write since open. */
    public long cowCopies() {
        return writes.cowCopies();
    }

    /** Takes snapshot {@code name} of the current content (waits for in-flight writes). */
    public SnapshotRecord createSnapshot(String name) throws IOException {
        checkOpen();
        if (snapshots.saveChunks() == 0) {
            throw new NoSaveVolumeException(name());     // before anything is made
        }
        // Ready what the first writes after it will use, off their path: the arena they stage into and the
        // committer (started here, a staged write never finds it missing: no branch the JIT has to revisit).
        overlay.preallocate(overlayPreallocateBytes);
        committer.start();
        return snapshots.create(name, lun);
    }

    public void deleteSnapshot(String name) throws IOException {
        checkOpen();
        snapshots.delete(name);
    }

    /** A read-only device over snapshot {@code name}, exported as VOLUME@SNAPSHOT. */
    public SnapshotView snapshotView(String name) {
        SnapshotRecord r = snapshots.record(name);
        if (r == null) {
            throw new IllegalArgumentException("no snapshot named " + name + " on volume " + name());
        }
        return new SnapshotView(snapshots, name() + "@" + name, r.seq(), size(), blockSize());
    }

    /**
     * Makes production exactly the content of snapshot {@code name} and its meta bit map production's. Runs
     * through the copy-on-write path with writers paused, so younger snapshots keep their content. A durable
     * marker ({@code restore.marker}) is written before the first block changes and removed once production is
     * durable, so a crash leaves production untouched or the next open finishes the restore. Returns the number
     * of blocks written or discarded.
     */
    public long restore(String name) throws IOException {
        checkOpen();
        return restorer.restore(name);
    }

    /** A restore in progress, or the last one if it failed (then its marker is still on disk); null otherwise. */
    public RestoreProgress restoreProgress() {
        return restorer.progress();
    }

    /** The restore that a crash interrupted and this open finished, or null. */
    public RestoreProgress resumedRestore() {
        return restorer.resumed();
    }

    void checkOpen() throws BlockDeviceException {
        if (closed) {
            throw new BlockDeviceException(BlockDeviceException.Reason.UNAVAILABLE, name() + " is closed");
        }
    }
}

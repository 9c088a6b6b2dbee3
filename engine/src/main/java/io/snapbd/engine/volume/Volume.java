package io.snapbd.engine.volume;

import io.snapbd.engine.BlockDevice;
import io.snapbd.engine.BlockDeviceException;
import io.snapbd.engine.bitmap.BitMapFile;
import io.snapbd.engine.bitmap.PagedBitMap;
import io.snapbd.engine.io.ByteSink;
import io.snapbd.engine.io.ByteSource;
import io.snapbd.engine.io.FileSpace;
import io.snapbd.engine.io.MappedData;
import io.snapbd.engine.format.CorruptMetadataException;
import io.snapbd.engine.snapshot.RestoreMarker;
import io.snapbd.engine.snapshot.SnapshotRecord;
import io.snapbd.engine.snapshot.SnapshotSet;
import io.snapbd.engine.snapshot.SnapshotView;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.BitSet;
import java.util.UUID;

/**
 * A writable volume: a preallocated, memory-mapped data file plus its production meta bit map.
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

    /** Intent region: 2 MiB of data, whatever the block size. */
    static final int REGION_BYTES_SHIFT = 21;

    private final Path dir;
    private volatile VolumeHeader header;
    private final MappedData data;
    private final PagedBitMap meta;
    private final BitMapFile metaFile;
    private final PagedBitMap intents;          // regions whose intent bit is durable
    private final BitMapFile intentFile;
    private final FileSpace.Zeroer zeroer;
    private final boolean zeroFast;
    private final int blockShift;
    private final int regionShift;             // blocks per region = 1 << regionShift
    private final Object intentLock = new Object();
    private final Object flushLock = new Object();
    private final io.snapbd.engine.io.GroupCommit flushCommit = new io.snapbd.engine.io.GroupCommit();
    private final RecoveryReport recovery;
    private volatile boolean closed;
    private final WriteGate gate = new WriteGate(5000);
    private SnapshotSet snapshots;
    private io.snapbd.engine.lun.LunState lun;
    /** Staged new data of blocks whose before-images are not durable yet, and the thread that applies it. */
    private Overlay overlay;
    private volatile long overlayBatchNanos;
    private long overlayPreallocateBytes = OVERLAY_PREALLOCATE_BYTES;
    private Thread committer;
    private FileSpace space;
    /**
     * Nice value of the committer thread while no writer waits for it: {@code -Dsnapbd.committer.nice}
     * (default 19), and while writers do: {@code -Dsnapbd.committer.busy.nice} (default 0). See
     * {@link CommitterPriority}; measured on the 2-CPU reference machine in benchmarks/RESULTS.md run 8.
     */
    static final int COMMITTER_NICE = Integer.getInteger("snapbd.committer.nice", 19);
    static final int COMMITTER_BUSY_NICE = Integer.getInteger("snapbd.committer.busy.nice", 0);
    private volatile boolean committerStop;
    /**
     * Overlay capacity: {@code -Dsnapbd.overlay.mib} (default 128 MiB per volume; the arena is allocated in 1 MiB
     * pieces as the number of blocks staged at once grows, so an idle or snapshot-less volume costs nothing).
     */
    static final long OVERLAY_BYTES = Long.getLong("snapbd.overlay.mib", 128L) << 20;
    /**
     * Arena allocated when a snapshot is taken, before its first writes stage blocks: {@code
     * -Dsnapbd.overlay.preallocate.mib} (default 16 MiB, at most the capacity; about what a first batch after a
     * snapshot stages while its force runs). Kept, like the rest of the arena, until the volume is closed.
     */
    static final long OVERLAY_PREALLOCATE_BYTES = Long.getLong("snapbd.overlay.preallocate.mib", 16L) << 20;
    /**
     * How long the committer may let a batch of staged writes build up before forcing it, unless somebody waits
     * for staged blocks (FLUSH, FUA, a rewrite, a full overlay: then it goes at once) or a quarter of the slots
     * are staged: {@code -Dsnapbd.overlay.batch.micros}, default 5 ms. Under heavy load the batch fills first;
     * at a moderate rate (4,000 writes/s) forcing as soon as work was seen meant two fdatasyncs every few writes,
     * about a thousand a second, and clients saw 10 ms stalls (p99 9x no-snapshot; 1.0-1.3x with 5 ms,
     * benchmarks/RESULTS.md run 6). Acknowledged writes do not wait for it; 0 forces at once.
     */
    static final long OVERLAY_BATCH_NANOS = Long.getLong("snapbd.overlay.batch.micros", 5_000L) * 1000L;
    private final java.util.concurrent.atomic.AtomicLong cowCopies = new java.util.concurrent.atomic.AtomicLong();

    /**
     * Called between the durable steps of snapshot create, delete and restore with the step's name (the list is in
     * docs/engine.md). A no-op outside tests, which throw from it to stop an operation there as a kill -9 would.
     */
    interface StepHook {
        void reached(String step) throws IOException;
    }

    static final StepHook NO_STEPS = step -> {
    };
    StepHook steps = NO_STEPS;      // set by crash tests
    /** Restores run one at a time (the progress below describes one restore). */
    private final Object restoreLock = new Object();
    /** The restore running now, or the last one if it failed (its marker is still on disk); null otherwise. */
    private volatile RestoreProgress restoreProgress;
    /** The interrupted restore this open finished, or null. */
    private RestoreProgress resumedRestore;

    private Volume(Path dir, VolumeHeader header, MappedData data, PagedBitMap meta, BitMapFile metaFile,
                   PagedBitMap intents, BitMapFile intentFile, FileSpace.Zeroer zeroer, boolean zeroFast,
                   RecoveryReport recovery) {
        this.dir = dir;
        this.header = header;
        this.data = data;
        this.meta = meta;
        this.metaFile = metaFile;
        this.intents = intents;
        this.intentFile = intentFile;
        this.zeroer = zeroer;
        this.zeroFast = zeroFast;
        this.blockShift = Integer.numberOfTrailingZeros(header.blockSize());
        this.regionShift = header.regionShift();
        this.recovery = recovery;
    }

    // ---- lifecycle -------------------------------------------------------------------------------------------

    /** Creates the volume's directory and files (data and save volume preallocated unless {@code sparse}). */
    public static void create(Path dir, String name, long size, int blockSize, long saveSize, boolean sparse,
                              FileSpace space) throws IOException {
        VolumeNames.check(name);
        checkGeometry(size, blockSize, saveSize);
        Files.createDirectories(dir.getParent());
        Files.createDirectory(dir);
        boolean done = false;
        try {
            UUID uuid = UUID.randomUUID();
            int regionShift = Math.max(0, REGION_BYTES_SHIFT - Integer.numberOfTrailingZeros(blockSize));
            long blocks = size / blockSize;
            allocate(dir.resolve(DATA_FILE), size, sparse, space);
            // The save volume is written with zeros, not just fallocated: copy-on-write forces it on every
            // batch, and forcing blocks of an unwritten extent costs a journal commit each time.
            allocate(dir.resolve(SAVE_FILE), saveSize, sparse, sparse ? space : new io.snapbd.engine.io.JavaFileSpace());
            BitMapFile.create(dir.resolve(META_FILE), BitMapFile.Kind.META, uuid, blocks).close();
            BitMapFile.create(dir.resolve(INTENT_FILE), BitMapFile.Kind.INTENT, uuid, regions(blocks, regionShift)).close();
            int flags = VolumeHeader.FLAG_CLEAN | (sparse ? VolumeHeader.FLAG_SPARSE : 0);
            long now = System.currentTimeMillis() * 1_000_000L;
            new VolumeHeader(name, uuid, size, blockSize, saveSize, now, 0, regionShift, flags)
                    .write(dir.resolve(HEADER_FILE));
            done = true;
        } finally {
            if (!done) {
                deleteFiles(dir);
            }
        }
    }

    public static void checkGeometry(long size, int blockSize, long saveSize) {
        if (blockSize < 512 || blockSize > 65536 || Integer.bitCount(blockSize) != 1) {
            throw new IllegalArgumentException("block size " + blockSize + " must be a power of two from 512 to 65536");
        }
        if (size <= 0 || size % blockSize != 0) {
            throw new IllegalArgumentException("size " + size + " must be a positive multiple of the block size " + blockSize);
        }
        if (size / blockSize > (long) Integer.MAX_VALUE * 32) {
            throw new IllegalArgumentException("size " + size + " has too many blocks; use a larger block size");
        }
        if (saveSize < 0 || saveSize % blockSize != 0) {
            throw new IllegalArgumentException("save size " + saveSize + " must be a multiple of the block size " + blockSize);
        }
    }

    private static void allocate(Path file, long size, boolean sparse, FileSpace space) throws IOException {
        if (sparse) {
            try (var ch = java.nio.channels.FileChannel.open(file, java.nio.file.StandardOpenOption.CREATE_NEW,
                    java.nio.file.StandardOpenOption.WRITE)) {
                if (size > 0) {
                    ch.write(ByteBuffer.allocate(1), size - 1);
                }
            }
        } else {
            Files.createFile(file);
            space.preallocate(file, size);
        }
    }

    static long regions(long blocks, int regionShift) {
        return (blocks + (1L << regionShift) - 1) >>> regionShift;
    }

    /**
     * Opens the volume, recovering the meta bit map if the last stop was unclean, and marks it open (not clean).
     * Every file is read and validated (the same readers fsck uses) before anything is written, so a damaged
     * file refuses the open and leaves the volume as it was; on any failure what was opened is closed again. A
     * restore that a crash interrupted ({@code restore.marker}) is finished here, before the volume is handed out.
     */
    public static Volume open(Path dir, FileSpace space) throws IOException {
        return open(dir, space, NO_STEPS);
    }

    /** {@link #open(Path, FileSpace)} with a step hook already in place for the restore it may resume (tests). */
    static Volume open(Path dir, FileSpace space, StepHook hook) throws IOException {
        VolumeHeader h = VolumeHeader.read(dir.resolve(HEADER_FILE));
        io.snapbd.engine.lun.LunState.read(dir.resolve(io.snapbd.engine.lun.LunState.FILE), h.uuid());     // validated now, written last
        java.util.List<AutoCloseable> toClose = new java.util.ArrayList<>();
        try {
            return open(dir, space, h, toClose, hook);
        } catch (IOException | RuntimeException | Error e) {
            for (int i = toClose.size() - 1; i >= 0; i--) {
                try {
                    toClose.get(i).close();
                } catch (Exception suppressed) {
                    e.addSuppressed(suppressed);
                }
            }
            throw e;
        }
    }

    private static Volume open(Path dir, FileSpace space, VolumeHeader h, java.util.List<AutoCloseable> toClose,
            StepHook hook) throws IOException {
        long blocks = h.blocks();
        PagedBitMap meta = new PagedBitMap(blocks);
        BitSet damagedMeta = new BitSet();
        BitMapFile metaFile = BitMapFile.open(dir.resolve(META_FILE), BitMapFile.Kind.META, h.uuid(), meta, damagedMeta);
        toClose.add(metaFile);
        long regionCount = regions(blocks, h.regionShift());
        PagedBitMap intentsOnDisk = new PagedBitMap(regionCount);
        BitSet damagedIntent = new BitSet();
        BitMapFile intentFile = BitMapFile.open(dir.resolve(INTENT_FILE), BitMapFile.Kind.INTENT, h.uuid(), intentsOnDisk, damagedIntent);
        toClose.add(intentFile);
        MappedData data = new MappedData(dir.resolve(DATA_FILE), h.size());
        toClose.add(data);
        FileSpace.Zeroer zeroer = space.openZeroer(dir.resolve(DATA_FILE));
        toClose.add(zeroer);
        boolean zeroFast = probeZeroer(zeroer);
        // Snapshots share production's meta pages as loaded from disk; recovery below changes production
        // copy-on-write, so the snapshots keep the pages they were frozen with.
        Volume[] self = new Volume[1];
        SnapshotSet snapshots = SnapshotSet.open(dir, h.uuid(), blocks, h.blockSize(), h.saveSize(),
                dir.resolve(SAVE_FILE), new ProductionAccess(self, data, meta));
        toClose.add(snapshots::abandon);

        long scanned = 0;
        long marked = 0;
        if (!h.clean() || !damagedMeta.isEmpty() || !damagedIntent.isEmpty()) {
            // Regions to rebuild: every intent region, every region under a damaged intent page (we cannot know
            // which), every region covered by a damaged meta page (loaded as all clear).
            BitSet suspect = new BitSet();
            for (long r = intentsOnDisk.next(0, regionCount, true); r < regionCount; r = intentsOnDisk.next(r + 1, regionCount, true)) {
                suspect.set((int) r);
            }
            for (int p = damagedIntent.nextSetBit(0); p >= 0; p = damagedIntent.nextSetBit(p + 1)) {
                long first = (long) p << PagedBitMap.PAGE_SHIFT;
                suspect.set((int) first, (int) Math.min(regionCount, first + PagedBitMap.PAGE_BITS));
            }
            for (int p = damagedMeta.nextSetBit(0); p >= 0; p = damagedMeta.nextSetBit(p + 1)) {
                long firstBlock = (long) p << PagedBitMap.PAGE_SHIFT;
                long lastBlock = Math.min(blocks, firstBlock + PagedBitMap.PAGE_BITS) - 1;
                suspect.set((int) (firstBlock >>> h.regionShift()), (int) (lastBlock >>> h.regionShift()) + 1);
            }
            MappedData.Cursor c = data.cursor();
            try {
                for (int r = suspect.nextSetBit(0); r >= 0; r = suspect.nextSetBit(r + 1)) {
                    long first = (long) r << h.regionShift();
                    long end = Math.min(blocks, first + (1L << h.regionShift()));
                    for (long b = first; b < end; b++) {
                        if (!meta.get(b) && !isZero(c, b * h.blockSize(), h.blockSize())) {
                            meta.set(b);
                            marked++;
                        }
                    }
                    scanned++;
                }
            } catch (InternalError e) {
                throw data.fault(e);
            }
            snapshots.persistFrozenPages();
            metaFile.writeAll(meta);
            metaFile.force();
        }
        // Start the session with no intents: they are re-taken (and forced) on first touch of each region.
        intentFile.writeAll(new PagedBitMap(regionCount));
        intentFile.force();
        RecoveryReport report = new RecoveryReport(h.clean(), scanned, marked,
                damagedMeta.cardinality() + damagedIntent.cardinality(), h.openCount() + 1);
        VolumeHeader opened = h.withFlags(h.flags() & ~VolumeHeader.FLAG_CLEAN).withOpenCount(h.openCount() + 1);
        opened.write(dir.resolve(HEADER_FILE));
        Volume v = new Volume(dir, opened, data, meta, metaFile, new PagedBitMap(regionCount), intentFile, zeroer,
                zeroFast, report);
        v.snapshots = snapshots;
        v.lun = io.snapbd.engine.lun.LunState.open(dir, h.uuid(), h.createdNanos());
        v.overlay = new Overlay(blocks, h.blockSize(), OVERLAY_BYTES);
        v.overlayBatchNanos = OVERLAY_BATCH_NANOS;
        v.space = space;
        v.steps = hook;
        self[0] = v;
        try {
            v.resumeRestore();
        } catch (IOException | RuntimeException e) {
            toClose.clear();        // abandon closes what the open opened
            v.abandon();
            throw e;
        }
        return v;
    }

    /** Finishes a restore a crash interrupted: its marker names the snapshot; restoring again is idempotent. */
    private void resumeRestore() throws IOException {
        RestoreMarker.Contents m = RestoreMarker.read(dir, header.uuid());
        if (m == null) {
            return;
        }
        java.util.List<SnapshotRecord> records = new java.util.ArrayList<>();
        for (SnapshotSet.Info i : snapshots.list()) {
            records.add(i.record());
        }
        String why = RestoreMarker.unresumable(m, records);
        if (why != null) {
            throw new CorruptMetadataException(RestoreMarker.file(dir), why + ": the interrupted restore cannot be finished "
                    + "and production is partly restored; delete the file to open the volume as it is");
        }
        lun.onAlteringRequest();       // a restore alters the volume, this part of it too
        RestoreProgress p = new RestoreProgress(m.name(), true);
        restore(m.seq(), p);
        resumedRestore = p;
    }

    /** The pieces of production the snapshot machinery works on. */
    private static final class ProductionAccess implements SnapshotSet.Production {
        private final Volume[] volume;
        private final MappedData data;
        private final PagedBitMap meta;

        ProductionAccess(Volume[] volume, MappedData data, PagedBitMap meta) {
            this.volume = volume;
            this.data = data;
            this.meta = meta;
        }

        @Override
        public MappedData data() {
            return data;
        }

        @Override
        public PagedBitMap meta() {
            return meta;
        }

        @Override
        public boolean pauseWriters() {
            return volume[0].gate.pause();
        }

        @Override
        public void resumeWriters() {
            volume[0].gate.resume();
        }

        @Override
        public void flushProduction() throws IOException {
            volume[0].flush();
        }

        @Override
        public void step(String name) throws IOException {
            Volume v = volume[0];
            if (v != null) {
                v.steps.reached(name);
            }
        }
    }

    private static boolean probeZeroer(FileSpace.Zeroer zeroer) {
        try {
            return zeroer.zeroRange(0, 0);
        } catch (IOException e) {
            return false;
        }
    }

    private static boolean isZero(MappedData.Cursor c, long offset, int length) throws IOException {
        long pos = offset;
        long end = offset + length;
        while (pos < end) {
            ByteBuffer v = c.view(pos, end - pos);
            int p = v.position();
            int lim = v.limit();
            while (p + 8 <= lim) {
                if (v.getLong(p) != 0) {
                    return false;
                }
                p += 8;
            }
            while (p < lim) {
                if (v.get(p++) != 0) {
                    return false;
                }
            }
            pos += v.remaining();
        }
        return true;
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
        synchronized (restoreLock) {
            closeLocked();
        }
    }

    private void closeLocked() throws IOException {
        if (closed) {
            return;
        }
        synchronized (flushLock) {
            stopCommitter(true);
            closed = true;
            // Each step only after the ones before it succeeded (the header is marked clean last); whatever
            // fails, the files are closed: the volume is then left marked open and its next open recovers it.
            try {
                data.forceAll();
                snapshots.close();
                lun.closeClean();
                metaFile.writeDirty(meta);
                metaFile.force();
                synchronized (intentLock) {
                    intentFile.writeAll(new PagedBitMap(intents.size()));
                    intentFile.force();
                }
                header = header.withFlags(header.flags() | VolumeHeader.FLAG_CLEAN);
                header.write(dir.resolve(HEADER_FILE));
            } finally {
                metaFile.close();
                intentFile.close();
                zeroer.close();
                data.close();
            }
        }
    }

    /**
     * Waits until every write staged behind a copy-on-write force has reached the mapping (page cache).
     * A process crash loses writes still staged, as a power loss loses unflushed ones; tests that model a
     * crash where the page cache survives call this first.
     */
    public void awaitStagedApplied() throws IOException {
        overlay.awaitEmpty();
    }

    /**
     * Replaces the overlay (nothing staged, no session open yet) by one of {@code capacityBytes} that preallocates
     * {@code preallocateBytes} at each snapshot: the start-up warm-up uses a small one so that its writers fill it,
     * reach its batch target and grow its arena, as a real volume's writers do only under heavy load; otherwise
     * the JIT would meet those branches for the first time on a client's write.
     */
    void resizeOverlay(long capacityBytes, long preallocateBytes) {
        if (overlay.staged() > 0 || committer != null) {
            throw new IllegalStateException("the overlay of " + name() + " is in use");
        }
        overlay = new Overlay(size() / blockSize(), blockSize(), capacityBytes);
        overlayPreallocateBytes = preallocateBytes;
    }

    /** How long the committer lets a batch of staged writes build up (tests hold it to observe staging). */
    void overlayBatchNanos(long nanos) {
        overlayBatchNanos = nanos;
    }

    /** Blocks staged in the overlay and not yet applied to production. */
    int overlayStaged() {
        return overlay.staged();
    }

    /** Closes without marking clean: what a crash leaves behind (for tests of recovery). */
    public void abandon() throws IOException {
        stopCommitter(false);
        closed = true;
        snapshots.abandon();
        metaFile.close();
        intentFile.close();
        zeroer.close();
        data.close();
    }

    public static void deleteFiles(Path dir) throws IOException {
        if (!Files.exists(dir)) {
            return;
        }
        try (var files = Files.list(dir)) {
            for (Path p : (Iterable<Path>) files::iterator) {
                Files.deleteIfExists(p);
            }
        }
        Files.deleteIfExists(dir);
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
        return zeroFast;
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
        return new VolumeSession(data.cursor(), gate, overlay.view());
    }

    static final class VolumeSession implements Session {
        final MappedData.Cursor cursor;
        final Overlay.View overlayView;
        final WriteGate gate;
        final WriteGate.Slot slot;
        final SnapshotSet.CowBuffer cow = new SnapshotSet.CowBuffer();
        private int[] slots;
        private ByteBuffer readBuffer;
        int stagedSlots;
        long stagedFirst;

        /** Overlay slots reserved for the write in progress (sized for the largest staged write). */
        int[] slotBuffer() {
            if (slots == null) {
                slots = new int[256];
            }
            return slots;
        }

        ByteBuffer readBuffer() {
            if (readBuffer == null) {
                readBuffer = ByteBuffer.allocateDirect(1 << 20);
            }
            return readBuffer;
        }

        VolumeSession(MappedData.Cursor cursor, WriteGate gate, Overlay.View overlayView) {
            this.cursor = cursor;
            this.overlayView = overlayView;
            this.gate = gate;
            this.slot = gate.register();
        }



        @Override
        public void close() {
            gate.unregister(slot);
        }
    }

    /** Saves before-images that snapshots need for blocks [first, last] (no-op without snapshots). */
    private void copyOnWrite(VolumeSession s, long first, long last) throws IOException {
        if (!snapshots.isEmpty()) {
            cowCopies.addAndGet(snapshots.beforeOverwrite(s.cow, first, last));
        }
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

    @Override
    public void write(Session s, long offset, int length, ByteSource source, boolean fua) throws IOException {
        if (length == 0) {
            checkOpen();
            BlockDevice.checkRange(this, offset, length);
            return;
        }
        if (prepareWrite(s, offset, length)) {
            try {
                commitPrepared();
            } catch (IOException | RuntimeException e) {
                abortPrepared(s);
                throw e;
            }
        }
        finishWrite(s, offset, length, source);
        if (fua) {
            forceRange(offset, length);
        }
    }

    @Override
    public boolean prepareWrite(Session s, long offset, int length) throws IOException {
        checkOpen();
        BlockDevice.checkRange(this, offset, length);
        if (length == 0) {
            throw new BlockDeviceException(BlockDeviceException.Reason.OUT_OF_RANGE, "write of zero bytes");
        }
        VolumeSession vs = (VolumeSession) s;
        long first = offset >>> blockShift;
        long last = (offset + length - 1) >>> blockShift;
        vs.gate.enter(vs.slot);
        try {
            vs.stagedSlots = 0;
            boolean restage = false;
            if (overlay.staged() > 0 && overlay.anyStaged(first, last)) {
                // A whole-block rewrite replaces the staged copy (no before-image to take: the first write
                // claimed it); anything else waits for the staged blocks to be applied, to keep order.
                restage = !snapshots.isEmpty() && ((offset | length) & (blockSize() - 1)) == 0;
                if (!restage) {
                    overlay.awaitApplied(first, last);
                }
            }
            if (snapshots.isEmpty()) {
                markInUse(first, last);
                return false;
            }
            int copied = snapshots.copyBeforeOverwrite(vs.cow, first, last);
            if (copied > 0) {
                cowCopies.addAndGet(copied);
            }
            markInUse(first, last);
            boolean mustWait = restage || copied > 0 || SnapshotSet.sawPending(vs.cow);
            if (mustWait && stage(vs, first, last, offset, offset + length)) {
                return false;       // the data goes to the overlay; the committer forces and applies it
            }
            if (restage) {
                overlay.awaitApplied(first, last);      // no room: the staged copy must land before ours does
            }
            return mustWait;
        } catch (IOException | RuntimeException e) {
            vs.gate.exit(vs.slot);
            throw e;
        }
    }

    /** Reserves overlay slots for [first, last]; false when the overlay is full (the caller waits instead). */
    private boolean stage(VolumeSession vs, long first, long last, long offset, long end) throws IOException {
        int n = (int) (last - first + 1);
        if (n > vs.slotBuffer().length
                || !overlay.reserve(first, last, offset, end, vs.cursor, vs.overlayView, vs.slotBuffer())) {
            return false;
        }
        vs.stagedSlots = n;
        vs.stagedFirst = first;
        startCommitter();
        return true;
    }

    /** The committer: forces the before-images of everything staged, then applies it to production. */
    private synchronized void startCommitter() {
        if (committer != null) {
            return;
        }
        committer = new Thread(() -> {
            MappedData.Cursor cursor = data.cursor();
            Overlay.View view = overlay.view();
            CommitterPriority priority = new CommitterPriority(space, COMMITTER_NICE, COMMITTER_BUSY_NICE, name());
            priority.adjust(false);
            while (!committerStop) {
                try {
                    int n = overlay.awaitBatch(100, overlayBatchNanos);
                    if (n > 0) {
                        priority.adjust(overlay.waitedFor());
                        snapshots.forceCopies();
                        overlay.applyStaged(cursor, view, n);
                    }
                } catch (InterruptedException e) {
                    return;
                } catch (IOException | RuntimeException | InternalError e) {
                    // Keep the data staged (readers still see it) and retry: losing it would lose acknowledged writes.
                    // (InternalError: a SIGBUS on the mapping of a sparse data file on a full file system.)
                    System.err.println("snapbd: volume " + name() + ": applying staged writes failed, retrying: " + e);
                    try {
                        Thread.sleep(100);
                    } catch (InterruptedException ie) {
                        return;
                    }
                }
            }
        }, "overlay-committer " + name());
        committer.setDaemon(true);
        committer.start();
    }

    private void stopCommitter(boolean drain) throws IOException {
        if (drain) {
            overlay.awaitEmpty();
        }
        Thread t;
        synchronized (this) {
            committerStop = true;
            t = committer;
        }
        if (t != null) {
            t.interrupt();
            try {
                t.join(10_000);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
    }

    @Override
    public void abortPrepared(Session s) {
        VolumeSession vs = (VolumeSession) s;
        if (vs.stagedSlots > 0) {
            overlay.release(vs.stagedSlots, vs.slotBuffer());
            vs.stagedSlots = 0;
        }
        vs.gate.exit(vs.slot);
    }

    /** Streams the payload into the reserved overlay slots and publishes them; the write is then complete. */
    private void finishStaged(VolumeSession vs, long offset, int length, ByteSource source) throws IOException {
        int[] slots = vs.slotBuffer();
        int n = vs.stagedSlots;
        long first = vs.stagedFirst;
        boolean published = false;
        try {
            long pos = offset;
            long end = offset + length;
            while (pos < end) {
                long b = pos >>> blockShift;
                int from = (int) (pos & (blockSize() - 1));
                int to = (int) Math.min(blockSize(), end - (b << blockShift));
                source.readFully(vs.overlayView.slot(slots[(int) (b - first)], from, to));
                pos = (b << blockShift) + to;
            }
            overlay.publish(first, first + n - 1, slots);
            published = true;
        } finally {
            if (!published) {
                overlay.release(n, slots);
            }
            vs.stagedSlots = 0;
            vs.gate.exit(vs.slot);
        }
    }

    @Override
    public void commitPrepared() throws IOException {
        snapshots.forceCopies();
    }

    @Override
    public void finishWrite(Session s, long offset, int length, ByteSource source) throws IOException {
        VolumeSession vs = (VolumeSession) s;
        if (vs.stagedSlots > 0) {
            finishStaged(vs, offset, length, source);
            return;
        }
        try {
            MappedData.Cursor c = vs.cursor;
            long pos = offset;
            long end = offset + length;
            while (pos < end) {
                ByteBuffer v = c.view(pos, end - pos);
                int n = v.remaining();
                source.readFully(v);
                pos += n;
            }
            // A TRIM racing with this write may have cleared a bit after we set it; set it again so that
            // "clear bit => zero data" holds whatever the interleaving.
            markInUse(offset >>> blockShift, (offset + length - 1) >>> blockShift);
        } finally {
            vs.gate.exit(vs.slot);
        }
    }

    private void markInUse(long first, long last) throws IOException {
        for (long b = first; b <= last; b++) {
            if (!meta.get(b)) {
                ensureIntents(b >>> regionShift, last >>> regionShift);
                for (; b <= last; b++) {
                    meta.set(b);
                }
                return;
            }
        }
    }

    /** Forces the intent bits of regions [firstRegion, lastRegion] unless they are already durable. */
    private void ensureIntents(long firstRegion, long lastRegion) throws IOException {
        if (intents.next(firstRegion, lastRegion + 1, false) > lastRegion) {
            return;
        }
        synchronized (intentLock) {
            boolean changed = false;
            PagedBitMap staged = intents;
            for (long r = firstRegion; r <= lastRegion; r++) {
                if (!staged.get(r)) {
                    changed = true;
                }
            }
            if (!changed) {
                return;
            }
            // Write the pages with the new bits set, force, and only then publish them as durable.
            PagedBitMap next = new PagedBitMap(intents.size());
            int firstPage = (int) (firstRegion >>> PagedBitMap.PAGE_SHIFT);
            int lastPage = (int) (lastRegion >>> PagedBitMap.PAGE_SHIFT);
            long[] words = new long[PagedBitMap.PAGE_LONGS];
            for (int p = firstPage; p <= lastPage; p++) {
                intents.copyPage(p, words);
                next.loadPage(p, words);
            }
            for (long r = firstRegion; r <= lastRegion; r++) {
                next.set(r);
            }
            for (int p = firstPage; p <= lastPage; p++) {
                intentFile.writePage(next, p);
            }
            intentFile.force();
            for (long r = firstRegion; r <= lastRegion; r++) {
                intents.set(r);
            }
        }
    }

    @Override
    public void trim(Session s, long offset, long length, boolean fua) throws IOException {
        checkOpen();
        BlockDevice.checkRange(this, offset, length);
        long firstWhole = (offset + blockSize() - 1) >>> blockShift;
        long endWhole = (offset + length) >>> blockShift;
        if (firstWhole < endWhole) {
            VolumeSession vs = (VolumeSession) s;
            vs.gate.enter(vs.slot);
            try {
                overlay.awaitApplied(firstWhole, endWhole - 1);
                copyOnWrite(vs, firstWhole, endWhole - 1);
                discardBlocks(vs, firstWhole, endWhole);
            } finally {
                vs.gate.exit(vs.slot);
            }
        }
        if (fua) {
            flush();
        }
    }

    @Override
    public void writeZeroes(Session s, long offset, long length, boolean noHole, boolean fastOnly, boolean fua)
            throws IOException {
        checkOpen();
        BlockDevice.checkRange(this, offset, length);
        if (fastOnly && !zeroFast) {
            throw new BlockDeviceException(BlockDeviceException.Reason.NOT_SUPPORTED,
                    "fast zeroing is not supported by the file system under " + name());
        }
        if (length == 0) {
            return;
        }
        VolumeSession vs = (VolumeSession) s;
        vs.gate.enter(vs.slot);
        try {
            overlay.awaitApplied(offset >>> blockShift, (offset + length - 1) >>> blockShift);
            copyOnWrite(vs, offset >>> blockShift, (offset + length - 1) >>> blockShift);
            zeroRange(vs, offset, length, noHole);
        } finally {
            vs.gate.exit(vs.slot);
        }
        if (fua) {
            flush();
        }
    }

    private void zeroRange(VolumeSession vs, long offset, long length, boolean noHole) throws IOException {
        long end = offset + length;
        long firstWhole = (offset + blockSize() - 1) >>> blockShift;
        long endWhole = end >>> blockShift;
        if (firstWhole >= endWhole) {
            // Inside one block (or straddling two partial blocks): zero through the mapping where in use.
            zeroPartial(vs, offset, end);
        } else {
            zeroPartial(vs, offset, firstWhole << blockShift);
            zeroPartial(vs, endWhole << blockShift, end);
            if (noHole) {
                zeroInUseRuns(vs, firstWhole, endWhole, false);
                markInUse(firstWhole, endWhole - 1);
            } else {
                discardBlocks(vs, firstWhole, endWhole);
            }
        }
    }

    /** Zeroes bytes [from, to) that lie in blocks in use; blocks not in use are already zero. */
    private void zeroPartial(VolumeSession s, long from, long to) throws IOException {
        long pos = from;
        while (pos < to) {
            long block = pos >>> blockShift;
            long blockEnd = Math.min(to, (block + 1) << blockShift);
            if (meta.get(block)) {
                fillZero(s.cursor, pos, blockEnd - pos);
            }
            pos = blockEnd;
        }
    }

    /** Blocks [first, end) become not in use: clear the bits, then zero what was in use. */
    private void discardBlocks(VolumeSession s, long first, long end) throws IOException {
        zeroInUseRuns(s, first, end, true);
    }

    private void zeroInUseRuns(VolumeSession s, long first, long end, boolean clearBits) throws IOException {
        long b = meta.next(first, end, true);
        while (b < end) {
            long runEnd = meta.next(b, end, false);
            // Intent first, so that after a crash this region is re-derived from the data.
            ensureIntents(b >>> regionShift, (runEnd - 1) >>> regionShift);
            if (clearBits) {
                for (long i = b; i < runEnd; i++) {
                    meta.clear(i);
                }
            }
            zeroData(s, b << blockShift, (runEnd - b) << blockShift);
            b = meta.next(runEnd, end, true);
        }
    }

    private void zeroData(VolumeSession s, long offset, long length) throws IOException {
        if (zeroFast && zeroer.zeroRange(offset, length)) {
            return;
        }
        fillZero(s.cursor, offset, length);
    }

    private static final ByteBuffer ZEROS = ByteBuffer.allocateDirect(1 << 16).asReadOnlyBuffer();

    private static void fillZero(MappedData.Cursor c, long offset, long length) throws IOException {
        long pos = offset;
        long end = offset + length;
        ByteBuffer zeros = ZEROS.duplicate();
        while (pos < end) {
            ByteBuffer v = c.view(pos, end - pos);
            int n = v.remaining();
            while (v.hasRemaining()) {
                zeros.clear().limit(Math.min(zeros.capacity(), v.remaining()));
                v.put(zeros);
            }
            pos += n;
        }
    }

    @Override
    public void flush() throws IOException {
        checkOpen();
        overlay.awaitEmpty();       // acknowledged writes still staged must reach the mapping first
        flushCommit.sync(() -> {
            data.forceAll();
            snapshots.persistFrozenPages();     // before production's pages: snapshots read through them
            metaFile.writeDirty(meta);
            metaFile.force();
        });
    }

    @Override
    public void forceRange(long offset, long length) throws IOException {
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
        long blocks = header.blocks();
        while (pos < end) {
            long block = pos >>> blockShift;
            boolean used = meta.get(block);
            long runEndBlock = meta.next(block + 1, blocks, !used);
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
    public io.snapbd.engine.lun.LunState lunState() {
        return lun;
    }

    /** Blocks copied into the save volume by copy-on-write since open. */
    public long cowCopies() {
        return cowCopies.get();
    }

    /** Takes snapshot {@code name} of the current content (waits for in-flight writes). */
    public SnapshotRecord createSnapshot(String name) throws IOException {
        checkOpen();
        if (snapshots.saveChunks() == 0) {
            throw new io.snapbd.engine.snapshot.NoSaveVolumeException(name());     // before anything is made
        }
        // Ready what the first writes after it will use, off their path: the arena they stage into and the
        // committer (started here, a staged write never finds it missing: no branch the JIT has to revisit).
        overlay.preallocate(overlayPreallocateBytes);
        startCommitter();
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
        long seq = snapshots.seqOf(name);
        if (seq < 0) {
            throw new IllegalArgumentException(snapshots.record(name) == null ? "no snapshot named " + name
                    : "snapshot " + name + " is not active and cannot be restored");
        }
        return restore(seq, new RestoreProgress(name, false));
    }

    private long restore(long seq, RestoreProgress p) throws IOException {
        synchronized (restoreLock) {
            checkOpen();            // a close may have run while this restore waited for the lock
            RestoreProgress previous = restoreProgress;
            restoreProgress = p;
            if (!gate.pause()) {
                restoreProgress = previous;
                throw new IOException("in-flight writes did not finish in time; nothing restored");
            }
            VolumeSession s = (VolumeSession) openSession();
            boolean marked = false;
            try {
                overlay.awaitEmpty();
                steps.reached("restore.paused");
                long protectedBefore = snapshots.beginRestore(seq);
                try {
                    RestoreMarker.write(dir, header.uuid(), seq, p.snapshot());
                } catch (IOException | RuntimeException e) {
                    snapshots.endRestore(protectedBefore);
                    throw e;
                }
                marked = true;
                steps.reached("restore.marker");
                long changed = restoreBlocks(s, seq, p);
                p.phase = "flushing";
                flush();
                steps.reached("restore.flushed");
                RestoreMarker.delete(dir);
                snapshots.endRestore(-1);
                restoreProgress = null;
                steps.reached("restore.done");
                return changed;
            } catch (IOException e) {
                String what = marked ? "; production is partly restored: restore again (the next open of the volume also finishes it)"
                        : "; nothing restored";
                if (marked) {
                    p.error = e.getMessage();
                } else {
                    restoreProgress = previous;
                }
                throw new IOException("restore of " + name() + " from snapshot " + p.snapshot() + " failed: " + e.getMessage() + what, e);
            } catch (RuntimeException | Error e) {
                if (marked) {
                    p.error = String.valueOf(e);
                } else {
                    restoreProgress = previous;
                }
                throw e;
            } finally {
                s.close();
                gate.resume();
            }
        }
    }

    /** Blocks per copy-on-write force and per copy when restoring: runs of up to 1 MiB. */
    private int restoreRunBlocks() {
        return Math.max(1, (1 << 20) >>> blockShift);
    }

    /**
     * The restore proper, idempotent so that it can be rerun from any point: discard what is in use in production
     * but not in the snapshot, copy back every block some snapshot from it onwards holds a before-image of (the
     * rest of its in-use blocks never changed since it was taken), and set the meta bits of its in-use blocks.
     * Every overwritten block goes through copy-on-write first, so younger snapshots keep their content.
     */
    private long restoreBlocks(VolumeSession s, long seq, RestoreProgress p) throws IOException {
        long changed = 0;
        PagedBitMap target = snapshots.metaOf(seq);
        long blocks = header.blocks();
        p.phase = "discarding";
        // Blocks in use in production but not in the snapshot: discard.
        for (long b = meta.next(0, blocks, true); b < blocks; b = meta.next(b + 1, blocks, true)) {
            if (!target.get(b)) {
                long end = meta.next(b, blocks, false);
                long runEnd = b;
                while (runEnd < end && !target.get(runEnd)) {
                    runEnd++;
                }
                copyOnWrite(s, b, runEnd - 1);
                discardBlocks(s, b, runEnd);
                changed += runEnd - b;
                p.blocksChanged = changed;
                b = runEnd - 1;
                steps.reached("restore.discard");
            }
        }
        // Blocks in use in the snapshot: copy the saved before-image back, a run of them per force.
        p.phase = "copying";
        int runMax = restoreRunBlocks();
        ByteBuffer buf = ByteBuffer.allocateDirect(runMax << blockShift);
        SnapshotSet.ReadCursor rc = new SnapshotSet.ReadCursor();
        for (long b = target.next(0, blocks, true); b < blocks; b = target.next(b, blocks, true)) {
            if (!snapshots.savedAtOrAfter(seq, b)) {
                markInUse(b, b);        // production still holds the snapshot's content: only the bit may differ
                b++;
                continue;
            }
            long end = b + 1;
            while (end < blocks && end - b < runMax && target.get(end) && snapshots.savedAtOrAfter(seq, end)) {
                end++;
            }
            int bytes = (int) ((end - b) << blockShift);
            buf.clear();
            snapshots.read(seq, rc, b << blockShift, bytes, buf);
            copyOnWrite(s, b, end - 1);
            markInUse(b, end - 1);
            buf.flip();
            long pos = b << blockShift;
            while (buf.hasRemaining()) {
                ByteBuffer v = s.cursor.view(pos, buf.remaining());
                int n = v.remaining();
                ByteBuffer part = buf.duplicate();
                part.limit(part.position() + n);
                v.put(part);
                buf.position(buf.position() + n);
                pos += n;
            }
            changed += end - b;
            p.blocksChanged = changed;
            steps.reached("restore.copy");
            b = end;
        }
        return changed;
    }

    /** A restore in progress, or the last one if it failed (then its marker is still on disk); null otherwise. */
    public RestoreProgress restoreProgress() {
        return restoreProgress;
    }

    /** The restore that a crash interrupted and this open finished, or null. */
    public RestoreProgress resumedRestore() {
        return resumedRestore;
    }

    /** What a restore is doing, for {@code status} and {@code snapshot list}. */
    public static final class RestoreProgress {
        private final String snapshot;
        private final boolean resumed;
        private final long startedMillis = System.currentTimeMillis();
        volatile String phase = "pausing writers";
        volatile long blocksChanged;
        volatile String error;

        RestoreProgress(String snapshot, boolean resumed) {
            this.snapshot = snapshot;
            this.resumed = resumed;
        }

        public String snapshot() {
            return snapshot;
        }

        /** True when this restore finishes one a crash interrupted. */
        public boolean resumed() {
            return resumed;
        }

        public long startedMillis() {
            return startedMillis;
        }

        /** "pausing writers", "discarding", "copying" or "flushing": where it is, or where it failed. */
        public String phase() {
            return phase;
        }

        public long blocksChanged() {
            return blocksChanged;
        }

        /** Why it failed (production is partly restored until a restore completes), or null while it runs. */
        public String error() {
            return error;
        }
    }

    private void checkOpen() throws BlockDeviceException {
        if (closed) {
            throw new BlockDeviceException(BlockDeviceException.Reason.UNAVAILABLE, name() + " is closed");
        }
    }
}

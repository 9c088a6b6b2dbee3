package io.snapbd.engine.volume;

import io.snapbd.engine.BlockDevice;
import io.snapbd.engine.bitmap.BitMapFile;
import io.snapbd.engine.bitmap.PagedBitMap;
import io.snapbd.engine.format.VolumeNames;
import io.snapbd.engine.io.FileSpace;
import io.snapbd.engine.io.JavaFileSpace;
import io.snapbd.engine.io.MappedData;
import io.snapbd.engine.lun.LunState;
import io.snapbd.engine.mirror.MirrorSet;
import io.snapbd.engine.snapshot.SnapshotSet;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.BitSet;
import java.util.List;
import java.util.UUID;

import static io.snapbd.engine.volume.Volume.DATA_FILE;
import static io.snapbd.engine.volume.Volume.HEADER_FILE;
import static io.snapbd.engine.volume.Volume.INTENT_FILE;
import static io.snapbd.engine.volume.Volume.META_FILE;
import static io.snapbd.engine.volume.Volume.SAVE_FILE;

/** Creates a volume's files, and opens them into a {@link Volume}: validation, recovery, resuming a restore. */
final class VolumeOpener {

    private VolumeOpener() {
    }

    /** See {@link Volume#create}. */
    static void create(Path dir, String name, long size, int blockSize, long saveSize, boolean sparse,
                       FileSpace space, List<String> mirrors, boolean forceLegs) throws IOException {
        VolumeNames.check(name);
        checkGeometry(size, blockSize, saveSize);
        Files.createDirectories(dir.getParent());
        Files.createDirectory(dir);
        boolean done = false;
        try {
            UUID uuid = UUID.randomUUID();
            int regionShift = WriteIntents.regionShift(blockSize);
            long blocks = size / blockSize;
            allocate(dir.resolve(DATA_FILE), size, sparse, space);
            // The save volume is written with zeros, not just fallocated: copy-on-write forces it on every
            // batch, and forcing blocks of an unwritten extent costs a journal commit each time.
            allocate(dir.resolve(SAVE_FILE), saveSize, sparse, sparse ? space : new JavaFileSpace());
            BitMapFile.create(dir.resolve(META_FILE), BitMapFile.Kind.META, uuid, blocks).close();
            BitMapFile.create(dir.resolve(INTENT_FILE), BitMapFile.Kind.INTENT, uuid,
                    WriteIntents.regions(blocks, regionShift)).close();
            if (!mirrors.isEmpty()) {
                // before volume.meta: a crash before it leaves no volume (and deleteFiles removes the legs)
                MirrorSet.create(dir, uuid, size, mirrors, sparse, space, forceLegs);
            }
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

    /** See {@link Volume#checkGeometry}. */
    static void checkGeometry(long size, int blockSize, long saveSize) {
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
            try (var ch = FileChannel.open(file, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE)) {
                if (size > 0) {
                    ch.write(ByteBuffer.allocate(1), size - 1);
                }
            }
        } else {
            Files.createFile(file);
            space.preallocate(file, size);
        }
    }

    static void deleteFiles(Path dir) throws IOException {
        if (!Files.exists(dir)) {
            return;
        }
        MirrorSet.deleteLegs(dir);
        deleteOverlayFiles(dir);
        try (var files = Files.list(dir)) {
            for (Path p : (Iterable<Path>) files::iterator) {
                Files.deleteIfExists(p);
            }
        }
        Files.deleteIfExists(dir);
    }

    /** Deletes what a killed run of the volume in {@code dir} left staged in RAM files: the volume goes. */
    private static void deleteOverlayFiles(Path dir) throws IOException {
        if (!Files.exists(dir.resolve(HEADER_FILE))) {
            return;
        }
        UUID uuid;
        try {
            uuid = VolumeHeader.read(dir.resolve(HEADER_FILE)).uuid();
        } catch (IOException e) {
            return;     // no identity to name the files by: they are ignored by any other volume
        }
        OverlayFile.deleteAll(OverlayFile.directory(), dir, uuid);
    }

    /** See {@link Volume#open(Path, FileSpace)}; {@code hook} is in place for the restore it may resume. */
    static Volume open(Path dir, FileSpace space, VolumeTuning tuning, Volume.StepHook hook) throws IOException {
        VolumeHeader h = VolumeHeader.read(dir.resolve(HEADER_FILE));
        LunState.read(dir.resolve(LunState.FILE), h.uuid());     // validated now, written last
        List<AutoCloseable> toClose = new ArrayList<>();
        try {
            return open(dir, space, tuning, h, toClose, hook);
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

    private static Volume open(Path dir, FileSpace space, VolumeTuning tuning, VolumeHeader h,
                               List<AutoCloseable> toClose, Volume.StepHook hook) throws IOException {
        long blocks = h.blocks();
        PagedBitMap meta = new PagedBitMap(blocks);
        BitSet damagedMeta = new BitSet();
        BitMapFile metaFile = BitMapFile.open(dir.resolve(META_FILE), BitMapFile.Kind.META, h.uuid(), meta, damagedMeta);
        toClose.add(metaFile);
        long regionCount = WriteIntents.regions(blocks, h.regionShift());
        PagedBitMap intentsOnDisk = new PagedBitMap(regionCount);
        BitSet damagedIntent = new BitSet();
        BitMapFile intentFile = BitMapFile.open(dir.resolve(INTENT_FILE), BitMapFile.Kind.INTENT, h.uuid(), intentsOnDisk, damagedIntent);
        toClose.add(intentFile);
        MappedData data = new MappedData(dir.resolve(DATA_FILE), h.size());
        toClose.add(data);
        FileSpace.Zeroer zeroer = space.openZeroer(dir.resolve(DATA_FILE));
        toClose.add(zeroer);
        WriteIntents intents = new WriteIntents(meta, intentFile, regionCount, h.regionShift());
        Zeroing zeroing = new Zeroing(zeroer, meta, intents, h.blockSize());
        // Snapshots share production's meta pages as loaded from disk; recovery below changes production
        // copy-on-write, so the snapshots keep the pages they were frozen with.
        Volume[] self = new Volume[1];
        SnapshotSet snapshots = SnapshotSet.open(dir, h.uuid(), blocks, h.blockSize(), h.saveSize(),
                dir.resolve(SAVE_FILE), new ProductionAccess(self, data, meta));
        toClose.add(snapshots::abandon);

        // Every file is validated by now. Reconcile the legs after an unclean stop before recovery reads leg 0's
        // data and before any client is served (behaviour 26).
        MirrorSet mirror = MirrorSet.open(dir, h.uuid(), h.size(), dir.resolve(DATA_FILE));
        if (mirror != null) {
            toClose.add(mirror::abandon);
        }
        RecoveryReport report = VolumeRecovery.recover(h, data, meta, metaFile, intentsOnDisk, damagedMeta,
                damagedIntent, snapshots);
        // Start the session with no intents: they are re-taken (and forced) on first touch of each region.
        intentFile.writeAll(new PagedBitMap(regionCount));
        intentFile.force();
        VolumeHeader opened = h.withFlags(h.flags() & ~VolumeHeader.FLAG_CLEAN).withOpenCount(h.openCount() + 1);
        opened.write(dir.resolve(HEADER_FILE));
        LunState lun = LunState.open(dir, h.uuid(), h.createdNanos());
        Path shm = OverlayFile.directory();
        OverlayFile overlayFile = null;
        if (shm != null) {
            OverlayFile.sweepOrphans(shm, OverlayFile.prefix(dir, h.uuid()));
            try {
                overlayFile = OverlayFile.create(OverlayFile.path(shm, dir, h.uuid(), opened.openCount()), dir, h.uuid(),
                        opened.openCount(), h.blockSize(), Overlay.slotsFor(tuning.overlayBytes(), h.blockSize()));
                toClose.add(overlayFile);
            } catch (IOException e) {
                overlayFile = null;     // staged writes then live in the process's memory, as before
            }
        }
        Volume v = new Volume(dir, opened, data, meta, metaFile, intents, zeroing, report, snapshots, lun, space,
                tuning, hook, overlayFile);
        self[0] = v;
        try {
            if (mirror != null) {
                v.mirror = mirror;
                // ranges reconciliation copied into data.img from another leg: in use (clear bit => zero data)
                int shift = Integer.numberOfTrailingZeros(h.blockSize());
                mirror.onLocalForce(v::forceLocal);     // the data-force batches: leg 0 without the mirror's own wait
                mirror.onLocalCopies((off, len) -> {
                    if (len > 0) {
                        intents.markInUse(off >>> shift, (off + len - 1) >>> shift);
                    }
                });
            }
            v.restores().resume();
            v.stagedReplay = replayStaged(v, shm, dir, h, opened.openCount());
        } catch (IOException | RuntimeException e) {
            toClose.clear();        // abandon closes what the open opened
            v.abandon();
            throw e;
        }
        return v;
    }

    /**
     * Writes again the blocks an earlier run of this volume staged, acknowledged and never applied (it died, kill
     * -9), through the normal write path (copy-on-write included), after the recovery and a resumed restore and
     * before any client is served; forces them before their overlay file is deleted.
     */
    private static Volume.StagedReplay replayStaged(Volume v, Path shm, Path dir, VolumeHeader h, long openCount)
            throws IOException {
        long[] blocks = {0};
        List<String> notUsed = new ArrayList<>();
        int shift = Integer.numberOfTrailingZeros(h.blockSize());
        try (BlockDevice.Session s = v.openSession()) {
            List<OverlayFile.Replayed> done = OverlayFile.replay(shm, dir, h.uuid(), openCount, h.blockSize(), h.blocks(),
                    (block, data) -> {
                        v.write(s, block << shift, data.remaining(), dst -> {
                            int n = dst.remaining();
                            dst.put(data.slice(data.position(), n));
                            data.position(data.position() + n);
                        }, false);
                        blocks[0]++;
                    }, v::flush);
            for (OverlayFile.Replayed r : done) {
                if (r.skipped() != null) {
                    notUsed.add(r.file().getFileName() + ": " + r.skipped());
                }
            }
        }
        return new Volume.StagedReplay(blocks[0], List.copyOf(notUsed));
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
}

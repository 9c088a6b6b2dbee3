package io.snapbd.engine.mirror;

import io.snapbd.engine.format.AtomicFile;
import io.snapbd.engine.io.FileSpace;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.UUID;

/**
 * {@code mirror add} and {@code mirror remove} on a closed volume (docs/mirrors.md, "Adding and removing legs"):
 * the caller holds the data directory's lock and has closed the volume cleanly (every table empty).
 */
public final class LegChanges {

    private LegChanges() {
    }

    /**
     * Makes leg {@code uri} and copies the volume's blocks ({@code dataFile}, {@code size} bytes) into it in full,
     * then forces it, and only then lists it in {@code mirror.legs} (a volume that was not mirrored gets leg 0's
     * table first): a crash before the listing leaves an unlisted leg and the volume as it was. Refused while a leg
     * is degraded or a table holds live entries (reconcile first), and when the leg holds another volume's tag table
     * unless {@code force} ({@link LegInUse}). Returns the new leg's number.
     */
    public static int add(Path dir, UUID owner, long size, Path dataFile, String uri, boolean sparse, FileSpace space,
                          boolean force, Reconciler.Progress progress) throws IOException {
        MirrorConfig cfg = MirrorConfig.read(dir, owner);
        List<String> extra = new ArrayList<>(cfg == null ? List.of() : cfg.extraLegs());
        if (extra.contains(uri)) {
            throw new IllegalArgumentException("mirror leg " + uri + " is a leg of the volume already");
        }
        if (extra.size() >= MirrorConfig.MAX_EXTRA_LEGS) {
            throw new IllegalArgumentException("a volume has at most " + MirrorConfig.MAX_EXTRA_LEGS + " extra legs");
        }
        if (cfg != null) {
            requireInSync(dir, owner, cfg);
        }
        long half = cfg == null ? TagTable.DEFAULT_HALF_RECORDS : cfg.halfRecords();
        int index = extra.size() + 1;
        LegOpener opener = LegOpener.installed();
        LegInUse.check(opener, uri, size, owner, force);
        boolean done = false;
        try (MirrorLeg l = opener.create(uri, size, TagTable.areaBytes(half), sparse, space);
             FileLegIo src = new FileLegIo(dataFile)) {
            TagTable.create(l.table(), owner, index, half);
            ByteBuffer buf = ByteBuffer.allocateDirect(MirrorSet.COPY_BUFFER);
            progress.copied(0, size);
            for (long pos = 0; pos < size; ) {
                int n = (int) Math.min(buf.capacity(), size - pos);
                buf.clear().limit(n);
                src.read(buf, pos);
                buf.flip();
                l.data().write(buf, pos);
                pos += n;
                progress.copied(pos, size);
            }
            l.data().force();
            if (cfg == null) {
                try (FileTagStore s = FileTagStore.create(dir.resolve(MirrorConfig.LOCAL_TABLE), TagTable.areaBytes(half))) {
                    TagTable.create(s, owner, 0, half);
                }
            }
            extra.add(uri);
            new MirrorConfig(owner, half, extra).write(dir);
            done = true;
        } finally {
            if (!done) {
                try {
                    opener.delete(uri);
                } catch (IOException ignored) {
                    // best effort: the add failed anyway
                }
            }
        }
        return index;
    }

    /**
     * Takes leg {@code uri} out of {@code mirror.legs} (and deletes its region map if it was degraded); the legs
     * after it are renumbered (their empty tables made anew with their new numbers). The leg's own files are
     * left as they are: a copy of the volume as of its last change. The last extra leg makes the volume unmirrored
     * ({@code mirror.legs}, {@code leg0.tags}, {@code mirror.tags} removed). Refused when a leg after it is
     * degraded or holds live entries, or (unless it is the one degraded) when a table holds live entries.
     */
    public static void remove(Path dir, UUID owner, long size, String uri) throws IOException {
        MirrorConfig cfg = MirrorConfig.read(dir, owner);
        if (cfg == null) {
            throw new IllegalArgumentException("the volume is not mirrored");
        }
        int index = cfg.extraLegs().indexOf(uri) + 1;
        if (index == 0) {
            throw new IllegalArgumentException("mirror leg " + uri + " is not a leg of the volume (its legs: "
                    + String.join(", ", cfg.extraLegs()) + ")");
        }
        boolean degraded = Files.exists(DegradedLegs.mapFile(dir, index));
        for (int i = 1; i < cfg.legs(); i++) {
            if (i != index && Files.exists(DegradedLegs.mapFile(dir, i))) {
                throw new IOException("mirror leg " + i + " (" + cfg.extraLegs().get(i - 1) + ") is degraded:"
                        + " resync it ('snapbd mirror reconcile') or remove it first");
            }
        }
        if (!degraded) {
            requireInSync(dir, owner, cfg);
        }
        List<String> extra = new ArrayList<>(cfg.extraLegs());
        extra.remove(index - 1);
        if (extra.isEmpty()) {
            Files.deleteIfExists(dir.resolve(MirrorConfig.FILE));
            AtomicFile.fsyncDirectory(dir);
            Files.deleteIfExists(dir.resolve(MirrorConfig.LOCAL_TABLE));
            Files.deleteIfExists(dir.resolve(TagSource.FILE));
        } else {
            // renumber the legs after it: their tables are empty (checked), made anew with the new number
            for (int i = index + 1; i < cfg.legs(); i++) {
                try (MirrorLeg l = LegOpener.installed().open(cfg.extraLegs().get(i - 1), size)) {
                    if (!TagTable.read(l.table()).live().isEmpty()) {
                        throw new IOException("mirror leg " + i + " (" + l.uri() + ") holds live entries: reconcile first");
                    }
                    long half = TagTable.read(l.table()).halfRecords();
                    // zero the whole area first: records of older generations would read as a newer table's
                    ByteBuffer zeros = ByteBuffer.allocate(1 << 20);
                    long area = TagTable.areaBytes(half);
                    for (long pos = 0; pos < area; pos += zeros.capacity()) {
                        zeros.clear().limit((int) Math.min(zeros.capacity(), area - pos));
                        l.table().write(zeros, pos);
                    }
                    TagTable.create(l.table(), owner, i - 1, half).close();
                }
            }
            new MirrorConfig(owner, cfg.halfRecords(), extra).write(dir);
        }
        Files.deleteIfExists(DegradedLegs.mapFile(dir, index));
        AtomicFile.fsyncDirectory(dir);
    }

    /** No degraded leg, no live entry on leg 0: the volume was closed cleanly with every leg in sync. */
    private static void requireInSync(Path dir, UUID owner, MirrorConfig cfg) throws IOException {
        for (int i = 1; i < cfg.legs(); i++) {
            if (Files.exists(DegradedLegs.mapFile(dir, i))) {
                throw new IOException("mirror leg " + i + " (" + cfg.extraLegs().get(i - 1) + ") is degraded: resync it"
                        + " ('snapbd mirror reconcile') or remove it first");
            }
        }
        try (FileTagStore s = FileTagStore.open(dir.resolve(MirrorConfig.LOCAL_TABLE), false)) {
            if (!TagTable.read(s).live().isEmpty()) {
                throw new IOException(dir.resolve(MirrorConfig.LOCAL_TABLE) + " holds live entries: the legs need"
                        + " reconciling first ('snapbd mirror reconcile')");
            }
        }
    }
}

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
        dropOrphanMaps(dir, cfg);
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
        MirrorConfig next = cfg == null ? new MirrorConfig(owner, half, List.of(uri)) : cfg.with(uri);
        LegOpener opener = LegOpener.installed();
        LegInUse.check(opener, uri, size, owner, force);
        boolean done = false;
        try (MirrorLeg l = opener.create(uri, size, TagTable.areaBytes(half), sparse, space);
             FileLegIo src = new FileLegIo(dataFile)) {
            TagTable.create(l.table(), owner, next.id(index), half);
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
            next.write(dir);
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
     * Takes leg {@code uri} out of {@code mirror.legs} (and deletes its region map if it was degraded). The one
     * change is the atomic replace of {@code mirror.legs}: the other legs keep their ids (the numbers their tables
     * and region maps record), so nothing on them is rewritten and a crash leaves the old leg list or the new one
     * ({@code MirrorLegsCrashTest}). The leg's own files are left as they are: a copy of the volume as of its last
     * change. The last extra leg makes the volume unmirrored: {@code mirror.legs} is deleted (the directory forced),
     * then {@code leg0.tags}, {@code mirror.tags}. Refused when another leg is degraded, or (unless it is the one
     * degraded) when leg 0's table holds live entries.
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
        boolean degraded = Files.exists(DegradedLegs.mapFile(dir, cfg.id(index)));
        for (int i = 1; i < cfg.legs(); i++) {
            if (i != index && Files.exists(DegradedLegs.mapFile(dir, cfg.id(i)))) {
                throw new IOException("mirror leg " + i + " (" + cfg.extraLegs().get(i - 1) + ") is degraded:"
                        + " resync it ('snapbd mirror reconcile') or remove it first");
            }
        }
        if (!degraded) {
            requireInSync(dir, owner, cfg);
        }
        MirrorConfig next = cfg.without(index);
        if (next == null) {
            Files.deleteIfExists(dir.resolve(MirrorConfig.FILE));
            AtomicFile.fsyncDirectory(dir);
            Files.deleteIfExists(dir.resolve(MirrorConfig.LOCAL_TABLE));
            Files.deleteIfExists(dir.resolve(TagSource.FILE));
        } else {
            next.write(dir);
        }
        dropOrphanMaps(dir, next);
    }

    /**
     * Deletes the region maps ({@code legN.rmap}) of legs {@code cfg} does not list (all of them when null): what a
     * crash right after a removal's leg list change leaves of a removed degraded leg. Ids are never reused within a
     * leg list, and a volume made mirrored again starts from here, so no map is ever taken for another leg's.
     */
    static void dropOrphanMaps(Path dir, MirrorConfig cfg) throws IOException {
        boolean dropped = false;
        for (Path f : orphanMaps(dir, cfg)) {
            dropped |= Files.deleteIfExists(f);
        }
        if (dropped) {
            AtomicFile.fsyncDirectory(dir);
        }
    }

    /** The {@code legN.rmap} files in {@code dir} whose id {@code cfg} does not list (every one when null). */
    static List<Path> orphanMaps(Path dir, MirrorConfig cfg) throws IOException {
        List<Path> out = new ArrayList<>();
        try (java.util.stream.Stream<Path> s = Files.list(dir)) {
            for (Path f : (Iterable<Path>) s::iterator) {
                String n = f.getFileName().toString();
                if (n.matches("leg[0-9]{1,9}\\.rmap") && (cfg == null
                        || !cfg.ids().contains(Integer.parseInt(n.substring(3, n.length() - 5))))) {
                    out.add(f);
                }
            }
        }
        return out;
    }

    /** No degraded leg, no live entry on leg 0: the volume was closed cleanly with every leg in sync. */
    private static void requireInSync(Path dir, UUID owner, MirrorConfig cfg) throws IOException {
        for (int i = 1; i < cfg.legs(); i++) {
            if (Files.exists(DegradedLegs.mapFile(dir, cfg.id(i)))) {
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

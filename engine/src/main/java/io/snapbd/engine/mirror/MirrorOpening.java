package io.snapbd.engine.mirror;

import io.snapbd.engine.io.FileSpace;
import io.snapbd.engine.mirror.MirrorSet.Reconciliation;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.UUID;

/**
 * Making, opening and deleting the leg set of a mirrored volume ({@link MirrorSet#create}, {@link MirrorSet#open},
 * {@link MirrorSet#deleteLegs}): {@code mirror.legs}, every leg's tag table, the region maps of degraded legs, and
 * the reconciliation an unclean stop or a degraded leg needs before the volume is handed out (behaviour 26).
 */
final class MirrorOpening {

    private static final System.Logger LOG = System.getLogger(MirrorSet.class.getName());

    private MirrorOpening() {
    }

    /**
     * Makes the legs of a new volume in {@code dir} (whose {@code data.img} of {@code size} bytes exists): leg 0's
     * table, each extra leg through {@link LegOpener#installed()}, then {@code mirror.legs}. On failure whatever
     * was made is removed again. A leg that holds another volume's tag table is refused unless {@code force}
     * ({@link LegInUse}), before anything is made.
     */
    static void create(Path dir, UUID owner, long size, List<String> uris, boolean sparse, FileSpace space,
                       boolean force) throws IOException {
        MirrorConfig cfg = new MirrorConfig(owner, TagTable.DEFAULT_HALF_RECORDS, uris);
        for (int i = 0; i < uris.size(); i++) {
            for (int j = 0; j < i; j++) {
                if (uris.get(i).equals(uris.get(j))) {
                    throw new IllegalArgumentException("mirror leg " + uris.get(i) + " is named twice");
                }
            }
        }
        LegOpener opener = LegOpener.installed();
        for (String u : uris) {
            LegInUse.check(opener, u, size, owner, force);
        }
        long tableBytes = TagTable.areaBytes(cfg.halfRecords());
        List<String> made = new ArrayList<>();
        boolean done = false;
        try {
            try (FileTagStore s = FileTagStore.create(dir.resolve(MirrorConfig.LOCAL_TABLE), tableBytes)) {
                TagTable.create(s, owner, 0, cfg.halfRecords());
            }
            for (int i = 0; i < uris.size(); i++) {
                try (MirrorLeg l = opener.create(uris.get(i), size, tableBytes, sparse, space)) {
                    made.add(uris.get(i));
                    TagTable.create(l.table(), owner, cfg.id(i + 1), cfg.halfRecords());
                }
            }
            cfg.write(dir);
            done = true;
        } finally {
            if (!done) {
                for (String u : made) {
                    try {
                        opener.delete(u);
                    } catch (IOException ignored) {
                        // best effort: the create failed anyway
                    }
                }
            }
        }
    }

    /** Removes the extra legs a volume's {@code mirror.legs} names (volume delete); a missing list is no mirror. */
    static void deleteLegs(Path dir) throws IOException {
        MirrorConfig cfg;
        try {
            cfg = MirrorConfig.read(dir, null);
        } catch (IOException e) {
            return;         // a damaged list names nothing we can trust to delete
        }
        if (cfg != null) {
            for (String u : cfg.extraLegs()) {
                LegOpener.installed().delete(u);
            }
        }
    }

    /**
     * Opens the mirror of the volume in {@code dir}, or returns null when it is not mirrored. Checks every table
     * (owner, leg number, damage) and, after an unclean stop (the tag counter was not closed cleanly, or a table
     * holds live entries), reconciles the legs before returning (behaviours 25–26): the caller hands the volume
     * to no client before this returns. Runs before the volume's crash recovery reads {@code dataFile}.
     */
    static MirrorSet open(Path dir, UUID owner, long size, Path dataFile) throws IOException {
        MirrorConfig cfg = MirrorConfig.read(dir, owner);
        if (cfg == null) {
            return null;
        }
        List<AutoCloseable> opened = new ArrayList<>();
        try {
            Leg[] legs = new Leg[cfg.legs()];
            String[] unreachable = new String[legs.length];
            MirrorLeg local = MirrorLeg.of("local:" + dataFile, new FileLegIo(dataFile),
                    FileTagStore.open(dir.resolve(MirrorConfig.LOCAL_TABLE), true));
            opened.add(local);
            legs[0] = new Leg(0, 0, local.uri(), local, TagTable.open(local.table(), owner, 0));
            for (int i = 1; i < legs.length; i++) {
                String uri = cfg.extraLegs().get(i - 1);
                int id = cfg.id(i);
                Path mapFile = DegradedLegs.mapFile(dir, id);
                LegRegionMap map = null;
                if (Files.exists(mapFile)) {
                    FileTagStore ms = FileTagStore.open(mapFile, true);
                    opened.add(ms);
                    map = LegRegionMap.open(ms, owner, id);
                }
                MirrorLeg l = null;
                TagTable t = null;
                try {
                    l = LegOpener.installed().open(uri, size);
                    opened.add(l);
                } catch (IOException e) {
                    // unreachable (its server down, its disk gone): the volume opens with the leg degraded
                    unreachable[i] = "mirror leg " + i + " (" + uri + ") cannot be opened: " + e.getMessage();
                }
                if (l != null) {
                    if (l.data().size() < size) {
                        throw new IOException("mirror leg " + i + " (" + uri + ") holds " + l.data().size()
                                + " bytes, less than the volume's " + size);
                    }
                    t = TagTable.open(l.table(), owner, id);
                }
                legs[i] = new Leg(i, id, uri, l, t);
                opened.add(legs[i].forcer);
                if (map != null) {
                    legs[i].map = map;
                    legs[i].stale = true;
                }
                legs[i].failure = unreachable[i];
            }
            TagSource tags = TagSource.open(dir, owner);
            MirrorSet m = new MirrorSet(new MirrorLegs(dir, owner, size, legs), tags);
            opened.add(m.writes.forcer);
            MirrorLegs set = m.legs;
            boolean live = false;
            for (Leg l : legs) {
                if (l.stale) {
                    set.staleLegs.incrementAndGet();
                }
                live |= l.table != null && !l.table.live().isEmpty();
            }
            for (Leg l : legs) {
                if (l.failure != null && !l.stale) {
                    IOException x = set.degrade(l, l.failure);
                    if (x != null) {
                        throw x;
                    }
                }
            }
            if (tags.recoveredFromCrash() || live || set.staleLegs.get() > 0) {
                Reconciliation r;
                try {
                    r = m.reconciler.runReconcile(true, Reconciler.Progress.NONE);
                } catch (IOException | RuntimeException e) {
                    if (set.staleLegs.get() == 0) {
                        throw e;
                    }
                    // a degraded leg failed during its resync (its records are intact): open without it
                    LOG.log(System.Logger.Level.WARNING, "snapbd: volume " + dir.getFileName() + ": resync of a"
                            + " degraded mirror leg failed (" + e.getMessage() + "); the volume opens with it degraded");
                    r = m.reconciler.runReconcile(true, Reconciler.Progress.NONE);
                }
                LOG.log(System.Logger.Level.INFO, "snapbd: volume " + dir.getFileName() + ": mirror legs reconciled "
                        + (tags.recoveredFromCrash() || live ? "after an unclean stop" : "at open") + ": " + r.report() + (set.staleLegs.get() > 0 ? "; degraded legs: " + set.degraded.names() : ""));
            }
            return m;
        } catch (IOException | RuntimeException e) {
            for (int i = opened.size() - 1; i >= 0; i--) {
                try {
                    opened.get(i).close();
                } catch (Exception s) {
                    e.addSuppressed(s);
                }
            }
            throw e;
        }
    }
}

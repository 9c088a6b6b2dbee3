package io.snapbd.engine.mirror;

import io.snapbd.engine.format.AtomicFile;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.UUID;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;

/**
 * The degraded legs of one {@link MirrorSet} (docs/mirrors.md, "Degraded mode"): leaving a leg behind (its region
 * map {@code legN.rmap} made durably: the mark that it is stale), folding completed entries into the region maps
 * when the tables would overflow, and dropping a leg's map once it is resynced.
 */
final class DegradedLegs {

    private static final System.Logger LOG = System.getLogger(MirrorSet.class.getName());
    /** Smallest region of a degraded leg's region map: 64 KiB (larger for volumes above 2 TiB). */
    static final int MIN_REGION_SHIFT = 16;
    /** Suffix of a region map being made ({@code legN.rmap.tmp}); one left by a crash is ignored and replaced. */
    static final String TMP_SUFFIX = ".tmp";

    /** Legs degraded now. */
    final AtomicInteger stale = new AtomicInteger();
    private final Path dir;
    private final UUID owner;
    private final long size;
    private final MirrorLegs set;
    private final Object degradeLock = new Object();
    private final Object foldLock = new Object();
    private final AtomicLong folds = new AtomicLong();

    DegradedLegs(Path dir, UUID owner, long size, MirrorLegs set) {
        this.dir = dir;
        this.owner = owner;
        this.size = size;
        this.set = set;
    }

    /**
     * The region map of the leg with id {@code leg} ({@link MirrorConfig#id}) in the volume's directory {@code dir};
     * it exists while the leg is degraded.
     */
    static Path mapFile(Path dir, int leg) {
        return dir.resolve("leg" + leg + ".rmap");
    }

    /** Region size of a degraded leg's map: 64 KiB, or larger when the volume needs more than the map's pages. */
    static int regionShift(long size) {
        int shift = MIN_REGION_SHIFT;
        while (LegRegionMap.areaBytes(size, shift) > 4096L + 4096L * LegRegionMap.MAX_PAGES) {
            shift++;
        }
        return shift;
    }

    /** A degraded leg's copies are durable and every table retired: its region map goes, it is current again. */
    void resynced(Leg l) throws IOException {
        LegRegionMap m = l.map;
        l.stale = false;
        l.map = null;
        stale.decrementAndGet();
        m.close();
        Files.deleteIfExists(mapFile(dir, l.id));
        AtomicFile.fsyncDirectory(dir);
        LOG.log(System.Logger.Level.INFO, "snapbd: volume " + dir.getFileName() + ": mirror leg " + l.index + " ("
                + l.uri + ") resynced; it is in sync again");
    }

    /**
     * Leaves extra leg {@code l} behind (docs/mirrors.md, "Degraded mode"): makes its region map, durably (file,
     * then directory forced), which marks it stale across restarts; from then on changes skip it. Returns null,
     * or, when the map cannot be made, the error that fails the change.
     */
    IOException leaveBehind(Leg l, String why) {
        synchronized (degradeLock) {
            if (l.stale) {
                return null;
            }
            try {
                Path f = mapFile(dir, l.id);
                int shift = regionShift(size);
                // Made under a temporary name and renamed once forced: a power loss while it is being made must not
                // leave legN.rmap with a zero header (the name can reach the disk before the content), which the
                // next open would refuse as damage.
                Path tmp = f.resolveSibling(f.getFileName() + TMP_SUFFIX);
                try (FileTagStore st = FileTagStore.create(tmp, LegRegionMap.areaBytes(size, shift))) {
                    LegRegionMap.create(st, owner, l.id, size, shift);
                }
                Files.move(tmp, f, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
                AtomicFile.fsyncDirectory(dir);
                FileTagStore st = FileTagStore.open(f, true);
                LegRegionMap m;
                try {
                    m = LegRegionMap.open(st, owner, l.id);
                } catch (IOException | RuntimeException e) {
                    st.close();
                    throw e;
                }
                l.failure = why;
                l.map = m;
                l.stale = true;
                stale.incrementAndGet();
                LOG.log(System.Logger.Level.WARNING, "snapbd: volume " + dir.getFileName() + ": " + why
                        + "; the leg is degraded: the volume goes on with the other legs, its missed writes are"
                        + " recorded; 'snapbd mirror reconcile' resyncs it once it is back");
                return null;
            } catch (IOException | RuntimeException e) {
                return new IOException(why + "; the leg cannot be left behind either (its region map: "
                        + e.getMessage() + "): the volume refuses changes until 'snapbd mirror reconcile' succeeds", e);
            }
        }
    }

    /** Names of the degraded legs, for log lines. */
    String names() {
        Leg[] legs = set.legs;
        StringBuilder b = new StringBuilder();
        for (Leg l : legs) {
            if (l.stale) {
                b.append(b.length() == 0 ? "" : ", ").append(l.index).append(" (").append(l.uri).append(')');
            }
        }
        return b.toString();
    }

    /**
     * The overflow fallback: the entries DONE on every current leg (complete there, live only because a degraded
     * leg missed them) are recorded in every degraded leg's region map (forced), then retired on the current legs.
     * Runs when leg 0's table holds more than half a half of live entries, or is full.
     */
    void fold(boolean force) throws IOException {
        Leg[] legs = set.legs;
        if (!force && legs[0].depth.get() <= legs[0].table.halfRecords() / 2) {
            return;
        }
        synchronized (foldLock) {
            TagTable t0 = legs[0].table;
            if (!force && legs[0].depth.get() <= t0.halfRecords() / 2) {
                return;
            }
            Map<Long, TagTable.Entry> done = new HashMap<>();
            for (TagTable.Entry e : t0.live()) {
                if (e.done()) {
                    done.put(e.tag(), e);
                }
            }
            for (Leg l : legs) {
                if (l.index == 0 || l.stale) {
                    continue;
                }
                Map<Long, TagTable.Entry> here = new HashMap<>();
                for (TagTable.Entry e : l.table.live()) {
                    here.put(e.tag(), e);
                }
                done.values().removeIf(e -> {
                    TagTable.Entry h = here.get(e.tag());
                    return h == null || !h.done() || h.offset() != e.offset() || h.length() != e.length();
                });
            }
            if (done.isEmpty()) {
                return;
            }
            List<long[]> ranges = new ArrayList<>();
            for (TagTable.Entry e : done.values()) {
                ranges.add(new long[]{e.offset(), e.length()});
            }
            for (Leg l : legs) {
                LegRegionMap m = l.map;
                if (l.stale && m != null) {
                    m.markMissed(ranges);
                }
            }
            for (Leg l : legs) {
                if (!l.stale) {
                    l.table.retireAll(done.keySet());
                    l.depth.addAndGet(-done.size());
                }
            }
            folds.incrementAndGet();
        }
    }

    long folds() {
        return folds.get();
    }
}

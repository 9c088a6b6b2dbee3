package io.snapbd.engine.mirror;

import io.snapbd.engine.BlockDevice;
import io.snapbd.engine.format.AtomicFile;
import io.snapbd.engine.io.FileSpace;

import java.io.IOException;
import java.nio.file.Files;
import java.util.ArrayList;
import java.util.List;

/**
 * {@code mirror add} and {@code mirror remove} while the volume is open and served (docs/mirrors.md, "Adding and
 * removing legs"), one at a time per volume.
 *
 * <p>Add: the leg is made (as {@code volume create --mirror} does, refusing another volume's leg unless forced)
 * with an empty table under the next leg id; it joins the write path first (the gate paused for the swap): every
 * change from then on is tagged and written to it too, while it is {@code resyncing}, never read nor a copy source
 * and left out of reconciliation. Then a copier copies the volume's blocks into it, one range at a time under the
 * range lock (so a concurrent change of the range lands wholly before or after the copy), forces the leg, and only
 * then lists it in {@code mirror.legs}: a crash before that leaves the volume as it was and an unlisted leg. A
 * failure of the leg during the add drops it again (the add fails naming it).
 *
 * <p>Remove: with the gate paused (no change in flight), {@code mirror.legs} is replaced without the leg (atomic)
 * and the leg leaves the write path; then its handles are closed and its region map deleted. A crash leaves the old
 * list (the leg had every change) or the new one.
 */
final class OnlineLegChanges {

    private final MirrorLegs set;
    private final MirrorWritePath writes;
    private final Object change = new Object();
    private volatile long copyDone;
    private volatile long copyTotal;
    private volatile boolean adding;

    OnlineLegChanges(MirrorLegs set, MirrorWritePath writes) {
        this.set = set;
        this.writes = writes;
    }

    boolean adding() {
        return adding;
    }

    long[] progress() {
        return new long[]{copyDone, copyTotal};
    }

    /** See the class comment; {@code local} and a session of it read leg 0. Returns the new leg's place. */
    int add(String uri, boolean sparse, boolean force, FileSpace space, BlockDevice local,
            Reconciler.Progress progress) throws IOException {
        synchronized (change) {
            MirrorConfig cfg = MirrorConfig.read(set.dir, set.owner);
            if (cfg == null) {
                throw new IllegalArgumentException("the volume is not mirrored");
            }
            if (cfg.extraLegs().contains(uri)) {
                throw new IllegalArgumentException("mirror leg " + uri + " is a leg of the volume already");
            }
            if (cfg.extraLegs().size() >= MirrorConfig.MAX_EXTRA_LEGS) {
                throw new IllegalArgumentException("a volume has at most " + MirrorConfig.MAX_EXTRA_LEGS + " extra legs");
            }
            if (set.staleLegs.get() > 0) {
                throw new IOException("a mirror leg is degraded (" + set.degraded.names() + "): resync it ('snapbd"
                        + " mirror reconcile') or remove it first");
            }
            MirrorConfig next = cfg.with(uri);
            int index = set.legs.length;
            LegOpener opener = LegOpener.installed();
            LegInUse.check(opener, uri, set.size, set.owner, force);
            MirrorLeg made = opener.create(uri, set.size, TagTable.areaBytes(cfg.halfRecords()), sparse, space);
            Leg leg = null;
            boolean joined = false;
            boolean done = false;
            try {
                TagTable table = TagTable.create(made.table(), set.owner, next.id(index), cfg.halfRecords());
                leg = new Leg(index, next.id(index), uri, made, table);
                leg.joining = true;
                swap(leg, -1);
                joined = true;
                copyDone = 0;
                copyTotal = set.size;
                adding = true;
                progress.copied(0, set.size);
                MirrorOp op = writes.newOp();
                try (BlockDevice.Session s = local.openSession()) {
                    for (long pos = 0; pos < set.size; ) {
                        int n = (int) Math.min(MirrorSet.COPY_BUFFER, set.size - pos);
                        writes.copyRange(op, leg, s, local, pos, n);
                        if (leg.stale) {
                            throw new IOException(leg.failure);
                        }
                        pos += n;
                        copyDone = pos;
                        progress.copied(pos, set.size);
                    }
                } catch (IOException e) {
                    throw e;
                } catch (Exception e) {
                    throw new IOException(e);
                } finally {
                    op.close();
                }
                made.data().force();
                if (leg.stale) {
                    throw new IOException(leg.failure);
                }
                if (!MirrorConfig.read(set.dir, set.owner).equals(cfg)) {
                    throw new IOException(set.dir.resolve(MirrorConfig.FILE) + " changed during the add");
                }
                next.write(set.dir);
                leg.joining = false;
                done = true;
                return index;
            } catch (IOException | RuntimeException e) {
                throw new IOException("mirror add " + uri + " failed, the leg is dropped: " + e.getMessage(), e);
            } finally {
                adding = false;
                if (!done) {
                    if (joined) {
                        swap(null, index);
                    }
                    if (leg != null) {
                        leg.forcer.close();
                    }
                    try {
                        made.close();
                        opener.delete(uri);
                    } catch (IOException ignored) {
                        // best effort: the add failed anyway
                    }
                }
            }
        }
    }

    /** See the class comment. Refused for an unknown leg and for the last extra leg (that needs the volume stopped). */
    void remove(String uri) throws IOException {
        synchronized (change) {
            MirrorConfig cfg = MirrorConfig.read(set.dir, set.owner);
            if (cfg == null) {
                throw new IllegalArgumentException("the volume is not mirrored");
            }
            int index = cfg.extraLegs().indexOf(uri) + 1;
            if (index == 0) {
                throw new IllegalArgumentException("mirror leg " + uri + " is not a leg of the volume (its legs: "
                        + String.join(", ", cfg.extraLegs()) + ")");
            }
            if (cfg.extraLegs().size() == 1) {
                throw new IllegalArgumentException("mirror leg " + uri + " is the volume's last extra leg: removing it"
                        + " makes the volume unmirrored, which needs the server stopped ('snapbd mirror remove' then)");
            }
            Leg leg = set.legs[index];
            if (!leg.uri.equals(uri) || leg.id != cfg.id(index)) {
                throw new IOException("mirror leg " + uri + ": the open volume's legs disagree with " + MirrorConfig.FILE);
            }
            MirrorConfig next = cfg.without(index);
            if (!writes.pause()) {
                throw new IOException("changes in flight on the mirrored volume did not finish in time; nothing removed");
            }
            try {
                writes.forceAll();      // the data forcer drained: no batch spans the change of the leg set
                next.write(set.dir);
                Leg[] now = set.legs;
                List<Leg> keep = new ArrayList<>();
                for (Leg l : now) {
                    if (l != leg) {
                        keep.add(l);
                    }
                }
                renumber(keep);
                if (leg.stale) {
                    set.staleLegs.decrementAndGet();
                }
            } finally {
                writes.resume();
            }
            leg.forcer.close();
            LegRegionMap m = leg.map;
            try {
                if (leg.leg != null) {
                    leg.leg.close();
                }
            } finally {
                if (m != null) {
                    m.close();
                }
                if (Files.deleteIfExists(DegradedLegs.mapFile(set.dir, leg.id))) {
                    AtomicFile.fsyncDirectory(set.dir);
                }
            }
        }
    }

    /** Appends {@code add} to the legs, or takes the leg at {@code drop} out, with the gate paused. */
    private void swap(Leg add, int drop) throws IOException {
        if (!writes.pause()) {
            throw new IOException("changes in flight on the mirrored volume did not finish in time; no leg changed");
        }
        try {
            writes.forceAll();          // the data forcer drained: no batch spans the change of the leg set
            List<Leg> keep = new ArrayList<>(List.of(set.legs));
            if (add != null) {
                keep.add(add);
            } else {
                keep.remove(drop);
            }
            renumber(keep);
        } finally {
            writes.resume();
        }
    }

    private void renumber(List<Leg> keep) {
        for (int i = 0; i < keep.size(); i++) {
            keep.get(i).index = i;
        }
        set.legs = keep.toArray(new Leg[0]);
    }
}

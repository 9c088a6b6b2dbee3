package io.snapbd.engine.mirror;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.UUID;

/**
 * fsck of a mirrored volume's files, read-only: {@code mirror.legs}, {@code mirror.tags}, and for every leg its
 * tag table ({@link TagTableChecker}: header copies, chain, torn tail versus damage, owner and leg number) and,
 * for file legs, that the leg file holds the volume's size; a degraded leg's region map ({@code legN.rmap}: header,
 * owner, leg, page checksums). Problems name the file.
 */
public final class MirrorChecker {

    private MirrorChecker() {
    }

    public static void check(Path dir, UUID owner, long size, boolean clean, List<String> problems, List<String> notes) {
        MirrorConfig cfg;
        try {
            cfg = MirrorConfig.read(dir, owner);
        } catch (IOException e) {
            problems.add(e.getMessage());
            return;
        }
        if (cfg == null) {
            return;
        }
        try {
            TagSource.Stored t = TagSource.read(dir.resolve(TagSource.FILE), owner);
            if (t == null) {
                notes.add(TagSource.FILE + " absent (never opened)");
            } else if (clean && !t.clean()) {
                notes.add(TagSource.FILE + ": not closed cleanly; the next open reconciles the legs");
            }
        } catch (IOException e) {
            problems.add(e.getMessage());
        }
        table(dir.resolve(MirrorConfig.LOCAL_TABLE), owner, 0, problems, notes);
        for (int i = 1; i < cfg.legs(); i++) {
            String uri = cfg.extraLegs().get(i - 1);
            int id = cfg.id(i);
            Path map = DegradedLegs.mapFile(dir, id);
            if (Files.exists(map)) {
                try (FileTagStore s = FileTagStore.open(map, false)) {
                    LegRegionMap m = LegRegionMap.open(s, owner, id);
                    notes.add("mirror leg " + i + " (" + uri + ") is degraded: " + m.missedBytes() + " bytes recorded in "
                            + map.getFileName() + " (and the live entries) are resynced when it is back");
                    for (String n : m.notes()) {
                        notes.add(map.getFileName() + ": " + n);
                    }
                } catch (IOException | RuntimeException e) {
                    problems.add(map + ": " + e.getMessage());
                }
            }
            Path p;
            try {
                p = FileLegOpener.path(uri);
            } catch (IOException e) {
                other(uri, i, id, owner, size, problems, notes);
                continue;
            }
            try {
                if (!Files.isRegularFile(p)) {
                    problems.add(p + ": mirror leg " + i + " is missing");
                } else if (Files.size(p) < size) {
                    problems.add(p + ": mirror leg " + i + " holds " + Files.size(p) + " bytes, less than the volume's " + size);
                }
            } catch (IOException e) {
                problems.add(p + ": " + e.getMessage());
            }
            table(FileLegOpener.tableFile(p), owner, id, problems, notes);
        }
        try {
            for (Path f : LegChanges.orphanMaps(dir, cfg)) {
                notes.add(f.getFileName() + ": region map of a leg " + MirrorConfig.FILE + " no longer lists (a mirror"
                        + " remove cut short); ignored, and deleted by the next mirror add or remove");
            }
        } catch (IOException e) {
            problems.add(dir + ": " + e.getMessage());
        }
    }

    /**
     * A leg that is not a file (an NBD export): opened through the installed {@link LegOpener}, its size and its
     * tag table checked by reading only. A leg that cannot be opened is a problem: the volume could not open.
     */
    private static void other(String uri, int leg, int id, UUID owner, long size, List<String> problems, List<String> notes) {
        try (MirrorLeg l = LegOpener.installed().open(uri, size)) {
            if (l.data().size() < size) {
                problems.add(uri + ": mirror leg " + leg + " holds " + l.data().size() + " bytes, less than the volume's " + size);
            }
            TagStore t = l.table();
            TagTableChecker.Report r = TagTableChecker.check(t, Path.of(t.describe()));
            for (String p : r.problems()) {
                problems.add("mirror leg " + leg + " (" + uri + "): " + p);
            }
            for (String n : r.notes()) {
                notes.add("mirror leg " + leg + " (" + uri + "): " + n);
            }
            if (r.ok()) {
                owner(TagTable.read(t), t.describe(), owner, id, problems);
            }
        } catch (IOException | RuntimeException e) {
            problems.add("mirror leg " + leg + " (" + uri + ") cannot be checked: " + e.getMessage());
        }
    }

    private static void owner(TagTable.Loaded l, String name, UUID owner, int leg, List<String> problems) {
        if (!l.owner().equals(owner)) {
            problems.add(name + ": tag table belongs to volume " + l.owner() + ", not " + owner);
        }
        if (l.leg() != leg) {
            problems.add(name + ": tag table belongs to leg " + l.leg() + ", not leg " + leg);
        }
    }

    private static void table(Path file, UUID owner, int leg, List<String> problems, List<String> notes) {
        TagTableChecker.Report r = TagTableChecker.check(file);
        problems.addAll(r.problems());
        for (String n : r.notes()) {
            notes.add(file.getFileName() + ": " + n);
        }
        if (r.ok()) {
            try (FileTagStore s = FileTagStore.open(file, false)) {
                TagTable.Loaded l = TagTable.read(s);
                if (!l.owner().equals(owner)) {
                    problems.add(file + ": tag table belongs to volume " + l.owner() + ", not " + owner);
                }
                if (l.leg() != leg) {
                    problems.add(file + ": tag table belongs to leg " + l.leg() + ", not leg " + leg);
                }
            } catch (IOException e) {
                problems.add(file + ": " + e.getMessage());
            }
        }
    }
}

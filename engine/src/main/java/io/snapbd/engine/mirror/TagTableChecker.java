package io.snapbd.engine.mirror;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * Read-only verifier of one leg's tag table file, for fsck: header copies, generation, record checksums, the
 * chain and commit point (torn tail versus damage), and the live entries. Never writes.
 */
public final class TagTableChecker {

    public record Report(Path file, List<String> problems, List<String> notes, long liveEntries) {
        public boolean ok() {
            return problems.isEmpty();
        }
    }

    private TagTableChecker() {
    }

    public static Report check(Path file) {
        List<String> problems = new ArrayList<>();
        List<String> notes = new ArrayList<>();
        if (!Files.isRegularFile(file)) {
            problems.add(file + ": missing or not a regular file");
            return new Report(file, problems, notes, 0);
        }
        try (FileTagStore s = FileTagStore.open(file, false)) {
            return check(s, file);
        } catch (IOException e) {
            problems.add(e.getMessage());
            return new Report(file, problems, notes, 0);
        }
    }

    /** The same for a table in any store (an NBD leg's area); {@code file} names it in the messages. Never writes. */
    public static Report check(TagStore s, Path file) {
        List<String> problems = new ArrayList<>();
        List<String> notes = new ArrayList<>();
        try {
            TagTable.Loaded l = TagTable.read(s);
            for (String p : l.problems()) {
                problems.add(file + ": " + p);
            }
            notes.add("leg " + l.leg() + " of volume " + l.owner() + ", generation " + l.generation() + ", half "
                    + l.activeHalf() + ", " + l.usedRecords() + " of " + l.halfRecords() + " records used");
            notes.addAll(l.notes());
            long notDone = l.live().stream().filter(e -> !e.done()).count();
            if (!l.live().isEmpty()) {
                notes.add(l.live().size() + " live entr" + (l.live().size() == 1 ? "y" : "ies") + " (" + notDone
                        + " not DONE): the next open reconciles them");
            }
            return new Report(file, problems, notes, l.live().size());
        } catch (IOException e) {
            problems.add(e.getMessage());
            return new Report(file, problems, notes, 0);
        }
    }
}

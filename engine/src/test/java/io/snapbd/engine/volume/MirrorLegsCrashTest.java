package io.snapbd.engine.volume;

import io.snapbd.engine.BlockDevice;
import io.snapbd.engine.TestVolumes;
import io.snapbd.engine.crash.CrashStates;
import io.snapbd.engine.crash.RecordingFileSpace;
import io.snapbd.engine.crash.RecordingFileSpace.CrashPoint;
import io.snapbd.engine.io.FileSpace;
import io.snapbd.engine.mirror.LegChanges;
import io.snapbd.engine.mirror.MirrorChecker;
import io.snapbd.engine.mirror.MirrorConfig;
import io.snapbd.engine.mirror.MirrorSet;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.UUID;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * {@code mirror remove} cut by a power loss at every step (docs/mirrors.md, "Adding and removing legs"): the
 * legs' files lie in the volume's directory, so {@link RecordingFileSpace} records them with it; every state a
 * crash may leave (before each force, and after the removal returned; subsets of the dirty pages, old and new
 * names) must open with the old leg list or the new one, never a mix (every leg's table agreeing with its place in
 * the list), with the volume's data, and pass the mirror part of fsck.
 */
class MirrorLegsCrashTest {

    static final int BS = 4096;
    static final long SIZE = 1L << 20;
    static final int EXHAUSTIVE = 5;
    static final int CAP = 24;

    @TempDir
    Path tmp;

    private final FileSpace space = TestVolumes.java();
    private final byte[] data = TestVolumes.pattern(11, 4 * BS);

    private Path dir() {
        return tmp.resolve("v");
    }

    private String leg(String name) {
        return dir().resolve(name).toString();
    }

    private void create(List<String> legs) throws IOException {
        Volume.create(dir(), "v", SIZE, BS, 1L << 20, false, space, legs);
        try (Volume v = Volume.open(dir(), space)) {
            BlockDevice.Session s = v.openSession();
            TestVolumes.write(v, s, 3 * BS, data);
            s.close();
        }
    }

    private static List<String> legsOf(Path dir) throws IOException {
        MirrorConfig c = MirrorConfig.read(dir, null);
        return c == null ? List.of() : c.extraLegs();
    }

    /** Removes {@code uri} with every crash point recorded, then checks every state they may leave. */
    private void removeAndCheck(String uri) throws IOException {
        List<String> before = legsOf(dir());
        List<String> after = new ArrayList<>(before);
        after.remove(uri);
        UUID owner = MirrorConfig.read(dir(), null).owner();
        List<CrashPoint> points;
        try (RecordingFileSpace rec = new RecordingFileSpace(dir(), () -> null)) {
            rec.start();
            rec.crashPoint("before the removal");
            LegChanges.remove(dir(), owner, SIZE, uri);
            rec.crashPoint("after the removal");
            points = rec.drain();
        }
        assertEquals(after, legsOf(dir()));
        int states = 0;
        List<String> bad = new ArrayList<>();
        Random rnd = new Random(24);
        boolean sawOld = false;
        boolean sawNew = false;
        for (CrashPoint p : points) {
            for (CrashStates.State st : CrashStates.of(p, EXHAUSTIVE, CAP, rnd)) {
                states++;
                String why = verify(st.files(), owner, before, after);
                if (why == null) {
                    continue;
                }
                if (why.equals("old")) {
                    sawOld = true;
                } else if (why.equals("new")) {
                    sawNew = true;
                } else if (bad.size() < 5) {
                    bad.add("crash " + p.where() + ", state " + st.label() + ": " + why);
                }
            }
        }
        System.out.println("MirrorLegsCrashTest: remove " + uri + ": " + points.size() + " crash points, " + states + " states");
        assertTrue(bad.isEmpty(), String.join("\n", bad));
        assertTrue(sawOld && sawNew, "both the old and the new leg list among the states");
    }

    /** Lays {@code files} down as the volume's directory and opens it: "old", "new", or what is wrong. */
    private String verify(Map<String, byte[]> files, UUID owner, List<String> before, List<String> after) throws IOException {
        try (Stream<Path> s = Files.list(dir())) {
            for (Path f : (Iterable<Path>) s::iterator) {
                Files.delete(f);
            }
        }
        for (Map.Entry<String, byte[]> e : files.entrySet()) {
            Files.write(dir().resolve(e.getKey()), e.getValue());
        }
        List<String> legs;
        try {
            legs = legsOf(dir());
        } catch (IOException e) {
            return "mirror.legs unreadable: " + e.getMessage();
        }
        String which = legs.equals(before) ? "old" : legs.equals(after) ? "new" : null;
        if (which == null) {
            return "leg list " + legs + " is neither " + before + " nor " + after;
        }
        try (Volume v = Volume.open(dir(), space)) {
            MirrorSet m = v.mirror();
            int n = m == null ? 1 : m.legCount();
            if (n != legs.size() + 1) {
                return "the volume opened with " + n + " legs, its list names " + legs.size() + " extra";
            }
            if (m != null) {
                for (MirrorSet.LegStatus l : m.status()) {
                    if (!l.state().equals("in-sync")) {
                        return "leg " + l + " is not in sync after the open";
                    }
                }
            }
            BlockDevice.Session s = v.openSession();
            assertArrayEquals(data, TestVolumes.read(v, s, 3 * BS, data.length), "the volume's data");
            s.close();
        } catch (IOException | RuntimeException e) {
            return which + " leg list, but the volume does not open: " + e;
        }
        List<String> problems = new ArrayList<>();
        MirrorChecker.check(dir(), owner, SIZE, true, problems, new ArrayList<>());
        return problems.isEmpty() ? which : "fsck: " + problems;
    }

    @Test
    void removeAMiddleLegIsOldOrNewLegSetAtEveryCrash() throws IOException {
        create(List.of(leg("l1.img"), leg("l2.img"), leg("l3.img")));
        removeAndCheck(leg("l2.img"));
    }

    @Test
    void removeTheFirstOfTwoLegsIsOldOrNewLegSetAtEveryCrash() throws IOException {
        create(List.of(leg("l1.img"), leg("l2.img")));
        removeAndCheck(leg("l1.img"));
    }

    @Test
    void removeADegradedLegIsOldOrNewLegSetAtEveryCrash() throws IOException {
        create(List.of(leg("l1.img"), leg("l2.img")));
        Path away = tmp.resolve("l1.away");
        Files.move(Path.of(leg("l1.img")), away);
        try (Volume v = Volume.open(dir(), space)) {        // leg 1 unreachable: degraded, leg1.rmap made
            assertEquals("degraded", v.mirror().status().get(1).state());
            BlockDevice.Session s = v.openSession();
            TestVolumes.write(v, s, 3 * BS, data);
            s.close();
        }
        Files.move(away, Path.of(leg("l1.img")));
        assertTrue(Files.exists(dir().resolve("leg1.rmap")));
        removeAndCheck(leg("l1.img"));
        assertTrue(!Files.exists(dir().resolve("leg1.rmap")));
    }

    @Test
    void removeTheLastLegIsMirroredOrUnmirroredAtEveryCrash() throws IOException {
        create(List.of(leg("l1.img")));
        removeAndCheck(leg("l1.img"));
    }
}

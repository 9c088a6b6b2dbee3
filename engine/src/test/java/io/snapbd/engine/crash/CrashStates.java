package io.snapbd.engine.crash;

import io.snapbd.engine.crash.RecordingFileSpace.CrashPoint;
import io.snapbd.engine.crash.RecordingFileSpace.Page;

import java.util.ArrayList;
import java.util.BitSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.Set;
import java.util.stream.Collectors;

/**
 * The states a power loss at a {@link CrashPoint} may leave: every subset of its dirty pages when there are at
 * most {@code exhaustive}, else the extremes (none, all, each single page, each prefix and each all-but-one in the
 * order the pages were first seen dirty) and seeded random subsets, {@code cap} in all; each under the durable
 * names and, where they differ, the current ones.
 */
public final class CrashStates {

    /**
     * One state: which names, which dirty pages survived, and which reached the disk only in part ({@code torn}:
     * some of their 512-byte sectors); {@code label} reproduces it.
     */
    public record State(CrashPoint point, boolean newNames, Set<Page> survivors, List<Page> torn, String label) {
        public State(CrashPoint point, boolean newNames, Set<Page> survivors, String label) {
            this(point, newNames, survivors, List.of(), label);
        }

        public Map<String, byte[]> files() {
            return RecordingFileSpace.state(point, newNames, survivors, torn);
        }

        public boolean isTorn() {
            return !torn.isEmpty();
        }
    }

    /** Bytes of a sector: the unit a disk writes atomically; a 4 KiB page is 8 of them. */
    public static final int SECTOR = 512;

    private CrashStates() {
    }

    public static List<State> of(CrashPoint p, int exhaustive, int cap, Random rnd) {
        int n = p.dirty().size();
        Map<BitSet, String> masks = new LinkedHashMap<>();
        if (n <= exhaustive) {
            for (long m = 0; m < 1L << n; m++) {
                masks.put(BitSet.valueOf(new long[]{m}), "subset " + m);
            }
        } else {
            List<Map.Entry<BitSet, String>> extremes = new ArrayList<>();
            extremes.add(Map.entry(new BitSet(), "none"));
            extremes.add(Map.entry(range(0, n), "all"));
            for (int i = 0; i < n; i++) {
                BitSet one = new BitSet();
                one.set(i);
                extremes.add(Map.entry(one, "only " + i));
                extremes.add(Map.entry(range(0, i + 1), "prefix " + (i + 1)));
                BitSet allBut = range(0, n);
                allBut.clear(i);
                extremes.add(Map.entry(allBut, "all but " + i));
            }
            // None and all first, then the other extremes, evenly spread when they do not all fit in half the cap.
            int room = Math.max(2, cap / 2);
            int stride = Math.max(1, (extremes.size() - 2 + room - 3) / Math.max(1, room - 2));
            for (int k = 0; k < extremes.size() && masks.size() < room; k += k < 2 ? 1 : stride) {
                masks.putIfAbsent(extremes.get(k).getKey(), extremes.get(k).getValue());
            }
            for (int tries = 0; masks.size() < cap && tries < 4 * cap; tries++) {
                BitSet r = new BitSet();
                for (int i = 0; i < n; i++) {
                    if (rnd.nextBoolean()) {
                        r.set(i);
                    }
                }
                masks.putIfAbsent(r, "random " + r);
            }
        }
        List<Boolean> names = p.durableNames().equals(p.names()) ? List.of(true) : List.of(false, true);
        List<State> out = new ArrayList<>();
        for (Map.Entry<BitSet, String> m : masks.entrySet()) {
            Set<Page> keep = m.getKey().stream().mapToObj(p.dirty()::get).collect(Collectors.toSet());
            String pages = keep.stream().map(Page::toString).sorted().collect(Collectors.joining(",", "{", "}"));
            for (boolean nn : names) {
                out.add(new State(p, nn, keep, m.getValue() + " of " + n + " dirty pages " + pages
                        + (names.size() > 1 ? (nn ? ", current names" : ", names of the last force") : "")));
            }
        }
        return out;
    }

    /**
     * States in which one dirty page was written only in part: for each dirty page (each content it was seen with),
     * a prefix of 1 … 7 of its 8 sectors (a write cut short in order) and one seeded random subset (sectors written
     * out of order), with the other dirty pages lost or, for the random subset, all kept; the torn sectors hold the
     * page's new content, the rest what the page held before (its last forced content). At most {@code cap}
     * states, spread evenly over the candidates; under the current names.
     */
    public static List<State> torn(CrashPoint p, int cap, Random rnd) {
        List<State> all = new ArrayList<>();
        int sectors = RecordingFileSpace.PAGE / SECTOR;
        for (Page pg : p.dirty()) {
            byte[] before = new byte[pg.content().length];
            byte[] d = p.durable().get(pg.key());
            if (d != null && (long) pg.index() * RecordingFileSpace.PAGE < d.length) {
                System.arraycopy(d, pg.index() * RecordingFileSpace.PAGE, before, 0,
                        Math.min(before.length, d.length - pg.index() * RecordingFileSpace.PAGE));
            }
            List<Integer> masks = new ArrayList<>();
            for (int k = 1; k < sectors; k++) {
                masks.add((1 << k) - 1);
            }
            int random = 1 + rnd.nextInt((1 << sectors) - 2);
            masks.add(random);
            for (int m : masks) {
                byte[] mixed = before.clone();
                for (int sct = 0; sct < sectors; sct++) {
                    int from = sct * SECTOR;
                    if ((m & 1 << sct) != 0 && from < mixed.length) {
                        int to = Math.min(mixed.length, from + SECTOR);
                        System.arraycopy(pg.content(), from, mixed, from, to - from);
                    }
                }
                if (java.util.Arrays.equals(mixed, before) || java.util.Arrays.equals(mixed, pg.content())) {
                    continue;       // the sectors that differ are all in or all out: not a tear
                }
                Page t = new Page(pg.file(), pg.key(), pg.index(), pg.version(), mixed);
                boolean others = m == random;
                Set<Page> keep = others ? p.dirty().stream().filter(x -> !(x.key().equals(pg.key()) && x.index() == pg.index()))
                        .collect(Collectors.toSet()) : Set.of();
                all.add(new State(p, true, keep, List.of(t), "torn " + pg + " sectors " + Integer.toBinaryString(m)
                        + (others ? " with every other dirty page" : " alone") + " of " + p.dirty().size() + " dirty pages"));
            }
        }
        if (all.size() <= cap) {
            return all;
        }
        List<State> out = new ArrayList<>();
        for (int i = 0; i < cap; i++) {
            out.add(all.get((int) ((long) i * all.size() / cap)));
        }
        return out;
    }

    private static BitSet range(int from, int to) {
        BitSet b = new BitSet();
        b.set(from, to);
        return b;
    }
}

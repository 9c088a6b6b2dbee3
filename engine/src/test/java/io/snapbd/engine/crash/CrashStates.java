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

    /** One state: which names, which dirty pages survived; {@code label} reproduces it. */
    public record State(CrashPoint point, boolean newNames, Set<Page> survivors, String label) {
        public Map<String, byte[]> files() {
            return RecordingFileSpace.state(point, newNames, survivors);
        }
    }

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

    private static BitSet range(int from, int to) {
        BitSet b = new BitSet();
        b.set(from, to);
        return b;
    }
}

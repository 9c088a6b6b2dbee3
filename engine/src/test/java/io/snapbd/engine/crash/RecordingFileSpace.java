package io.snapbd.engine.crash;

import io.snapbd.engine.io.FileSpace;
import io.snapbd.engine.io.Forces;
import io.snapbd.engine.io.JavaFileSpace;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.BasicFileAttributes;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.function.Supplier;
import java.util.stream.Stream;

/**
 * A {@link FileSpace} that records what a power loss would keep of one volume directory, in the manner of
 * ALICE/CrashMonkey. The engine writes through shared mappings (invisible to Java) and positional writes, so this
 * records the <em>forces</em> ({@link Forces}) and diffs the rest: what a file held at its last force is durable;
 * a 4 KiB page whose content differs from that is dirty and may or may not have reached the disk. Files are
 * followed by inode (rename, delete), their names and lengths follow an ext4-like journal: ordered, committed by
 * any whole-file or directory force, so a crash leaves the names of the last force or the current ones.
 *
 * <p>{@link #crashPoint} (and every force, just before it is issued) takes a {@link CrashPoint}: the durable
 * image, the current names and the dirty pages, with the test's expectations at that moment.
 */
public final class RecordingFileSpace implements FileSpace, Forces.Listener, AutoCloseable {

    public static final int PAGE = 4096;
    private static final byte[] NONE = new byte[0];

    /** A name in the directory: its inode and length. */
    public record Entry(Object key, long length) {
    }

    /** A page written since its file's last force, with its current content (in the order they were first seen dirty). */
    public record Page(String file, Object key, int index, byte[] content) {
        @Override
        public String toString() {
            return file + "#" + index;
        }
    }

    /** What a crash at this point may leave: the durable image plus any subset of {@code dirty}, under either set of names. */
    public record CrashPoint(String where, Object expect, Map<String, Entry> durableNames, Map<String, Entry> names,
                             Map<Object, byte[]> durable, List<Page> dirty) {
    }

    private final Path dir;
    private final FileSpace delegate = new JavaFileSpace();
    private final Supplier<Object> expectations;
    private final Forces.Listener previous;
    private final List<CrashPoint> points = new ArrayList<>();
    private final Map<Object, byte[]> durable = new HashMap<>();     // inode -> content at its last force (never mutated)
    private Map<String, Entry> durableNames = Map.of();
    private final List<String> ignored = new ArrayList<>();
    private final Map<List<Object>, Long> firstSeen = new HashMap<>();    // (inode, page) -> when first found dirty
    private boolean recording;
    private long taken;
    private int forces;

    /** Records {@code dir} (the volume's directory); {@code expectations} gives the test's model at each point. */
    public RecordingFileSpace(Path dir, Supplier<Object> expectations) {
        this.dir = dir.toAbsolutePath().normalize();
        this.expectations = expectations;
        this.previous = Forces.listen(this);
    }

    /** From now on crash points are taken; what is on disk now counts as durable (the volume as created). */
    public synchronized void start() {
        for (Map.Entry<String, Entry> e : listing().entrySet()) {
            durable.put(e.getValue().key(), read(dir.resolve(e.getKey())));
        }
        durableNames = listing();
        recording = true;
    }

    /** Self-check: pretend forces of files named {@code name} never happen (a deliberately broken engine). */
    public synchronized void ignoreForcesOf(String name) {
        ignored.add(name);
    }

    public synchronized int forces() {
        return forces;
    }

    /** A crash right now. */
    public synchronized void crashPoint(String where) {
        if (!recording) {
            return;
        }
        Map<String, Entry> names = listing();
        List<Page> dirty = new ArrayList<>();
        for (Map.Entry<String, Entry> e : names.entrySet()) {
            byte[] now = read(dir.resolve(e.getKey()));
            byte[] then = durable.getOrDefault(e.getValue().key(), NONE);
            for (int p = 0; (long) p * PAGE < now.length; p++) {
                int from = p * PAGE;
                int to = Math.min(now.length, from + PAGE);
                if (!Arrays.equals(now, from, to, page(then, from, to), 0, to - from)) {
                    firstSeen.putIfAbsent(List.of(e.getValue().key(), p), taken << 32 | dirty.size());
                    dirty.add(new Page(e.getKey(), e.getValue().key(), p, Arrays.copyOfRange(now, from, to)));
                }
            }
        }
        taken++;
        firstSeen.keySet().retainAll(dirty.stream().map(pg -> List.of(pg.key(), pg.index())).toList());
        dirty.sort(java.util.Comparator.comparing(pg -> firstSeen.get(List.of(pg.key(), pg.index()))));
        points.add(new CrashPoint(where, expectations.get(), durableNames, names, Map.copyOf(durable), dirty));
    }

    /** The crash points taken so far, removed from this recorder. */
    public synchronized List<CrashPoint> drain() {
        List<CrashPoint> out = new ArrayList<>(points);
        points.clear();
        return out;
    }

    @Override
    public synchronized void forcing(Path file, long offset, long length) {
        Path f = file.toAbsolutePath().normalize();
        if (!recording || !f.startsWith(dir) || ignored.contains(String.valueOf(f.getFileName()))) {
            return;
        }
        forces++;
        crashPoint("before forcing " + dir.relativize(f) + (length < 0 ? "" : " [" + offset + ", +" + length + ")"));
        Object key = f.equals(dir) ? null : key(f);
        if (key != null) {
            byte[] now = read(f);
            if (length < 0) {
                durable.put(key, now);
            } else {
                byte[] then = durable.getOrDefault(key, NONE);
                byte[] next = Arrays.copyOf(then, Math.max(then.length, now.length));
                long end = Math.min(now.length, ((offset + length + PAGE - 1) / PAGE) * PAGE);
                for (long p = offset / PAGE * PAGE; p < end; p += PAGE) {
                    System.arraycopy(now, (int) p, next, (int) p, (int) Math.min(PAGE, end - p));
                }
                durable.put(key, next);
            }
        }
        if (length < 0) {
            durableNames = listing();
        }
        Set<Object> live = new java.util.HashSet<>();
        durableNames.values().forEach(e -> live.add(e.key()));
        listing().values().forEach(e -> live.add(e.key()));
        durable.keySet().retainAll(live);       // a dead inode's number may be reused by a new file
    }

    /**
     * The files a crash at {@code p} leaves when exactly the dirty pages in {@code survivors} reached the disk,
     * under the durable names ({@code newNames} false) or the current ones: name to content.
     */
    public static Map<String, byte[]> state(CrashPoint p, boolean newNames, Set<Page> survivors) {
        Map<String, byte[]> out = new TreeMap<>();
        for (Map.Entry<String, Entry> e : (newNames ? p.names() : p.durableNames()).entrySet()) {
            byte[] content = Arrays.copyOf(p.durable().getOrDefault(e.getValue().key(), NONE), (int) e.getValue().length());
            for (Page pg : survivors) {
                if (pg.key().equals(e.getValue().key()) && (long) pg.index() * PAGE < content.length) {
                    System.arraycopy(pg.content(), 0, content, pg.index() * PAGE,
                            Math.min(pg.content().length, content.length - pg.index() * PAGE));
                }
            }
            out.put(e.getKey(), content);
        }
        return out;
    }

    private static byte[] page(byte[] b, int from, int to) {
        return from >= b.length ? new byte[to - from] : Arrays.copyOfRange(b, from, to);
    }

    private Map<String, Entry> listing() {
        Map<String, Entry> out = new TreeMap<>();
        try (Stream<Path> s = Files.list(dir)) {
            for (Path f : (Iterable<Path>) s::iterator) {
                try {
                    BasicFileAttributes a = Files.readAttributes(f, BasicFileAttributes.class);
                    out.put(f.getFileName().toString(), new Entry(a.fileKey(), a.size()));
                } catch (java.nio.file.NoSuchFileException gone) {
                    // removed while listing
                }
            }
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        return out;
    }

    private static Object key(Path f) {
        try {
            return Files.readAttributes(f, BasicFileAttributes.class).fileKey();
        } catch (java.nio.file.NoSuchFileException gone) {
            return null;        // deleted while its channel was open: nothing of it can be read back
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    private static byte[] read(Path f) {
        try {
            return Files.readAllBytes(f);
        } catch (java.nio.file.NoSuchFileException gone) {
            return NONE;
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    @Override
    public void preallocate(Path file, long size) throws IOException {
        delegate.preallocate(file, size);
        forcing(file, 0, -1);
    }

    @Override
    public Zeroer openZeroer(Path file) throws IOException {
        return delegate.openZeroer(file);
    }

    @Override
    public String describe() {
        return "recording (crash states)";
    }

    @Override
    public void close() {
        Forces.listen(previous);
    }
}

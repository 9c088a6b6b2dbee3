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
import java.util.LinkedHashMap;
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
 * image, the current names and the dirty pages, each with every content seen at a crash point since its last
 * force, with the test's expectations at that moment.
 */
public final class RecordingFileSpace implements FileSpace, Forces.Listener, AutoCloseable {

    public static final int PAGE = 4096;
    private static final byte[] NONE = new byte[0];

    /** A name in the directory: its inode and length. */
    public record Entry(Object key, long length) {
    }

    /**
     * A page written since its file's last force, with a content it held since: the current one, or one seen at
     * an earlier crash point ({@code version} 0 the first seen), which write-back may have put on the disk then.
     */
    public record Page(String file, Object key, int index, int version, byte[] content) {
        @Override
        public String toString() {
            return file + "#" + index + (version > 0 ? "v" + version : "");
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
    private Map<List<Object>, List<Page>> seen = new HashMap<>();   // (inode, page) -> contents seen dirty since its last force
    private final Map<Page, Long> seenAt = new HashMap<>();           // when each was seen first
    private boolean recording;
    private boolean recursive;
    private long taken;
    private int forces;

    /** Records {@code dir} (the volume's directory); {@code expectations} gives the test's model at each point. */
    public RecordingFileSpace(Path dir, Supplier<Object> expectations) {
        this.dir = dir.toAbsolutePath().normalize();
        this.expectations = expectations;
        this.previous = Forces.listen(this);
    }

    /**
     * Records everything under {@code tree}, subdirectories included (a mirrored volume's directory and its legs'
     * directory, or the parent a volume is created in): names are paths relative to {@code tree}, a directory's
     * name ends in {@code /} (its content in a state is null). One ext4-like journal for the whole tree.
     */
    public static RecordingFileSpace tree(Path tree, Supplier<Object> expectations) {
        RecordingFileSpace r = new RecordingFileSpace(tree, expectations);
        r.recursive = true;
        return r;
    }

    /** From now on crash points are taken; what is on disk now counts as durable (the volume as created). */
    public synchronized void start() {
        for (Map.Entry<String, Entry> e : listing().entrySet()) {
            if (e.getValue().length() >= 0) {
                durable.put(e.getValue().key(), read(dir.resolve(e.getKey())));
            }
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
        Map<List<Object>, List<Page>> next = new LinkedHashMap<>();
        for (Map.Entry<String, Entry> e : names.entrySet()) {
            if (e.getValue().length() < 0) {
                continue;       // a directory
            }
            byte[] now = read(dir.resolve(e.getKey()));
            byte[] then = durable.getOrDefault(e.getValue().key(), NONE);
            for (int p = 0; (long) p * PAGE < now.length; p++) {
                int from = p * PAGE;
                int to = Math.min(now.length, from + PAGE);
                if (!Arrays.equals(now, from, to, page(then, from, to), 0, to - from)) {
                    List<Object> id = List.of(e.getValue().key(), p);
                    List<Page> versions = new ArrayList<>(seen.getOrDefault(id, List.of()));
                    byte[] c = Arrays.copyOfRange(now, from, to);
                    if (versions.isEmpty() || !Arrays.equals(versions.get(versions.size() - 1).content(), c)) {
                        Page pg = new Page(e.getKey(), e.getValue().key(), p, versions.size(), c);
                        seenAt.put(pg, taken << 32 | seenAt.size());
                        versions.add(pg);
                    }
                    next.put(id, versions);
                }
            }
        }
        taken++;
        seen = next;
        List<Page> dirty = new ArrayList<>();
        next.values().forEach(dirty::addAll);
        dirty.sort(java.util.Comparator.comparing(seenAt::get));
        seenAt.keySet().retainAll(new java.util.HashSet<>(dirty));
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
        Object key = Files.isDirectory(f) ? null : key(f);
        if (key != null) {
            byte[] now = read(f);
            seen.keySet().removeIf(id -> id.get(0).equals(key) && (length < 0
                    || ((Integer) id.get(1) + 1L) * PAGE > offset && (long) (Integer) id.get(1) * PAGE < offset + length));
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
        seen.keySet().removeIf(id -> !live.contains(id.get(0)));
    }

    /**
     * The files a crash at {@code p} leaves when exactly the dirty pages in {@code survivors} reached the disk,
     * under the durable names ({@code newNames} false) or the current ones: name to content.
     */
    public static Map<String, byte[]> state(CrashPoint p, boolean newNames, Set<Page> survivors) {
        return state(p, newNames, survivors, List.of());
    }

    /** As {@link #state(CrashPoint, boolean, Set)}, then {@code torn} pages (partial contents) laid over it. */
    public static Map<String, byte[]> state(CrashPoint p, boolean newNames, Set<Page> survivors, List<Page> torn) {
        Map<String, byte[]> out = new TreeMap<>();
        for (Map.Entry<String, Entry> e : (newNames ? p.names() : p.durableNames()).entrySet()) {
            if (e.getValue().length() < 0) {
                out.put(e.getKey(), null);
                continue;
            }
            byte[] content = Arrays.copyOf(p.durable().getOrDefault(e.getValue().key(), NONE), (int) e.getValue().length());
            List<Page> all = new ArrayList<>(p.dirty());
            all.addAll(torn);
            for (Page pg : all) {        // in the order seen: a later content of a page overrides an earlier one
                if ((survivors.contains(pg) || torn.contains(pg)) && pg.key().equals(e.getValue().key())
                        && (long) pg.index() * PAGE < content.length) {
                    System.arraycopy(pg.content(), 0, content, pg.index() * PAGE,
                            Math.min(pg.content().length, content.length - pg.index() * PAGE));
                }
            }
            out.put(e.getKey(), content);
        }
        return out;
    }

    /** Writes a state ({@link #state}) under {@code out}: directories (null content) and files, parents first. */
    public static void write(Map<String, byte[]> files, Path out) throws IOException {
        Files.createDirectories(out);
        for (Map.Entry<String, byte[]> f : files.entrySet()) {
            Path p = out.resolve(f.getKey());
            if (f.getValue() == null) {
                Files.createDirectories(p);
            } else {
                Files.createDirectories(p.getParent());
                Files.write(p, f.getValue());
            }
        }
    }

    private static byte[] page(byte[] b, int from, int to) {
        return from >= b.length ? new byte[to - from] : Arrays.copyOfRange(b, from, to);
    }

    private Map<String, Entry> listing() {
        Map<String, Entry> out = new TreeMap<>();
        try (Stream<Path> s = recursive ? Files.walk(dir).filter(f -> !f.equals(dir)) : Files.list(dir)) {
            for (Path f : (Iterable<Path>) s::iterator) {
                try {
                    BasicFileAttributes a = Files.readAttributes(f, BasicFileAttributes.class);
                    String name = dir.relativize(f).toString();
                    out.put(a.isDirectory() ? name + "/" : name, new Entry(a.fileKey(), a.isDirectory() ? -1 : a.size()));
                } catch (java.nio.file.NoSuchFileException gone) {
                    // removed while listing
                }
            }
        } catch (java.io.UncheckedIOException e) {
            if (!(e.getCause() instanceof java.nio.file.NoSuchFileException)) {
                throw e;        // else a directory removed while walking: the next listing sees it gone
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

package io.snapbd.engine.volume;

import io.snapbd.engine.format.CorruptMetadataException;
import io.snapbd.engine.format.VolumeNames;
import io.snapbd.engine.io.FileSpace;

import java.io.IOException;
import java.nio.channels.FileChannel;
import java.nio.channels.FileLock;
import java.nio.channels.OverlappingFileLockException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentHashMap;

/**
 * The volumes of one data directory. Holds an exclusive lock on {@code DIR/snapbd.lock} for its lifetime, so a
 * server and an offline command never open the same volume at once.
 */
public final class VolumeCatalog implements AutoCloseable {

    public static final String LOCK_FILE = "snapbd.lock";
    public static final String VOLUMES_DIR = "volumes";

    private final Path root;
    private final FileSpace space;
    private final FileChannel lockChannel;
    private final FileLock lock;
    private final Map<String, Volume> open = new ConcurrentHashMap<>();
    /** Volumes whose open failed, with the reason: not opened again until the catalog is (a restart). */
    private final Map<String, String> setAside = new ConcurrentHashMap<>();

    private VolumeCatalog(Path root, FileSpace space, FileChannel lockChannel, FileLock lock) {
        this.root = root;
        this.space = space;
        this.lockChannel = lockChannel;
        this.lock = lock;
    }

    public static VolumeCatalog open(Path root, FileSpace space) throws IOException {
        return open(root, space, true);
    }

    /**
     * Opens the data directory; with {@code create} false a missing directory is an error rather than a new,
     * empty one (a check or a listing pointed at a typo must not pass).
     */
    public static VolumeCatalog open(Path root, FileSpace space, boolean create) throws IOException {
        if (!create && !Files.isDirectory(root.resolve(VOLUMES_DIR))) {
            throw new NoSuchFileException("no snapbd data directory at " + root.toAbsolutePath()
                    + " (it has no " + VOLUMES_DIR + "/ directory)");
        }
        Files.createDirectories(root.resolve(VOLUMES_DIR));
        FileChannel ch = FileChannel.open(root.resolve(LOCK_FILE), StandardOpenOption.CREATE, StandardOpenOption.WRITE);
        FileLock lock;
        try {
            lock = ch.tryLock();
        } catch (OverlappingFileLockException e) {
            lock = null;
        }
        if (lock == null) {
            ch.close();
            throw new DataDirBusyException("data directory " + root + " is in use by another snapbd process");
        }
        return new VolumeCatalog(root, space, ch, lock);
    }

    public Path root() {
        return root;
    }

    public FileSpace space() {
        return space;
    }

    public Path volumeDir(String name) {
        VolumeNames.check(name);
        return root.resolve(VOLUMES_DIR).resolve(name);
    }

    /** Names of every volume on disk, sorted. */
    public List<String> names() throws IOException {
        List<String> names = new ArrayList<>();
        try (var dirs = Files.list(root.resolve(VOLUMES_DIR))) {
            for (Path d : (Iterable<Path>) dirs::iterator) {
                if (Files.isRegularFile(d.resolve(Volume.HEADER_FILE))) {
                    names.add(d.getFileName().toString());
                }
            }
        }
        Collections.sort(names);
        return names;
    }

    public boolean exists(String name) {
        return Files.isRegularFile(volumeDir(name).resolve(Volume.HEADER_FILE));
    }

    public synchronized Volume create(String name, long size, int blockSize, long saveSize, boolean sparse) throws IOException {
        return create(name, size, blockSize, saveSize, sparse, List.of());
    }

    /** Creates a volume mirrored to {@code mirrors} (extra legs' URIs; none: not mirrored) and opens it. */
    public synchronized Volume create(String name, long size, int blockSize, long saveSize, boolean sparse,
                                      List<String> mirrors) throws IOException {
        return create(name, size, blockSize, saveSize, sparse, mirrors, false);
    }

    /** The same; {@code forceLegs} as {@link Volume#create(Path, String, long, int, long, boolean, FileSpace, List, boolean)}. */
    public synchronized Volume create(String name, long size, int blockSize, long saveSize, boolean sparse,
                                      List<String> mirrors, boolean forceLegs) throws IOException {
        Path dir = volumeDir(name);
        if (Files.exists(dir)) {
            if (exists(name)) {
                throw new IOException("volume " + name + " already exists");
            }
            // volume.meta is written last: this is a create cut short by a crash, not a volume
            Volume.deleteFiles(dir);
        }
        Volume.create(dir, name, size, blockSize, saveSize, sparse, space, mirrors, forceLegs);
        try {
            return open(name);
        } catch (VolumeSetAsideException e) {
            // A volume that never opened holds nothing: remove it rather than leave a set-aside husk behind.
            setAside.remove(name);
            Volume.deleteFiles(dir);
            throw new IOException("volume " + name + " could not be opened after its creation and was removed: " + e.reason(), e);
        }
    }

    /**
     * The open volume, opening (and if needed recovering) it on first use. A volume whose open fails (a damaged
     * file, no space to mark it open, ...) is <em>set aside</em>: the failure is remembered with its reason,
     * which names the file, and every later open throws {@link VolumeSetAsideException} at once, until the volume
     * is deleted or the catalog opened anew. Other volumes are not affected.
     */
    public synchronized Volume open(String name) throws IOException {
        Volume v = open.get(name);
        if (v != null) {
            return v;
        }
        String reason = setAside.get(name);
        if (reason != null) {
            throw new VolumeSetAsideException(name, reason, null);
        }
        if (!exists(name)) {
            throw new NoSuchFileException("no volume named " + name);
        }
        try {
            Path dir = volumeDir(name);
            VolumeHeader h = VolumeHeader.read(dir.resolve(Volume.HEADER_FILE));
            if (!h.name().equals(name)) {
                throw new CorruptMetadataException(dir.resolve(Volume.HEADER_FILE),
                        "names volume '" + h.name() + "' but lives in directory '" + name + "'");
            }
            v = Volume.open(dir, space);
        } catch (IOException | RuntimeException | InternalError e) {
            reason = VolumeSetAsideException.reasonOf(e);
            setAside.put(name, reason);
            throw new VolumeSetAsideException(name, reason, e);
        }
        open.put(name, v);
        return v;
    }

    /** Volumes set aside (their open failed), name to reason, sorted by name. */
    public Map<String, String> setAside() {
        return Collections.unmodifiableMap(new TreeMap<>(setAside));
    }

    /** Why the volume is set aside, or null if it is not. */
    public String setAsideReason(String name) {
        return setAside.get(name);
    }

    /** Header of a volume without opening it (for listings). */
    public VolumeHeader header(String name) throws IOException {
        Volume v = open.get(name);
        return v != null ? v.header() : VolumeHeader.read(volumeDir(name).resolve(Volume.HEADER_FILE));
    }

    public Map<String, Volume> openVolumes() {
        return Collections.unmodifiableMap(new TreeMap<>(open));
    }

    public synchronized void delete(String name) throws IOException {
        if (!exists(name)) {
            throw new NoSuchFileException("no volume named " + name);
        }
        Volume v = open.remove(name);
        if (v != null) {
            v.close();
        }
        Volume.deleteFiles(volumeDir(name));
        setAside.remove(name);
    }

    /**
     * Closes every open volume (flush, mark clean), then releases the lock. A volume that fails to close is left
     * marked open, so the next open recovers it; the others are still closed. The exception names each volume
     * that failed and why.
     */
    @Override
    public synchronized void close() throws IOException {
        List<String> failed = new ArrayList<>();
        IOException first = null;
        for (Map.Entry<String, Volume> e : new TreeMap<>(open).entrySet()) {
            try {
                e.getValue().close();
            } catch (IOException | RuntimeException | InternalError x) {
                failed.add(e.getKey() + " (" + VolumeSetAsideException.reasonOf(x) + ")");
                if (first == null) {
                    first = x instanceof IOException io ? io : new IOException(x);
                }
            }
        }
        open.clear();
        lock.release();
        lockChannel.close();
        if (first != null) {
            IOException ex = new IOException(failed.size() + " volume(s) not closed cleanly, recovered at their next open: "
                    + String.join("; ", failed), first);
            throw ex;
        }
    }
}

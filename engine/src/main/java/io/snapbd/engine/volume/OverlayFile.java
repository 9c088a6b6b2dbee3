package io.snapbd.engine.volume;

import io.snapbd.engine.format.Crc32c;

import java.io.IOException;
import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.MappedByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.UUID;
import java.util.stream.Stream;

/**
 * The overlay's arena and slot index in a file on a RAM file system (tmpfs, {@code /dev/shm} by default): a write
 * staged behind a copy-on-write force is answered before it reaches {@code data.img}, so with the arena in the
 * process's own memory a {@code kill -9} lost writes already acknowledged. A kernel device the next server
 * reconnects then completes its next FLUSH on the new connection and the file system above believes them durable.
 * In a tmpfs file they outlive the process, as the page cache outlives it for writes that went straight into the
 * mapping, and the next open of the volume writes them again ({@link #replay}) before any client is served. They
 * do not outlive the machine, as no unflushed write does. Layout: docs/on-disk-format.md, "overlay file".
 *
 * <p>The index holds one 16-byte entry per slot: the staged block + 1 (0 = nothing staged there) and the order it
 * was published in. An entry is set after its slot's data is in place and cleared after the block was applied to
 * production (or replaced by a newer slot), with release stores: whatever moment the process dies at, a set entry
 * names a slot that holds the block's acknowledged data, or data of a write never acknowledged.
 */
final class OverlayFile implements AutoCloseable {

    static final long MAGIC = 0x594c564f44424e53L;     // "SNBDOVLY" little-endian
    static final int VERSION = 1;
    static final int HEADER_BYTES = 4096;
    static final int ENTRY_BYTES = 16;
    static final String SUFFIX = ".overlay";
    /** Where the header keeps the volume directory's path (for the orphan sweep), up to the header's end. */
    static final int PATH_AT = 72;
    private static final VarHandle LONGS = MethodHandles.byteBufferViewVarHandle(long[].class, ByteOrder.LITTLE_ENDIAN);
    private static final UUID NO_BOOT_ID = new UUID(0, 0);

    private final Path file;
    private final FileChannel channel;
    private final MappedByteBuffer index;
    private final long dataOffset;

    private OverlayFile(Path file, FileChannel channel, MappedByteBuffer index, long dataOffset) {
        this.file = file;
        this.channel = channel;
        this.index = index;
        this.dataOffset = dataOffset;
    }

    /**
     * The directory the overlay files go to: {@code -Dsnapbd.overlay.dir} (default {@code /dev/shm}) if it is a
     * RAM file system (tmpfs or ramfs); null otherwise (the arena then stays in the process's memory). A file on a
     * disk would put every staged block through write-back and could outlive a power cut half written.
     */
    static Path directory() {
        Path dir = Path.of(System.getProperty("snapbd.overlay.dir", "/dev/shm"));
        try {
            String type = Files.getFileStore(dir).type();
            return type.equals("tmpfs") || type.equals("ramfs") ? dir : null;
        } catch (IOException | RuntimeException e) {
            return null;
        }
    }

    /** Names are per volume identity and per volume directory: a copied data directory is another volume here. */
    static String prefix(Path volumeDir, UUID uuid) {
        byte[] path = volumeDir.toAbsolutePath().normalize().toString().getBytes(StandardCharsets.UTF_8);
        return "snapbd-" + uuid + "-" + String.format("%08x", Crc32c.of(path, 0, path.length)) + ".";
    }

    static Path path(Path shmDir, Path volumeDir, UUID uuid, long openCount) {
        return shmDir.resolve(prefix(volumeDir, uuid) + openCount + SUFFIX);
    }

    /** Creates (replacing) the file of this open: header and a zeroed index; the data region grows by chunk. */
    static OverlayFile create(Path file, Path volumeDir, UUID uuid, long openCount, int blockSize, int slots)
            throws IOException {
        long indexBytes = roundUp((long) slots * ENTRY_BYTES, 4096);
        Files.deleteIfExists(file);
        FileChannel ch = FileChannel.open(file, StandardOpenOption.CREATE_NEW, StandardOpenOption.READ,
                StandardOpenOption.WRITE);
        try {
            ByteBuffer h = header(uuid, bootId(), openCount, blockSize, slots, volumeDir);
            ch.write(h, 0);
            ch.write(ByteBuffer.allocate((int) indexBytes), HEADER_BYTES);      // reserved now: no SIGBUS later
            MappedByteBuffer index = ch.map(FileChannel.MapMode.READ_WRITE, HEADER_BYTES, indexBytes);
            return new OverlayFile(file, ch, index, HEADER_BYTES + indexBytes);
        } catch (IOException | RuntimeException e) {
            ch.close();
            Files.deleteIfExists(file);
            throw e;
        }
    }

    static ByteBuffer header(UUID uuid, UUID boot, long openCount, int blockSize, int slots, Path volumeDir) {
        ByteBuffer h = ByteBuffer.allocate(HEADER_BYTES).order(ByteOrder.LITTLE_ENDIAN);
        byte[] dir = volumeDir.toAbsolutePath().normalize().toString().getBytes(StandardCharsets.UTF_8);
        if (dir.length > HEADER_BYTES - PATH_AT) {
            dir = new byte[0];      // not recorded: the file is then never swept as an orphan
        }
        h.putLong(0, MAGIC).putInt(8, VERSION).putInt(12, blockSize).putInt(16, slots).putInt(20, dir.length)
                .putLong(24, uuid.getMostSignificantBits()).putLong(32, uuid.getLeastSignificantBits())
                .putLong(40, boot.getMostSignificantBits()).putLong(48, boot.getLeastSignificantBits())
                .putLong(56, openCount);
        h.put(PATH_AT, dir);
        h.putInt(64, Crc32c.of(h, 0, 64));
        h.putInt(68, Crc32c.of(h, PATH_AT, PATH_AT + dir.length));
        return h;
    }

    /** The volume directory a header names, or null if it names none (or its checksum fails). */
    private static Path volumeDirOf(ByteBuffer h) {
        int n = h.getInt(20);
        if (n <= 0 || n > HEADER_BYTES - PATH_AT || h.getInt(68) != Crc32c.of(h, PATH_AT, PATH_AT + n)) {
            return null;
        }
        byte[] b = new byte[n];
        h.get(PATH_AT, b);
        return Path.of(new String(b, StandardCharsets.UTF_8));
    }

    /**
     * Deletes the overlay files of volumes that are gone: a file whose volume directory no longer holds a
     * {@code volume.meta} of its UUID (a data directory deleted by hand, a test's temporary directory), or of an
     * earlier boot. Files of live volumes, files that name no directory and the files of the volume being opened
     * ({@code exceptPrefix}: its replay reports them) are left alone. Returns how many went.
     */
    static int sweepOrphans(Path shmDir, String exceptPrefix) {
        if (shmDir == null) {
            return 0;
        }
        int deleted = 0;
        List<Path> files;
        try {
            files = overlayFiles(shmDir, "snapbd-").stream()
                    .filter(p -> !p.getFileName().toString().startsWith(exceptPrefix)).toList();
        } catch (IOException e) {
            return 0;
        }
        UUID boot = bootId();
        for (Path f : files) {
            try (FileChannel ch = FileChannel.open(f, StandardOpenOption.READ)) {
                ByteBuffer h = ByteBuffer.allocate(HEADER_BYTES).order(ByteOrder.LITTLE_ENDIAN);
                readFully(ch, h, 0);
                if (h.getLong(0) != MAGIC || h.getInt(64) != Crc32c.of(h, 0, 64)) {
                    continue;       // not ours to judge
                }
                Path dir = volumeDirOf(h);
                UUID owner = new UUID(h.getLong(24), h.getLong(32));
                boolean stale = !boot.equals(new UUID(h.getLong(40), h.getLong(48)));
                boolean gone = dir != null && !ownerOf(dir).equals(owner);
                if (stale || gone) {
                    Files.deleteIfExists(f);
                    deleted++;
                }
            } catch (IOException | RuntimeException e) {
                // unreadable or vanished meanwhile: left alone
            }
        }
        return deleted;
    }

    /** The UUID of the volume in {@code dir}, or the nil UUID if there is none. */
    private static UUID ownerOf(Path dir) {
        try {
            return VolumeHeader.read(dir.resolve(Volume.HEADER_FILE)).uuid();
        } catch (IOException | RuntimeException e) {
            return NO_BOOT_ID;
        }
    }

    /**
     * Maps chunk {@code c} of the data region ({@code bytes} long), its pages reserved first by writing zeros: a
     * full tmpfs then fails here with an IOException (the caller treats it as no room) instead of raising SIGBUS
     * on a writer's first touch of a page.
     */
    ByteBuffer chunk(int c, int bytes) throws IOException {
        long at = dataOffset + (long) c * bytes;
        ByteBuffer zeros = ByteBuffer.allocate(Math.min(bytes, 1 << 16));
        for (long done = 0; done < bytes; ) {
            zeros.clear().limit((int) Math.min(zeros.capacity(), bytes - done));
            done += channel.write(zeros, at + done);
        }
        return channel.map(FileChannel.MapMode.READ_WRITE, at, bytes);
    }

    /** Slot {@code slot} now holds block {@code block}'s staged data, published as number {@code seq}. */
    void staged(int slot, long block, long seq) {
        int at = slot * ENTRY_BYTES;
        LONGS.set(index, at + 8, seq);
        LONGS.setRelease(index, at, block + 1);
    }

    /** Slot {@code slot} no longer holds a staged block (applied to production, or replaced by a newer slot). */
    void cleared(int slot) {
        LONGS.setRelease(index, slot * ENTRY_BYTES, 0L);
    }

    /** Closes and deletes the file (nothing is staged any more, or the volume is gone). */
    @Override
    public void close() throws IOException {
        try {
            channel.close();
        } finally {
            Files.deleteIfExists(file);
        }
    }

    // ---- after a crash --------------------------------------------------------------------------------------------

    /** Where a staged block is written again. */
    @FunctionalInterface
    interface BlockWriter {
        void write(long block, ByteBuffer data) throws IOException;
    }

    /** Makes what the writer wrote durable. */
    @FunctionalInterface
    interface Durable {
        void force() throws IOException;
    }

    /** What a replay found in one file. */
    record Replayed(Path file, int blocks, String skipped) {
    }

    /**
     * Writes again, in publication order, the blocks the overlay files of earlier opens of this volume still
     * stage (the process died before applying them), then deletes those files. A file of another boot (the
     * directory is not wiped at boot after all), another volume or a damaged header is not replayed: it is
     * reported and deleted. Files are taken oldest open first; each one's blocks are forced ({@code durable})
     * before it is deleted.
     */
    static List<Replayed> replay(Path shmDir, Path volumeDir, UUID uuid, long currentOpen, int blockSize, long blocks,
                                 BlockWriter writer, Durable durable) throws IOException {
        List<Replayed> out = new ArrayList<>();
        if (shmDir == null) {
            return out;
        }
        String prefix = prefix(volumeDir, uuid);
        List<Path> files = overlayFiles(shmDir, prefix).stream()
                .sorted(Comparator.comparingLong(p -> openCountOf(p, prefix))).toList();
        for (Path f : files) {
            if (openCountOf(f, prefix) == currentOpen) {
                continue;
            }
            Replayed r;
            try {
                r = replayOne(f, uuid, blockSize, blocks, writer);
                if (r.blocks() > 0) {
                    durable.force();        // before the only other copy of those writes goes
                }
            } catch (IOException e) {
                throw new IOException(f + ": writing again the blocks a killed run had acknowledged failed (the file is "
                        + "kept; the next open tries again): " + e.getMessage(), e);
            }
            out.add(r);
            Files.deleteIfExists(f);
        }
        return out;
    }

    /** Deletes every overlay file of the volume in {@code volumeDir} (the volume is being deleted). */
    static void deleteAll(Path shmDir, Path volumeDir, UUID uuid) throws IOException {
        if (shmDir == null) {
            return;
        }
        for (Path f : overlayFiles(shmDir, prefix(volumeDir, uuid))) {
            Files.deleteIfExists(f);
        }
    }

    /** The overlay files in {@code shmDir} whose names start with {@code prefix}, in name order. */
    private static List<Path> overlayFiles(Path shmDir, String prefix) throws IOException {
        try (Stream<Path> s = Files.list(shmDir)) {
            return s.filter(p -> {
                String n = p.getFileName().toString();
                return n.startsWith(prefix) && n.endsWith(SUFFIX);
            }).sorted().toList();
        }
    }

    private static long openCountOf(Path p, String prefix) {
        String n = p.getFileName().toString();
        try {
            return Long.parseLong(n.substring(prefix.length(), n.length() - SUFFIX.length()));
        } catch (NumberFormatException e) {
            return Long.MAX_VALUE;
        }
    }

    private static Replayed replayOne(Path f, UUID uuid, int blockSize, long blocks, BlockWriter writer)
            throws IOException {
        try (FileChannel ch = FileChannel.open(f, StandardOpenOption.READ)) {
            ByteBuffer h = ByteBuffer.allocate(HEADER_BYTES).order(ByteOrder.LITTLE_ENDIAN);
            readFully(ch, h, 0);
            String why = checkHeader(h, uuid, blockSize);
            if (why != null) {
                return new Replayed(f, 0, why);
            }
            int slots = h.getInt(16);
            long indexBytes = roundUp((long) slots * ENTRY_BYTES, 4096);
            ByteBuffer index = ByteBuffer.allocate((int) indexBytes).order(ByteOrder.LITTLE_ENDIAN);
            readFully(ch, index, HEADER_BYTES);
            // The newest slot of each block wins; they are written in the order they were published.
            Map<Long, long[]> newest = new HashMap<>();
            for (int s = 0; s < slots; s++) {
                long b = index.getLong(s * ENTRY_BYTES) - 1;
                long seq = index.getLong(s * ENTRY_BYTES + 8);
                if (b < 0 || b >= blocks) {
                    continue;       // nothing staged there (a value past the volume cannot have been staged)
                }
                long[] cur = newest.get(b);
                if (cur == null || seq > cur[1]) {
                    newest.put(b, new long[] {s, seq, b});
                }
            }
            long[][] order = newest.values().toArray(new long[0][]);
            Arrays.sort(order, Comparator.comparingLong(e -> e[1]));
            ByteBuffer data = ByteBuffer.allocate(blockSize);
            for (long[] e : order) {
                data.clear();
                readFully(ch, data, HEADER_BYTES + indexBytes + e[0] * blockSize);
                data.flip();
                writer.write(e[2], data);
            }
            return new Replayed(f, order.length, null);
        }
    }

    /**
     * fsck's view of the overlay files a killed run of this volume left (read-only): what the next open will do
     * with each. Notes only: a usable file is written again, an unusable one deleted.
     */
    static List<String> notes(Path shmDir, Path volumeDir, UUID uuid, int blockSize, long blocks) throws IOException {
        List<String> notes = new ArrayList<>();
        if (shmDir == null) {
            return notes;
        }
        String prefix = prefix(volumeDir, uuid);
        for (Path f : overlayFiles(shmDir, prefix)) {
            try (FileChannel ch = FileChannel.open(f, StandardOpenOption.READ)) {
                ByteBuffer h = ByteBuffer.allocate(HEADER_BYTES).order(ByteOrder.LITTLE_ENDIAN);
                readFully(ch, h, 0);
                String why = checkHeader(h, uuid, blockSize);
                if (why != null) {
                    notes.add("overlay file " + f + " not usable (" + why + "): the next open deletes it");
                    continue;
                }
                int slots = h.getInt(16);
                ByteBuffer index = ByteBuffer.allocate((int) roundUp((long) slots * ENTRY_BYTES, 4096))
                        .order(ByteOrder.LITTLE_ENDIAN);
                readFully(ch, index, HEADER_BYTES);
                long staged = 0;
                for (int i = 0; i < slots; i++) {
                    long b = index.getLong(i * ENTRY_BYTES) - 1;
                    staged += b >= 0 && b < blocks ? 1 : 0;
                }
                notes.add("overlay file " + f + " of a run that did not close the volume: " + staged + " staged slot(s) "
                        + "of acknowledged writes; the next open writes them again");
            } catch (IOException e) {
                notes.add("overlay file " + f + " unreadable (" + e.getMessage() + "): the next open deletes it");
            }
        }
        return notes;
    }

    /** Null if the header is this volume's of this boot, else why the file is not replayed. */
    static String checkHeader(ByteBuffer h, UUID uuid, int blockSize) {
        if (h.getLong(0) != MAGIC) {
            return "not an overlay file (bad magic)";
        }
        if (h.getInt(64) != Crc32c.of(h, 0, 64)) {
            return "header checksum mismatch";
        }
        if (h.getInt(8) != VERSION) {
            return "unknown version " + h.getInt(8);
        }
        if (h.getLong(24) != uuid.getMostSignificantBits() || h.getLong(32) != uuid.getLeastSignificantBits()) {
            return "another volume's";
        }
        if (h.getInt(12) != blockSize || h.getInt(16) <= 0) {
            return "block size or slot count does not match (" + h.getInt(12) + ", " + h.getInt(16) + " slots)";
        }
        UUID boot = new UUID(h.getLong(40), h.getLong(48));
        if (!boot.equals(bootId())) {
            return "written before the last boot (boot id " + boot + "): unflushed writes do not survive a reboot";
        }
        return null;
    }

    private static void readFully(FileChannel ch, ByteBuffer b, long at) throws IOException {
        while (b.hasRemaining()) {
            int n = ch.read(b, at + b.position());
            if (n < 0) {
                throw new IOException("overlay file ends early (" + (at + b.position()) + ")");
            }
        }
    }

    static UUID bootId() {
        try {
            return UUID.fromString(Files.readString(Path.of("/proc/sys/kernel/random/boot_id")).trim());
        } catch (IOException | RuntimeException e) {
            return NO_BOOT_ID;
        }
    }

    private static long roundUp(long n, long to) {
        return (n + to - 1) / to * to;
    }
}

package io.snapbd.server.kernel;

import io.snapbd.engine.format.AtomicFile;
import io.snapbd.engine.format.CorruptMetadataException;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;
import java.util.zip.CRC32C;

/**
 * The durable record of one netlink attachment, {@code DATA_DIR/attachments/nbdN.attach}: what the server needs
 * to hand the device a new connection after a restart or a crash (NBD_CMD_RECONFIGURE), and the identity the kernel
 * also knows ({@code backend}, NBD_ATTR_BACKEND_IDENTIFIER). 512 bytes, little-endian, CRC-32C, atomic replace;
 * the byte table is in docs/on-disk-format.md ("attachments/nbdN.attach").
 */
public record AttachmentRecord(int index, String export, String backend, long sizeBytes, int blockSize, int serverFlags,
                               int timeoutSeconds, int deadConnTimeoutSeconds, boolean readOnly, long attachedAtNanos,
                               String origin) {

    public static final String DIR = "attachments";
    public static final long MAGIC = ByteBuffer.wrap("SNBDATCH".getBytes(StandardCharsets.US_ASCII)).order(ByteOrder.LITTLE_ENDIAN).getLong();
    public static final int VERSION = 1;
    public static final int SIZE = 512;
    static final int EXPORT_OFF = 64;
    static final int EXPORT_MAX = 160;
    static final int BACKEND_OFF = 224;
    static final int BACKEND_MAX = 176;
    static final int ORIGIN_OFF = 400;
    static final int ORIGIN_MAX = 108;
    static final int CRC_OFF = 508;
    static final int OPT_READ_ONLY = 1;
    private static final Pattern NAME = Pattern.compile("nbd([0-9]+)\\.attach");

    public AttachmentRecord {
        if (index < 0) {
            throw new IllegalArgumentException("device index " + index);
        }
        if (utf8(export).length > EXPORT_MAX || utf8(backend).length > BACKEND_MAX) {
            throw new IllegalArgumentException("export name too long for an attachment record: " + export);
        }
        origin = fit(origin == null ? "" : origin, ORIGIN_MAX);
    }

    public String device() {
        return "/dev/nbd" + index;
    }

    /** The record's file in {@code dir} (DATA_DIR/attachments). */
    public static Path file(Path dir, int index) {
        return dir.resolve("nbd" + index + ".attach");
    }

    public ByteBuffer encode() {
        ByteBuffer b = ByteBuffer.allocate(SIZE).order(ByteOrder.LITTLE_ENDIAN);
        byte[] e = utf8(export);
        byte[] k = utf8(backend);
        byte[] o = utf8(origin);
        b.putLong(0, MAGIC).putInt(8, VERSION).putInt(12, index).putLong(16, sizeBytes).putInt(24, blockSize)
                .putInt(28, serverFlags).putInt(32, timeoutSeconds).putInt(36, deadConnTimeoutSeconds)
                .putInt(40, readOnly ? OPT_READ_ONLY : 0).putLong(44, attachedAtNanos)
                .putShort(52, (short) e.length).putShort(54, (short) k.length).putShort(56, (short) o.length);
        b.put(EXPORT_OFF, e).put(BACKEND_OFF, k).put(ORIGIN_OFF, o);
        b.putInt(CRC_OFF, crc(b));
        return b;
    }

    /** Decodes and checks a record; {@code file} names it in errors. */
    public static AttachmentRecord decode(Path file, ByteBuffer in) throws IOException {
        if (in.remaining() != SIZE) {
            throw new CorruptMetadataException(file, "attachment record is " + in.remaining() + " bytes, not " + SIZE);
        }
        ByteBuffer b = in.slice().order(ByteOrder.LITTLE_ENDIAN);
        if (b.getLong(0) != MAGIC) {
            throw new CorruptMetadataException(file, "bad magic: not an attachment record");
        }
        int version = b.getInt(8);
        if (version != VERSION) {
            throw new CorruptMetadataException(file, "attachment record version " + version + " is not known to this snapbd "
                    + "(it reads version " + VERSION + "; written by a newer one?)");
        }
        if (b.getInt(CRC_OFF) != crc(b)) {
            throw new CorruptMetadataException(file, "attachment record checksum mismatch");
        }
        int el = b.getShort(52) & 0xffff;
        int kl = b.getShort(54) & 0xffff;
        int ol = b.getShort(56) & 0xffff;
        if (el == 0 || el > EXPORT_MAX || kl > BACKEND_MAX || ol > ORIGIN_MAX) {
            throw new CorruptMetadataException(file, "attachment record has string lengths " + el + "/" + kl + "/" + ol + " out of range");
        }
        int options = b.getInt(40);
        if ((options & ~OPT_READ_ONLY) != 0) {
            throw new CorruptMetadataException(file, "attachment record has unknown options 0x" + Integer.toHexString(options));
        }
        int blockSize = b.getInt(24);
        long size = b.getLong(16);
        if (blockSize < 512 || blockSize > 4096 || Integer.bitCount(blockSize) != 1 || size <= 0 || size % blockSize != 0) {
            throw new CorruptMetadataException(file, "attachment record has size " + size + " and block size " + blockSize);
        }
        try {
            return new AttachmentRecord(b.getInt(12), string(b, EXPORT_OFF, el), string(b, BACKEND_OFF, kl), size, blockSize,
                    b.getInt(28), b.getInt(32), b.getInt(36), (options & OPT_READ_ONLY) != 0, b.getLong(44),
                    string(b, ORIGIN_OFF, ol));
        } catch (IllegalArgumentException e) {
            throw new CorruptMetadataException(file, "attachment record: " + e.getMessage());
        }
    }

    /** Writes the record with an atomic replace (temp file, force, rename, force of the directory). */
    public void write(Path dir) throws IOException {
        Files.createDirectories(dir);
        AtomicFile.write(file(dir, index), encode());
    }

    /** Reads one record; the file's name must match its device index. */
    public static AttachmentRecord read(Path file) throws IOException {
        AttachmentRecord r = decode(file, AtomicFile.readAll(file, SIZE + 1));
        Matcher m = NAME.matcher(file.getFileName().toString());
        if (!m.matches() || Integer.parseInt(m.group(1)) != r.index()) {
            throw new CorruptMetadataException(file, "attachment record for /dev/nbd" + r.index() + " under the wrong name");
        }
        return r;
    }

    /** Removes the record of device {@code index}, durably; absent is fine. */
    public static void delete(Path dir, int index) throws IOException {
        if (Files.deleteIfExists(file(dir, index))) {
            AtomicFile.fsyncDirectory(dir);
        }
    }

    /** The record files in {@code dir} (none when it does not exist), by name. */
    public static List<Path> files(Path dir) throws IOException {
        List<Path> out = new ArrayList<>();
        try (Stream<Path> s = Files.list(dir)) {
            s.filter(p -> NAME.matcher(p.getFileName().toString()).matches()).sorted().forEach(out::add);
        } catch (NoSuchFileException e) {
            return out;
        }
        return out;
    }

    private static int crc(ByteBuffer b) {
        CRC32C c = new CRC32C();
        c.update(b.duplicate().position(0).limit(CRC_OFF));
        return (int) c.getValue();
    }

    private static byte[] utf8(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    private static String string(ByteBuffer b, int off, int len) {
        byte[] v = new byte[len];
        b.get(off, v);
        return new String(v, StandardCharsets.UTF_8);
    }

    /** Cuts {@code s} to at most {@code max} UTF-8 bytes, at a character boundary (origin is for display only). */
    private static String fit(String s, int max) {
        while (utf8(s).length > max) {
            s = s.substring(0, s.length() - 1);
        }
        return s;
    }
}

package io.snapbd.server.kernel;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.zip.CRC32C;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The attachment record file (docs/on-disk-format.md, "attachments/nbdN.attach"): layout, checks, atomic write. */
class AttachmentRecordTest {

    @TempDir
    Path dir;

    private static AttachmentRecord sample() {
        return new AttachmentRecord(3, "vol0@s1", "snapbd:vol0@s1", 256L << 20, 4096, 0x12f, 30, 60, true,
                1_765_000_000_000_000_000L, "/etc/snapbd/snapbd.conf:7");
    }

    @Test
    void byteLayoutIsWhatTheFormatDocumentSays() {
        ByteBuffer b = sample().encode().order(ByteOrder.LITTLE_ENDIAN);
        assertEquals(512, b.remaining());
        byte[] magic = new byte[8];
        b.get(0, magic);
        assertEquals("SNBDATCH", new String(magic, StandardCharsets.US_ASCII));
        assertEquals(1, b.getInt(8));
        assertEquals(3, b.getInt(12));
        assertEquals(256L << 20, b.getLong(16));
        assertEquals(4096, b.getInt(24));
        assertEquals(0x12f, b.getInt(28));
        assertEquals(30, b.getInt(32));
        assertEquals(60, b.getInt(36));
        assertEquals(1, b.getInt(40));
        assertEquals(1_765_000_000_000_000_000L, b.getLong(44));
        assertEquals(7, b.getShort(52));
        assertEquals(14, b.getShort(54));
        assertEquals(25, b.getShort(56));
        assertEquals(0, b.getShort(58));
        assertEquals("vol0@s1", string(b, 64, 7));
        assertEquals(0, b.get(64 + 7));
        assertEquals("snapbd:vol0@s1", string(b, 224, 14));
        assertEquals("/etc/snapbd/snapbd.conf:7", string(b, 400, 25));
        CRC32C c = new CRC32C();
        c.update(b.duplicate().position(0).limit(508));
        assertEquals((int) c.getValue(), b.getInt(508));
    }

    @Test
    void writesAtomicallyReadsBackAndDeletes() throws IOException {
        Path d = dir.resolve("attachments");
        sample().write(d);
        Path f = d.resolve("nbd3.attach");
        assertTrue(Files.isRegularFile(f));
        assertFalse(Files.exists(d.resolve("nbd3.attach.tmp")), "the temporary copy is left behind");
        assertEquals(sample(), AttachmentRecord.read(f));
        Files.writeString(d.resolve("notes.txt"), "x");
        assertEquals(List.of(f), AttachmentRecord.files(d));
        AttachmentRecord.delete(d, 3);
        assertEquals(List.of(), AttachmentRecord.files(d));
        AttachmentRecord.delete(d, 3);      // absent is fine
        assertEquals(List.of(), AttachmentRecord.files(dir.resolve("nowhere")));
    }

    @Test
    void damageIsRefusedNamingTheFile() throws IOException {
        Path d = dir.resolve("attachments");
        sample().write(d);
        Path f = d.resolve("nbd3.attach");
        byte[] good = Files.readAllBytes(f);

        byte[] flipped = good.clone();
        flipped[70] ^= 1;
        Files.write(f, flipped);
        IOException e = assertThrows(IOException.class, () -> AttachmentRecord.read(f));
        assertTrue(e.getMessage().contains(f.toString()) && e.getMessage().contains("checksum mismatch"), e.getMessage());

        Files.write(f, java.util.Arrays.copyOf(good, 300));
        e = assertThrows(IOException.class, () -> AttachmentRecord.read(f));
        assertTrue(e.getMessage().contains("300 bytes"), e.getMessage());

        ByteBuffer v2 = ByteBuffer.wrap(good.clone()).order(ByteOrder.LITTLE_ENDIAN).putInt(8, 2);
        CRC32C c = new CRC32C();
        c.update(v2.duplicate().position(0).limit(508));
        v2.putInt(508, (int) c.getValue());
        Files.write(f, v2.array());
        e = assertThrows(IOException.class, () -> AttachmentRecord.read(f));
        assertTrue(e.getMessage().contains("version 2 is not known"), e.getMessage());

        byte[] magic = good.clone();
        magic[0] = 'X';
        Files.write(f, magic);
        e = assertThrows(IOException.class, () -> AttachmentRecord.read(f));
        assertTrue(e.getMessage().contains("bad magic"), e.getMessage());

        Path other = d.resolve("nbd4.attach");
        Files.write(other, good);
        e = assertThrows(IOException.class, () -> AttachmentRecord.read(other));
        assertTrue(e.getMessage().contains("wrong name"), e.getMessage());
    }

    @Test
    void longOriginIsCutAndLongExportRefused() {
        AttachmentRecord r = new AttachmentRecord(0, "vol0", "snapbd:vol0", 4096, 4096, 0, 0, 60, false, 0, "x".repeat(300));
        assertEquals(108, r.origin().length());
        assertThrows(IllegalArgumentException.class,
                () -> new AttachmentRecord(0, "v".repeat(161), "snapbd:v", 4096, 4096, 0, 0, 60, false, 0, ""));
    }

    private static String string(ByteBuffer b, int off, int len) {
        byte[] v = new byte[len];
        b.get(off, v);
        return new String(v, StandardCharsets.UTF_8);
    }
}

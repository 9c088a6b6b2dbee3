package io.snapbd.engine.volume;

import io.snapbd.engine.BlockDevice;
import io.snapbd.engine.TestVolumes;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.File;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.List;

import static io.snapbd.engine.TestVolumes.pattern;
import static io.snapbd.engine.TestVolumes.read;
import static io.snapbd.engine.TestVolumes.write;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class VolumeCatalogTest {

    @TempDir
    Path root;

    /** A volume that fails to open is set aside with the reason; the others open; delete clears it (issue 21 D). */
    @Test
    void aVolumeThatFailsToOpenIsSetAsideAndTheOthersOpen() throws IOException {
        try (VolumeCatalog c = VolumeCatalog.open(root, TestVolumes.java())) {
            c.create("bad", 1 << 20, 4096, 0, false);
            c.create("good", 1 << 20, 4096, 0, false);
        }
        Path lun = root.resolve("volumes/bad/lun.state");
        TestVolumes.flipByte(lun, 33);
        try (VolumeCatalog c = VolumeCatalog.open(root, TestVolumes.java())) {
            VolumeSetAsideException e = assertThrows(VolumeSetAsideException.class, () -> c.open("bad"));
            assertEquals("bad", e.volume());
            assertEquals(lun + ": checksum mismatch", e.reason());
            assertEquals(java.util.Map.of("bad", lun + ": checksum mismatch"), c.setAside());
            assertTrue(c.open("good").size() > 0);
            // not opened again (even once repaired) until the catalog is opened anew
            TestVolumes.flipByte(lun, 33);
            assertThrows(VolumeSetAsideException.class, () -> c.open("bad"));
            assertEquals(List.of("bad", "good"), c.names());
            assertEquals(java.util.Set.of("good"), c.openVolumes().keySet());
            c.delete("bad");
            assertTrue(c.setAside().isEmpty());
            assertFalse(c.exists("bad"));
        }
    }

    /** The header's name must be the directory's: a volume moved or copied under another name is set aside. */
    @Test
    void aVolumeUnderAnotherDirectoryNameIsSetAside() throws IOException {
        try (VolumeCatalog c = VolumeCatalog.open(root, TestVolumes.java())) {
            c.create("one", 1 << 20, 4096, 0, false);
        }
        Files.move(root.resolve("volumes/one"), root.resolve("volumes/two"));
        try (VolumeCatalog c = VolumeCatalog.open(root, TestVolumes.java())) {
            VolumeSetAsideException e = assertThrows(VolumeSetAsideException.class, () -> c.open("two"));
            assertTrue(e.reason().contains("names volume 'one' but lives in directory 'two'"), e.reason());
        }
    }

    @Test
    void theDataDirectoryIsExclusiveInOneProcess() throws IOException {
        try (VolumeCatalog c = VolumeCatalog.open(root, TestVolumes.java())) {
            assertTrue(Files.isRegularFile(root.resolve(VolumeCatalog.LOCK_FILE)));
            assertTrue(Files.isDirectory(root.resolve(VolumeCatalog.VOLUMES_DIR)));
            DataDirBusyException e = assertThrows(DataDirBusyException.class, () -> VolumeCatalog.open(root, TestVolumes.java()));
            assertTrue(e.getMessage().contains(root.toString()), e.getMessage());
            assertEquals(root, c.root());
        }
        // released on close
        VolumeCatalog.open(root, TestVolumes.java()).close();
    }

    /** The lock is an OS lock: another JVM sees the directory busy while this one holds it, and free after. */
    @Test
    void theDataDirectoryIsExclusiveAcrossProcesses() throws Exception {
        try (VolumeCatalog c = VolumeCatalog.open(root, TestVolumes.java())) {
            assertEquals("busy", runChild());
        }
        assertEquals("opened", runChild());
    }

    private String runChild() throws Exception {
        String cp = codeSource(VolumeCatalog.class) + File.pathSeparator + codeSource(VolumeCatalogTest.class);
        Path java = Path.of(System.getProperty("java.home"), "bin", "java");
        Process p = new ProcessBuilder(java.toString(), "-cp", cp, LockProbe.class.getName(), root.toString())
                .redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8).trim();
        assertEquals(0, p.waitFor(), out);
        return out;
    }

    private static String codeSource(Class<?> c) throws Exception {
        return Path.of(c.getProtectionDomain().getCodeSource().getLocation().toURI()).toString();
    }

    /** Child-process entry point for the cross-process lock test. */
    public static final class LockProbe {
        public static void main(String[] args) throws IOException {
            try (VolumeCatalog c = VolumeCatalog.open(Path.of(args[0]), TestVolumes.java())) {
                System.out.println("opened");
            } catch (DataDirBusyException e) {
                System.out.println("busy");
            }
        }
    }

    @Test
    void createListOpenAndDelete() throws IOException {
        try (VolumeCatalog c = VolumeCatalog.open(root, TestVolumes.java())) {
            assertEquals(List.of(), c.names());
            Volume b = c.create("beta", 1 << 20, 4096, 64 << 10, false);
            Volume a = c.create("alpha", 2 << 20, 512, 0, true);
            assertEquals(List.of("alpha", "beta"), c.names(), "sorted");
            assertTrue(c.exists("alpha"));
            assertFalse(c.exists("gamma"));
            assertSame(a, c.open("alpha"), "one open volume per name");
            assertEquals(List.of("alpha", "beta"), List.copyOf(c.openVolumes().keySet()));
            assertEquals(2 << 20, c.header("alpha").size());
            assertEquals(root.resolve("volumes").resolve("beta"), c.volumeDir("beta"));
            assertEquals(root.resolve("volumes").resolve("beta"), b.directory());
            try (BlockDevice.Session s = b.openSession()) {
                write(b, s, 4096, pattern(1, 100));
            }
            IOException dup = assertThrows(IOException.class, () -> c.create("beta", 1 << 20, 4096, 0, false));
            assertTrue(dup.getMessage().contains("already exists"), dup.getMessage());
            assertThrows(IllegalArgumentException.class, () -> c.create("../escape", 1 << 20, 4096, 0, false));
            assertThrows(IllegalArgumentException.class, () -> c.create("", 1 << 20, 4096, 0, false));
            assertThrows(NoSuchFileException.class, () -> c.open("gamma"));
            assertThrows(NoSuchFileException.class, () -> c.delete("gamma"));

            c.delete("alpha");
            assertEquals(List.of("beta"), c.names());
            assertFalse(Files.exists(root.resolve("volumes").resolve("alpha")));
            assertFalse(c.openVolumes().containsKey("alpha"));
        }
        // close() closed every volume cleanly; data survives a new catalog
        try (VolumeCatalog c = VolumeCatalog.open(root, TestVolumes.java())) {
            assertTrue(c.header("beta").clean(), "listing reads the header without opening");
            assertTrue(c.openVolumes().isEmpty());
            Volume b = c.open("beta");
            assertTrue(b.recovery().wasClean());
            try (BlockDevice.Session s = b.openSession()) {
                assertArrayEquals(pattern(1, 100), read(b, s, 4096, 100));
            }
        }
    }

    /** volume.meta is written last: a create cut short by a crash (e.g. while preallocating) is not a volume. */
    @Test
    void aCreateInterruptedByACrashDoesNotBlockTheName() throws IOException {
        try (VolumeCatalog c = VolumeCatalog.open(root, TestVolumes.java())) {
            Path partial = root.resolve("volumes").resolve("x");
            Files.createDirectories(partial);
            Files.write(partial.resolve(Volume.DATA_FILE), new byte[4096]);
            assertEquals(List.of(), c.names());
            Volume x = c.create("x", 1 << 20, 4096, 0, false);
            assertEquals(1 << 20, Files.size(partial.resolve(Volume.DATA_FILE)));
            assertTrue(x.recovery().wasClean());
            assertEquals(List.of("x"), c.names());
        }
    }

    @Test
    void aDirectoryWithoutAHeaderIsNotAVolume() throws IOException {
        try (VolumeCatalog c = VolumeCatalog.open(root, TestVolumes.java())) {
            Files.createDirectories(root.resolve("volumes").resolve("leftover"));
            Files.writeString(root.resolve("volumes").resolve("stray-file"), "x");
            assertEquals(List.of(), c.names());
            assertFalse(c.exists("leftover"));
        }
    }
}

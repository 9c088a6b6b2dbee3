package io.snapbd.nativeio;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

class NativeFilesTest {

    private static final long MIB = 1 << 20;

    // Under target/, i.e. on the build disk (ext4 here), rather than a /tmp that may be a tmpfs.
    private Path dir;

    @BeforeEach
    void createDir() throws IOException {
        Files.createDirectories(Path.of("target"));
        dir = Files.createTempDirectory(Path.of("target").toAbsolutePath(), "native-files-");
    }

    @AfterEach
    void deleteDir() throws IOException {
        deleteTree(dir);
    }

    @Test
    void libcIsAvailable() {
        assertTrue(NativeFiles.available());
    }

    @Test
    void preallocateAllocatesRealBlocks() throws Exception {
        Path file = Files.createFile(dir.resolve("volume"));
        NativeFiles.preallocate(file, 64 * MIB);

        assertEquals(64 * MIB, Files.size(file));
        assertEquals(64 * MIB, du(file, "--apparent-size"));
        assertTrue(du(file) >= 64 * MIB, "not sparse: du says " + du(file));
    }

    @Test
    void preallocateKeepsExistingData() throws Exception {
        Path file = dir.resolve("volume");
        Files.write(file, new byte[] {1, 2, 3});
        NativeFiles.preallocate(file, MIB);

        byte[] data = Files.readAllBytes(file);
        assertEquals(MIB, data.length);
        assertArrayEquals(new byte[] {1, 2, 3, 0}, Arrays.copyOf(data, 4));
    }

    @Test
    void preallocateMissingFileNamesIt() {
        Path file = dir.resolve("missing");
        IOException e = assertThrows(IOException.class, () -> NativeFiles.preallocate(file, MIB));
        assertTrue(e.getMessage().contains(file.toString()), e.getMessage());
        assertTrue(e.getMessage().contains("No such file or directory"), e.getMessage());
    }

    // tmpfs refuses up front a request larger than the whole file system, without allocating anything.
    @Test
    void preallocateBeyondFreeSpaceSaysSo() throws Exception {
        Path shm = Path.of("/dev/shm");
        assumeTrue(Files.isWritable(shm) && "tmpfs".equals(Files.getFileStore(shm).type()));
        Path file = Files.createTempFile(shm, "snapbd-prealloc-", "");
        try {
            long size = Files.getFileStore(shm).getTotalSpace() + 1024 * MIB;
            IOException e = assertThrows(IOException.class, () -> NativeFiles.preallocate(file, size));
            assertEquals("not enough disk space to preallocate " + size + " bytes for " + file, e.getMessage());
        } finally {
            Files.delete(file);
        }
    }

    @Test
    void zeroRangeZeroesDataButKeepsSizeAndAllocation() throws Exception {
        assumeTrue(List.of("ext4", "xfs").contains(Files.getFileStore(dir).type()));
        Path file = dir.resolve("volume");
        byte[] data = new byte[(int) MIB];
        Arrays.fill(data, (byte) 0x77);
        Files.write(file, data);
        NativeFiles.preallocate(file, MIB);
        long allocated = du(file);

        try (NativeFiles.Zeroer zeroer = NativeFiles.openZeroer(file)) {
            assertTrue(zeroer.zeroRange(0, 0), "ext4 and xfs support FALLOC_FL_ZERO_RANGE");
            assertTrue(zeroer.zeroRange(4096, 65536));
            // past the end of the file: KEEP_SIZE must not grow it
            assertTrue(zeroer.zeroRange(MIB, 8192));
        }

        Arrays.fill(data, 4096, 4096 + 65536, (byte) 0);
        assertArrayEquals(data, Files.readAllBytes(file));
        assertEquals(MIB, Files.size(file));
        assertTrue(du(file) >= allocated, "allocation kept: " + du(file) + " < " + allocated);
        assertNoProbeLeft();
    }

    @Test
    void probeAnswersWithoutTouchingTheFile() throws Exception {
        Path file = dir.resolve("volume");
        Files.write(file, new byte[] {9, 9, 9});
        try (NativeFiles.Zeroer zeroer = NativeFiles.openZeroer(file)) {
            zeroer.zeroRange(0, 0);
        }
        assertArrayEquals(new byte[] {9, 9, 9}, Files.readAllBytes(file));
        assertNoProbeLeft();
    }

    // tmpfs has no ZERO_RANGE today; whatever the probe says must match what zeroRange does.
    @Test
    void tmpfsAnswerMatchesBehaviour() throws Exception {
        Path shm = Path.of("/dev/shm");
        assumeTrue(Files.isWritable(shm));
        Path shmDir = Files.createTempDirectory(shm, "snapbd-zero-");
        try {
            Path file = shmDir.resolve("volume");
            byte[] data = new byte[8192];
            Arrays.fill(data, (byte) 1);
            Files.write(file, data);
            try (NativeFiles.Zeroer zeroer = NativeFiles.openZeroer(file)) {
                boolean supported = zeroer.zeroRange(0, 0);
                assertEquals(supported, zeroer.zeroRange(0, 4096));
                if (supported) {
                    Arrays.fill(data, 0, 4096, (byte) 0);
                }
            }
            assertArrayEquals(data, Files.readAllBytes(file));
        } finally {
            deleteTree(shmDir);
        }
    }

    @Test
    void openZeroerOnMissingFileNamesIt() {
        Path file = dir.resolve("missing");
        IOException e = assertThrows(IOException.class, () -> NativeFiles.openZeroer(file));
        assertTrue(e.getMessage().contains(file.toString()), e.getMessage());
    }

    @Test
    void closedZeroerRefusesWork() throws Exception {
        Path file = Files.createFile(dir.resolve("volume"));
        NativeFiles.Zeroer zeroer = NativeFiles.openZeroer(file);
        zeroer.close();
        zeroer.close();
        assertThrows(IOException.class, () -> zeroer.zeroRange(0, 4096));
    }

    private void assertNoProbeLeft() throws IOException {
        try (Stream<Path> files = Files.list(dir)) {
            assertFalse(files.anyMatch(p -> p.getFileName().toString().startsWith(".zero-probe-")));
        }
    }

    /** Bytes as reported by du(1): allocated on disk, or the length with --apparent-size. */
    private static long du(Path file, String... options) throws Exception {
        List<String> command = new ArrayList<>(List.of("du", "-B1"));
        command.addAll(List.of(options));
        command.add(file.toString());
        Process process = new ProcessBuilder(command).redirectErrorStream(true).start();
        String out = new String(process.getInputStream().readAllBytes()).trim();
        assertEquals(0, process.waitFor(), out);
        return Long.parseLong(out.split("\\s+")[0]);
    }

    private static void deleteTree(Path root) throws IOException {
        try (Stream<Path> paths = Files.walk(root)) {
            for (Path p : paths.sorted(Comparator.reverseOrder()).toList()) {
                Files.delete(p);
            }
        }
    }
}

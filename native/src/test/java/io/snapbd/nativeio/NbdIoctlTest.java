package io.snapbd.nativeio;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeFalse;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class NbdIoctlTest {

    /** _IO(0xab, nr) as include/uapi/linux/nbd.h and asm-generic/ioctl.h define it. */
    private static long io(int nr) {
        return (0xabL << 8) | nr;
    }

    @Test
    void constantsMatchTheKernelHeader() {
        assertEquals(0xab00L, NbdIoctl.NBD_SET_SOCK);
        assertEquals(0xab03L, NbdIoctl.NBD_DO_IT);
        assertEquals(io(1), NbdIoctl.NBD_SET_BLKSIZE);
        assertEquals(io(2), NbdIoctl.NBD_SET_SIZE);
        assertEquals(io(4), NbdIoctl.NBD_CLEAR_SOCK);
        assertEquals(io(5), NbdIoctl.NBD_CLEAR_QUE);
        assertEquals(io(6), NbdIoctl.NBD_PRINT_DEBUG);
        assertEquals(io(7), NbdIoctl.NBD_SET_SIZE_BLOCKS);
        assertEquals(io(8), NbdIoctl.NBD_DISCONNECT);
        assertEquals(io(9), NbdIoctl.NBD_SET_TIMEOUT);
        assertEquals(0xab0aL, NbdIoctl.NBD_SET_FLAGS);
    }

    // This host's kernel has no nbd driver, so the device node does not exist.
    @Test
    void missingDeviceSaysToLoadTheModule() {
        assumeFalse(Files.exists(Path.of("/dev/nbd0")));
        IOException e = assertThrows(IOException.class, () -> NbdIoctl.openDevice("/dev/nbd0"));
        assertEquals("no such device /dev/nbd0: load the nbd module (modprobe nbd)", e.getMessage());
    }

    // A regular file answers every nbd ioctl with ENOTTY, which shows the call and its error path.
    @Test
    void failedIoctlNamesItselfAndTheError(@TempDir Path dir) throws Exception {
        Path file = Files.createFile(dir.resolve("not-a-device"));
        int fd = NbdIoctl.openDevice(file.toString());
        try {
            IOException e = assertThrows(IOException.class, () -> NbdIoctl.setBlockSize(fd, 4096));
            assertTrue(e.getMessage().startsWith("NBD_SET_BLKSIZE failed: Inappropriate ioctl for device"),
                    e.getMessage());
            e = assertThrows(IOException.class, () -> NbdIoctl.setSock(fd, fd));
            assertTrue(e.getMessage().startsWith("NBD_SET_SOCK failed: "), e.getMessage());
        } finally {
            NbdIoctl.closeDevice(fd);
        }
    }
}

package io.snapbd.nativeio;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.nio.ByteBuffer;
import jnr.ffi.Memory;
import jnr.ffi.Pointer;
import jnr.ffi.Runtime;
import org.junit.jupiter.api.Test;

class LibCTest {

    private static final long FIONREAD = 0x541B;

    // ioctl is variadic in C: check the third argument really arrives, here as an int* to fill.
    @Test
    void variadicIoctlPassesItsArgument() throws Exception {
        try (SocketPairs.SocketPair pair = SocketPairs.create()) {
            pair.first().write(ByteBuffer.wrap(new byte[] {1, 2, 3, 4, 5}));
            Pointer count = Memory.allocateDirect(Runtime.getSystemRuntime(), 4);

            assertEquals(0, Native.libc().ioctl(pair.second().fd(), FIONREAD, count.address()));
            assertEquals(5, count.getInt(0));
        }
    }

    @Test
    void errnoAndStrerror() throws Exception {
        assertEquals(-1, Native.libc().close(-1));
        assertEquals(9, Native.errno());
        assertEquals("Bad file descriptor (errno 9)", Native.strerror(9));
    }
}

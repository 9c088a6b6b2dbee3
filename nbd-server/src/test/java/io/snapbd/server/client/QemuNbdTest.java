package io.snapbd.server.client;

import io.snapbd.server.protocol.Nbd;

import java.io.RandomAccessFile;
import java.nio.file.Path;

import static org.junit.jupiter.api.Assertions.assertEquals;

/** The client against qemu-nbd serving a sparse raw file. */
class QemuNbdTest extends ServerContractTest {

    @Override
    PeerServer startServer(Path dir) throws Exception {
        Path file = dir.resolve("disk.raw");
        try (RandomAccessFile f = new RandomAccessFile(file.toFile(), "rw")) {
            f.setLength(SIZE);      // sparse: never-written areas are holes in the file
        }
        return PeerServer.qemuNbd(dir, file, "-x", "disk", "-D", "qemu test disk");
    }

    @Override
    NbdUri uri() {
        return server.uri("disk");
    }

    @Override
    boolean sendsHoleChunks() {
        return true;
    }

    @Override
    void onReadPastEnd(NbdException e) {
        assertEquals(Nbd.EINVAL, e.errno(), e.getMessage());
    }

    @Override
    void onWritePastEnd(NbdException e) {
        // The spec says a server SHOULD answer ENOSPC here; qemu-nbd 7.2 answers EINVAL ("operation past EOF").
        assertEquals(Nbd.EINVAL, e.errno(), e.getMessage());
    }
}

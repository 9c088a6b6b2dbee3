package io.snapbd.server.client;

import io.snapbd.server.protocol.Nbd;

import java.nio.file.Path;

import static org.junit.jupiter.api.Assertions.assertEquals;

/** The client against nbdkit's memory plugin (a sparse RAM disk). */
class NbdkitTest extends ServerContractTest {

    @Override
    PeerServer startServer(Path dir) {
        return PeerServer.nbdkit(dir, "memory", "64M");
    }

    @Override
    boolean sendsHoleChunks() {
        return false;       // nbdkit 1.32 answers every read with one OFFSET_DATA chunk, zeroes included
    }

    @Override
    void onReadPastEnd(NbdException e) {
        assertEquals(Nbd.EINVAL, e.errno(), e.getMessage());
    }

    @Override
    void onWritePastEnd(NbdException e) {
        assertEquals(Nbd.ENOSPC, e.errno(), e.getMessage());
    }
}

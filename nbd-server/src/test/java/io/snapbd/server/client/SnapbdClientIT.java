package io.snapbd.server.client;

import io.snapbd.server.protocol.Nbd;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Path;

import static org.junit.jupiter.api.Assertions.assertEquals;

/** The client against snapbd itself, from the shaded jar, serving a fresh 64 MiB volume {@code v}. */
class SnapbdClientIT extends ServerContractTest {

    @TempDir
    static Path templateDir;
    static Path template;

    @BeforeAll
    static void createVolume() {
        template = PeerServer.snapbdDataDir(templateDir, "v", "64M");
    }

    @Override
    PeerServer startServer(Path dir) throws IOException {
        return PeerServer.snapbd(dir, template);
    }

    @Override
    NbdUri uri() {
        return server.uri("v");
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
        assertEquals(Nbd.ENOSPC, e.errno(), e.getMessage());
    }
}

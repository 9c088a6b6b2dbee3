package io.snapbd.server.kernel;

import com.sun.nio.file.ExtendedOpenOption;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.time.Duration;
import java.util.concurrent.CompletableFuture;

/**
 * One O_DIRECT read of an nbd device's first block on a thread of its own. It tells a device the kernel has given up
 * (the read fails at once) from one still waiting for its server (the read blocks until a connection comes): see
 * docs/kernel-attach.md, "Restart with the devices kept".
 */
final class ReadProbe {
    private final CompletableFuture<String> done = new CompletableFuture<>();
    private volatile boolean ok;

    static ReadProbe start(String device, int blockSize) {
        ReadProbe p = new ReadProbe();
        Thread t = new Thread(() -> {
            ByteBuffer buf = ByteBuffer.allocateDirect(2 * 4096).alignedSlice(4096).limit(Math.max(blockSize, 4096));
            try (FileChannel ch = FileChannel.open(Path.of(device), StandardOpenOption.READ, ExtendedOpenOption.DIRECT)) {
                ch.read(buf, 0);
                p.ok = true;
                p.done.complete("read");
            } catch (IOException | RuntimeException e) {
                p.done.complete("a read fails: " + e.getMessage());
            }
        }, "nbd-probe " + device);
        t.setDaemon(true);
        t.start();
        return p;
    }

    /** True when the read has ended (either way) within {@code d}. */
    boolean await(Duration d) {
        return Futures.endedWithin(done, d);
    }

    boolean succeeded() {
        return ok;
    }

    String outcome() {
        return ok ? "a read succeeded without snapbd: another server answers it" : done.getNow("");
    }
}

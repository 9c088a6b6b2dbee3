package io.snapbd.server.mirror;

import io.snapbd.engine.mirror.LegIo;
import io.snapbd.engine.mirror.TagTable;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;

/** What {@link NbdLegTest} and {@code NbdLegIT} do alike to a leg; the checks stay in the tests. */
public final class LegTestSupport {

    private LegTestSupport() {
    }

    /** Something that stops the leg's peer (a kill). */
    @FunctionalInterface
    public interface Kill {
        void run() throws Exception;
    }

    /**
     * Writes 1 MiB blocks to {@code leg} on a thread without end, runs {@code kill} once three writes completed,
     * and returns what the writer then failed with (null if it ended without one).
     */
    public static Throwable failureOfWritesDuring(NbdLeg leg, Kill kill) throws Exception {
        AtomicLong writes = new AtomicLong();
        AtomicReference<Throwable> failure = new AtomicReference<>();
        Thread writer = new Thread(() -> {
            ByteBuffer b = ByteBuffer.allocateDirect(1 << 20);
            try {
                for (long i = 0; ; i++) {
                    b.clear();
                    leg.blocks().write(b, (i % 4) << 20);
                    writes.incrementAndGet();
                }
            } catch (Throwable t) {
                failure.set(t);
            }
        }, "writer");
        writer.start();
        while (writes.get() < 3 && writer.isAlive()) {
            Thread.sleep(1);
        }
        kill.run();
        writer.join();
        return failure.get();
    }

    /** A complete change on one leg: ENTRY {@code tag} recorded, {@code data} written at {@code off} and forced, DONE. */
    public static void completeChange(TagTable t, LegIo io, long tag, long off, byte[] data) throws IOException {
        t.record(tag, off, data.length);
        io.write(ByteBuffer.wrap(data), off);
        io.force();
        t.markDone(new long[] {tag}, 1);
    }
}

package io.snapbd.server.transmission;

import static java.nio.charset.StandardCharsets.UTF_8;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.snapbd.nativeio.SocketPairs;
import java.nio.ByteBuffer;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Test;

class ReadPollingTest {

    private static final long SPIN = TimeUnit.MICROSECONDS.toNanos(50);

    @Test
    void eachMissDoublesTheReadsSkippedUpToTheCapAndACatchResetsIt() {
        ReadPolling p = new ReadPolling(SPIN, new AtomicInteger());
        assertTrue(p.pollDue());
        int[] expected = {1, 3, 7, 15, 31, 63, 63, 63};
        for (int skip : expected) {
            p.missed();
            assertEquals(skip, p.skip());
            for (int i = 0; i < skip; i++) {
                assertFalse(p.pollDue(), "read " + i + " of " + skip + " after a miss must not poll");
            }
            assertTrue(p.pollDue());
        }
        assertEquals(ReadPolling.MAX_SKIP, expected[expected.length - 1]);
        p.caught();
        p.missed();
        assertEquals(1, p.skip(), "a catch starts the backoff over");
    }

    @Test
    void bytesAlreadyQueuedAreCaughtByThePoll() throws Exception {
        try (SocketPairs.SocketPair pair = SocketPairs.create()) {
            pair.first().write(ByteBuffer.wrap("request".getBytes(UTF_8)));
            ReadPolling p = new ReadPolling(SPIN, new AtomicInteger());
            ByteBuffer dst = ByteBuffer.allocateDirect(64);
            assertEquals(7, p.read(pair.second(), dst, true, true));
            assertEquals("request", UTF_8.decode(dst.flip()).toString());
            assertEquals(0, p.skip(), "a catch is no miss");
        }
    }

    @Test
    void aPollThatCatchesNothingFallsBackToTheBlockingReadAndCountsAMiss() throws Exception {
        try (SocketPairs.SocketPair pair = SocketPairs.create()) {
            pair.second().setReceiveTimeout(1);     // the blocking read returns 0 once this passes
            ReadPolling p = new ReadPolling(SPIN, new AtomicInteger());
            assertEquals(0, p.read(pair.second(), ByteBuffer.allocateDirect(64), true, true));
            assertEquals(1, p.skip());
        }
    }

    @Test
    void endOfStreamSeenWhilePolling() throws Exception {
        try (SocketPairs.SocketPair pair = SocketPairs.create()) {
            pair.first().close();
            ReadPolling p = new ReadPolling(SPIN, new AtomicInteger());
            assertEquals(-1, p.read(pair.second(), ByteBuffer.allocateDirect(64), true, true));
        }
    }

    @Test
    void aPollInsideARequestNeitherBacksOffNorResetsTheBackoff() throws Exception {
        try (SocketPairs.SocketPair pair = SocketPairs.create()) {
            pair.second().setReceiveTimeout(1);
            ReadPolling p = new ReadPolling(SPIN, new AtomicInteger());
            assertEquals(0, p.read(pair.second(), ByteBuffer.allocateDirect(64), true, false));
            assertEquals(0, p.skip(), "a miss inside a request is no miss");

            p.missed();
            p.missed();
            assertEquals(3, p.skip());
            pair.first().write(ByteBuffer.wrap("payload".getBytes(UTF_8)));
            ByteBuffer dst = ByteBuffer.allocateDirect(64);
            assertEquals(7, p.read(pair.second(), dst, true, false));
            assertEquals(3, p.skip(), "a read inside a request neither counts down nor resets the backoff");
        }
    }

    @Test
    void noPollWhenOtherConnectionsAreServedOrAnotherReaderPolls() throws Exception {
        try (SocketPairs.SocketPair pair = SocketPairs.create()) {
            pair.second().setReceiveTimeout(1);
            ReadPolling p = new ReadPolling(SPIN, new AtomicInteger());
            assertEquals(0, p.read(pair.second(), ByteBuffer.allocateDirect(64), false, true));
            assertEquals(0, p.skip(), "not alone: no poll, so no miss");

            AtomicInteger taken = new AtomicInteger(1);
            ReadPolling q = new ReadPolling(SPIN, taken);
            assertEquals(0, q.read(pair.second(), ByteBuffer.allocateDirect(64), true, true));
            assertEquals(0, q.skip(), "another reader polls: no poll, so no miss");
            assertEquals(1, taken.get());
        }
    }
}

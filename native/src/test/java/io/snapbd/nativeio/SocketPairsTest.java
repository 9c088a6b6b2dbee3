package io.snapbd.nativeio;

import static java.nio.charset.StandardCharsets.UTF_8;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.ClosedChannelException;
import java.util.concurrent.CompletableFuture;
import org.junit.jupiter.api.Test;

class SocketPairsTest {

    @Test
    void bytesWrittenOnOneEndArriveAtTheOther() throws Exception {
        try (SocketPairs.SocketPair pair = SocketPairs.create()) {
            assertTrue(pair.first().fd() >= 0);
            assertTrue(pair.second().fd() >= 0);
            assertNotEquals(pair.first().fd(), pair.second().fd());

            assertEquals("hello", send(pair.first(), pair.second(), "hello", false));
            assertEquals("world", send(pair.second(), pair.first(), "world", true));
        }
    }

    @Test
    void readsAndWritesStartAtTheBufferPosition() throws Exception {
        try (SocketPairs.SocketPair pair = SocketPairs.create()) {
            ByteBuffer src = ByteBuffer.wrap("..abc".getBytes(UTF_8));
            src.position(2);
            assertEquals(3, pair.first().write(src));
            assertEquals(5, src.position());

            ByteBuffer dst = ByteBuffer.allocate(6);
            dst.put((byte) '>');
            assertEquals(3, pair.second().read(dst));
            assertEquals(">abc", new String(dst.array(), 0, dst.position(), UTF_8));
            assertEquals(0, pair.second().read(ByteBuffer.allocate(0)));
        }
    }

    @Test
    void closedPeerMeansEndOfStreamAndBrokenPipe() throws Exception {
        try (SocketPairs.SocketPair pair = SocketPairs.create()) {
            pair.first().close();
            assertEquals(-1, pair.second().read(ByteBuffer.allocate(8)));
            IOException e = assertThrows(IOException.class, () -> pair.second().write(ByteBuffer.allocate(8)));
            assertTrue(e.getMessage().contains("Broken pipe"), e.getMessage());
            assertThrows(ClosedChannelException.class, () -> pair.first().read(ByteBuffer.allocate(8)));
        }
    }

    // Closing an end must release a thread blocked reading it, or the server could not stop.
    @Test
    void closeReleasesABlockedReader() throws Exception {
        try (SocketPairs.SocketPair pair = SocketPairs.create()) {
            CompletableFuture<Object> reader = CompletableFuture.supplyAsync(() -> {
                try {
                    return pair.second().read(ByteBuffer.allocate(8));
                } catch (IOException e) {
                    return e;
                }
            });
            pair.second().close();
            Object result = reader.join();
            assertTrue(Integer.valueOf(-1).equals(result) || result instanceof ClosedChannelException, "got " + result);
        }
    }

    // The transmission code sends a reply header and the data behind it as one gathering write.
    @Test
    void gatheringWritesSendEveryBufferInOrder() throws Exception {
        try (SocketPairs.SocketPair pair = SocketPairs.create()) {
            for (boolean direct : new boolean[]{true, false}) {
                ByteBuffer header = ByteBuffer.allocateDirect(8);
                header.put("..HEAD".getBytes(UTF_8)).flip().position(2);
                ByteBuffer body = direct ? ByteBuffer.allocateDirect(5) : ByteBuffer.allocate(5);
                body.put("body!".getBytes(UTF_8)).flip();
                ByteBuffer[] gather = {ByteBuffer.allocateDirect(0), header, body};
                long total = 0;
                while (header.hasRemaining() || body.hasRemaining()) {
                    total += pair.first().write(gather);
                }
                assertEquals(9, total);
                assertEquals(6, header.position());
                assertEquals(5, body.position());
                ByteBuffer dst = ByteBuffer.allocate(9);
                while (dst.hasRemaining()) {
                    pair.second().read(dst);
                }
                assertEquals("HEADbody!", new String(dst.array(), UTF_8));
            }
            assertEquals(0, pair.first().write(new ByteBuffer[]{ByteBuffer.allocate(0)}));
        }
    }

    private static String send(SocketPairs.End from, SocketPairs.End to, String text, boolean direct)
            throws IOException {
        byte[] bytes = text.getBytes(UTF_8);
        ByteBuffer src = direct ? ByteBuffer.allocateDirect(bytes.length) : ByteBuffer.allocate(bytes.length);
        src.put(bytes).flip();
        while (src.hasRemaining()) {
            from.write(src);
        }
        ByteBuffer dst = direct ? ByteBuffer.allocateDirect(bytes.length) : ByteBuffer.allocate(bytes.length);
        while (dst.hasRemaining()) {
            assertTrue(to.read(dst) > 0);
        }
        byte[] got = new byte[bytes.length];
        dst.flip().get(got);
        return new String(got, UTF_8);
    }
}

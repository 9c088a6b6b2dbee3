package io.snapbd.nativeio;

import static java.nio.charset.StandardCharsets.UTF_8;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.ClosedChannelException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
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

    // Closing an end must release a thread blocked reading it, or the server could not stop. The close comes
    // only once the reader is inside read(2) (its kernel task says so), so the one right outcome is end of stream.
    @Test
    void closeReleasesAReaderBlockedInRead() throws Exception {
        try (SocketPairs.SocketPair pair = SocketPairs.create()) {
            CompletableFuture<String> tid = new CompletableFuture<>();
            CompletableFuture<Object> reader = CompletableFuture.supplyAsync(() -> {
                try {
                    tid.complete(Path.of("/proc/thread-self").toRealPath().getFileName().toString());
                    return pair.second().read(ByteBuffer.allocate(8));
                } catch (IOException e) {
                    return e;
                }
            });
            awaitBlockedInRead(tid.get(1, TimeUnit.MINUTES));
            assertTrue(!reader.isDone(), "the reader is blocked");
            pair.second().close();
            assertEquals(-1, reader.get(1, TimeUnit.MINUTES), "a reader blocked in read(2) sees end of stream");
        }
    }

    // The other order: a read after the close never touches the (possibly reused) descriptor.
    @Test
    void readAfterCloseIsClosedChannel() throws Exception {
        try (SocketPairs.SocketPair pair = SocketPairs.create()) {
            pair.second().close();
            assertThrows(ClosedChannelException.class, () -> pair.second().read(ByteBuffer.allocate(8)));
        }
    }

    /** Waits until thread {@code tid} of this process sleeps in the read(2) system call (/proc/self/task/TID/syscall). */
    private static void awaitBlockedInRead(String tid) throws Exception {
        String read = switch (System.getProperty("os.arch")) {
            case "amd64", "x86_64" -> "0";
            case "aarch64" -> "63";
            default -> throw new AssertionError("read(2)'s system call number on " + System.getProperty("os.arch") + " is not known here");
        };
        Path syscall = Path.of("/proc/self/task", tid, "syscall");
        for (int i = 0; i < 6000; i++) {
            String[] f = Files.readString(syscall).trim().split(" ");
            if (f[0].equals(read)) {
                return;
            }
            Thread.sleep(10);
        }
        throw new AssertionError("thread " + tid + " never blocked in read(2): " + Files.readString(syscall));
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

package io.snapbd.server.transmission;

import io.snapbd.server.protocol.Nbd;
import org.junit.jupiter.api.Test;

import java.io.ByteArrayOutputStream;
import java.nio.ByteBuffer;
import java.nio.channels.GatheringByteChannel;
import java.util.HashSet;
import java.util.Set;
import java.util.concurrent.CountDownLatch;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Change tasks' replies (issue 24): a task that finds the connection's send lock taken leaves its reply to the holder
 * and goes on instead of waiting; the holder sends every reply left meanwhile, whole, in one more system call.
 */
class ReplyCombiningTest {

    /** A socket whose first write blocks until released; records the bytes and counts the calls. */
    static final class HeldChannel implements GatheringByteChannel {
        final CountDownLatch inFirstWrite = new CountDownLatch(1);
        final CountDownLatch release = new CountDownLatch(1);
        final ByteArrayOutputStream out = new ByteArrayOutputStream();
        int calls;

        @Override
        public synchronized long write(ByteBuffer[] srcs, int offset, int length) {
            if (calls++ == 0) {
                inFirstWrite.countDown();
                try {
                    release.await();
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
            }
            long n = 0;
            for (int i = offset; i < offset + length; i++) {
                byte[] b = new byte[srcs[i].remaining()];
                srcs[i].get(b);
                out.write(b, 0, b.length);
                n += b.length;
            }
            return n;
        }

        @Override
        public long write(ByteBuffer[] srcs) {
            return write(srcs, 0, srcs.length);
        }

        @Override
        public int write(ByteBuffer src) {
            return (int) write(new ByteBuffer[] {src}, 0, 1);
        }

        @Override
        public boolean isOpen() {
            return true;
        }

        @Override
        public void close() {
        }
    }

    /** Starts {@code t} and tells whether it ended while the holder still writes (a guard, not a measure: 60 s). */
    private static boolean ends(Thread t) throws InterruptedException {
        t.start();
        t.join(60_000);
        return !t.isAlive();
    }

    @Test
    void tasksLeaveTheirRepliesToTheHolderWhichSendsThemInOneCall() throws Exception {
        HeldChannel ch = new HeldChannel();
        Replies replies = new Replies(ch, null, "v");
        Thread holder = new Thread(() -> {
            try {
                replies.sendSimpleReply(1, 0);      // its write blocks: it holds the send lock
            } catch (Exception e) {
                throw new RuntimeException(e);
            }
        });
        holder.start();
        ch.inFirstWrite.await();
        int tasks = 10;
        for (int i = 0; i < tasks; i++) {
            long handle = 100 + i;
            int errno = i == 3 ? Nbd.EIO : 0;
            Thread t = new Thread(() -> {
                try {
                    replies.sendSimpleReplyOrLeave(handle, errno);
                } catch (Exception e) {
                    throw new RuntimeException(e);
                }
            });
            assertTrue(ends(t), "task " + i + " waited for the send lock instead of leaving its reply");
        }
        assertEquals(1, ch.calls, "nothing sent while the holder writes");
        ch.release.countDown();
        holder.join();
        assertEquals(2, ch.calls, "the holder sent the ten replies in one call as it released the lock");
        ByteBuffer out = ByteBuffer.wrap(ch.out.toByteArray());
        assertEquals(16 * (1 + tasks), out.remaining());
        assertEquals(Nbd.SIMPLE_REPLY_MAGIC, out.getInt());
        assertEquals(0, out.getInt());
        assertEquals(1, out.getLong());
        Set<Long> seen = new HashSet<>();
        while (out.hasRemaining()) {
            assertEquals(Nbd.SIMPLE_REPLY_MAGIC, out.getInt());
            int errno = out.getInt();
            long handle = out.getLong();
            assertEquals(handle == 103 ? Nbd.EIO : 0, errno, "reply " + handle);
            assertTrue(seen.add(handle), "reply " + handle + " twice");
        }
        assertEquals(tasks, seen.size());
        replies.sendSimpleReplyOrLeave(200, 0);      // the lock is free: sent at once
        assertEquals(3, ch.calls);
        assertFalse(out.hasRemaining());
    }
}

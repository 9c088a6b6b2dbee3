package io.snapbd.nativeio;

import org.junit.jupiter.api.Test;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.atomic.AtomicReference;

import static org.junit.jupiter.api.Assertions.assertEquals;

class ThreadPriorityTest {

    /** Field 19 of /proc/thread-self/stat: the calling thread's nice value. */
    private static int niceOfCurrentThread() throws Exception {
        String stat = Files.readString(Path.of("/proc/thread-self/stat"));
        String[] f = stat.substring(stat.lastIndexOf(')') + 2).split(" ");
        return Integer.parseInt(f[16]);
    }

    @Test
    void setsTheNiceValueOfTheCallingThreadOnly() throws Exception {
        int mine = niceOfCurrentThread();
        AtomicReference<Object> seen = new AtomicReference<>();
        Thread t = new Thread(() -> {
            try {
                ThreadPriority.setCurrentNice(7);
                seen.set(niceOfCurrentThread());
            } catch (Exception e) {
                seen.set(e);
            }
        });
        t.start();
        t.join();
        assertEquals(7, seen.get());
        assertEquals(mine, niceOfCurrentThread(), "only the calling thread changes");
    }
}

package io.snapbd.nativeio;

import java.io.IOException;

/** The nice value of a single thread: Linux schedules threads as tasks, so setpriority(2) on the thread id. */
public final class ThreadPriority {

    private static final int PRIO_PROCESS = 0;

    private ThreadPriority() {
    }

    public static boolean available() {
        return Native.available();
    }

    /** Sets the calling thread's nice value (-20..19; raising it needs no privilege). */
    public static void setCurrentNice(int nice) throws IOException {
        LibC libc = Native.libc();
        int tid = libc.gettid();
        if (libc.setpriority(PRIO_PROCESS, tid, nice) != 0) {
            throw new IOException("setpriority(thread " + tid + ", " + nice + "): " + Native.strerror(Native.errno()));
        }
    }
}

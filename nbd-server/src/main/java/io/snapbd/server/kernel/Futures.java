package io.snapbd.server.kernel;

import java.time.Duration;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

/** Bounded waits on the futures of the kernel threads (DO_IT, read probes). */
final class Futures {

    private Futures() {
    }

    /**
     * True when {@code f} has completed, normally or not, within {@code d}. An interrupt ends the wait (the flag is
     * set again) and answers whether it has completed by then.
     */
    static boolean endedWithin(Future<?> f, Duration d) {
        try {
            f.get(d.toMillis(), TimeUnit.MILLISECONDS);
            return true;
        } catch (TimeoutException e) {
            return false;
        } catch (ExecutionException e) {
            return true;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return f.isDone();
        }
    }
}

package io.snapbd.server.kernel;

import java.lang.annotation.ElementType;
import java.lang.annotation.Retention;
import java.lang.annotation.RetentionPolicy;
import java.lang.annotation.Target;
import java.util.concurrent.Callable;

/**
 * Marks an integration test class that boots a User-Mode Linux guest, and names what it runs there: a
 * {@link Callable} with a no-argument constructor that boots the guest, runs the scenario and returns what the
 * class's tests check. A guest has one CPU and keeps about one of the host's busy, so {@link GuestRuns} runs these
 * in the background, one guest at a time, while the other integration tests run, and {@link GuestsLast} orders the
 * marked classes after the others, so that each finds its outcome ready (or nearly) when its turn comes.
 * (docs/architecture.md, "Where the tests live".)
 */
@Target(ElementType.TYPE)
@Retention(RetentionPolicy.RUNTIME)
public @interface UmlGuest {
    /** What the class runs in its guest. */
    Class<? extends Callable<?>> value();
}

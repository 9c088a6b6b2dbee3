package io.snapbd.server.kernel;

import org.junit.platform.engine.TestSource;
import org.junit.platform.engine.support.descriptor.ClassSource;
import org.junit.platform.launcher.TestExecutionListener;
import org.junit.platform.launcher.TestIdentifier;
import org.junit.platform.launcher.TestPlan;

import java.util.Map;
import java.util.Optional;
import java.util.concurrent.Callable;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;

/**
 * Runs the guests of the {@link UmlGuest} classes of a test plan in the background, one at a time on one thread,
 * from the moment the plan starts, so that they overlap the other integration tests instead of following them (a
 * guest keeps about one of the host's CPUs busy; the other tests mostly run one process at a time). Each class then
 * takes its guest's outcome with {@link #outcome}, which waits for it. Only when the configuration parameter
 * {@value #BACKGROUND} is true (the nbd-server module's failsafe configuration); otherwise, and for a class
 * whose guest was not started here, {@link #outcome} runs the guest on the calling thread, as before.
 * <p>
 * Registered as a launcher listener through {@code META-INF/services}.
 */
public final class GuestRuns implements TestExecutionListener {
    /** Configuration parameter that turns the background runs on. */
    public static final String BACKGROUND = "snapbd.guests.background";

    private static final Map<Class<?>, Future<Object>> STARTED = new ConcurrentHashMap<>();
    private static volatile ExecutorService executor;

    /**
     * The plan whose guests this listener started. A test may run a launcher of its own (ServerProcessIT does), whose
     * plan starts and finishes inside this one: its end must not stop this plan's guests.
     */
    private TestPlan started;

    @Override
    public void testPlanExecutionStarted(TestPlan plan) {
        if (!plan.getConfigurationParameters().getBoolean(BACKGROUND).orElse(false)) {
            return;
        }
        started = plan;
        for (TestIdentifier root : plan.getRoots()) {
            startGuests(plan, root);
        }
    }

    @Override
    public void testPlanExecutionFinished(TestPlan plan) {
        if (plan != started) {
            return;
        }
        started = null;
        // A guest nobody waited for (its class did not run): cancelled, or interrupted if it runs.
        STARTED.values().forEach(f -> f.cancel(true));
        STARTED.clear();
        ExecutorService e = executor;
        if (e != null) {
            e.shutdownNow();
            executor = null;
        }
    }

    /** In plan order, which after {@link GuestsLast} is the order the classes will wait for them. */
    private static void startGuests(TestPlan plan, TestIdentifier node) {
        Optional<TestSource> source = node.getSource();
        if (source.isPresent() && source.get() instanceof ClassSource cs && node.isContainer()) {
            Class<?> type = cs.getJavaClass();
            UmlGuest guest = type.getAnnotation(UmlGuest.class);
            if (guest != null && !STARTED.containsKey(type)) {
                STARTED.put(type, executor().submit(() -> newRun(guest).call()));
            }
            return;
        }
        for (TestIdentifier child : plan.getChildren(node)) {
            startGuests(plan, child);
        }
    }

    private static synchronized ExecutorService executor() {
        if (executor == null) {
            executor = Executors.newSingleThreadExecutor(r -> {
                Thread t = new Thread(r, "uml-guests");
                t.setDaemon(true);
                return t;
            });
        }
        return executor;
    }

    private static Callable<?> newRun(UmlGuest guest) throws ReflectiveOperationException {
        var constructor = guest.value().getDeclaredConstructor();
        constructor.setAccessible(true);
        return constructor.newInstance();
    }

    /**
     * The outcome of {@code type}'s guest: the one started in the background (waiting for it to end), else run
     * now on this thread. Whatever the run threw (an assumption that aborts, an assertion) is thrown here.
     */
    @SuppressWarnings("unchecked")
    public static <R> R outcome(Class<?> type) throws Exception {
        UmlGuest guest = type.getAnnotation(UmlGuest.class);
        if (guest == null) {
            throw new IllegalArgumentException(type + " is not marked @UmlGuest");
        }
        Future<Object> started = STARTED.remove(type);
        if (started == null) {
            return (R) newRun(guest).call();
        }
        try {
            return (R) started.get();
        } catch (ExecutionException e) {
            Throwable cause = e.getCause();
            if (cause instanceof Error err) {
                throw err;
            }
            throw cause instanceof Exception ex ? ex : e;
        }
    }
}

package io.snapbd.server.it;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.io.TempDir;
import org.junit.platform.launcher.LauncherDiscoveryRequest;
import org.junit.platform.launcher.core.LauncherDiscoveryRequestBuilder;
import org.junit.platform.launcher.core.LauncherFactory;
import org.junit.platform.launcher.listeners.SummaryGeneratingListener;
import org.junit.platform.launcher.listeners.TestExecutionSummary;

import java.nio.file.Path;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.platform.engine.discovery.DiscoverySelectors.selectClass;

/**
 * The IT helper itself: a server that dies on its own fails the test it died in (not healed by the next
 * test's {@link ServerProcess#ensureRunning()}), and {@link ServerProcess#close()} checks how it ended.
 */
@Timeout(value = 5, unit = TimeUnit.MINUTES)
@ExtendWith(ServerLiveness.class)
class ServerProcessIT {

    @TempDir
    static Path tmp;

    /** Run only through the launcher below (a static nested class is not part of the outer class's run). */
    @ExtendWith(ServerLiveness.class)
    static class CrashAfterTheLastAssertion {
        static ServerProcess server;

        @Test
        void passesThenTheServerDies() throws Exception {
            assertTrue(server.isAlive());
            crash(server);
        }
    }

    /** A data directory with one small volume (an empty one would get the 1 GiB default volume). */
    static Path dataDir(String name) {
        Path d = tmp.resolve(name);
        ServerProcess.snapbd(d, "volume", "create", "v", "--size", "16M", "--save-size", "4M").assertOk();
        return d;
    }

    /** SIGKILL from outside the helper, as a crash of the server would end it ({@code kill9()} means "on purpose"). */
    static void crash(ServerProcess s) throws InterruptedException {
        s.process().toHandle().destroyForcibly();
        assertTrue(s.process().waitFor(60, TimeUnit.SECONDS));
    }

    @Test
    void aServerThatDiesAfterTheLastAssertionFailsThatTest() {
        try (ServerProcess s = ServerProcess.start(dataDir("victim"), "ServerProcessIT-victim")) {
            CrashAfterTheLastAssertion.server = s;
            LauncherDiscoveryRequest request = LauncherDiscoveryRequestBuilder.request()
                    .selectors(selectClass(CrashAfterTheLastAssertion.class)).build();
            SummaryGeneratingListener listener = new SummaryGeneratingListener();
            LauncherFactory.create().execute(request, listener);
            TestExecutionSummary summary = listener.getSummary();
            assertEquals(1, summary.getTestsStartedCount());
            assertEquals(1, summary.getTestsFailedCount(), "the crash after the last assertion must fail the test");
            String message = summary.getFailures().get(0).getException().getMessage();
            assertTrue(message.contains("died on its own") && message.contains("exit status 137"), message);

            // Reported once: the next test's ensureRunning() gets a fresh server, which closes cleanly.
            s.ensureRunning();
            assertTrue(s.isAlive());
        }
    }

    @Test
    void ensureRunningAndCloseFailOnAServerThatDiedOnItsOwn() throws Exception {
        ServerProcess s = ServerProcess.start(dataDir("ensure"), "ServerProcessIT-ensure");
        crash(s);
        AssertionError e = assertThrows(AssertionError.class, s::ensureRunning, "no silent restart");
        assertTrue(e.getMessage().contains("died on its own"), e.getMessage());
        s.ensureRunning();      // reported: now it restarts
        assertTrue(s.isAlive());
        crash(s);
        AssertionError c = assertThrows(AssertionError.class, s::close, "close() of a server that died on its own");
        assertTrue(c.getMessage().contains("died on its own"), c.getMessage());
    }

    @Test
    void stoppedOrKilledOnPurposeIsNotAFailureAndACleanStopExitsZero() {
        ServerProcess s = ServerProcess.start(dataDir("purpose"), "ServerProcessIT-purpose");
        s.kill9();
        s.assertAlive();
        s.ensureRunning();
        assertEquals(0, s.stop());
        s.assertAlive();
        s.restart();
        s.close();      // SIGTERM, exit 0
        assertTrue(!s.isAlive() && s.process().exitValue() == 0);
    }
}

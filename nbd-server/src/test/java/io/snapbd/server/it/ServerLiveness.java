package io.snapbd.server.it;

import org.junit.jupiter.api.extension.AfterEachCallback;
import org.junit.jupiter.api.extension.ExtensionContext;

/**
 * After each test: every {@link ServerProcess} still open is alive, unless the test stopped or killed it
 * itself. A crash after a test's last assertion fails that test instead of being healed by the next one's
 * {@link ServerProcess#ensureRunning()}.
 */
public final class ServerLiveness implements AfterEachCallback {

    @Override
    public void afterEach(ExtensionContext context) {
        ServerProcess.assertOpenServersAlive();
    }
}

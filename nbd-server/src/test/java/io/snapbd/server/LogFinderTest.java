package io.snapbd.server;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

class LogFinderTest {

    private final Log.Level before = Log.level();

    @AfterEach
    void restore() {
        Log.setLevel(before);
    }

    @Test
    void engineLoggersFollowTheServiceLogLevel() {
        System.Logger engine = System.getLogger("io.snapbd.engine.volume.Committer");
        Log.setLevel(Log.Level.ERROR);
        assertFalse(engine.isLoggable(System.Logger.Level.WARNING), "a warning is dropped at log level error");
        assertTrue(engine.isLoggable(System.Logger.Level.ERROR));
        Log.setLevel(Log.Level.WARN);
        assertTrue(engine.isLoggable(System.Logger.Level.WARNING));
        assertFalse(engine.isLoggable(System.Logger.Level.INFO));
        Log.setLevel(Log.Level.DEBUG);
        assertTrue(engine.isLoggable(System.Logger.Level.DEBUG));
    }
}

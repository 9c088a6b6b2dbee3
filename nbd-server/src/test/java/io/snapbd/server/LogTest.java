package io.snapbd.server;

import org.junit.jupiter.api.Test;

import java.nio.file.Files;
import java.nio.file.Path;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class LogTest {

    @Test
    void journalOnlyWhenStderrIsTheStreamSystemdNamed() throws Exception {
        assertFalse(Log.stderrIsJournal(null));
        assertFalse(Log.stderrIsJournal(""));
        Path stderr = Path.of("/proc/self/fd/2");
        long dev = ((Number) Files.getAttribute(stderr, "unix:dev")).longValue();
        long ino = ((Number) Files.getAttribute(stderr, "unix:ino")).longValue();
        assertTrue(Log.stderrIsJournal(dev + ":" + ino));
        assertFalse(Log.stderrIsJournal(dev + ":" + (ino + 1)), "stderr was redirected away from the journal");
    }

    @Test
    void levels() {
        assertEquals(Log.Level.DEBUG, Log.parseLevel(" debug "));
        assertEquals(Log.Level.WARN, Log.parseLevel("WARNING"));
        assertEquals(Log.Level.ERROR, Log.parseLevel("error"));
        assertThrows(IllegalArgumentException.class, () -> Log.parseLevel("verbose"));
    }
}

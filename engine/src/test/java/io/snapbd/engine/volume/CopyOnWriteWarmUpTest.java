package io.snapbd.engine.volume;

import io.snapbd.engine.io.JavaFileSpace;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The start-up warm-up: real copies through the connection's write calls, checked, and nothing left behind. */
class CopyOnWriteWarmUpTest {

    @TempDir
    Path dir;

    static final long WRITES_PER_ROUND = CopyOnWriteWarmUp.BLOCKS + CopyOnWriteWarmUp.BLOCKS / 4;

    @Test
    void everyFirstWriteAfterASnapshotCopiesAndTheScratchVolumeIsRemoved() throws IOException {
        Path scratch = dir.resolve("warm-up.tmp");
        CopyOnWriteWarmUp.Result r = CopyOnWriteWarmUp.run(scratch, new JavaFileSpace(), 2, Duration.ofHours(1));
        assertEquals(2 * WRITES_PER_ROUND, r.writes(), "every block once, then a quarter again, per round");
        assertEquals(2L * CopyOnWriteWarmUp.BLOCKS, r.copies(), "only first writes copy: " + r);
        assertFalse(Files.exists(scratch));
    }

    @Test
    void runsAtLeastTheMinimumOfRoundsAndAtMostTheLimit() throws IOException {
        CopyOnWriteWarmUp.Result r = CopyOnWriteWarmUp.run(dir.resolve("w"), new JavaFileSpace(), 8, Duration.ofHours(1));
        assertTrue(r.rounds() >= CopyOnWriteWarmUp.MIN_ROUNDS && r.rounds() <= 8, "rounds: " + r);
        assertEquals(r.rounds() * WRITES_PER_ROUND, r.writes(), "whole rounds only: " + r);
        assertEquals(r.rounds() * (long) CopyOnWriteWarmUp.BLOCKS, r.copies(), r.toString());
    }

    @Test
    void aSpentBudgetStillRunsOneRound() throws IOException {
        CopyOnWriteWarmUp.Result r = CopyOnWriteWarmUp.run(dir.resolve("w"), new JavaFileSpace(), 5, Duration.ZERO);
        assertEquals(WRITES_PER_ROUND, r.writes());
        assertEquals(CopyOnWriteWarmUp.BLOCKS, r.copies());
    }

    @Test
    void aLeftoverOfAnInterruptedWarmUpIsReplaced() throws IOException {
        Path scratch = dir.resolve("warm-up.tmp");
        Files.createDirectories(scratch);     // a killed warm-up leaves a partial volume directory
        Files.writeString(scratch.resolve(Volume.DATA_FILE), "left by a killed server");
        CopyOnWriteWarmUp.run(scratch, new JavaFileSpace(), 1, Duration.ZERO);
        assertFalse(Files.exists(scratch));
    }

    @Test
    void aFailureLeavesNothingBehind() throws IOException {
        Path file = Files.writeString(dir.resolve("not-a-directory"), "x");
        IOException e = assertThrows(IOException.class,
                () -> CopyOnWriteWarmUp.run(file.resolve("warm-up.tmp"), new JavaFileSpace(), 1, Duration.ZERO));
        assertTrue(e.getMessage().contains("not-a-directory"), e.getMessage());
        assertEquals("x", Files.readString(file));
    }
}

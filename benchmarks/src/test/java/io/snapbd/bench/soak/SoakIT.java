package io.snapbd.bench.soak;

import com.fasterxml.jackson.databind.JsonNode;
import io.snapbd.bench.ScriptRun;
import org.junit.jupiter.api.Assertions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

/**
 * The short form of benchmarks/soak.sh that CI runs: 90 s of fio with --verify on 16 connections at depth 32
 * while the churn loop snapshots, reads, clones, restores and deletes (no --settle: the back-to-idle check needs
 * a minute more than CI's budget; ExportStatsTest covers what it found). Asserts the script's JSON summary: no fio verify or I/O error, no
 * server error, no failed or wrong churn step, no leak, fsck clean. A missing tool (fio with its nbd engine,
 * nbdcopy, jcmd) skips on a developer machine and fails under CI=true. Output in benchmarks/target/soak-it/.
 */
class SoakIT {

    @Test
    @Timeout(value = 10, unit = TimeUnit.MINUTES)
    void shortSoakHasNoVerifyErrorServerErrorOrLeak() throws Exception {
        Path out = ScriptRun.home().resolve("benchmarks/target/soak-it");
        // On SIGTERM the script's trap stops the server, fio and the churn loop.
        ScriptRun run = ScriptRun.run("SoakIT", "soak-it", "benchmarks/soak.sh",
                List.of("--duration", "90", "--settle", "0", "--out", out.toString(), "--json"), Map.of(), 9);
        String log = run.log();
        int exit = run.exit();
        run.abortIfExited(2, "soak.sh cannot run here");      // a missing tool or jar (or bad usage)
        JsonNode r = run.summary();
        Assertions.assertEquals(0, r.path("fio").path("verifyErrors").asInt(-1), log);
        Assertions.assertEquals(0, r.path("fio").path("jobErrors").asInt(-1), log);
        Assertions.assertEquals(16, r.path("fio").path("jobs").asInt(), log);
        Assertions.assertTrue(r.path("fio").path("writes").asLong() > 0 && r.path("fio").path("trims").asLong() > 0
                && r.path("fio").path("flushes").asLong() > 0, "fio wrote, trimmed and flushed\n" + log);
        Assertions.assertEquals(0, r.path("server").path("errors").asInt(-1), log);
        Assertions.assertEquals(0, r.path("fsck").asInt(-1), log);
        for (Iterator<Map.Entry<String, JsonNode>> it = r.path("resources").fields(); it.hasNext(); ) {
            Map.Entry<String, JsonNode> e = it.next();
            Assertions.assertFalse(e.getValue().path("leak").asBoolean(true), "leak? " + e.getKey() + ": " + e.getValue() + "\n" + log);
        }
        Assertions.assertTrue(r.path("churn").path("problems").isEmpty(), "churn problems: " + r.path("churn").path("problems") + "\n" + log);
        // At least one whole cycle: snapshot read, clone checked, restore verified, and the steps that need two.
        Assertions.assertTrue(r.path("churn").path("cycles").asInt() >= 1, log);
        for (String step : List.of("create", "read", "clone", "lun-check", "restore", "delete", "lun-get")) {
            Assertions.assertTrue(r.path("churn").path("steps").path(step).path("ok").asInt() >= 1, "no successful " + step + "\n" + log);
        }
        Assertions.assertTrue(r.path("latency").path("windows").asInt() >= 5, "p99 per 10 s windows\n" + log);
        Assertions.assertTrue(r.path("violations").isEmpty(), "violations: " + r.path("violations") + "\n" + log);
        Assertions.assertEquals(0, exit, "soak.sh failed; output in " + out + "\n" + log);
        Assertions.assertTrue(Files.exists(out.resolve("soak.svg")) && Files.exists(out.resolve("latency.csv")), log);
    }
}

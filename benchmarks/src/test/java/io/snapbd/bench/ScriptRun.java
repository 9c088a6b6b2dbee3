package io.snapbd.bench;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.junit.jupiter.api.Assertions;
import org.junit.jupiter.api.Assumptions;

import java.io.File;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

/**
 * One run of a benchmarks/ script for an integration test: {@code bash SCRIPT ARGS...} with stdin from /dev/null,
 * its stdout (the {@code --json} summary) in {@code benchmarks/target/NAME.json} and its stderr in {@code NAME.log},
 * which is printed once it ends. Past the deadline the test fails; either way the script then gets SIGTERM (its
 * trap stops what it started) and, 30 s later, its process tree SIGKILL.
 */
public record ScriptRun(String script, int exit, String log, Path json) {

    /** A PATH with the system's tools only. */
    public static final String SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

    /** The project root: {@code -Dsnapbd.home}, else the parent of the benchmarks module. */
    public static Path home() {
        return Path.of(System.getProperty("snapbd.home", "..")).toAbsolutePath().normalize();
    }

    /** Runs {@code script} (a path under {@link #home()}) with {@code args} and {@code env} added, waiting at most {@code minutes}. */
    public static ScriptRun run(String who, String name, String script, List<String> args, Map<String, String> env,
                                long minutes) throws IOException, InterruptedException {
        return run(who, name, script, args, env, minutes, null, null);
    }

    /**
     * As {@link #run(String, String, String, List, Map, long)}, but once the file {@code killWhen} exists the script
     * and everything under it get SIGKILL at once, as when the host or the session ends under it (no trap runs),
     * and so does any process whose command line contains {@code marker} (one its parent started after the tree
     * was listed, an orphan by then: e.g. the run's output directory); the exit is then {@link #KILLED}. Fails the
     * test if the script ends before that file appears.
     */
    public static ScriptRun runUntilKilled(String who, String name, String script, List<String> args,
                                           Map<String, String> env, long minutes, Path killWhen, String marker)
            throws IOException, InterruptedException {
        return run(who, name, script, args, env, minutes, killWhen, marker);
    }

    /** The exit of a run {@link #runUntilKilled} killed. */
    public static final int KILLED = -9;

    private static ScriptRun run(String who, String name, String script, List<String> args, Map<String, String> env,
                                 long minutes, Path killWhen, String marker) throws IOException, InterruptedException {
        Path home = home();
        List<String> cmd = new ArrayList<>(List.of("bash", home.resolve(script).toString()));
        cmd.addAll(args);
        Path target = Files.createDirectories(home.resolve("benchmarks/target"));
        Path stderr = target.resolve(name + ".log");
        Path stdout = target.resolve(name + ".json");
        ProcessBuilder pb = new ProcessBuilder(cmd).redirectInput(ProcessBuilder.Redirect.from(new File("/dev/null")))
                .redirectOutput(stdout.toFile()).redirectError(stderr.toFile());
        pb.environment().putAll(env);
        System.out.println(who + ": " + String.join(" ", cmd));
        String file = Path.of(script).getFileName().toString();
        Process p = pb.start();
        int exit;
        try {
            if (killWhen != null) {
                long deadline = System.nanoTime() + TimeUnit.MINUTES.toNanos(minutes);
                while (!Files.exists(killWhen) && p.isAlive() && System.nanoTime() < deadline) {
                    Thread.sleep(100);
                }
                if (Files.exists(killWhen)) {
                    p.descendants().forEach(ProcessHandle::destroyForcibly);
                    p.destroyForcibly();
                    p.waitFor();
                    // A process its parent started after that listing is an orphan now: found by its command line.
                    for (int pass = 0; pass < 3; pass++) {
                        ProcessHandle.allProcesses()
                                .filter(h -> h.info().commandLine().orElse("").contains(marker))
                                .forEach(ProcessHandle::destroyForcibly);
                        Thread.sleep(200);
                    }
                    String log = Files.readString(stderr, StandardCharsets.UTF_8);
                    System.out.println(log);
                    return new ScriptRun(file, KILLED, log, stdout);
                }
                Assertions.assertFalse(!p.isAlive(), file + " ended before " + killWhen + " appeared\n"
                        + Files.readString(stderr, StandardCharsets.UTF_8));
            }
            if (!p.waitFor(minutes, TimeUnit.MINUTES)) {
                Assertions.fail(file + " did not finish within " + minutes + " minutes\n" + Files.readString(stderr, StandardCharsets.UTF_8));
            }
            exit = p.exitValue();
        } finally {
            p.destroy();
            if (!p.waitFor(30, TimeUnit.SECONDS)) {
                p.descendants().forEach(ProcessHandle::destroyForcibly);
                p.destroyForcibly();
            }
        }
        String log = Files.readString(stderr, StandardCharsets.UTF_8);
        System.out.println(log);
        return new ScriptRun(file, exit, log, stdout);
    }

    /** Skips the test (fails it under CI=true) when the script exited {@code code}, its "cannot run here" status. */
    public void abortIfExited(int code, String what) {
        if (exit == code) {
            String msg = what + ": " + log.strip();
            if ("true".equalsIgnoreCase(System.getenv("CI"))) {
                Assertions.fail(msg);
            }
            Assumptions.abort(msg);
        }
    }

    /** The JSON summary the script printed. */
    public JsonNode summary() throws IOException {
        return new ObjectMapper().readTree(json.toFile());
    }
}

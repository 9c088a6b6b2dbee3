package io.snapbd.server.it;

import org.junit.jupiter.api.Assertions;
import org.junit.jupiter.api.Assumptions;

import java.io.File;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;

/**
 * External NBD clients used by the integration tests, and a way to run any command with a bounded wait.
 * <p>
 * A missing tool skips the test on a developer's machine, and fails it under {@code CI=true} with the
 * Debian package to install: CI must never go green by silently skipping the real-client tests.
 */
public final class Tools {

    /** Tool → Debian package that provides it. */
    private static final Map<String, String> PACKAGES = Map.of(
            "nbdinfo", "libnbd-bin",
            "nbdcopy", "libnbd-bin",
            "nbdsh", "libnbd-bin python3-libnbd",
            "fio", "fio",
            "qemu-img", "qemu-utils",
            "qemu-io", "qemu-utils",
            "nbdkit", "nbdkit");

    private static final Map<String, String> PROBLEMS = new ConcurrentHashMap<>();

    /** Default bound on one external command; only there so that a hung client cannot hang the build. */
    public static final Duration DEFAULT_TIMEOUT = Duration.ofMinutes(3);

    private Tools() {
    }

    /** Skips (developer machine) or fails (CI=true) the current test when {@code tool} cannot run here. */
    public static void require(String... tools) {
        for (String tool : tools) {
            String problem = PROBLEMS.computeIfAbsent(tool, Tools::probe);
            if (problem.isEmpty()) {
                continue;
            }
            String pkg = PACKAGES.getOrDefault(tool, tool);
            String msg = "missing tool " + tool + ": apt-get install " + pkg + " (" + problem + ")";
            if ("true".equalsIgnoreCase(System.getenv("CI"))) {
                Assertions.fail(msg);
            }
            Assumptions.assumeTrue(false, msg);
        }
    }

    /** Empty when the tool works; otherwise why not. */
    private static String probe(String tool) {
        if (which(tool) == null) {
            return "not found on PATH " + path();
        }
        if (tool.equals("nbdsh")) {
            // nbdsh is a shell wrapper around `python3 -m nbd`: the Python binding must be importable too.
            try {
                Result r = run(Duration.ofMinutes(1), "nbdsh", "-n", "-c", "import nbd; print(nbd.NBD)");
                if (r.exit() != 0) {
                    return "nbdsh does not run: " + r.stderr().strip();
                }
            } catch (RuntimeException e) {
                return "nbdsh does not run: " + e.getMessage();
            }
        }
        return "";
    }

    /** The PATH given to child processes: Debian's /usr/bin first, so `python3` is the one with the nbd module. */
    static String path() {
        String p = System.getenv("PATH");
        return "/usr/bin:/bin:/usr/sbin:/sbin" + (p == null || p.isEmpty() ? "" : ":" + p);
    }

    static Path which(String tool) {
        for (String dir : path().split(File.pathSeparator)) {
            if (dir.isEmpty()) {
                continue;
            }
            Path p = Path.of(dir, tool);
            if (Files.isRegularFile(p) && Files.isExecutable(p)) {
                return p;
            }
        }
        return null;
    }

    /** Exit code and output of a finished command. */
    public record Result(List<String> command, int exit, String stdout, String stderr) {

        /** Fails with the whole story unless the exit code is 0. */
        public Result assertOk() {
            if (exit != 0) {
                Assertions.fail("command failed: " + this);
            }
            return this;
        }

        public Result assertExit(int expected) {
            if (exit != expected) {
                Assertions.fail("expected exit " + expected + ": " + this);
            }
            return this;
        }

        @Override
        public String toString() {
            return String.join(" ", command) + "\n  exit " + exit + "\n  stdout: " + clip(stdout) + "\n  stderr: " + clip(stderr);
        }

        private static String clip(String s) {
            return s.length() > 8000 ? s.substring(0, 4000) + "\n...[" + (s.length() - 8000) + " chars]...\n" + s.substring(s.length() - 4000) : s;
        }
    }

    public static Result run(String... command) {
        return run(DEFAULT_TIMEOUT, command);
    }

    public static Result run(Duration timeout, String... command) {
        return run(timeout, null, Arrays.asList(command));
    }

    /**
     * Runs {@code command} with stdin closed and output captured through files (no pipe can fill up and
     * block the child). Fails the test if it has not ended within {@code timeout}.
     */
    public static Result run(Duration timeout, Map<String, String> env, List<String> command) {
        Path out = null;
        Path err = null;
        Process p = null;
        try {
            out = Files.createTempFile("snapbd-it-out", ".txt");
            err = Files.createTempFile("snapbd-it-err", ".txt");
            ProcessBuilder pb = new ProcessBuilder(new ArrayList<>(command))
                    .redirectInput(ProcessBuilder.Redirect.from(new File("/dev/null")))
                    .redirectOutput(out.toFile())
                    .redirectError(err.toFile());
            // Tools may drop files in their working directory (fio's verify state): keep them in target/.
            Path work = ServerProcess.targetDir().resolve("it-work");
            Files.createDirectories(work);
            pb.directory(work.toFile());
            pb.environment().put("PATH", path());
            pb.environment().put("LC_ALL", "C");
            if (env != null) {
                pb.environment().putAll(env);
            }
            p = pb.start();
            if (!p.waitFor(timeout.toMillis(), TimeUnit.MILLISECONDS)) {
                p.descendants().forEach(ProcessHandle::destroyForcibly);
                p.destroyForcibly();
                p.waitFor(30, TimeUnit.SECONDS);
                Assertions.fail("command did not finish within " + timeout + " (killed): " + String.join(" ", command)
                        + "\n  stdout: " + Files.readString(out, StandardCharsets.UTF_8)
                        + "\n  stderr: " + Files.readString(err, StandardCharsets.UTF_8));
            }
            return new Result(List.copyOf(command), p.exitValue(),
                    Files.readString(out, StandardCharsets.UTF_8), Files.readString(err, StandardCharsets.UTF_8));
        } catch (IOException e) {
            throw new IllegalStateException("cannot run " + String.join(" ", command) + ": " + e.getMessage(), e);
        } catch (InterruptedException e) {
            if (p != null) {
                p.destroyForcibly();
            }
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted while running " + String.join(" ", command), e);
        } finally {
            deleteQuietly(out);
            deleteQuietly(err);
        }
    }

    /** Starts {@code command} in the background (output to {@code log}); the caller waits for it and ends it. */
    public static Process start(Path log, List<String> command) {
        try {
            Path work = ServerProcess.targetDir().resolve("it-work");
            Files.createDirectories(work);
            ProcessBuilder pb = new ProcessBuilder(new ArrayList<>(command))
                    .directory(work.toFile())
                    .redirectInput(ProcessBuilder.Redirect.from(new File("/dev/null")))
                    .redirectOutput(log.toFile())
                    .redirectErrorStream(true);
            pb.environment().put("PATH", path());
            pb.environment().put("LC_ALL", "C");
            return pb.start();
        } catch (IOException e) {
            throw new IllegalStateException("cannot run " + String.join(" ", command) + ": " + e.getMessage(), e);
        }
    }

    private static void deleteQuietly(Path p) {
        if (p != null) {
            try {
                Files.deleteIfExists(p);
            } catch (IOException e) {
                // a temp file; never mind
            }
        }
    }
}

package io.snapbd.server.systemd;

import io.snapbd.server.kernel.GuestRuns;
import io.snapbd.server.kernel.UmlGuest;
import io.snapbd.server.it.ServerProcess;
import io.snapbd.server.it.Tools;
import org.junit.jupiter.api.Assertions;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.TestFactory;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.LocalDateTime;
import java.time.format.DateTimeFormatter;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import java.util.stream.Stream;

/**
 * The units under a real systemd: Debian's systemd boots as PID 1 inside User-Mode Linux over a read-only view
 * of this machine's root (a tmpfs overlay takes every write), installs the .deb, and drives snapbd.service,
 * snapbd-attach@nbd0.service, an fstab mount of ext4 on /dev/nbd0, the stop, socket activation, and the
 * package's upgrade, removal and purge (src/test/resources/systemd/systemd-steps.sh). One dynamic test per step.
 * <p>
 * A missing piece (UML, busybox, udev, the .deb under CI) skips on a developer's machine and fails under CI=true.
 */
@UmlGuest(SystemdUmlIT.Guest.class)
class SystemdUmlIT {

    /** The steps systemd-steps.sh reports, in order; a step missing from its results fails. */
    private static final List<String> STEPS = List.of("boot", "install", "configure", "start", "watchdog", "journal",
            "reload", "attach", "mount", "metrics", "stop", "restart", "socket", "upgrade", "remove", "purge");
    private static final Duration TIMEOUT = Duration.ofMinutes(30);

    /** What the guest run left: its output directory, how uml-systemd.sh ended, and results.txt. */
    record Outcome(Path out, Tools.Result run, String results) {
    }

    /** Boots systemd in UML with the scenario (run in the background by {@link GuestRuns}). */
    static final class Guest implements Callable<Outcome> {
        @Override
        public Outcome call() throws Exception {
            Support.requireTool("linux.uml", "user-mode-linux");
            Support.requireTool("busybox", "busybox-static");
            Support.require(Files.isExecutable(Path.of("/lib/systemd/systemd")), "/lib/systemd/systemd (apt-get install systemd)");
            Support.require(Files.isExecutable(Path.of("/lib/systemd/systemd-udevd")), "systemd-udevd (apt-get install udev)");
            Support.requireTool("mkfs.ext4", "e2fsprogs");
            Support.requireTool("nbdinfo", "libnbd-bin");
            Support.requireTool("curl", "curl");
            Support.requireTool("dpkg-deb", "dpkg");
            String uname = Tools.run(Duration.ofSeconds(30), "linux.uml", "--version").stdout().strip();
            Support.require(!uname.isEmpty(), "a runnable linux.uml");
            if (Files.readString(Path.of("/proc/cpuinfo")).contains(" amx_tile")) {
                Support.requireTool("cc", "gcc libc6-dev (the UML xstate shim for AMX hosts)");
            }
            Path deb = newestDeb();
            if (deb == null && Support.ci()) {
                Assertions.fail("no snapbd_*.deb in " + ServerProcess.jar().getParent() + ": CI builds it with mvn -Pdeb verify");
            }
            Path home = ServerProcess.home();
            Path scripts = home.resolve("nbd-server/src/test/resources/systemd");
            Path out = ServerProcess.jar().getParent().resolve("systemd-it")
                    .resolve(LocalDateTime.now().format(DateTimeFormatter.ofPattern("yyyyMMdd-HHmmss")));
            Files.createDirectories(out);
            List<String> cmd = List.of("bash", scripts.resolve("uml-systemd.sh").toString(), out.toString(),
                    scripts.resolve("systemd-steps.sh").toString(), home.toString(), ServerProcess.jar().toString(),
                    deb == null ? "none" : deb.toString());
            Tools.Result r = Tools.run(TIMEOUT.plusMinutes(2), Map.of("UML_TIMEOUT", Long.toString(TIMEOUT.toSeconds())), cmd);
            Path resultsFile = out.resolve("results.txt");
            String results = Files.exists(resultsFile) ? Files.readString(resultsFile, StandardCharsets.UTF_8) : "";
            System.out.println("systemd in User-Mode Linux (" + out + "), deb " + deb + ":\n" + results);
            return new Outcome(out, r, results);
        }
    }

    // The scenario has its own bound (TIMEOUT); this class may also wait for the guests before it (GuestRuns runs
    // them in turn), so the bound here covers several.
    @org.junit.jupiter.api.Timeout(value = 85, unit = java.util.concurrent.TimeUnit.MINUTES)
    @TestFactory
    Stream<DynamicTest> systemdInUserModeLinux() throws Exception {
        Outcome o = GuestRuns.outcome(SystemdUmlIT.class);
        Path out = o.out();
        String results = o.results();
        Tools.Result r = o.run();
        if (results.isEmpty()) {
            Assertions.fail("the guest reported no step (uml-systemd.sh exit " + r.exit() + "): " + r
                    + "\nconsole: " + tail(out.resolve("console.log")));
        }
        Map<String, StepResult> byStep = parseResults(results);
        List<DynamicTest> tests = new ArrayList<>();
        for (String step : STEPS) {
            tests.add(DynamicTest.dynamicTest(step, () -> {
                StepResult result = byStep.get(step);
                Assertions.assertNotNull(result, "step " + step + " did not report; results:\n" + results
                        + "\nconsole: " + tail(out.resolve("console.log")));
                if (result.status().equals("SKIP")) {
                    if (Support.ci()) {
                        Assertions.fail(result.line());
                    }
                    Assumptions.assumeTrue(false, result.line());
                }
                Assertions.assertEquals("PASS", result.status(), result.line() + "\n" + tail(out.resolve("step-" + step + ".log")));
            }));
        }
        tests.add(DynamicTest.dynamicTest("powered off after the steps", () ->
                Assertions.assertEquals(0, r.exit(), "uml-systemd.sh: " + r)));
        return tests.stream();
    }

    /** One line of results.txt, {@code STEP <name> PASS|FAIL|SKIP <detail>}: the status is the third field. */
    record StepResult(String step, String status, String line) {
    }

    /**
     * The steps of results.txt by name, read by field: a detail that merely contains " PASS " (a FAIL whose
     * message quotes a passing log line) is not a pass.
     */
    static Map<String, StepResult> parseResults(String results) {
        Map<String, StepResult> byStep = new LinkedHashMap<>();
        for (String line : results.split("\n")) {
            String[] f = line.split(" ", 4);
            if (f.length >= 3 && f[0].equals("STEP")) {
                byStep.put(f[1], new StepResult(f[1], f[2], line));
            }
        }
        return byStep;
    }

    private static Path newestDeb() throws IOException {
        try (Stream<Path> s = Files.list(ServerProcess.jar().getParent())) {
            return s.filter(p -> p.getFileName().toString().matches("snapbd_.*_all\\.deb"))
                    .max(Comparator.comparing(p -> p.toFile().lastModified())).orElse(null);
        }
    }

    private static String tail(Path p) {
        try {
            List<String> lines = Files.readAllLines(p, StandardCharsets.UTF_8);
            return String.join("\n", lines.subList(Math.max(0, lines.size() - 60), lines.size()));
        } catch (IOException e) {
            return "(no " + p + ")";
        }
    }
}

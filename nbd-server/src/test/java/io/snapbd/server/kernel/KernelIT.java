package io.snapbd.server.kernel;

import org.junit.jupiter.api.Timeout;

import org.junit.jupiter.api.Assertions;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.TestFactory;

import java.io.File;
import java.io.IOException;
import java.net.URISyntaxException;
import java.net.URL;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;

/**
 * The real kernel: boots User-Mode Linux with the host file system as root, loads the real {@code nbd.ko},
 * runs {@code bin/snapbd serve} inside it and drives {@code /dev/nbdN} with the standard tools (mkfs.ext4,
 * mount, fstrim, fio, e2fsck, nbd-client, nbdinfo). The scenario is {@code kernel/kernel-steps.sh}; it writes
 * one {@code STEP name PASS|FAIL detail} line per step, and each step becomes one test here.
 * <p>
 * Everything it needs comes from Debian packages (see .ci/deps). A missing piece skips the test on a
 * developer's machine and fails it under {@code CI=true}. Every wait is bounded; nothing asserts on speed.
 * Output (console, server log, one log per step) stays in {@code nbd-server/target/kernel-it/}.
 * Run it alone with {@code mvn -B -pl nbd-server verify -Dit.test=KernelIT}.
 */
@UmlGuest(KernelIT.Guest.class)
class KernelIT {

    /** The steps of kernel-steps.sh, in order. */
    static final List<String> STEPS = List.of(
            "boot", "server-start", "attach-errors", "attach", "mkfs-mount-tree", "snapshot-attach-ro",
            "snapshot-isolation", "fstrim-holes", "fio-verify", "detach", "e2fsck", "shutdown-detaches",
            "restart-persist", "nbd-client-unix", "nbd-client-tcp-multiconn", "server-stop", "soak-churn");

    /** Generous: the whole scenario takes a few minutes on a 2-core machine. */
    private static final Duration UML_TIMEOUT = Duration.ofMinutes(40);

    /** Tool → Debian package. */
    private static final Map<String, String> TOOLS = new LinkedHashMap<>();

    static {
        TOOLS.put("linux.uml", "user-mode-linux");
        TOOLS.put("busybox", "busybox-static");
        TOOLS.put("nbd-client", "nbd-client");
        TOOLS.put("mkfs.ext4", "e2fsprogs");
        TOOLS.put("e2fsck", "e2fsprogs");
        TOOLS.put("filefrag", "e2fsprogs");
        TOOLS.put("fio", "fio");
        TOOLS.put("nbdinfo", "libnbd-bin");
        TOOLS.put("fstrim", "util-linux");
        TOOLS.put("fsfreeze", "util-linux");
        TOOLS.put("sha256sum", "coreutils");
        TOOLS.put("java", "openjdk-17-jre-headless");
    }

    /** The guest this class checks (run in the background by {@link GuestRuns}). */
    static final class Guest implements Callable<Outcome> {
        @Override
        public Outcome call() throws Exception {
            return boot("KernelIT", "kernel/kernel-steps.sh", "kernel-it", UML_TIMEOUT);
        }
    }

    // Bounded by the UML runs themselves (UML_TIMEOUT each); this class may wait for the guests of the classes
    // before it (GuestRuns runs them one at a time), so the bound here covers several.
    @Timeout(value = 85, unit = TimeUnit.MINUTES)
    @TestFactory
    Stream<DynamicTest> kernelScenario() throws Exception {
        return steps(GuestRuns.outcome(KernelIT.class), STEPS);
    }

    /** What a guest run left: its output directory, whether and how it ended, and the steps it reported. */
    record Outcome(Path out, boolean finished, int exit, Map<String, String[]> results, String context) {
    }

    /**
     * Boots UML with the step script {@code stepsResource}; output in {@code target/OUTDIR}. Shared with
     * {@link KernelMirrorIT} and {@link KernelRestartIT}.
     */
    static Outcome boot(String name, String stepsResource, String outDir, Duration umlTimeout) throws Exception {
        Path steps = resource(stepsResource);
        Path jar = jar();
        Path home = projectHome();
        requirePieces(jar, home);
        // The UML runner is shared with benchmarks/kernel-*.sh, so it lives in the repository, not in test resources.
        Path runner = home.resolve("tools/uml/uml-run.sh");
        Assertions.assertTrue(Files.isRegularFile(runner), "the UML runner " + runner + " is missing");

        Path out = jar.getParent().resolve(outDir);
        deleteTree(out);
        Files.createDirectories(out);
        Path runLog = out.resolve("uml-run.log");
        List<String> cmd = List.of("bash", runner.toString(), out.toString(), steps.toString(), home.toString(), jar.toString());
        System.out.println(name + ": " + String.join(" ", cmd));
        ProcessBuilder pb = new ProcessBuilder(cmd)
                .redirectInput(ProcessBuilder.Redirect.from(new File("/dev/null")))
                .redirectOutput(runLog.toFile())
                .redirectErrorStream(true);
        pb.environment().put("UML_TIMEOUT", String.valueOf(umlTimeout.toSeconds()));
        pb.environment().put("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        long t0 = System.nanoTime();
        Process p = pb.start();
        boolean finished;
        try {
            // uml-run.sh kills UML itself at UML_TIMEOUT; this is the backstop should that fail too.
            finished = p.waitFor(umlTimeout.plusMinutes(2).toMillis(), TimeUnit.MILLISECONDS);
        } catch (InterruptedException e) {
            p.descendants().forEach(ProcessHandle::destroyForcibly);
            p.destroyForcibly();
            throw e;
        }
        if (!finished) {
            p.descendants().forEach(ProcessHandle::destroyForcibly);
            p.destroyForcibly();
            p.waitFor(30, TimeUnit.SECONDS);
        }
        long seconds = TimeUnit.NANOSECONDS.toSeconds(System.nanoTime() - t0);
        int exit = finished ? p.exitValue() : -1;
        System.out.println(name + ": UML run took " + seconds + " s, exit " + exit + "; output in " + out);

        Map<String, String[]> results = parse(out.resolve("results.txt"));
        String context = "UML run exit " + exit + (finished ? "" : " (killed after " + umlTimeout.plusMinutes(2) + ")")
                + "\n--- uml-run.log ---\n" + tail(runLog, 20)
                + "\n--- guest.log ---\n" + tail(out.resolve("guest.log"), 20)
                + "\n--- console.log ---\n" + tail(out.resolve("console.log"), 20);
        return new Outcome(out, finished, exit, results, context);
    }

    /** One test per step of {@code stepNames} (in order) and one that UML powered off. */
    static Stream<DynamicTest> steps(Outcome o, List<String> stepNames) {
        List<DynamicTest> tests = new ArrayList<>();
        for (String step : stepNames) {
            tests.add(DynamicTest.dynamicTest(step, () -> {
                String[] r = o.results().get(step);
                if (r == null) {
                    Assertions.fail("step " + step + " did not run\n" + o.context());
                }
                System.out.println("STEP " + step + " " + r[0] + " " + r[1]);
                if (!"PASS".equals(r[0])) {
                    Assertions.fail(step + ": " + r[1] + "\n--- step-" + step + ".log ---\n"
                            + tail(o.out().resolve("step-" + step + ".log"), 40) + "\n--- server.log ---\n"
                            + tail(o.out().resolve("server.log"), 15));
                }
            }));
        }
        tests.add(DynamicTest.dynamicTest("uml-powered-off", () -> {
            Assertions.assertTrue(o.finished(), "UML did not finish\n" + o.context());
            Assertions.assertTrue(o.results().containsKey("END"), "the step script did not reach its end\n" + o.context());
            Assertions.assertEquals(0, o.exit(), "uml-run.sh exit status\n" + o.context());
        }));
        return tests.stream();
    }

    /** name → {PASS|FAIL, detail}; "END" when the script finished. */
    static Map<String, String[]> parse(Path results) throws IOException {
        Map<String, String[]> m = new LinkedHashMap<>();
        if (!Files.exists(results)) {
            return m;
        }
        for (String line : Files.readAllLines(results, StandardCharsets.UTF_8)) {
            if (line.equals("END")) {
                m.put("END", new String[]{"PASS", ""});
                continue;
            }
            String[] f = line.split(" ", 4);
            if (f.length >= 3 && f[0].equals("STEP")) {
                m.put(f[1], new String[]{f[2], f.length > 3 ? f[3] : ""});
            }
        }
        return m;
    }

    // ---- prerequisites -------------------------------------------------------------------------------------

    private static void requirePieces(Path jar, Path home) {
        List<String> missing = new ArrayList<>();
        for (Map.Entry<String, String> t : TOOLS.entrySet()) {
            if (which(t.getKey()) == null) {
                missing.add(t.getKey() + " (apt-get install " + t.getValue() + ")");
            }
        }
        if (!nbdModulePresent()) {
            missing.add("nbd.ko under /usr/lib/uml/modules/<version>/kernel/drivers/block/ (apt-get install user-mode-linux)");
        }
        if (hostHasAmx() && which("cc") == null) {
            missing.add("cc, to build the UML xstate shim this AMX host needs (apt-get install gcc libc6-dev)");
        }
        if (!Files.isRegularFile(jar)) {
            missing.add("the server jar " + jar + " (mvn -B -q -DskipTests package)");
        }
        if (!Files.isExecutable(home.resolve("bin/snapbd"))) {
            missing.add("the launcher " + home.resolve("bin/snapbd"));
        }
        if (missing.isEmpty()) {
            return;
        }
        String msg = "the kernel test cannot run here, missing: " + String.join("; ", missing);
        if ("true".equalsIgnoreCase(System.getenv("CI"))) {
            Assertions.fail(msg);
        }
        Assumptions.abort(msg);
    }

    private static boolean nbdModulePresent() {
        Path modules = Path.of("/usr/lib/uml/modules");
        if (!Files.isDirectory(modules)) {
            return false;
        }
        try (Stream<Path> versions = Files.list(modules)) {
            return versions.anyMatch(v -> Files.isRegularFile(v.resolve("kernel/drivers/block/nbd.ko")));
        } catch (IOException e) {
            return false;
        }
    }

    private static boolean hostHasAmx() {
        try {
            return Files.readString(Path.of("/proc/cpuinfo")).contains(" amx_tile");
        } catch (IOException e) {
            return false;
        }
    }

    private static Path which(String tool) {
        for (String dir : "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".split(":")) {
            Path p = Path.of(dir, tool);
            if (Files.isRegularFile(p) && Files.isExecutable(p)) {
                return p;
            }
        }
        return null;
    }

    // ---- paths ---------------------------------------------------------------------------------------------

    private static Path resource(String name) throws URISyntaxException {
        URL url = KernelIT.class.getClassLoader().getResource(name);
        Assertions.assertNotNull(url, "test resource " + name + " is missing");
        return Path.of(url.toURI()).toAbsolutePath();
    }

    /** The shaded jar under test: failsafe passes it as {@code snapbd.jar}. */
    private static Path jar() {
        String prop = System.getProperty("snapbd.jar");
        if (prop != null && !prop.isBlank()) {
            return Path.of(prop).toAbsolutePath();
        }
        return Path.of("target", "snapbd.jar").toAbsolutePath();
    }

    /** The project root (where bin/snapbd is): failsafe passes it as {@code snapbd.home}. */
    private static Path projectHome() {
        String prop = System.getProperty("snapbd.home");
        if (prop != null && !prop.isBlank() && Files.exists(Path.of(prop, "bin", "snapbd"))) {
            return Path.of(prop).toAbsolutePath();
        }
        for (Path p = Path.of("").toAbsolutePath(); p != null; p = p.getParent()) {
            if (Files.exists(p.resolve("bin/snapbd"))) {
                return p;
            }
        }
        return Path.of("").toAbsolutePath();
    }

    private static String tail(Path file, int lines) {
        try {
            List<String> all = new String(Files.readAllBytes(file), StandardCharsets.UTF_8).lines().toList();
            return String.join("\n", all.subList(Math.max(0, all.size() - lines), all.size()));
        } catch (IOException e) {
            return "(no " + file.getFileName() + ")";
        }
    }

    private static void deleteTree(Path dir) throws IOException {
        if (!Files.exists(dir)) {
            return;
        }
        try (Stream<Path> s = Files.walk(dir)) {
            for (Path p : s.sorted(Comparator.reverseOrder()).toList()) {
                Files.deleteIfExists(p);
            }
        }
    }
}

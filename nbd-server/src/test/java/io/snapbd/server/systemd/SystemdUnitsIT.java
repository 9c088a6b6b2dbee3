package io.snapbd.server.systemd;

import io.snapbd.server.config.ConfigFile;
import io.snapbd.server.config.ServerConfig;
import io.snapbd.server.config.ServiceSettings;
import io.snapbd.server.it.ServerProcess;
import io.snapbd.server.it.Tools;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Every unit in systemd/ passes {@code systemd-analyze verify} without a single warning, and says what the
 * production host needs; the example configuration is valid.
 */
class SystemdUnitsIT {

    private static Path units() {
        return ServerProcess.home().resolve("systemd");
    }

    @Test
    void everyUnitVerifies(@TempDir Path root) throws Exception {
        Support.requireTool("systemd-analyze", "systemd");
        Path system = Path.of("/usr/lib/systemd/system");
        Support.require(Files.isDirectory(system), system + " (apt-get install systemd)");
        // A root with the system's units, the units under test in /etc/systemd/system, and the binaries their
        // Exec lines name (verify checks they exist), so the result does not depend on what is installed here.
        Path etc = Files.createDirectories(root.resolve("etc/systemd/system"));
        Path usrBin = Files.createDirectories(root.resolve("usr/bin"));
        Files.createDirectories(root.resolve("usr/lib/systemd"));
        Files.createSymbolicLink(root.resolve("bin"), Path.of("usr/bin"));
        Files.createSymbolicLink(root.resolve("lib"), Path.of("usr/lib"));
        Tools.run(Duration.ofMinutes(2), "cp", "-a", system.toString(), root.resolve("usr/lib/systemd").toString()).assertOk();
        Files.writeString(usrBin.resolve("snapbd"), "#!/bin/sh\n");
        Files.copy(Path.of("/bin/kill"), usrBin.resolve("kill"));
        Files.copy(Path.of("/bin/sh"), usrBin.resolve("sh"));        // snapbd.service's ExecStop (keep-devices marker)
        for (Path p : List.of(usrBin.resolve("snapbd"), usrBin.resolve("kill"), usrBin.resolve("sh"))) {
            p.toFile().setExecutable(true);
        }
        List<String> cmd = new ArrayList<>(List.of(Support.tool("systemd-analyze").toString(), "verify", "--man=no", "--root=" + root));
        List<Path> found;
        try (Stream<Path> s = Files.list(units())) {
            found = s.filter(p -> p.toString().matches(".*\\.(service|socket|target|mount|timer|path)$")).sorted().toList();
        }
        assertTrue(found.size() >= 3, "units in " + units() + ": " + found);
        for (Path u : found) {
            String name = u.getFileName().toString();
            Files.copy(u, etc.resolve(name));
            // A template is verified through an instance.
            String instance = name.replace("@.", "@nbd0.");
            if (!instance.equals(name)) {
                Files.copy(u, etc.resolve(instance));
            }
            cmd.add(etc.resolve(instance).toString());
        }
        Tools.Result r = Tools.run(Duration.ofMinutes(2), null, cmd);
        System.out.println("systemd-analyze verify " + found + ":\n" + r);
        assertEquals(0, r.exit(), r.toString());
        assertEquals("", (r.stdout() + r.stderr()).strip(), "systemd-analyze verify complained: " + r);
    }

    @Test
    void serviceUnitSaysWhatTheIssueAsks() throws IOException {
        String u = Files.readString(units().resolve("snapbd.service"));
        for (String line : List.of("Type=notify", "ExecStart=/usr/bin/snapbd serve --config /etc/snapbd/snapbd.conf",
                "ExecReload=/bin/kill -HUP $MAINPID", "Restart=on-failure", "WatchdogSec=", "ProtectSystem=strict",
                "ReadWritePaths=/var/lib/snapbd", "PrivateTmp=yes", "NoNewPrivileges=yes", "CapabilityBoundingSet=CAP_SYS_ADMIN",
                "DeviceAllow=block-nbd rw", "DevicePolicy=closed", "LimitNICE=+0", "KillMode=process", "NotifyAccess=main")) {
            assertTrue(u.lines().anyMatch(l -> l.startsWith(line)), "snapbd.service lacks " + line);
        }
        // a stop that is part of a restart job leaves the marker that keeps the nbd devices connected
        assertTrue(u.lines().anyMatch(l -> l.startsWith("ExecStop=/bin/sh -c ") && l.contains("list-jobs")
                && l.contains("grep -qw restart") && l.contains("/keep-devices")), "snapbd.service lacks the keep-devices ExecStop");
        // ... and prepares the successor that the next ExecStart adopts, after the marker: a preparation that fails or
        // is cut short by TimeoutStopSec= still keeps the devices
        assertTrue(u.lines().anyMatch(l -> l.startsWith("ExecStop=/bin/sh -c ")
                && l.indexOf("/usr/bin/snapbd restart --prepare --timeout 60") > l.indexOf("grep -qw restart")
                && l.indexOf("/usr/bin/snapbd restart --prepare") > l.indexOf("/keep-devices")), "snapbd.service's ExecStop does not prepare the successor");
        String a = Files.readString(units().resolve("snapbd-attach@.service"));
        for (String line : List.of("BindsTo=snapbd.service", "After=snapbd.service", "Type=oneshot", "RemainAfterExit=yes",
                "ExecStart=/usr/bin/snapbd attach $ATTACH_OPTIONS ${EXPORT} /dev/%i", "ExecStop=/usr/bin/snapbd detach /dev/%i",
                "EnvironmentFile=/etc/snapbd/attach-%i.conf")) {
            assertTrue(a.lines().anyMatch(l -> l.startsWith(line)), "snapbd-attach@.service lacks " + line);
        }
        String s = Files.readString(units().resolve("snapbd.socket"));
        assertTrue(s.lines().anyMatch(l -> l.startsWith("ListenStream=127.0.0.1:10809")), s);
    }

    @Test
    void exampleConfigurationIsValid() throws Exception {
        Path example = units().resolve("snapbd.conf");
        ConfigFile f = ConfigFile.read(example);
        ServerConfig c = f.apply(ServerConfig.defaults(Path.of(f.dataDir())));
        ServiceSettings s = f.service();
        assertEquals(Path.of("/var/lib/snapbd"), c.dataDir());
        assertEquals(10809, c.tcp().getPort());
        assertEquals("127.0.0.1", c.tcp().getHostString());
        assertEquals(10810, s.metrics().getPort());
        assertTrue(s.metrics().getAddress().isLoopbackAddress(), "metrics must default to loopback");
        assertEquals(1, s.volumes().size());
        assertEquals("vol0", s.volumes().get(0).name());
        assertTrue(s.stopTimeout().compareTo(Duration.ofSeconds(90)) < 0, "stop-timeout must stay below TimeoutStopSec=90s");
        assertTrue(s.latencyHistograms(), "the example keeps latency histograms on");
        assertEquals(Integer.valueOf(60), f.deadConnectionTimeout(), "the example shows the default dead-connection-timeout");
    }
}

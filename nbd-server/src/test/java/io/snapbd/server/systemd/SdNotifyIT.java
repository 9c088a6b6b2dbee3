package io.snapbd.server.systemd;

import io.snapbd.server.it.Tools;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.net.InetSocketAddress;
import java.net.Socket;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.UUID;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * sd_notify from a real server process to a real datagram socket, as systemd's Type=notify sees it: STATUS while
 * starting, READY=1 only once the listeners accept, WATCHDOG=1 at WATCHDOG_USEC/2, RELOADING=1 and READY=1
 * around SIGHUP, STOPPING=1 at SIGTERM, then exit status 0 with the volumes marked clean.
 */
class SdNotifyIT {

    private static final Duration START = Duration.ofSeconds(90);

    @Test
    void notifiesThroughAPathSocket(@TempDir Path dir) throws Exception {
        try (Support.NotifyReceiver systemd = Support.NotifyReceiver.atPath(dir.resolve("notify"))) {
            lifecycle(dir, systemd);
        }
    }

    @Test
    void notifiesThroughAnAbstractSocket(@TempDir Path dir) throws Exception {
        try (Support.NotifyReceiver systemd = Support.NotifyReceiver.abstractName("snapbd-it-" + UUID.randomUUID())) {
            lifecycle(dir, systemd);
        }
    }

    private void lifecycle(Path dir, Support.NotifyReceiver systemd) throws Exception {
        int port = Support.freePort();
        Path conf = Support.config(dir, port, "handshake-timeout = 10", "max-connections = 256");
        try (Support.Service s = Support.Service.start(conf, Map.of("NOTIFY_SOCKET", systemd.address(),
                "WATCHDOG_USEC", "400000"), List.of(), "notify")) {
            String first = systemd.await(m -> m.contains("STATUS="), START, "STATUS= while starting");
            assertFalse(first.contains("READY=1"), "the first message already says READY: " + first);
            systemd.await(m -> m.contains("STATUS=opening volume vol0"), START, "STATUS= for opening vol0");
            String ready = systemd.await(m -> m.contains("READY=1"), START, "READY=1");
            assertTrue(ready.contains("STATUS=serving"), ready);
            // READY=1 means bound: the first connection after it must succeed.
            try (Socket c = new Socket()) {
                c.connect(new InetSocketAddress("127.0.0.1", port), 5000);
            }
            List<String> beforeReady = systemd.all().subList(0, systemd.all().indexOf(ready));
            assertTrue(beforeReady.stream().noneMatch(m -> m.contains("WATCHDOG=1")), "watchdog pings before READY: " + beforeReady);
            // WATCHDOG_USEC=400 ms: pings every 200 ms from then on.
            systemd.await(m -> m.equals("WATCHDOG=1"), Duration.ofSeconds(30), "a first WATCHDOG=1");
            systemd.await(m -> m.equals("WATCHDOG=1"), Duration.ofSeconds(30), "a second WATCHDOG=1");

            // SIGHUP: RELOADING=1, the change applied, READY=1 again.
            Files.writeString(conf, Files.readString(conf).replace("max-connections = 256", "max-connections = 9"));
            s.signal("HUP");
            systemd.await(m -> m.contains("RELOADING=1"), Duration.ofSeconds(60), "RELOADING=1");
            systemd.await(m -> m.contains("READY=1"), Duration.ofSeconds(60), "READY=1 after the reload");
            s.awaitLog("max-connections 256 -> 9", Duration.ofSeconds(30));

            // SIGTERM: STOPPING=1, status 0, volumes clean.
            s.signal("TERM");
            systemd.await(m -> m.contains("STOPPING=1"), Duration.ofSeconds(60), "STOPPING=1");
            assertEquals(0, s.awaitExit(Duration.ofSeconds(90)), s.log());
            assertTrue(s.log().contains("volumes closed cleanly"), s.log());
        }
        Support.assertVolumesClean(dir.resolve("data"));
    }

    /** Started with SIGHUP ignored (as under nohup) the JVM would drop a reload silently: the server says so, and still stops on SIGTERM. */
    @Test
    void warnsWhenSighupIsIgnored(@TempDir Path dir) throws Exception {
        Path conf = Support.config(dir, Support.freePort());
        try (Support.Service s = Support.Service.start(conf, Map.of(), List.of("env", "--ignore-signal=HUP"), "nohup")) {
            s.awaitLog("SIGHUP is ignored by this process", START);
            s.awaitLog("snapbd ready", START);
            s.signal("TERM");
            assertEquals(0, s.awaitExit(Duration.ofSeconds(90)), s.log());
        }
        Support.assertVolumesClean(dir.resolve("data"));
    }

    /** After a crash (SIGKILL), the next start says it is recovering the volume before READY=1. */
    @Test
    void recoveryIsReportedBeforeReady(@TempDir Path dir) throws Exception {
        Path conf = Support.config(dir, Support.freePort());
        try (Support.Service s = Support.Service.start(conf, Map.of(), List.of(), "crash")) {
            s.awaitLog("snapbd ready", START);
            s.process.destroyForcibly();
            s.awaitExit(Duration.ofSeconds(60));
        }
        try (Support.NotifyReceiver systemd = Support.NotifyReceiver.atPath(dir.resolve("notify"));
             Support.Service s = Support.Service.start(conf, Map.of("NOTIFY_SOCKET", systemd.address()), List.of(), "recover")) {
            systemd.await(m -> m.contains("STATUS=recovering volume vol0 (1 of 1)"), START, "STATUS=recovering volume vol0");
            systemd.await(m -> m.contains("READY=1"), START, "READY=1 after the recovery");
            s.signal("TERM");
            assertEquals(0, s.awaitExit(Duration.ofSeconds(90)), s.log());
        }
        Support.assertVolumesClean(dir.resolve("data"));
    }

    @Test
    void noWatchdogWhenNotAskedFor(@TempDir Path dir) throws Exception {
        try (Support.NotifyReceiver systemd = Support.NotifyReceiver.atPath(dir.resolve("notify"))) {
            Path conf = Support.config(dir, Support.freePort());
            try (Support.Service s = Support.Service.start(conf, Map.of("NOTIFY_SOCKET", systemd.address(),
                    "WATCHDOG_USEC", "400000", "WATCHDOG_PID", "1"), List.of(), "notify-nowd")) {
                systemd.await(m -> m.contains("READY=1"), START, "READY=1");
                Thread.sleep(1000);     // five intervals: a ping would have come by now
                assertTrue(systemd.all().stream().noneMatch(m -> m.contains("WATCHDOG=1")),
                        "WATCHDOG_PID names another process, yet: " + systemd.all());
                s.signal("TERM");
                assertEquals(0, s.awaitExit(Duration.ofSeconds(90)), s.log());
            }
        }
    }

    /** A bad configuration stops the start with file:line, exit 2, and tells systemd nothing is ready. */
    @Test
    void badConfigurationStopsTheStart(@TempDir Path dir) throws Exception {
        try (Support.NotifyReceiver systemd = Support.NotifyReceiver.atPath(dir.resolve("notify"))) {
            Path conf = Support.config(dir, Support.freePort(), "metrics = 127.0.0.1:notaport");
            try (Support.Service s = Support.Service.start(conf, Map.of("NOTIFY_SOCKET", systemd.address()), List.of(), "badconf")) {
                assertEquals(2, s.awaitExit(Duration.ofSeconds(60)), s.log());
                int line = Files.readAllLines(conf).indexOf("metrics = 127.0.0.1:notaport") + 1;
                assertTrue(s.log().contains(conf + ":" + line + ": metrics: "), s.log());
                assertTrue(systemd.all().stream().noneMatch(m -> m.contains("READY=1")), systemd.all().toString());
            }
        }
    }

    /**
     * SIGTERM while a client is writing: in-flight requests finish, the client sees the connection end (not a
     * hang), the exit status is 0 and the volumes are clean.
     */
    @Test
    void gracefulStopUnderLoad(@TempDir Path dir) throws Exception {
        Support.requireTool("nbdcopy", "libnbd-bin");
        int port = Support.freePort();
        int metricsPort = Support.freePort();
        Path conf = Support.config(dir, port, "metrics = 127.0.0.1:" + metricsPort);
        Path source = dir.resolve("source.bin");
        byte[] block = new byte[1 << 20];
        new java.util.Random(1).nextBytes(block);
        for (int i = 0; i < 16; i++) {
            Files.write(source, block, i == 0 ? new java.nio.file.OpenOption[0]
                    : new java.nio.file.OpenOption[] {java.nio.file.StandardOpenOption.APPEND});
        }
        try (Support.Service s = Support.Service.start(conf, Map.of(), List.of(), "stop-load")) {
            s.awaitLog("snapbd ready", START);
            // Copies again and again until the server goes away.
            Process writer = Tools.start(dir.resolve("nbdcopy.log"), List.of("sh", "-c",
                    "while nbdcopy --flush '" + source + "' nbd://127.0.0.1:" + port + "/vol0; do :; done"));
            try {
                long deadline = System.nanoTime() + Duration.ofSeconds(60).toNanos();
                while (requests(metricsPort) < 100) {
                    assertTrue(System.nanoTime() < deadline, "the client did not get going: " + s.log());
                    assertTrue(writer.isAlive(), "the client ended early");
                    Thread.sleep(50);
                }
                s.signal("TERM");
                assertEquals(0, s.awaitExit(Duration.ofSeconds(90)), s.log());
                assertTrue(writer.waitFor(60, java.util.concurrent.TimeUnit.SECONDS), "the client hangs after the server stopped");
            } finally {
                writer.destroyForcibly();
            }
        }
        Support.assertVolumesClean(dir.resolve("data"));
    }

    private static long requests(int metricsPort) throws Exception {
        for (String line : Support.get(metricsPort, "/metrics").body().split("\n")) {
            if (line.startsWith("snapbd_export_requests_total{export=\"vol0\"} ")) {
                return Long.parseLong(line.substring(line.lastIndexOf(' ') + 1));
            }
        }
        return 0;
    }

    /** The metrics endpoint starts with the server and serves the Prometheus text format. */
    @Test
    void metricsEndpoint(@TempDir Path dir) throws Exception {
        int port = Support.freePort();
        int metricsPort = Support.freePort();
        Path conf = Support.config(dir, port, "metrics = 127.0.0.1:" + metricsPort);
        try (Support.Service s = Support.Service.start(conf, Map.of(), List.of(), "metrics")) {
            s.awaitLog("snapbd ready", START);
            s.awaitLog("metrics: http://127.0.0.1:" + metricsPort, Duration.ofSeconds(30));
            HttpResponse<String> r = Support.get(metricsPort, "/metrics");
            assertEquals(200, r.statusCode());
            assertTrue(r.headers().firstValue("Content-Type").orElse("").startsWith("text/plain; version=0.0.4"), r.headers().toString());
            assertTrue(r.body().contains("snapbd_volume_size_bytes{volume=\"vol0\"} 33554432"), r.body());
            assertEquals(404, Support.get(metricsPort, "/nothing").statusCode());
            s.signal("TERM");
            assertEquals(0, s.awaitExit(Duration.ofSeconds(90)), s.log());
        }
    }
}

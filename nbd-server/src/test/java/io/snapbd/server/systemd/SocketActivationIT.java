package io.snapbd.server.systemd;

import io.snapbd.server.it.Tools;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Socket activation with systemd's own tool (systemd-socket-activate sets LISTEN_FDS, LISTEN_PID and
 * LISTEN_FDNAMES exactly as a .socket unit does): the server serves the passed TCP and Unix sockets instead of
 * binding the configured addresses, data goes through both, and it stops cleanly.
 */
class SocketActivationIT {

    @Test
    void servesTheSocketsSystemdPasses(@TempDir Path dir) throws Exception {
        Support.requireTool("systemd-socket-activate", "systemd");
        Support.requireTool("nbdcopy", "libnbd-bin");
        Support.requireTool("nbdinfo", "libnbd-bin");
        int port = Support.freePort();
        Path sock = dir.resolve("data").resolve("nbd.sock");
        Files.createDirectories(sock.getParent());
        Path conf = Support.config(dir, port);
        List<String> activate = List.of(Support.tool("systemd-socket-activate").toString(),
                "-l", "127.0.0.1:" + port, "-l", sock.toString(), "--fdname=nbd-tcp:nbd-unix");
        try (Support.Service s = Support.Service.start(conf, Map.of(), activate, "socket")) {
            // systemd-socket-activate starts the server at the first connection, which waits for it; it must
            // be listening first (checked without connecting, which would start the server).
            awaitListening(port);
            Tools.Result size = Tools.run(Duration.ofMinutes(2), "nbdinfo", "--size", "nbd://127.0.0.1:" + port + "/vol0").assertOk();
            assertEquals("33554432", size.stdout().strip());
            s.awaitLog("snapbd ready", Duration.ofSeconds(60));
            String log = s.log();
            assertTrue(log.contains("listening on systemd socket nbd-tcp (fd 3, 127.0.0.1:" + port + ")"), log);
            assertTrue(log.contains("listening on systemd socket nbd-unix (fd 4, " + sock + ")"), log);
            assertFalse(log.contains("cannot listen"), log);

            Path in = dir.resolve("in.bin");
            byte[] data = new byte[4 << 20];
            new java.util.Random(7).nextBytes(data);
            Files.write(in, data);
            Tools.run(Duration.ofMinutes(2), "nbdcopy", in.toString(), "nbd://127.0.0.1:" + port + "/vol0").assertOk();
            Path out = dir.resolve("out.bin");
            Tools.run(Duration.ofMinutes(2), "nbdcopy", "--", "nbd+unix:///vol0?socket=" + sock, out.toString()).assertOk();
            byte[] back = Files.readAllBytes(out);
            assertTrue(java.util.Arrays.equals(data, java.util.Arrays.copyOf(back, data.length)),
                    "data written over the passed TCP socket differs when read over the passed Unix socket");

            s.signal("TERM");
            assertEquals(0, s.awaitExit(Duration.ofSeconds(90)), s.log());
            assertTrue(Files.exists(sock), "the server deleted the Unix socket systemd owns");
        }
        Support.assertVolumesClean(dir.resolve("data"));
    }

    @Test
    void refusesADatagramSocket(@TempDir Path dir) throws Exception {
        Support.requireTool("systemd-socket-activate", "systemd");
        int port = Support.freePort();
        Path conf = Support.config(dir, Support.freePort());
        List<String> activate = List.of(Support.tool("systemd-socket-activate").toString(), "--datagram", "-l", "127.0.0.1:" + port);
        try (Support.Service s = Support.Service.start(conf, Map.of(), activate, "socket-dgram")) {
            // A datagram socket activates at the first datagram. systemd-socket-activate may not be listening
            // yet when the first one is sent, so keep sending until the server has started and exited.
            try (java.net.DatagramSocket d = new java.net.DatagramSocket()) {
                byte[] b = {1};
                long deadline = System.nanoTime() + Duration.ofSeconds(90).toNanos();
                while (s.process.isAlive() && System.nanoTime() < deadline) {
                    d.send(new java.net.DatagramPacket(b, 1, java.net.InetAddress.getLoopbackAddress(), port));
                    s.process.waitFor(200, java.util.concurrent.TimeUnit.MILLISECONDS);
                }
            }
            int rc = s.awaitExit(Duration.ofSeconds(90));
            assertTrue(rc != 0, s.log());
            assertTrue(s.log().contains("is not a stream socket"), s.log());
        }
    }

    /** Waits until something listens on 127.0.0.1:port (from /proc/net/tcp: state 0A is LISTEN). */
    private static void awaitListening(int port) throws Exception {
        String local = String.format("0100007F:%04X", port);
        for (int i = 0; i < 600; i++) {
            for (String line : java.nio.file.Files.readAllLines(Path.of("/proc/net/tcp"))) {
                String[] f = line.trim().split("\\s+");
                if (f.length > 3 && f[1].equals(local) && f[3].equals("0A")) {
                    return;
                }
            }
            Thread.sleep(50);
        }
    }
}

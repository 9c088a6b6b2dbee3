package io.snapbd.server.service;

import io.snapbd.nativeio.NativeSocket;
import io.snapbd.nativeio.SocketPairs;
import io.snapbd.server.kernel.HandedConnection;
import io.snapbd.server.kernel.KernelAttachments;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The in-place restart's protocol ({@link Handover}) between two real processes, without a server: the successor
 * here is a small JVM ({@link FakeSuccessor}) that speaks the successor's side with the production code.
 */
class HandoverTest {

    @TempDir
    Path dir;

    /** A successor: {@code ready} then prints what it was handed; {@code exit N} exits before ready; {@code hang} never reports. */
    public static final class FakeSuccessor {
        public static void main(String[] args) throws Exception {
            switch (args[0]) {
                case "ready" -> {
                    Handover.Go go = Handover.readyAndAwaitGo();
                    StringBuilder b = new StringBuilder(go.keptAtMillis() + " " + new java.util.TreeSet<>(go.devices()));
                    for (HandedConnection.Received r : go.connections()) {
                        HandedConnection c = r.connection();
                        b.append(" | ").append(c.export()).append(' ').append(c.device()).append(c.readOnly() ? " ro " : " rw ")
                                .append(new String(c.readAhead(), StandardCharsets.UTF_8));
                        // the socket works from here: answer on it, then close it
                        try (NativeSocket s = NativeSocket.adopt(r.fd())) {
                            s.write(ByteBuffer.wrap(("served by the successor " + c.device() + "\n").getBytes(StandardCharsets.UTF_8)));
                        }
                    }
                    Files.writeString(Path.of(args[1]), b.toString());
                }
                case "exit" -> System.exit(Integer.parseInt(args[1]));
                case "hang" -> Thread.sleep(600_000);
                default -> throw new IllegalArgumentException(args[0]);
            }
        }
    }

    private static List<String> fake(String... args) {
        List<String> c = new ArrayList<>(List.of(Path.of(System.getProperty("java.home"), "bin", "java").toString(),
                "-XX:TieredStopAtLevel=1", "-cp", System.getProperty("java.class.path"), FakeSuccessor.class.getName()));
        c.addAll(List.of(args));
        return c;
    }

    @Test
    void readySuccessorIsHandedTheKeptDevices() throws Exception {
        Path out = dir.resolve("go.txt");
        Handover.Pending p = Handover.start(fake("ready", out.toString()), dir);
        p.awaitReady(Duration.ofMinutes(2));
        assertTrue(p.go(Set.of("/dev/nbd1", "/dev/nbd0"), 1234L, List.of()));
        ProcessHandle h = ProcessHandle.of(p.pid()).orElse(null);
        if (h != null) {
            h.onExit().get(60, TimeUnit.SECONDS);
        }
        assertEquals("1234 [/dev/nbd0, /dev/nbd1]", Files.readString(out, StandardCharsets.UTF_8));
        assertFalse(Files.exists(dir.resolve(Handover.SOCKET_FILE)), "the handover socket is removed");
    }

    @Test
    void readySuccessorIsHandedKernelConnectionsWithTheirReadAhead() throws Exception {
        Path out = dir.resolve("go.txt");
        try (SocketPairs.SocketPair a = SocketPairs.create(); SocketPairs.SocketPair b = SocketPairs.create()) {
            Handover.Pending p = Handover.start(fake("ready", out.toString()), dir);
            p.awaitReady(Duration.ofMinutes(2));
            List<KernelAttachments.Handing> handed = List.of(
                    new KernelAttachments.Handing("/dev/nbd0", new HandedConnection("vol0", 0, false,
                            "ahead0".getBytes(StandardCharsets.UTF_8)), a.second().fd(), () -> closeWithoutShutdown(a.second())),
                    new KernelAttachments.Handing("/dev/nbd3", new HandedConnection("vol1@s1", 3, true, new byte[0]),
                            b.second().fd(), () -> closeWithoutShutdown(b.second())));
            assertTrue(p.go(Set.of("/dev/nbd0", "/dev/nbd3"), 99L, handed));
            assertFalse(a.second().isOpen() || b.second().isOpen(), "this side's copies are closed once passed");
            // the kernel's ends: the successor answers on the sockets this process no longer holds
            assertEquals("served by the successor 0", readLine(a.first()));
            assertEquals("served by the successor 3", readLine(b.first()));
            ProcessHandle h = ProcessHandle.of(p.pid()).orElse(null);
            if (h != null) {
                h.onExit().get(60, TimeUnit.SECONDS);
            }
            assertEquals("99 [/dev/nbd0, /dev/nbd3] | vol0 0 rw ahead0 | vol1@s1 3 ro ", Files.readString(out, StandardCharsets.UTF_8));
        }
    }

    private static void closeWithoutShutdown(SocketPairs.End e) {
        try {
            e.closeWithoutShutdown();
        } catch (IOException x) {
            throw new java.io.UncheckedIOException(x);
        }
    }

    private static String readLine(SocketPairs.End e) throws IOException {
        StringBuilder b = new StringBuilder();
        ByteBuffer one = ByteBuffer.allocate(1);
        while (true) {
            one.clear();
            assertTrue(e.read(one) > 0, "the socket ended before a line: " + b);
            if (one.get(0) == '\n') {
                return b.toString();
            }
            b.append((char) one.get(0));
        }
    }

    @Test
    void successorThatExitsBeforeReadyIsRefused() {
        Handover.Refused e = assertThrows(Handover.Refused.class, () -> {
            Handover.Pending p = Handover.start(fake("exit", "7"), dir);
            p.awaitReady(Duration.ofMinutes(2));
        });
        assertTrue(e.getMessage().contains("exited") && e.getMessage().contains("before it was ready")
                || e.getMessage().contains("exited at once"), e.getMessage());
        assertFalse(Files.exists(dir.resolve(Handover.SOCKET_FILE)));
    }

    @Test
    void successorNotReadyInTimeIsKilled() throws Exception {
        Handover.Pending p = Handover.start(fake("hang"), dir);
        Handover.Refused e = assertThrows(Handover.Refused.class, () -> p.awaitReady(Duration.ofSeconds(2)));
        assertTrue(e.getMessage().contains("was not ready within 2 s"), e.getMessage());
        ProcessHandle h = ProcessHandle.of(p.pid()).orElse(null);
        if (h != null) {
            h.onExit().get(30, TimeUnit.SECONDS);       // killed, not left behind
        }
        assertFalse(Files.exists(dir.resolve(Handover.SOCKET_FILE)));
    }

    @Test
    void successorAbandonedAfterReadyIsKilledNotHandedOver() throws Exception {
        Path out = dir.resolve("go.txt");
        Handover.Pending p = Handover.start(fake("ready", out.toString()), dir);
        p.awaitReady(Duration.ofMinutes(2));
        p.close();      // the predecessor gives up after ready (e.g. it was stopped): the successor must not take over
        ProcessHandle h = ProcessHandle.of(p.pid()).orElse(null);
        if (h != null) {
            h.onExit().get(60, TimeUnit.SECONDS);
        }
        assertFalse(Files.exists(out), "the successor was handed nothing");
        assertFalse(Files.exists(dir.resolve(Handover.SOCKET_FILE)));
    }

    @Test
    void successorIsNotOurChild() throws Exception {
        Path out = dir.resolve("go.txt");
        Handover.Pending p = Handover.start(fake("ready", out.toString()), dir);
        try {
            long parent = ProcessHandle.of(p.pid()).flatMap(ProcessHandle::parent).map(ProcessHandle::pid).orElse(-1L);
            assertNotEquals(ProcessHandle.current().pid(), parent, "the successor must be the service manager's child, not ours");
            assertTrue(ProcessHandle.current().children().noneMatch(h -> h.pid() == p.pid()));
        } finally {
            p.close();
        }
    }

    @Test
    void successorCommandGoesThroughTheLauncherWhenThereIsOne() throws IOException {
        Path launcher = dir.resolve("snapbd");
        Files.writeString(launcher, "#!/bin/sh\n");
        launcher.toFile().setExecutable(true);
        List<String> jvm = List.of("/usr/bin/java", "-Xmx1g", "-jar", "/x/snapbd.jar", "serve", "--config", "/etc/snapbd/snapbd.conf");
        assertEquals(List.of(launcher.toString(), "serve", "--config", "/etc/snapbd/snapbd.conf"),
                Handover.successorCommand(jvm, launcher.toString()));
        assertEquals(jvm, Handover.successorCommand(jvm, null));
        assertEquals(jvm, Handover.successorCommand(jvm, dir.resolve("missing").toString()));
    }

    @Test
    void goLineParses() throws IOException {
        assertEquals(new Handover.Go(5, Set.of()), Handover.Go.parse("go 5 -"));
        assertEquals(new Handover.Go(5, Set.of("/dev/nbd0", "/dev/nbd2")), Handover.Go.parse("go 5 /dev/nbd0,/dev/nbd2"));
        assertThrows(IOException.class, () -> Handover.Go.parse(null));
        assertThrows(IOException.class, () -> Handover.Go.parse("abort"));
    }
}

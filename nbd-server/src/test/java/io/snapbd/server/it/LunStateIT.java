package io.snapbd.server.it;

import com.fasterxml.jackson.databind.JsonNode;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

import static io.snapbd.server.it.SnapshotSupport.createSnapshot;
import static io.snapbd.server.it.SnapshotSupport.json;
import static io.snapbd.server.it.SnapshotSupport.nbdsh;
import static io.snapbd.server.it.SnapshotSupport.snapshotEntry;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * HP's LUN state counters through the CLI, driven by real clients: what counts (WRITE, TRIM, WRITE_ZEROES at
 * dispatch, while enabled) and what does not (reads, FLUSH, CACHE, BLOCK_STATUS, anything while disabled),
 * ENABLE/DISABLE semantics, monotonic GET under concurrent writers, persistence across clean restarts and
 * kill -9, independence of exports, the check command, and the state recorded with each snapshot.
 */
@Timeout(value = 10, unit = TimeUnit.MINUTES)
@ExtendWith(ServerLiveness.class)
class LunStateIT {

    @TempDir
    static Path tmp;
    @RegisterExtension
    static final SnapbdServerExtension SNAPBD = SnapbdServerExtension.builder("LunStateIT").volume("first", "32M", "4M").build();
    static final ServerProcess server = SNAPBD.server();
    static final Path data = SNAPBD.dataDir();

    static String newVolume(String name) {
        server.cli("volume", "create", name, "--size", "32M", "--save-size", "16M").assertOk();
        return name;
    }

    /** A LUN state: {@code enabled}, {@code counter}, {@code timestamp}. */
    record Lun(boolean enabled, long counter, long timestamp) {
        static Lun of(JsonNode j) {
            assertTrue(j.has("counter") && j.has("timestamp") && j.has("enabled"), "LUN state JSON: " + j);
            return new Lun(j.path("enabled").asBoolean(), j.path("counter").asLong(), j.path("timestamp").asLong());
        }
    }

    static Lun lun(String verb, String export) {
        JsonNode j = json(server.cli("lun-state", verb, export, "--json"));
        assertEquals(export, j.path("export").asText(), j.toString());
        return Lun.of(j);
    }

    static Lun get(String export) {
        return lun("get", export);
    }

    /** fio's nbd engine: exactly {@code n} requests of {@code rw} (randwrite, randread, randtrim), one job. */
    static void fio(String export, String rw, int n, int iodepth) {
        Tools.Result r = Tools.run("fio", "--name=lun", "--ioengine=nbd", "--uri=" + server.unixUri(export), "--rw=" + rw,
                "--bs=4k", "--size=32M", "--number_ios=" + n, "--iodepth=" + iodepth).assertOk();
        assertTrue(r.stdout().contains("Run status group"), r.toString());
    }

    // ---- enable / disable ----------------------------------------------------------------------------------

    @Test
    void enableKeepsTheValue() {
        Tools.require("fio");
        String vol = newVolume("keep");
        Lun before = get(vol);
        assertFalse(before.enabled(), "a new volume starts disabled: " + before);
        Lun enabled = lun("enable", vol);
        assertTrue(enabled.enabled());
        assertEquals(before.counter(), enabled.counter(), "ENABLE does not reset the counter");
        assertEquals(before.timestamp(), enabled.timestamp(), "ENABLE does not touch the timestamp");
        assertEquals(enabled, get(vol));

        fio(vol, "randwrite", 100, 1);
        Lun counted = get(vol);
        assertEquals(before.counter() + 100, counted.counter());
        // ENABLE again while enabled: still no reset.
        assertEquals(counted, lun("enable", vol));
        assertEquals(counted, get(vol));
    }

    @Test
    void disableBumpsOnceAndWritesWhileDisabledDoNotCount() {
        Tools.require("fio", "nbdsh");
        String vol = newVolume("disable");
        lun("enable", vol);
        fio(vol, "randwrite", 10, 1);
        Lun enabled = get(vol);
        assertEquals(10, enabled.counter());

        Lun disabled = lun("disable", vol);
        assertFalse(disabled.enabled());
        assertEquals(enabled.counter() + 1, disabled.counter(), "DISABLE bumps the counter exactly once");
        assertTrue(disabled.timestamp() > enabled.timestamp(), "and the timestamp");
        assertEquals(disabled, get(vol));
        assertEquals(disabled, get(vol), "GET does not bump");

        fio(vol, "randwrite", 200, 8);
        fio(vol, "randtrim", 20, 1);
        nbdsh(server.unixUri(vol), "h.zero(4096, 0)\nh.pwrite(b'x', 5)\nh.trim(4096, 8192)");
        assertEquals(disabled, get(vol), "writes, trims and zeroes while disabled do not count");

        Lun again = lun("enable", vol);
        assertEquals(disabled.counter(), again.counter(), "re-enabling keeps the value");
        assertTrue(again.enabled());
        fio(vol, "randwrite", 5, 1);
        assertEquals(disabled.counter() + 5, get(vol).counter());
    }

    // ---- what counts ------------------------------------------------------------------------------------------

    @Test
    void fioNumberIosRaisesTheCounterByExactlyN() {
        Tools.require("fio", "nbdsh");
        String vol = newVolume("exact");
        lun("enable", vol);
        Lun c0 = get(vol);
        fio(vol, "randwrite", 1234, 1);
        Lun c1 = get(vol);
        assertEquals(c0.counter() + 1234, c1.counter(), "randwrite, one job, --number_ios=1234");
        assertTrue(c1.timestamp() > c0.timestamp(), "the timestamp moved: " + c0 + " -> " + c1);

        fio(vol, "randwrite", 1000, 32);
        Lun c2 = get(vol);
        assertEquals(c1.counter() + 1000, c2.counter(), "randwrite at queue depth 32, --number_ios=1000");

        fio(vol, "randtrim", 300, 4);
        Lun c3 = get(vol);
        assertEquals(c2.counter() + 300, c3.counter(), "TRIM counts: randtrim --number_ios=300");

        // WRITE_ZEROES (with and without NO_HOLE), TRIM, WRITE: one each.
        nbdsh(server.unixUri(vol), String.join("\n",
                "h.zero(8192, 0)",
                "h.zero(4096, 65536, nbd.CMD_FLAG_NO_HOLE)",
                "h.trim(4096, 1048576)",
                "h.pwrite(b'abc', 4095)",
                "h.pwrite(b'x' * 4096, 8192, nbd.CMD_FLAG_FUA)"));
        assertEquals(c3.counter() + 5, get(vol).counter(), "2 WRITE_ZEROES + 1 TRIM + 2 WRITE");
    }

    @Test
    void readsFlushCacheAndBlockStatusDoNotCount() {
        Tools.require("fio", "nbdsh", "nbdinfo", "nbdcopy");
        String vol = newVolume("readonly-ops");
        lun("enable", vol);
        fio(vol, "randwrite", 500, 8);
        Lun c0 = get(vol);
        assertEquals(500, c0.counter());

        fio(vol, "randread", 2000, 16);
        Tools.run("nbdsh", "--base-allocation", "-u", server.unixUri(vol), "-c", String.join("\n",
                "h.flush()",
                "h.cache(65536, 0)",
                "h.pread(1024 * 1024, 0)",
                "h.flush()",
                "h.block_status(1024 * 1024, 0, lambda *a: 0)")).assertOk();
        Tools.run("nbdinfo", "--map", server.unixUri(vol)).assertOk();
        Tools.run("nbdcopy", server.unixUri(vol), tmp.resolve("readonly-ops.img").toString()).assertOk();
        assertEquals(c0, get(vol), "READ, FLUSH, CACHE, BLOCK_STATUS never bump");
    }

    // ---- concurrency -----------------------------------------------------------------------------------------

    @Test
    void getNeverGoesBackwardsWhileEightConnectionsWrite() throws Exception {
        Tools.require("fio");
        String vol = newVolume("concurrent");
        lun("enable", vol);
        Lun start = get(vol);
        int perJob = 5000;
        Path log = tmp.resolve("concurrent-fio.log");
        Process fio = Tools.start(log, List.of("fio", "--name=eight", "--ioengine=nbd", "--uri=" + server.unixUri(vol),
                "--rw=randwrite", "--bs=4k", "--size=32M", "--numjobs=8", "--iodepth=4", "--number_ios=" + perJob,
                "--rate_iops=500", "--group_reporting"));      // about 10 s, so that the polls see it run
        List<Lun> seen = new ArrayList<>();
        seen.add(start);
        try (SnapshotSupport.Admin admin = new SnapshotSupport.Admin(server)) {
            int cliPolls = 0;
            while (fio.isAlive()) {
                // Mostly fast polls through the admin socket, and now and then the CLI itself.
                if (cliPolls < 10 && seen.size() % 500 == 0) {
                    seen.add(get(vol));
                    cliPolls++;
                } else {
                    seen.add(Lun.of(admin.call(Map.of("command", "lun.get", "export", vol))));
                }
                Thread.sleep(2);
            }
        } finally {
            SnapshotSupport.end(fio);
        }
        assertEquals(0, fio.exitValue(), Files.readString(log));
        Lun end = get(vol);
        seen.add(end);
        for (int i = 1; i < seen.size(); i++) {
            Lun a = seen.get(i - 1);
            Lun b = seen.get(i);
            assertTrue(b.counter() >= a.counter(), "GET went backwards at sample " + i + ": " + a + " -> " + b);
            if (b.counter() > a.counter()) {
                assertTrue(b.timestamp() > a.timestamp(), "the counter rose but the timestamp did not, sample " + i + ": " + a + " -> " + b);
            } else {
                assertEquals(a.timestamp(), b.timestamp(), "same counter, same timestamp, sample " + i + ": " + a + " -> " + b);
            }
        }
        long distinct = seen.stream().mapToLong(Lun::counter).distinct().count();
        assertTrue(distinct > 5, "the polls saw the counter move while fio ran (" + distinct + " distinct values in "
                + seen.size() + " samples)");
        assertEquals(start.counter() + 8L * perJob, end.counter(), "8 jobs x --number_ios=" + perJob);
    }

    // ---- persistence -------------------------------------------------------------------------------------------

    @Test
    void cleanRestartReturnsTheSameValue() {
        Tools.require("fio");
        String vol = newVolume("clean");
        lun("enable", vol);
        fio(vol, "randwrite", 321, 4);
        Lun before = get(vol);
        assertEquals(321, before.counter());

        assertEquals(0, server.stop());
        Tools.Result offline = ServerProcess.snapbd(data, "lun-state", "get", vol, "--json");
        assertEquals(before, Lun.of(json(offline)), "offline GET after a clean stop");
        server.restart();
        assertEquals(before, get(vol), "GET after a clean restart");
        server.restart();
        assertEquals(before, get(vol), "GET after a second clean restart");
        fio(vol, "randwrite", 10, 1);
        assertEquals(before.counter() + 10, get(vol).counter(), "still counting after the restarts");
    }

    @Test
    void kill9ThenRestartReturnsAGreaterValueEvenWithoutWrites() {
        Tools.require("fio");
        String vol = newVolume("crash");
        lun("enable", vol);
        fio(vol, "randwrite", 50, 4);
        Lun before = get(vol);
        assertEquals(50, before.counter());

        server.kill9();
        server.restart();
        Lun after = get(vol);
        assertTrue(after.counter() > before.counter(), "after kill -9 the counter must be greater: " + before + " -> " + after);
        assertTrue(after.timestamp() > before.timestamp(), "and the timestamp: " + before + " -> " + after);
        assertTrue(after.enabled(), "tracking stays enabled: " + after);

        // A second crash with no write at all in between: greater again.
        server.kill9();
        server.restart();
        Lun again = get(vol);
        assertTrue(again.counter() > after.counter(), after + " -> " + again);
        assertTrue(again.timestamp() > after.timestamp(), after + " -> " + again);

        // A never-enabled, never-written volume after a crash: its value also moves on, it never repeats 0.
        String quiet = newVolume("crash-quiet");
        Lun q0 = get(quiet);
        server.kill9();
        server.restart();
        Lun q1 = get(quiet);
        assertTrue(q1.counter() > q0.counter() || q1.timestamp() > q0.timestamp(),
                "a value handed out before the crash must not be handed out again: " + q0 + " -> " + q1);
        Lun third = get(vol);
        assertTrue(third.counter() > again.counter(), "the third crash moved " + vol + " on too: " + again + " -> " + third);

        // A clean stop after the recovery keeps the value handed out last, exactly.
        assertEquals(0, server.stop());
        ServerProcess.snapbd(data, "fsck", vol, quiet).assertExit(0);
        server.restart();
        assertEquals(third, get(vol), "a clean stop after the recovery keeps the value handed out last");
        assertEquals(q1, get(quiet));
    }

    // ---- the durable ceilings, crossed ------------------------------------------------------------------------

    /** A server of its own with small leases, on a data directory with one volume {@code vol}. */
    static ServerProcess leaseServer(String name, long values, long millis, String vol) {
        Path d = tmp.resolve(name);
        ServerProcess.snapbd(d, "volume", "create", vol, "--size", "32M", "--save-size", "4M").assertOk();
        return ServerProcess.start(List.of("-Dsnapbd.lunState.lease.values=" + values, "-Dsnapbd.lunState.lease.millis=" + millis),
                d, "LunStateIT-" + name);
    }

    static Lun lunOn(ServerProcess s, String verb, String export) {
        JsonNode j = json(s.cli("lun-state", verb, export, "--json"));
        return Lun.of(j);
    }

    static void fioOn(ServerProcess s, String export, int n, int iodepth) {
        Tools.run("fio", "--name=lun", "--ioengine=nbd", "--uri=" + s.unixUri(export), "--rw=randwrite",
                "--bs=4k", "--size=32M", "--number_ios=" + n, "--iodepth=" + iodepth).assertOk();
    }

    /**
     * kill -9 right after a GET crossed the counter lease (1000 values here; the time lease, an hour, is never
     * reached): the ceiling that GET raised is what the state restarts at. Without the raise the state would
     * restart at the old ceiling, below the value handed out.
     */
    @Test
    void kill9RightAfterTheCounterLeaseIsCrossed() {
        Tools.require("fio");
        try (ServerProcess s = leaseServer("counter-lease", 1000, 3_600_000, "cl")) {
            lunOn(s, "enable", "cl");
            fioOn(s, "cl", 1500, 8);
            Lun crossed = lunOn(s, "get", "cl");
            assertEquals(1500, crossed.counter(), "past the first ceiling (1000)");
            s.kill9();
            s.restart();
            Lun after = lunOn(s, "get", "cl");
            assertTrue(after.counter() > crossed.counter(), "after kill -9 the counter restarts above the value handed out: "
                    + crossed + " -> " + after);
            assertTrue(after.timestamp() > crossed.timestamp(), crossed + " -> " + after);
            // Crossed again after the recovery, and crashed again.
            fioOn(s, "cl", 1200, 8);
            Lun again = lunOn(s, "get", "cl");
            assertEquals(after.counter() + 1200, again.counter());
            s.kill9();
            s.restart();
            Lun third = lunOn(s, "get", "cl");
            assertTrue(third.counter() > again.counter() && third.timestamp() > again.timestamp(), again + " -> " + third);
        }
    }

    /**
     * kill -9 right after a GET crossed the time lease (300 ms; the counter lease is never reached): the
     * timestamp restarts above the one handed out.
     */
    @Test
    void kill9RightAfterTheTimeLeaseIsCrossed() throws Exception {
        Tools.require("fio");
        try (ServerProcess s = leaseServer("time-lease", 1L << 40, 300, "tl")) {
            lunOn(s, "enable", "tl");
            fioOn(s, "tl", 5, 1);
            Lun first = lunOn(s, "get", "tl");
            Thread.sleep(600);
            fioOn(s, "tl", 1, 1);
            Lun crossed = lunOn(s, "get", "tl");
            assertTrue(crossed.timestamp() >= first.timestamp() + 300_000_000L, "the write came after the time lease: "
                    + first + " -> " + crossed);
            s.kill9();
            s.restart();
            Lun after = lunOn(s, "get", "tl");
            assertTrue(after.timestamp() > crossed.timestamp(), "after kill -9 the timestamp restarts above the one handed out: "
                    + crossed + " -> " + after);
            assertTrue(after.counter() > crossed.counter(), crossed + " -> " + after);
        }
    }

    /**
     * Four fio jobs write while a thread GETs through the admin socket as fast as it can, leases small enough
     * (200 values, 50 ms) that the GETs cross them all the time; kill -9 in the middle of it. Every GET answered
     * before the kill never went back, and the first GET after the restart is above all of them.
     */
    @Test
    void concurrentWritersWithGetsDuringAKill9() throws Exception {
        Tools.require("fio");
        try (ServerProcess s = leaseServer("concurrent-lease", 200, 50, "cc")) {
            lunOn(s, "enable", "cc");
            Path log = tmp.resolve("concurrent-lease-fio.log");
            Process fio = Tools.start(log, List.of("fio", "--name=cc", "--ioengine=nbd", "--uri=" + s.unixUri("cc"),
                    "--rw=randwrite", "--bs=4k", "--size=32M", "--numjobs=4", "--iodepth=4", "--rate_iops=400",
                    "--time_based", "--runtime=600"));
            List<Lun> seen = java.util.Collections.synchronizedList(new ArrayList<>());
            java.util.concurrent.atomic.AtomicBoolean killed = new java.util.concurrent.atomic.AtomicBoolean();
            java.util.concurrent.atomic.AtomicReference<Throwable> pollerFailure = new java.util.concurrent.atomic.AtomicReference<>();
            Thread poller = new Thread(() -> {
                try (SnapshotSupport.Admin admin = new SnapshotSupport.Admin(s)) {
                    while (true) {
                        seen.add(Lun.of(admin.call(Map.of("command", "lun.get", "export", "cc"))));
                    }
                } catch (Throwable t) {
                    if (!killed.get()) {
                        pollerFailure.set(t);
                    }
                }
            });
            try {
                poller.start();
                long deadline = System.nanoTime() + TimeUnit.MINUTES.toNanos(3);
                while ((seen.isEmpty() || seen.get(seen.size() - 1).counter() < 3000) && System.nanoTime() < deadline
                        && pollerFailure.get() == null) {
                    assertTrue(fio.isAlive(), "fio ended early: " + Files.readString(log));
                    Thread.sleep(20);
                }
                assertTrue(pollerFailure.get() == null, "GETs failed before the kill: " + pollerFailure.get());
                assertTrue(fio.isAlive(), "fio ran until the kill: " + Files.readString(log));
                int before = seen.size();
                Thread.sleep(50);
                assertTrue(seen.size() > before, "GETs were running at the kill");
                killed.set(true);
                s.kill9();
                poller.join(TimeUnit.MINUTES.toMillis(1));
            } finally {
                SnapshotSupport.stopNow(fio);
            }
            List<Lun> answered = new ArrayList<>(seen);
            assertTrue(answered.get(answered.size() - 1).counter() >= 3000, "the writers crossed the lease many times: " + answered.size()
                    + " GETs, last " + answered.get(answered.size() - 1));
            for (int i = 1; i < answered.size(); i++) {
                Lun a = answered.get(i - 1);
                Lun b = answered.get(i);
                assertTrue(b.counter() >= a.counter() && b.timestamp() >= a.timestamp(), "GET went back at " + i + ": " + a + " -> " + b);
            }
            Lun last = answered.get(answered.size() - 1);
            s.restart();
            Lun after = lunOn(s, "get", "cc");
            assertTrue(after.counter() > last.counter() && after.timestamp() > last.timestamp(),
                    "after kill -9 above every value answered before it: " + last + " -> " + after);
        }
    }

    // ---- independence -------------------------------------------------------------------------------------------

    @Test
    void twoVolumesNeverAffectEachOther() {
        Tools.require("fio");
        String a = newVolume("indep-a");
        String b = newVolume("indep-b");
        lun("enable", a);
        lun("enable", b);
        fio(b, "randwrite", 7, 1);
        Lun b0 = get(b);
        Lun a0 = get(a);

        fio(a, "randwrite", 400, 8);
        assertEquals(a0.counter() + 400, get(a).counter());
        assertEquals(b0, get(b), "writes to A do not move B");
        lun("disable", a);
        assertEquals(b0, get(b), "DISABLE of A does not move B");
        assertFalse(get(a).enabled());
        assertTrue(get(b).enabled(), "B stays enabled");
        fio(b, "randwrite", 3, 1);
        assertEquals(a0.counter() + 401, get(a).counter(), "writes to B do not move A");
        assertEquals(b0.counter() + 3, get(b).counter());
    }

    // ---- check -------------------------------------------------------------------------------------------------

    static String token(String export) {
        JsonNode j = json(server.cli("lun-state", "get", export, "--json"));
        assertTrue(j.path("token").isTextual(), "a token while enabled: " + j);
        return j.path("token").asText();
    }

    @Test
    void checkExitsZeroWhenUnchangedAndThreeWhenChanged() {
        Tools.require("nbdsh");
        String vol = newVolume("check");
        lun("enable", vol);
        nbdsh(server.unixUri(vol), "h.pwrite(b'backup', 0)");
        String saved = token(vol);
        JsonNode got = json(server.cli("lun-state", "get", vol, "--json"));
        assertEquals(got.path("identity").asText() + ":" + got.path("counter").asLong(), saved, "the token is UUID:COUNTER");
        Tools.Result same = server.cli("lun-state", "check", vol, "--expect", saved).assertExit(0);
        assertTrue(same.stdout().contains("unchanged"), same.toString());

        nbdsh(server.unixUri(vol), "h.pread(6, 0)\nh.flush()");
        server.cli("lun-state", "check", vol, "--expect", saved).assertExit(0);

        nbdsh(server.unixUri(vol), "h.pwrite(b'tamper', 0)");
        Tools.Result changed = server.cli("lun-state", "check", vol, "--expect", saved).assertExit(3);
        assertTrue(changed.stdout().contains("CHANGED"), changed.toString());
        server.cli("lun-state", "check", vol, "--expect", token(vol)).assertExit(0);

        // DISABLE alone makes a saved token stop matching, and a disabled export hands out none.
        String beforeDisable = token(vol);
        JsonNode disabled = json(server.cli("lun-state", "disable", vol, "--json"));
        assertTrue(disabled.path("token").isNull(), "no token while disabled: " + disabled);
        Tools.Result off = server.cli("lun-state", "check", vol, "--expect", beforeDisable).assertExit(3);
        assertTrue(off.stdout().contains("disabled"), off.toString());
        // An unknown export is an error, not "changed".
        Tools.Result unknown = server.cli("lun-state", "check", "no-such-volume", "--expect", beforeDisable);
        assertNotEquals(0, unknown.exit(), unknown.toString());
        assertNotEquals(3, unknown.exit(), "an unknown export is not a changed one: " + unknown);
    }

    @Test
    void aBareCounterIsRefusedBecauseItCannotTellLivesApart() {
        String vol = newVolume("bare");
        lun("enable", vol);
        Tools.Result bare = server.cli("lun-state", "check", vol, "--expect", Long.toString(get(vol).counter()));
        assertEquals(2, bare.exit(), "a bare counter is bad usage: " + bare);
        assertTrue(bare.stderr().contains("bare counter") && bare.stderr().contains("token"), bare.toString());
        Tools.Result junk = server.cli("lun-state", "check", vol, "--expect", "yesterday");
        assertEquals(2, junk.exit(), junk.toString());
        assertTrue(junk.stderr().contains("not a LUN state token"), junk.toString());
    }

    @Test
    void deleteAndCreateUnderTheSameNameAnswersChangedForTheSavedToken() {
        Tools.require("fio");
        String vol = newVolume("reborn");
        Lun first = lun("enable", vol);
        assertTrue(first.timestamp() > 0, "a new volume's timestamp is its creation time: " + first);
        fio(vol, "randwrite", 25, 1);
        String saved = token(vol);

        server.cli("volume", "delete", vol).assertOk();
        newVolume(vol);
        Lun reborn = lun("enable", vol);
        assertEquals(first.counter(), reborn.counter(), "the new life starts where the old one started");
        fio(vol, "randwrite", 25, 1);
        assertEquals(Long.parseLong(saved.substring(saved.indexOf(':') + 1)), get(vol).counter(),
                "the same counter as the saved value: a bare counter would answer 'unchanged'");
        Tools.Result check = server.cli("lun-state", "check", vol, "--expect", saved).assertExit(3);
        assertTrue(check.stdout().contains("not the volume the token was saved from"), check.toString());
        server.cli("lun-state", "check", vol, "--expect", token(vol)).assertExit(0);
    }

    @Test
    void aNewVolumesTimestampIsItsCreationTime() {
        long before = System.currentTimeMillis();
        String vol = newVolume("born");
        long after = System.currentTimeMillis();
        Lun l = get(vol);
        assertEquals(0, l.counter());
        assertTrue(l.timestamp() / 1_000_000L >= before - 1000 && l.timestamp() / 1_000_000L <= after,
                "timestamp " + l.timestamp() + " is the creation time, between " + before + " and " + after + " ms");
        JsonNode listed = null;
        for (JsonNode v : json(server.cli("volume", "list", "--json")).path("volumes")) {
            if (v.path("name").asText().equals(vol)) {
                listed = v;
            }
        }
        assertEquals(java.time.Instant.ofEpochMilli(l.timestamp() / 1_000_000L).toString(), listed.path("created").asText());
    }

    @Test
    void tokensSurviveCleanRestartsAndNeverRepeatAfterKill9() {
        Tools.require("fio");
        String vol = newVolume("token-restarts");
        lun("enable", vol);
        fio(vol, "randwrite", 10, 1);
        String saved = token(vol);
        assertEquals(0, server.stop());
        server.restart();
        server.cli("lun-state", "check", vol, "--expect", saved).assertExit(0);
        server.kill9();
        server.restart();
        server.cli("lun-state", "check", vol, "--expect", saved).assertExit(3);
        assertNotEquals(saved, token(vol));
    }

    // ---- clone --track -------------------------------------------------------------------------------------------

    @Test
    void cloneTrackCountsTheCopyAndReportsTheTokenBeforeTheExportOpens() {
        Tools.require("nbdsh");
        String vol = newVolume("track-src");
        // 3 in-use extents: 1 block, 5 MiB (two 4 MiB copy chunks), 2 blocks: 4 writes of the copy.
        nbdsh(server.unixUri(vol), "import os\nh.pwrite(os.urandom(4096), 0)\nh.pwrite(os.urandom(5 << 20), 1 << 20)\n"
                + "h.pwrite(os.urandom(8192), 12 << 20)");
        createSnapshot(server, vol, "s");
        JsonNode job = json(server.cli("snapshot", "clone", vol, "s", "track-dst", "--track", "--wait", "--json"));
        assertEquals("done", job.path("state").asText(), job.toString());
        JsonNode l = job.path("lunState");
        assertTrue(l.path("enabled").asBoolean(), "tracking was enabled by --track: " + job);
        assertEquals(4, l.path("counter").asLong(), "enabled at 0 before the copy, then one count per copy write: " + job);
        String saved = l.path("token").asText();
        assertEquals(l.path("identity").asText() + ":4", saved);
        assertEquals(saved, token("track-dst"), "nothing between the end of the copy and now");
        JsonNode status = json(server.cli("snapshot", "clone-status", "track-dst", "--json"));
        assertEquals(saved, status.path("lunState").path("token").asText(), "clone-status reports it too: " + status);
        Tools.Result human = server.cli("snapshot", "clone-status", "track-dst").assertOk();
        assertTrue(human.stdout().contains("LUN state token to save: " + saved), human.toString());
        server.cli("lun-state", "check", "track-dst", "--expect", saved).assertExit(0);

        // The first write of any client after it changes the answer.
        nbdsh(server.unixUri("track-dst"), "h.zero(4096, 0)");
        server.cli("lun-state", "check", "track-dst", "--expect", saved).assertExit(3);

        // Without --track nothing is tracked and no token is reported: the README's window stays closed only with it.
        JsonNode untracked = json(server.cli("snapshot", "clone", vol, "s", "untracked-dst", "--wait", "--json"));
        assertFalse(untracked.path("lunState").path("enabled").asBoolean(), untracked.toString());
        assertTrue(untracked.path("lunState").path("token").isNull(), untracked.toString());
    }

    @Test
    void cloneTrackOfflineAlsoReportsTheToken() {
        String vol = newVolume("track-offline-src");
        createSnapshot(server, vol, "s");
        assertEquals(0, server.stop());
        try {
            JsonNode job = json(ServerProcess.snapbd(data, "snapshot", "clone", vol, "s", "track-offline-dst", "--track", "--json"));
            assertEquals("done", job.path("state").asText(), "offline, the CLI copies before it answers: " + job);
            String saved = job.path("lunState").path("token").asText();
            assertTrue(job.path("lunState").path("enabled").asBoolean(), job.toString());
            ServerProcess.snapbd(data, "lun-state", "check", "track-offline-dst", "--expect", saved).assertExit(0);
        } finally {
            server.restart();
        }
    }

    // ---- snapshots -----------------------------------------------------------------------------------------------

    @Test
    void snapshotsRecordTheStateAtCreationAndAreFixed() {
        Tools.require("fio");
        String vol = newVolume("snaps");
        lun("enable", vol);
        fio(vol, "randwrite", 40, 1);
        Lun at1 = get(vol);
        JsonNode s1 = createSnapshot(server, vol, "s1");
        assertEquals(at1, get(vol), "taking a snapshot is not an altering request");
        fio(vol, "randwrite", 60, 1);
        Lun at2 = get(vol);
        createSnapshot(server, vol, "s2");
        fio(vol, "randwrite", 5, 1);

        assertEquals(at1, Lun.of(snapshotEntry(server, vol, "s1").path("lunStateAtCreation")), "snapshot list, s1: " + s1);
        assertEquals(at2, Lun.of(snapshotEntry(server, vol, "s2").path("lunStateAtCreation")), "snapshot list, s2");
        assertEquals(at1.counter() + 60, at2.counter());

        // GET on a snapshot export answers the creation-time state; ENABLE / DISABLE on it are refused.
        assertEquals(at1, get(vol + "@s1"));
        assertEquals(at2, get(vol + "@s2"));
        Tools.Result enable = server.cli("lun-state", "enable", vol + "@s1");
        assertNotEquals(0, enable.exit(), "ENABLE on a snapshot export: " + enable);
        assertTrue(enable.stderr().contains("read-only"), enable.toString());
        Tools.Result disable = server.cli("lun-state", "disable", vol + "@s2");
        assertNotEquals(0, disable.exit(), "DISABLE on a snapshot export: " + disable);
        assertEquals(at1, get(vol + "@s1"), "unchanged by the refused requests");
        assertEquals(at2, get(vol + "@s2"));

        // A snapshot export's token is the volume's identity and the snapshot's sequence: fixed while it exists,
        // never the token of a snapshot deleted and taken again under the same name.
        String s1Token = json(server.cli("lun-state", "get", vol + "@s1", "--json")).path("token").asText();
        assertEquals(json(server.cli("lun-state", "get", vol, "--json")).path("identity").asText() + "@" + s1.path("sequence").asLong(), s1Token);
        server.cli("lun-state", "check", vol + "@s1", "--expect", s1Token).assertExit(0);

        // A restore into the volume is an altering request.
        String beforeRestoreToken = token(vol);
        Lun beforeRestore = get(vol);
        server.cli("snapshot", "restore", vol, "s1").assertOk();
        Lun afterRestore = get(vol);
        assertTrue(afterRestore.counter() > beforeRestore.counter(), "restore bumps the volume's state: " + beforeRestore + " -> " + afterRestore);
        assertEquals(at1, get(vol + "@s1"), "the snapshot's own state never changes");
        server.cli("lun-state", "check", vol, "--expect", beforeRestoreToken).assertExit(3);
        server.cli("lun-state", "check", vol + "@s1", "--expect", s1Token).assertExit(0);

        // Still there after a clean restart.
        assertEquals(0, server.stop());
        server.restart();
        assertEquals(at1, get(vol + "@s1"));
        assertEquals(at2, Lun.of(snapshotEntry(server, vol, "s2").path("lunStateAtCreation")));
        server.cli("lun-state", "check", vol + "@s1", "--expect", s1Token).assertExit(0);

        server.cli("snapshot", "delete", vol, "s1").assertOk();
        createSnapshot(server, vol, "s1");
        Tools.Result again = server.cli("lun-state", "check", vol + "@s1", "--expect", s1Token).assertExit(3);
        assertTrue(again.stdout().contains("CHANGED"), again.toString());
    }
}

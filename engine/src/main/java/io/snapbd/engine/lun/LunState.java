package io.snapbd.engine.lun;

import io.snapbd.engine.format.CeilingFile;
import io.snapbd.engine.format.CorruptMetadataException;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.util.UUID;
import java.util.concurrent.atomic.AtomicLong;

/**
 * HP's per-LUN state metric for one export: an {@code enabled} flag, a 64-bit counter and a nanosecond
 * timestamp of the last altering request. Decisions where HP's source contradicts itself (docs/lun-state.md):
 * ENABLE keeps the value; DISABLE bumps once, then clears the flag; altering requests bump only while
 * enabled, at dispatch, before they execute; GET works either way.
 *
 * <p>Never repeat, never go back: the values a GET hands out are always below a <em>ceiling</em> that is on
 * disk ({@code lun.state}). The write path only increments in memory; a GET that would hand out a value at
 * or past the ceiling first raises and forces it (once per {@link #LEASE} requests or seconds). After a
 * clean stop the exact values come back; after an unclean one the values restart at the ceilings, above
 * anything handed out before.
 *
 * <p>A counter alone does not identify an export: a volume deleted and created again under the same name
 * starts a new life. What a backup tool saves is therefore a {@linkplain #token(Value) token}: the volume's
 * identity (the random UUID of {@code volume.meta}, created with the volume and never reused) and the counter.
 */
public final class LunState {

    public static final String FILE = "lun.state";
    static final long MAGIC = 0x534e554c44424e53L;   // "SNBDLUNS" little-endian
    static final int VERSION = 1;
    /**
     * Counter values granted per forced write of the ceiling: 2^20; tests cross it with
     * {@code -Dsnapbd.lunState.lease.values=N} (read once, a constant for the JIT).
     */
    public static final long LEASE = Long.getLong("snapbd.lunState.lease.values", 1L << 20);
    /** Nanoseconds of time granted likewise: 60 s; {@code -Dsnapbd.lunState.lease.millis=N} for tests. */
    static final long TIME_LEASE_NANOS = Long.getLong("snapbd.lunState.lease.millis", 60_000L) * 1_000_000L;

    /** A GET answer. */
    public record Value(boolean enabled, long counter, long timestamp) {
    }

    /** The fields of a {@code lun.state} file, as decoded and checked by {@link #read}. */
    public record Stored(boolean clean, boolean enabled, long counter, long timestamp) {
    }

    private final Path file;
    private final UUID owner;
    private volatile boolean enabled;
    /**
     * Guards the pair below: odd while a bump or a GET holds it. A bump changes the counter and the timestamp
     * together, and a GET that read them apart once handed out the same counter with two timestamps. The
     * guard is this export's alone and held for two field updates; it replaces the two atomic updates a bump
     * made before, on the same contended cache line.
     */
    private final AtomicLong pairGuard = new AtomicLong();
    private long counter;       // guarded by pairGuard
    private long timestamp;     // guarded by pairGuard
    private final Object persistLock = new Object();
    private volatile long counterCeiling;
    private volatile long timeCeiling;
    private final long wallBase = System.currentTimeMillis() * 1_000_000L;
    private final long monoBase = System.nanoTime();
    private final boolean recoveredFromCrash;
    private final long leaseValues;
    private final long leaseNanos;

    private LunState(Path file, UUID owner, boolean enabled, long counter, long timestamp, boolean crashed,
                     long leaseValues, long leaseNanos) {
        this.leaseValues = leaseValues;
        this.leaseNanos = leaseNanos;
        this.file = file;
        this.owner = owner;
        this.enabled = enabled;
        this.counter = counter;
        this.timestamp = timestamp;
        this.recoveredFromCrash = crashed;
    }

    /** Opens the state of a volume; a missing file starts at zero (kept for callers that know no creation time). */
    public static LunState open(Path dir, UUID owner) throws IOException {
        return open(dir, owner, 0);
    }

    /**
     * Opens the state of a volume. A missing file (a volume never opened) starts at counter 0 and timestamp
     * {@code createdNanos}, the volume's creation time; an older file whose timestamp is below it (a volume
     * never written while enabled) is raised to it, so the timestamp never reads 0.
     */
    public static LunState open(Path dir, UUID owner, long createdNanos) throws IOException {
        return open(dir, owner, createdNanos, LEASE, TIME_LEASE_NANOS);
    }

    /** {@link #open(Path, UUID)} with other leases (tests: cross them within a test). */
    static LunState open(Path dir, UUID owner, long leaseValues, long leaseNanos) throws IOException {
        return open(dir, owner, 0, leaseValues, leaseNanos);
    }

    private static LunState open(Path dir, UUID owner, long createdNanos, long leaseValues, long leaseNanos)
            throws IOException {
        if (leaseValues < 1 || leaseNanos < 1) {
            throw new IllegalArgumentException("leases must be positive: " + leaseValues + " values, " + leaseNanos + " ns");
        }
        Path f = dir.resolve(FILE);
        LunState s;
        Stored st = read(f, owner);
        if (st == null) {
            s = new LunState(f, owner, false, 0, createdNanos, false, leaseValues, leaseNanos);
        } else {
            // clean: exact values; crashed: the ceilings, above anything handed out before
            s = new LunState(f, owner, st.enabled(), st.counter(), Math.max(st.timestamp(), createdNanos), !st.clean(),
                    leaseValues, leaseNanos);
        }
        Value v = s.pair();
        s.counterCeiling = v.counter();
        s.timeCeiling = v.timestamp();
        s.persist(false, v.counter() + leaseValues, Math.max(s.now(), v.timestamp()) + leaseNanos);
        return s;
    }

    /**
     * Reads and checks {@code lun.state} (size, magic, checksum, version, owner, flags) without changing it;
     * null if the file does not exist. Used by {@link #open} and by fsck.
     */
    public static Stored read(Path f, UUID owner) throws IOException {
        ByteBuffer b = CeilingFile.read(f, MAGIC, VERSION, owner, "LUN state");
        if (b == null) {
            return null;
        }
        int clean = b.getInt(12);
        int en = b.getInt(56);
        if ((clean != 0 && clean != 1) || (en != 0 && en != 1)) {
            throw new CorruptMetadataException(f, "clean/enabled flags out of range: " + clean + "/" + en);
        }
        if (b.getLong(32) < 0 || b.getLong(40) < 0) {
            throw new CorruptMetadataException(f, "negative counter or timestamp");
        }
        return new Stored(clean == 1, en == 1, b.getLong(32), b.getLong(40));
    }

    /** The identity of the export's life: the owning volume's UUID. */
    public UUID identity() {
        return owner;
    }

    /**
     * What a backup tool saves to prove later that this export is untouched: {@code UUID:COUNTER}. Null while
     * tracking is disabled: a write would not be counted, so no value taken then can prove anything.
     */
    public String token(Value v) {
        return v.enabled() ? owner + ":" + v.counter() : null;
    }

    /**
     * The token of snapshot export VOLUME@SNAPSHOT: {@code UUID@SEQUENCE}. A snapshot's content never changes
     * while it is active, and sequence numbers are never reused within a volume's life.
     */
    public static String snapshotToken(UUID volume, long sequence) {
        return volume + "@" + sequence;
    }

    public boolean recoveredFromCrash() {
        return recoveredFromCrash;
    }

    private long now() {
        return wallBase + (System.nanoTime() - monoBase);
    }

    public boolean isEnabled() {
        return enabled;
    }

    /**
     * An altering request was dispatched: counts it while enabled. No I/O; it holds this export's pair guard
     * for two field updates.
     */
    public void onAlteringRequest() {
        if (enabled) {
            bump();
        }
    }

    private void bump() {
        long now = now();
        long held = holdPair();
        counter++;
        timestamp = Math.max(now, timestamp + 1);
        pairGuard.set(held + 2);
    }

    /** Takes the pair's guard: spins while another bump or GET holds it (a few instructions). */
    private long holdPair() {
        for (int spins = 0; ; spins++) {
            long g = pairGuard.get();
            if ((g & 1) == 0 && pairGuard.compareAndSet(g, g + 1)) {
                return g;
            }
            if (spins < 100) {
                Thread.onSpinWait();
            } else {
                Thread.yield();     // the holder was descheduled half way: let it finish
            }
        }
    }

    /** The counter and the timestamp as one pair, never half of a bump. */
    private Value pair() {
        long held = holdPair();
        Value v = new Value(enabled, counter, timestamp);
        pairGuard.set(held + 2);
        return v;
    }

    /** GET: the current value, made safe to hand out (below the durable ceilings). */
    public Value get() throws IOException {
        Value v = pair();
        long c = v.counter();
        long t = v.timestamp();
        if (c >= counterCeiling || t >= timeCeiling) {
            synchronized (persistLock) {
                if (c >= counterCeiling || t >= timeCeiling) {
                    persist(false, Math.max(counterCeiling, c + leaseValues), Math.max(timeCeiling, Math.max(t, now()) + leaseNanos));
                }
            }
        }
        return v;
    }

    /** ENABLE: sets the flag and keeps the value. */
    public Value enable() throws IOException {
        synchronized (persistLock) {
            enabled = true;
            persist(false, counterCeiling, timeCeiling);
        }
        return get();
    }

    /** DISABLE: bumps the value once so a saved value no longer matches, then clears the flag. */
    public Value disable() throws IOException {
        synchronized (persistLock) {
            bump();
            enabled = false;
            Value v = pair();
            persist(false, Math.max(counterCeiling, v.counter() + 1), Math.max(timeCeiling, v.timestamp() + 1));
        }
        return get();
    }

    /** Writes the exact values and marks the file clean (clean stop). */
    public void closeClean() throws IOException {
        synchronized (persistLock) {
            persist(true, counterCeiling, timeCeiling);
        }
    }

    /**
     * Persists: clean → exact values; else the ceilings, which become the values after a crash. The new
     * ceilings are published only after the file is durable.
     */
    private void persist(boolean clean, long newCounterCeiling, long newTimeCeiling) throws IOException {
        synchronized (persistLock) {
            Value v = clean ? pair() : null;
            ByteBuffer b = CeilingFile.frame(MAGIC, VERSION, clean, owner)
                    .putLong(32, clean ? v.counter() : newCounterCeiling)
                    .putLong(40, clean ? v.timestamp() : newTimeCeiling)
                    .putInt(56, enabled ? 1 : 0);
            CeilingFile.write(file, b);
            counterCeiling = newCounterCeiling;
            timeCeiling = newTimeCeiling;
        }
    }
}

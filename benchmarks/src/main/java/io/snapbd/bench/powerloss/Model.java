package io.snapbd.bench.powerloss;

import io.snapbd.bench.powerloss.Workload.Op;

import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * What each block of the volume and of each snapshot may legitimately hold after a power loss, given the
 * acknowledged operations (in order) and the one that may have been in flight.
 * <p>
 * Per block: {@code latest}, the value the last acknowledged operation left (0 = zeros), and {@code may},
 * the set of values a power loss may leave there. An acknowledged WRITE/TRIM/WRITE_ZEROES adds its value
 * to the set; with FUA the set becomes just that value; a completed FLUSH, a snapshot create (which flushes
 * production first) and a completed restore (which ends with a FLUSH) reduce every set to {@code latest}. A
 * snapshot holds exactly the {@code latest} values at its creation. The operation in flight adds its value
 * (or, for a restore, the snapshot's values) to the sets it touches and may or may not have created or
 * deleted its snapshot. A block whose set has several values may hold a byte-wise mix of them (snapbd makes
 * no promise of sector atomicity for writes not yet durable, docs/engine.md).
 */
final class Model {

    final int blocks;
    final long[] latest;
    final long[][] may;
    /** Snapshots acknowledged created and not acknowledged deleted → their content. */
    final Map<String, long[]> snapshots = new LinkedHashMap<>();
    /** A snapshot the in-flight create may have made (content = latest at that time), else null. */
    String maybeCreated;
    long[] maybeCreatedContent;
    /** A snapshot the in-flight delete may have removed, else null. */
    String maybeDeleted;

    Model(int blocks) {
        this.blocks = blocks;
        this.latest = new long[blocks];
        this.may = new long[blocks][];
        for (int b = 0; b < blocks; b++) {
            may[b] = new long[]{0};
        }
    }

    void acknowledged(Op op) {
        switch (op.kind()) {
            case WRITE, TRIM, ZERO -> {
                long v = op.kind() == Workload.Kind.WRITE ? op.value() : 0;
                for (int b = op.block(); b < op.block() + op.count(); b++) {
                    latest[b] = v;
                    may[b] = op.fua() ? new long[]{v} : add(may[b], v);
                }
            }
            case FLUSH -> flushAll();
            case SNAP_CREATE -> {
                flushAll();
                snapshots.put(op.snapshot(), latest.clone());
            }
            case SNAP_DELETE -> snapshots.remove(op.snapshot());
            case RESTORE -> {
                System.arraycopy(snapshots.get(op.snapshot()), 0, latest, 0, blocks);
                flushAll();
            }
            default -> {
            }
        }
    }

    /** The operation that may have been in flight when the power went: it may have happened, in part or whole. */
    void inFlight(Op op) {
        switch (op.kind()) {
            case WRITE, TRIM, ZERO -> {
                long v = op.kind() == Workload.Kind.WRITE ? op.value() : 0;
                for (int b = op.block(); b < op.block() + op.count(); b++) {
                    may[b] = add(may[b], v);
                }
            }
            case SNAP_CREATE -> {
                maybeCreated = op.snapshot();
                maybeCreatedContent = latest.clone();
            }
            case SNAP_DELETE -> maybeDeleted = op.snapshot();
            case RESTORE -> {
                long[] s = snapshots.get(op.snapshot());
                for (int b = 0; b < blocks; b++) {
                    may[b] = add(may[b], s[b]);
                }
            }
            default -> {
            }
        }
    }

    private void flushAll() {
        for (int b = 0; b < blocks; b++) {
            if (may[b].length != 1 || may[b][0] != latest[b]) {
                may[b] = new long[]{latest[b]};
            }
        }
    }

    private static long[] add(long[] set, long v) {
        for (long x : set) {
            if (x == v) {
                return set;
            }
        }
        long[] r = Arrays.copyOf(set, set.length + 1);
        r[set.length] = v;
        return r;
    }
}

package io.snapbd.server.api;

import com.fasterxml.jackson.annotation.JsonIgnoreProperties;
import com.fasterxml.jackson.annotation.JsonInclude;
import io.snapbd.engine.snapshot.SnapshotRecord;
import io.snapbd.engine.volume.Volume;

import java.time.Instant;

/**
 * One snapshot in {@code snapshot.list}, and the result of {@code snapshot.create}. Absent (null) fields are left
 * out: {@code reason} comes with an invalid snapshot only, {@code restoring} only with the one production is being
 * restored from, {@code export} and {@code createMicros} only from {@code snapshot.create}. {@code created} is an
 * ISO-8601 instant.
 */
@JsonIgnoreProperties(ignoreUnknown = true)
@JsonInclude(JsonInclude.Include.NON_NULL)
public record SnapshotStatus(String volume, String name, long sequence, String created, SnapshotState state, String reason,
                             long saveChunksUsed, long saveBytesUsed, LunAtCreation lunStateAtCreation, Boolean restoring,
                             String export, Long createMicros) {

    /** The volume's LUN state when the snapshot was taken (fixed for the snapshot's life). */
    @JsonIgnoreProperties(ignoreUnknown = true)
    public record LunAtCreation(boolean enabled, long counter, long timestamp) {
    }

    /** The snapshot {@code r} of {@code v}, {@code saveChunks} save chunks holding its before-images. */
    public static SnapshotStatus of(Volume v, SnapshotRecord r, boolean active, long saveChunks) {
        return new SnapshotStatus(v.name(), r.name(), r.seq(), Instant.ofEpochMilli(r.createdNanos() / 1_000_000L).toString(),
                active ? SnapshotState.ACTIVE : SnapshotState.INVALID, active ? null : r.reason(),
                saveChunks, saveChunks * v.blockSize(), new LunAtCreation(r.lunEnabled(), r.lunCounter(), r.lunTimestamp()),
                null, null, null);
    }

    /** This status marked as the snapshot production is being restored from. */
    public SnapshotStatus asRestoreSource() {
        return new SnapshotStatus(volume, name, sequence, created, state, reason, saveChunksUsed, saveBytesUsed,
                lunStateAtCreation, true, export, createMicros);
    }

    /** This status as {@code snapshot.create} answers it: with its export name and how long the create took. */
    public SnapshotStatus created(String export, long micros) {
        return new SnapshotStatus(volume, name, sequence, created, state, reason, saveChunksUsed, saveBytesUsed,
                lunStateAtCreation, restoring, export, micros);
    }
}

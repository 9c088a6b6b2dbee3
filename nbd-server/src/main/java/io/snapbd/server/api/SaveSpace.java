package io.snapbd.server.api;

import com.fasterxml.jackson.annotation.JsonIgnoreProperties;
import io.snapbd.engine.snapshot.SnapshotSet;
import io.snapbd.engine.volume.Volume;

/** A volume's save space (snapshot copy-on-write area), the {@code saveVolume} object of listings and stats. */
@JsonIgnoreProperties(ignoreUnknown = true)
public record SaveSpace(long chunksUsed, long chunks, long bytesUsed, long bytes) {

    public static SaveSpace of(Volume v) {
        SnapshotSet s = v.snapshots();
        return new SaveSpace(s.saveChunksUsed(), s.saveChunks(), s.saveChunksUsed() * v.blockSize(), s.saveChunks() * v.blockSize());
    }
}

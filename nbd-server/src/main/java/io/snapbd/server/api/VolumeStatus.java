package io.snapbd.server.api;

import com.fasterxml.jackson.annotation.JsonIgnoreProperties;
import com.fasterxml.jackson.annotation.JsonInclude;

/**
 * One volume in {@code volume.list}, {@code volume.create} and {@code status}. Absent (null) fields are left out:
 * a damaged volume has only {@code name}, {@code state}, {@code reason} and {@code open}; the header fields come
 * with every readable volume; {@code blocksInUse} to {@code restore} only with an open one, {@code cleanlyClosed}
 * only with a closed one; {@code export} to {@code errors} only from the running server.
 */
@JsonIgnoreProperties(ignoreUnknown = true)
@JsonInclude(JsonInclude.Include.NON_NULL)
public record VolumeStatus(String name, VolumeState state, String reason,
                           String uuid, Long size, Integer blockSize, Long saveSize, Boolean sparse, String created,
                           boolean open,
                           Long blocksInUse, Long bytesInUse, Boolean recoveredFromUncleanStop, Integer snapshots,
                           Long copyOnWriteCopies, SaveSpace saveVolume, RestoreStatus restore,
                           Boolean cleanlyClosed,
                           String export, Integer connections, Long requests, Long errors) {

    /** A volume whose volume.meta cannot be read: {@code state} set-aside or damaged, and why. */
    public static VolumeStatus unreadable(String name, VolumeState state, String reason) {
        return new VolumeStatus(name, state, reason, null, null, null, null, null, null, false,
                null, null, null, null, null, null, null, null, null, null, null, null);
    }

    /** This status with the running server's export of the volume: its connections and request counts. */
    public VolumeStatus served(int connections, long requests, long errors) {
        return new VolumeStatus(name, state, reason, uuid, size, blockSize, saveSize, sparse, created, open,
                blocksInUse, bytesInUse, recoveredFromUncleanStop, snapshots, copyOnWriteCopies, saveVolume, restore,
                cleanlyClosed, name, connections, requests, errors);
    }
}

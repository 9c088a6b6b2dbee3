package io.snapbd.server.admin;

import io.snapbd.engine.io.Forces;
import io.snapbd.engine.volume.VolumeCatalog;
import io.snapbd.server.api.Json;
import io.snapbd.server.service.FileSpaces;
import io.snapbd.server.snapshot.CloneJobs;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * A clone's marker ({@code DATA_DIR/clones/TARGET}) is what makes an interrupted copy restart; a power loss that
 * kept the target volume and lost its marker left a target that read as complete with part of the copy missing
 * (zeros). The marker must therefore be durable before anything of the target is: these tests watch the forces
 * the engine announces ({@link Forces}) during {@code snapshot.clone}.
 */
class CloneMarkerDurabilityTest {

    @TempDir
    Path dir;

    @Test
    void theMarkerIsForcedBeforeAnyFileOfTheTargetVolume() throws Exception {
        try (VolumeCatalog c = VolumeCatalog.open(dir, FileSpaces.best())) {
            c.create("src", 1 << 20, 4096, 1 << 20, false).createSnapshot("s1");
            List<Path> forced = Collections.synchronizedList(new ArrayList<>());
            Forces.Listener old = Forces.listen((file, offset, length) -> forced.add(file.toAbsolutePath().normalize()));
            try {
                ControlPlane.offline(c).handle(Json.MAPPER.createObjectNode().put("command", "snapshot.clone")
                        .put("volume", "src").put("name", "s1").put("target", "copy"));
            } finally {
                Forces.listen(old);
            }
            Path clones = dir.resolve("clones").toAbsolutePath().normalize();
            Path target = dir.resolve(VolumeCatalog.VOLUMES_DIR).resolve("copy").toAbsolutePath().normalize();
            int marker = -1;
            int firstTarget = -1;
            for (int i = 0; i < forced.size(); i++) {
                Path p = forced.get(i);
                if (marker < 0 && (p.startsWith(clones) || p.equals(clones))) {
                    marker = i;
                }
                if (firstTarget < 0 && p.startsWith(target)) {
                    firstTarget = i;
                }
            }
            assertTrue(marker >= 0, "the clone marker was never forced; forces: " + forced);
            assertTrue(firstTarget >= 0, "no force of the target volume seen; forces: " + forced);
            assertTrue(marker < firstTarget, "the target volume's " + forced.get(firstTarget) + " was forced (force " + firstTarget
                    + ") before the clone marker (force " + marker + "): a power loss in between leaves a target without a marker");
            // Offline the copy ran to completion: the marker is gone.
            assertFalse(Files.exists(clones.resolve("copy")));
        }
    }

    @Test
    void aMarkerWhoseTargetWasNeverCreatedIsRemovedAtTheNextStart() throws Exception {
        try (VolumeCatalog c = VolumeCatalog.open(dir, FileSpaces.best())) {
            c.create("src", 1 << 20, 4096, 1 << 20, false).createSnapshot("s1");
            // What a power loss between the forced marker and the target's creation leaves.
            Path marker = Files.createDirectories(dir.resolve("clones")).resolve("never");
            Files.writeString(marker, "src@s1\n");
            CloneJobs.offline(c).resumeInterrupted();
            assertFalse(Files.exists(marker), "a stale marker would be warned about at every start");
            assertFalse(c.exists("never"));
        }
    }
}

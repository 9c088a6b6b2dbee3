package io.snapbd.server.kernel;

import com.fasterxml.jackson.databind.node.ObjectNode;
import io.snapbd.engine.volume.VolumeCatalog;
import io.snapbd.server.admin.ControlPlane;
import io.snapbd.server.api.Json;
import io.snapbd.server.api.OperationException;
import io.snapbd.server.config.AttachSpec;
import io.snapbd.server.export.ExportRegistry;
import io.snapbd.server.service.FileSpaces;
import io.snapbd.server.snapshot.CloneJobs;
import io.snapbd.server.transport.NbdServer;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeFalse;

/**
 * What attach and detach answer when the kernel cannot be reached; KernelIT covers the real driver. The
 * build host has no nbd driver, which is exactly the "no such device" case.
 */
class KernelAttachmentsTest {

    @TempDir
    Path dir;

    private VolumeCatalog catalog;
    private final ExportRegistry exports = new ExportRegistry();
    private NbdServer nbd;
    private KernelAttachments attachments;

    @BeforeEach
    void setUp() throws Exception {
        catalog = VolumeCatalog.open(dir, FileSpaces.best());
        ControlPlane.exportVolume(exports, catalog.create("vol0", 1 << 20, 4096, 1 << 20, true));
        nbd = new NbdServer(exports, Duration.ofSeconds(5), 8);
        attachments = new KernelAttachments(exports, nbd);
    }

    @AfterEach
    void tearDown() throws Exception {
        attachments.close();
        nbd.close();
        catalog.close();
    }

    @Test
    void missingDriverSaysToLoadTheModule() {
        assumeFalse(Files.exists(Path.of("/dev/nbd7")) || Files.exists(Path.of("/sys/module/nbd")), "this host has an nbd driver");
        KernelAttachments.AttachException e = assertThrows(KernelAttachments.AttachException.class,
                () -> attachments.attach(new AttachSpec("vol0", "/dev/nbd7", false, null, "test")));
        assertEquals("no such device /dev/nbd7: load the nbd module: modprobe nbd", e.getMessage());
        assertEquals(0, attachments.size());
        assertEquals(0, nbd.activeConnections());
    }

    @Test
    void unknownExportAndUnknownDeviceAreOneLine() {
        KernelAttachments.AttachException e = assertThrows(KernelAttachments.AttachException.class,
                () -> attachments.attach(new AttachSpec("nope", "/dev/nbd0", false, null, "test")));
        assertEquals("no export named nope (exports: vol0)", e.getMessage());
        assumeFalse(Files.exists(Path.of("/sys/block/nbd5/pid")), "/dev/nbd5 is connected on this host");
        e = assertThrows(KernelAttachments.AttachException.class, () -> attachments.detach("/dev/nbd5", false));
        assertEquals("/dev/nbd5 is not attached (nothing is attached)", e.getMessage());
    }

    @Test
    void controlPlaneRoutesAttachAndExplainsOffline() throws Exception {
        ControlPlane online = new ControlPlane(catalog, exports, nbd, CloneJobs.online(catalog, exports), attachments);
        ObjectNode req = Json.MAPPER.createObjectNode();
        req.put("command", "attach");
        req.put("export", "vol0");
        req.put("device", "/dev/sda");
        OperationException e = assertThrows(OperationException.class, () -> online.handle(req));
        assertEquals("'/dev/sda' is not an nbd device: use /dev/nbdN", e.getMessage());
        assertTrue(online.handle(Json.MAPPER.createObjectNode().put("command", "status")).path("attachments").isArray());

        ControlPlane offline = ControlPlane.offline(catalog);
        req.put("device", "/dev/nbd0");
        e = assertThrows(OperationException.class, () -> offline.handle(req));
        assertTrue(e.getMessage().startsWith("attach needs the running server"), e.getMessage());
    }
}

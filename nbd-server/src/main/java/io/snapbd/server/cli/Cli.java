package io.snapbd.server.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.snapbd.engine.volume.DataDirBusyException;
import io.snapbd.engine.volume.VolumeCatalog;
import io.snapbd.server.admin.AdminClient;
import io.snapbd.server.admin.ControlPlane;
import io.snapbd.server.api.Json;
import io.snapbd.server.api.OperationException;
import io.snapbd.server.service.FileSpaces;
import picocli.CommandLine;

import java.io.IOException;
import java.nio.channels.SocketChannel;
import java.nio.file.Path;

/** Shared by the management commands: where the data lives, and how to reach the server or the disk. */
final class Cli {
    private Cli() {
    }

    /** Exit status of {@code snapshot create} on a volume without save space ({@code --save-size 0}). */
    static final int EXIT_NO_SAVE_VOLUME = 5;

    /** An error with a chosen exit code. */
    static final class ExitException extends RuntimeException {
        final int code;

        ExitException(int code, String message) {
            super(message);
            this.code = code;
        }
    }

    /** {@code --data-dir}, shared by every command. */
    static final class DataDirOption {
        @CommandLine.Option(names = "--data-dir", paramLabel = "DIR",
                description = "Data directory (default: $SNAPBD_DATA_DIR or ./snapbd-data).")
        Path dataDir;

        Path resolve() {
            if (dataDir != null) {
                return dataDir;
            }
            String env = System.getenv("SNAPBD_DATA_DIR");
            return Path.of(env != null && !env.isEmpty() ? env : "snapbd-data");
        }
    }

    static String message(Throwable ex) {
        String m = ex.getMessage();
        return m == null || m.isBlank() ? ex.toString() : m;
    }

    static ObjectNode request(String command) {
        ObjectNode r = Json.MAPPER.createObjectNode();
        r.put("command", command);
        return r;
    }

    /**
     * Runs a control-plane request: through the admin socket when a server runs on this data directory,
     * else directly on the disk (taking the data directory's lock for the duration).
     */
    static JsonNode call(Path dataDir, JsonNode request) {
        try {
            SocketChannel ch = AdminClient.connect(dataDir.resolve("admin.sock"));
            if (ch != null) {
                return AdminClient.call(ch, request);
            }
            boolean creates = request.path("command").asText().equals("volume.create");
            try (VolumeCatalog catalog = VolumeCatalog.open(dataDir, FileSpaces.best(), creates)) {
                return ControlPlane.offline(catalog).handle(request);
            } catch (DataDirBusyException e) {
                throw new ExitException(1, e.getMessage() + ", but its admin socket " + dataDir.resolve("admin.sock")
                        + " does not answer");
            }
        } catch (OperationException e) {
            boolean noSave = OperationException.NO_SAVE_VOLUME.equals(e.code());
            throw new ExitException(noSave ? EXIT_NO_SAVE_VOLUME : 1, e.getMessage());
        } catch (IOException e) {
            throw new ExitException(1, message(e));
        }
    }

    static void printJson(JsonNode n) {
        try {
            System.out.println(Json.MAPPER.writerWithDefaultPrettyPrinter().writeValueAsString(n));
        } catch (IOException e) {
            throw new ExitException(1, message(e));
        }
    }
}

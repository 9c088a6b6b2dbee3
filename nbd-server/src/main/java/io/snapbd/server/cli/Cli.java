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
import java.util.ArrayList;
import java.util.List;
import java.util.function.Consumer;

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

    /** {@code --data-dir} and {@code --json}: the options of a command that asks the server one thing and prints the answer. */
    static final class Query {
        @CommandLine.Mixin
        DataDirOption dataDir;
        @CommandLine.Option(names = "--json", description = "Print JSON.")
        boolean json;

        /** {@link Cli#answer} with these options. */
        JsonNode answer(JsonNode request, Consumer<JsonNode> text) {
            return Cli.answer(dataDir, request, json, text);
        }
    }

    static String message(Throwable ex) {
        String m = ex.getMessage();
        return m == null || m.isBlank() ? ex.toString() : m;
    }

    /**
     * A control-plane request {@code {"command": COMMAND, NAME: VALUE, ...}} from name/value pairs, in order; a
     * pair whose value is null is left out (the server's default applies).
     */
    static ObjectNode request(String command, Object... fields) {
        ObjectNode r = Json.MAPPER.createObjectNode();
        r.put("command", command);
        return with(r, fields);
    }

    /** Adds name/value pairs to {@code r}, in order, leaving out those whose value is null. */
    static ObjectNode with(ObjectNode r, Object... fields) {
        for (int i = 0; i < fields.length; i += 2) {
            if (fields[i + 1] != null) {
                r.set((String) fields[i], Json.MAPPER.valueToTree(fields[i + 1]));
            }
        }
        return r;
    }

    /**
     * Runs a control-plane request (see {@link #call}) and prints its answer: the JSON with {@code --json}, else
     * the text {@code text} makes of it. Errors end the command with their exit code ({@link ExitException}).
     */
    static JsonNode answer(DataDirOption dataDir, JsonNode request, boolean json, Consumer<JsonNode> text) {
        JsonNode r = call(dataDir.resolve(), request);
        if (json) {
            printJson(r);
        } else {
            text.accept(r);
        }
        return r;
    }

    /** Mirror legs as the server wants them: NBD URIs as given, files as absolute paths (the user's working directory is known here only). */
    static List<String> legs(List<String> given) {
        List<String> legs = new ArrayList<>();
        for (String m : given) {
            legs.add(m.contains("://") ? m : Path.of(m).toAbsolutePath().normalize().toString());
        }
        return legs;
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

package io.snapbd.server.mirror;

import io.snapbd.engine.mirror.LegIo;
import io.snapbd.engine.mirror.TagStore;
import io.snapbd.server.client.NbdUri;

import java.io.Closeable;
import java.io.IOException;
import java.nio.file.Path;
import java.util.Locale;
import java.util.Objects;

/**
 * Opens a mirror leg named by the string a user gave ({@code --mirror LEG}): an NBD URI becomes an
 * {@link NbdLeg}; anything else is a file path, opened by the caller's {@link FileLegs} (the engine decides
 * where a file leg keeps its table). The server's one entry point for legs.
 */
public final class NbdLegs {

    private NbdLegs() {
    }

    /** A leg's two halves: the volume's blocks and the area its tag table lives in. Closing closes both. */
    public record Opened(LegIo blocks, TagStore table) implements Closeable {
        public Opened {
            Objects.requireNonNull(blocks, "blocks");
            Objects.requireNonNull(table, "table");
        }

        @Override
        public void close() throws IOException {
            try {
                blocks.close();
            } finally {
                table.close();
            }
        }
    }

    /** How the caller opens a leg that is a file path. */
    @FunctionalInterface
    public interface FileLegs {
        Opened open(Path path, long volumeSize) throws IOException;
    }

    /**
     * Whether {@code leg} is meant as an NBD URI: any {@code nbd...://} scheme, so that an unsupported one
     * ({@code nbd+vsock://}) is refused by {@link NbdUri#parse} with its reason instead of being taken for a path.
     */
    public static boolean isNbdUri(String leg) {
        int colon = leg.indexOf("://");
        return colon > 0 && leg.substring(0, colon).toLowerCase(Locale.ROOT).startsWith("nbd");
    }

    /**
     * Opens the NBD leg {@code uri} of a volume of {@code volumeSize} bytes ({@link NbdLeg#open}).
     *
     * @throws IllegalArgumentException when {@code uri} is not an NBD URI, or a malformed one (naming why)
     * @throws IOException              when the server cannot be reached or its export cannot be a leg
     */
    public static Opened open(String uri, long volumeSize) throws IOException {
        if (!isNbdUri(uri)) {
            throw new IllegalArgumentException("'" + uri + "' is not an NBD URI (nbd://HOST[:PORT]/EXPORT or "
                    + "nbd+unix:///EXPORT?socket=PATH)");
        }
        NbdLeg leg = NbdLeg.open(NbdUri.parse(uri), volumeSize);
        return new Opened(leg.blocks(), leg.table());
    }

    /** Opens {@code leg}: an NBD URI through {@link #open(String, long)}, anything else as a path through {@code files}. */
    public static Opened open(String leg, long volumeSize, FileLegs files) throws IOException {
        if (isNbdUri(leg)) {
            return open(leg, volumeSize);
        }
        return files.open(Path.of(leg), volumeSize);
    }
}

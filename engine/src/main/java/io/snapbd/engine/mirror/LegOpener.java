package io.snapbd.engine.mirror;

import io.snapbd.engine.io.FileSpace;

import java.io.IOException;

/**
 * Makes and opens the extra legs of mirrored volumes from their URIs. The engine handles file paths
 * ({@link FileLegOpener}); the server installs an opener that also knows other schemes (for example
 * {@code nbd://}) and hands the rest to {@link #FILES}. Leg 0, the volume's own {@code data.img}, is not opened
 * through here.
 */
public interface LegOpener {

    /** File paths: the leg's blocks in the file, its tag table in {@code PATH.tags} next to it. */
    LegOpener FILES = new FileLegOpener();

    /**
     * Creates a new leg able to hold {@code size} bytes of volume blocks and a tag table area of
     * {@code tableBytes}, every byte zero. Refuses a leg that already exists (it may hold someone's data).
     */
    MirrorLeg create(String uri, long size, long tableBytes, boolean sparse, FileSpace space) throws IOException;

    /** Opens an existing leg for reading and writing. */
    MirrorLeg open(String uri) throws IOException;

    /**
     * Opens an existing leg of a volume of {@code volumeSize} bytes: what volumes call. Legs whose layout depends
     * on the volume's size (an NBD export holds its tag table right after the volume's blocks) override this; the
     * default ignores the size.
     */
    default MirrorLeg open(String uri, long volumeSize) throws IOException {
        return open(uri);
    }

    /**
     * The tag table that the existing leg {@code uri} (of a volume of {@code volumeSize} bytes) holds, or null when
     * there is nothing there or no table: what {@code volume create --mirror} and {@code mirror add} check before
     * they make the leg ({@link LegInUse}). The default knows of no existing legs.
     */
    default TagTable.Identity identify(String uri, long volumeSize) throws IOException {
        return null;
    }

    /** Whether {@code uri} names something that {@link #create} would refuse as existing (a file leg's files). */
    default boolean exists(String uri) throws IOException {
        return false;
    }

    /** Removes what {@link #create} made (volume delete, or a create that failed); absent parts are ignored. */
    void delete(String uri) throws IOException;

    /** The opener volumes use from now on (the server installs one that knows more schemes). */
    static void install(LegOpener opener) {
        Installed.opener = opener;
    }

    static LegOpener installed() {
        return Installed.opener;
    }

    /** Holder of the installed opener. */
    final class Installed {
        private static volatile LegOpener opener = FILES;

        private Installed() {
        }
    }
}

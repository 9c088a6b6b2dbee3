package io.snapbd.server.mirror;

import io.snapbd.engine.io.FileSpace;
import io.snapbd.engine.mirror.LegOpener;
import io.snapbd.engine.mirror.MirrorLeg;
import io.snapbd.engine.mirror.TagTable;
import io.snapbd.server.client.NbdUri;

import java.io.IOException;

/**
 * The leg opener the server and the CLI install ({@link #install}): a leg named by an NBD URI
 * ({@code nbd://HOST[:PORT]/EXPORT}, {@code nbd+unix:///EXPORT?socket=PATH}) is an {@link NbdLeg} (the volume's
 * blocks, then its tag table, in one export); anything else is a file leg ({@link LegOpener#FILES}).
 */
public final class NbdLegOpener implements LegOpener {

    public static final NbdLegOpener INSTANCE = new NbdLegOpener();

    private NbdLegOpener() {
    }

    /** Makes volumes opened or created in this JVM from now on accept NBD legs. */
    public static void install() {
        LegOpener.install(INSTANCE);
    }

    /**
     * An NBD leg: connects (the export is refused as {@link NbdLeg#open} says: too small, read-only, no FLUSH,
     * aligned requests only), then zeroes the leg's part of the export, {@code [0, exportBytes(size))}, and
     * flushes, so the leg starts identical to the new volume and holds no stale tag table. The export's former
     * content there is lost: an NBD server cannot tell whether it is someone's data.
     */
    @Override
    public MirrorLeg create(String uri, long size, long tableBytes, boolean sparse, FileSpace space) throws IOException {
        if (!NbdLegs.isNbdUri(uri)) {
            return FILES.create(uri, size, tableBytes, sparse, space);
        }
        if (tableBytes != NbdLeg.TABLE_BYTES) {
            throw new IllegalArgumentException("NBD leg " + uri + ": a tag table area of " + tableBytes
                    + " bytes; NBD legs hold " + NbdLeg.TABLE_BYTES);
        }
        NbdLeg leg = NbdLeg.open(NbdUri.parse(uri), size);
        try {
            leg.zero();
        } catch (IOException | RuntimeException e) {
            leg.close();
            throw e;
        }
        return MirrorLeg.of(uri, leg.blocks(), leg.table());
    }

    /** File legs only: an NBD leg's layout depends on the volume's size ({@link #open(String, long)}). */
    @Override
    public MirrorLeg open(String uri) throws IOException {
        if (NbdLegs.isNbdUri(uri)) {
            throw new IllegalArgumentException("NBD leg " + uri + ": opening it needs the volume's size");
        }
        return FILES.open(uri);
    }

    @Override
    public MirrorLeg open(String uri, long volumeSize) throws IOException {
        if (!NbdLegs.isNbdUri(uri)) {
            return FILES.open(uri, volumeSize);
        }
        NbdLeg leg = NbdLeg.open(NbdUri.parse(uri), volumeSize);
        return MirrorLeg.of(uri, leg.blocks(), leg.table());
    }

    /**
     * An NBD leg: connects (refused as {@link NbdLeg#open} says) and reads the header of the tag table area right
     * after the volume's blocks, then disconnects; a file leg: {@link LegOpener#FILES}.
     */
    @Override
    public TagTable.Identity identify(String uri, long volumeSize) throws IOException {
        if (!NbdLegs.isNbdUri(uri)) {
            return FILES.identify(uri, volumeSize);
        }
        try (NbdLeg leg = NbdLeg.open(NbdUri.parse(uri), volumeSize)) {
            return TagTable.identify(leg.table());
        }
    }

    @Override
    public boolean exists(String uri) throws IOException {
        return !NbdLegs.isNbdUri(uri) && FILES.exists(uri);
    }

    /** A file leg's files are removed; an NBD export stays on its server as it is (snapbd cannot delete it). */
    @Override
    public void delete(String uri) throws IOException {
        if (!NbdLegs.isNbdUri(uri)) {
            FILES.delete(uri);
        }
    }
}

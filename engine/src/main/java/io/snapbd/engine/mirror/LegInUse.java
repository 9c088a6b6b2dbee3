package io.snapbd.engine.mirror;

import java.io.IOException;
import java.util.UUID;

/**
 * The check {@code volume create --mirror} and {@code mirror add} make before a leg is made (docs/mirrors.md,
 * "Using it"): making a leg zeroes an NBD export's leg area (or replaces a file leg's files), so a leg that
 * holds the tag table of another volume, that is, another volume's mirror leg, is refused, naming the leg and
 * the volume its table header records; {@code --force} overrides. A table of the same volume (a leg removed
 * from it earlier and added again) is no conflict.
 */
public final class LegInUse {

    private LegInUse() {
    }

    /** Refused: the leg holds another volume's tag table. */
    public static final class LegInUseException extends IOException {
        private final TagTable.Identity holder;

        LegInUseException(String message, TagTable.Identity holder) {
            super(message);
            this.holder = holder;
        }

        /** The volume and leg number the leg's table header records. */
        public TagTable.Identity holder() {
            return holder;
        }
    }

    /**
     * Refuses (unless {@code force}) to make leg {@code uri} for volume {@code owner} (null: a volume not made
     * yet, so any table is another volume's) when the leg holds a tag table of another volume. With {@code force},
     * an existing file leg's files are deleted so that the leg can be made anew.
     */
    public static void check(LegOpener opener, String uri, long volumeSize, UUID owner, boolean force)
            throws IOException {
        TagTable.Identity id = opener.identify(uri, volumeSize);
        if (id != null && !id.owner().equals(owner) && !force) {
            throw new LegInUseException("mirror leg " + uri + " holds the tag table of leg " + id.leg() + " of volume "
                    + id.owner() + ": it is that volume's mirror leg, and making it a leg here would overwrite it."
                    + " Remove it from that volume first ('snapbd mirror remove'), or pass --force to overwrite it", id);
        }
        if (force && opener.exists(uri)) {
            opener.delete(uri);
        }
    }
}

package io.snapbd.engine.mirror;

import java.io.Closeable;
import java.io.IOException;

/**
 * One leg of a mirrored volume as the write path and reconciliation see it: its copy of the volume's blocks
 * ({@link #data}), its tag table's area ({@link #table}), and the URI it was created from. File legs come from
 * {@link FileLegOpener}; a server may supply other kinds (an NBD export) through {@link LegOpener}.
 */
public interface MirrorLeg extends Closeable {

    LegIo data();

    TagStore table();

    /** What the user named the leg with ({@code volume create --mirror URI}); stored in {@code mirror.legs}. */
    String uri();

    /** A leg over a data channel and a table store that closes both. */
    static MirrorLeg of(String uri, LegIo data, TagStore table) {
        return new MirrorLeg() {
            @Override
            public LegIo data() {
                return data;
            }

            @Override
            public TagStore table() {
                return table;
            }

            @Override
            public String uri() {
                return uri;
            }

            @Override
            public void close() throws IOException {
                try {
                    data.close();
                } finally {
                    table.close();
                }
            }
        };
    }
}

package io.snapbd.server.export;

import io.snapbd.engine.BlockDevice;
import io.snapbd.engine.snapshot.SnapshotView;
import io.snapbd.server.protocol.Nbd;

import java.io.IOException;
import java.util.ArrayList;
import java.util.List;

/**
 * A metadata context an export offers for NBD_CMD_BLOCK_STATUS: {@code base:allocation} everywhere, and on
 * a snapshot export {@code VOL@M} the differential from each older snapshot L as {@code snapbd:changed:L}
 * (EMC: in use in M and possibly different; flag 1) and {@code qemu:dirty-bitmap:L} (qemu: content possibly
 * different, blocks that left use after L included; flag 1 = dirty), so tools built for qemu's incremental
 * backup, which keep every clean block from their previous copy, get every block they must rewrite.
 */
public interface MetaContext {

    String CHANGED_PREFIX = "snapbd:changed:";
    String DIRTY_PREFIX = "qemu:dirty-bitmap:";

    String name();

    /** Flags of consecutive extents from {@code offset}; the consumer returns false to stop. */
    void extents(long offset, long length, FlagSink sink) throws IOException;

    @FunctionalInterface
    interface FlagSink {
        boolean accept(long length, int flags) throws IOException;
    }

    /** Every context the export offers now (snapshots come and go, so this is computed per request). */
    static List<MetaContext> available(Export e) {
        List<MetaContext> out = new ArrayList<>();
        BlockDevice d = e.device();
        out.add(new MetaContext() {
            @Override
            public String name() {
                return Nbd.BASE_ALLOCATION;
            }

            @Override
            public void extents(long offset, long length, FlagSink sink) throws IOException {
                d.extents(offset, length, (off, len, inUse) -> sink.accept(len, inUse ? 0 : Nbd.STATE_HOLE | Nbd.STATE_ZERO));
            }
        });
        if (d instanceof SnapshotView view) {
            for (String older : view.olderSnapshots()) {
                for (String prefix : new String[]{CHANGED_PREFIX, DIRTY_PREFIX}) {
                    out.add(new MetaContext() {
                        @Override
                        public String name() {
                            return prefix + older;
                        }

                        @Override
                        public void extents(long offset, long length, FlagSink sink) throws IOException {
                            if (prefix.equals(DIRTY_PREFIX)) {
                                view.dirtyExtents(older, offset, length, (off, len, dirty) -> sink.accept(len, dirty ? 1 : 0));
                            } else {
                                view.changedExtents(older, offset, length, (off, len, changed) -> sink.accept(len, changed ? 1 : 0));
                            }
                        }
                    });
                }
            }
        }
        return out;
    }

    /** LIST_META_CONTEXT matching: exact names, or a namespace / prefix query ending in ':' as a wildcard. */
    static boolean matchesListQuery(String query, String name) {
        if (query.equals(name)) {
            return true;
        }
        return query.endsWith(":") && name.startsWith(query);
    }
}

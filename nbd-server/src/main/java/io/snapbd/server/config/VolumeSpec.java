package io.snapbd.server.config;

import io.snapbd.engine.volume.Volume;
import io.snapbd.engine.format.VolumeNames;

/**
 * A volume the configuration asks for: {@code volume.NAME = SIZE [save=SIZE] [block-size=BYTES] [sparse]}. The
 * server creates it at start when it does not exist; an existing volume is never changed.
 */
public record VolumeSpec(String name, long size, long saveSize, int blockSize, boolean sparse, String origin) {

    public static final int DEFAULT_BLOCK_SIZE = 4096;
    public static final long DEFAULT_SAVE_LIMIT = 256L << 20;

    /** Parses the value of a {@code volume.NAME} line. */
    public static VolumeSpec parse(String name, String value, String origin) {
        VolumeNames.check(name);
        String[] words = value.strip().split("\\s+");
        if (words.length == 0 || words[0].isEmpty()) {
            throw new IllegalArgumentException("expected 'SIZE [save=SIZE] [block-size=BYTES] [sparse]'");
        }
        long size = Sizes.parse(words[0]);
        Long save = null;
        int blockSize = DEFAULT_BLOCK_SIZE;
        boolean sparse = false;
        for (int i = 1; i < words.length; i++) {
            String w = words[i];
            if (w.startsWith("save=")) {
                save = Sizes.parse(w.substring("save=".length()));
            } else if (w.startsWith("block-size=")) {
                long b = Sizes.parse(w.substring("block-size=".length()));
                if (b > Integer.MAX_VALUE) {
                    throw new IllegalArgumentException("block size " + b + " is too large");
                }
                blockSize = (int) b;
            } else if (w.equals("sparse")) {
                sparse = true;
            } else {
                throw new IllegalArgumentException("unknown volume option '" + w + "' (known: save=SIZE, block-size=BYTES, sparse)");
            }
        }
        long saveSize = save != null ? save : Math.min(size, DEFAULT_SAVE_LIMIT);
        Volume.checkGeometry(size, blockSize, saveSize);
        return new VolumeSpec(name, size, saveSize, blockSize, sparse, origin);
    }
}

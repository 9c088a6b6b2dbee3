package io.snapbd.server.transmission;

import io.snapbd.engine.BlockDevice;
import io.snapbd.engine.io.JavaFileSpace;
import io.snapbd.engine.volume.Volume;

import java.io.IOException;
import java.nio.file.Path;

/** A small volume for the transmission tests: its first {@code written} bytes hold {@link #content}, the rest is a hole. */
final class PatternedVolume {

    final Volume vol;
    final byte[] content;

    PatternedVolume(Path dir, long size, long written) throws IOException {
        Volume.create(dir.resolve("v"), "v", size, 4096, 64L * 4096, true, new JavaFileSpace());
        vol = Volume.open(dir.resolve("v"), new JavaFileSpace());
        content = new byte[(int) size];
        for (int i = 0; i < written; i++) {
            content[i] = (byte) (i * 31 + (i >>> 12) + 1);
        }
        try (BlockDevice.Session s = vol.openSession()) {
            int[] at = {0};
            vol.write(s, 0, (int) written, dst -> {
                int n = dst.remaining();
                dst.put(content, at[0], n);
                at[0] += n;
            }, false);
        }
    }
}

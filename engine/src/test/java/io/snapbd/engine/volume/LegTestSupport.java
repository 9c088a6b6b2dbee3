package io.snapbd.engine.volume;

import io.snapbd.engine.TestVolumes;
import io.snapbd.engine.io.FileSpace;
import io.snapbd.engine.mirror.LegOpener;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Path;

/**
 * The fixture the mirrored-volume tests share: a volume {@code tmp/v} with file legs {@code tmp/legN.img}, and
 * the default leg opener put back after each test (a test may install its own to make a leg fail or wait).
 */
abstract class LegTestSupport {

    static final int BS = 4096;

    @TempDir
    Path tmp;

    final FileSpace space = TestVolumes.java();

    @AfterEach
    void restoreOpener() {
        LegOpener.install(LegOpener.FILES);
    }

    Path dir() {
        return tmp.resolve("v");
    }

    Path leg(int i) {
        return tmp.resolve("leg" + i + ".img");
    }
}

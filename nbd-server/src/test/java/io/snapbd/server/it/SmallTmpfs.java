package io.snapbd.server.it;

import org.junit.jupiter.api.Assertions;
import org.junit.jupiter.api.Assumptions;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * A small tmpfs mounted by a test class so that a data directory on it can fill up. Mounting needs root: without
 * it the class is skipped, and fails under {@code CI=true}.
 */
final class SmallTmpfs {

    private SmallTmpfs() {
    }

    /** Mounts a tmpfs of {@code size} ({@code mount -o size=}, e.g. "40m") named {@code name} at {@code dir/mnt}. */
    static Path mount(Path dir, String size, String name) throws IOException {
        boolean root = "0".equals(Tools.run("id", "-u").assertOk().stdout().strip());
        if (!root) {
            String msg = "mounting a tmpfs needs root";
            if ("true".equalsIgnoreCase(System.getenv("CI"))) {
                Assertions.fail(msg);
            }
            Assumptions.assumeTrue(false, msg);
        }
        Path mnt = dir.resolve("mnt");
        Files.createDirectories(mnt);
        Tools.run("mount", "-t", "tmpfs", "-o", "size=" + size, name, mnt.toString()).assertOk();
        return mnt;
    }

    /** Unmounts {@code mnt}; if it is still busy, detaches it lazily and fails the test naming it. */
    static void unmount(Path mnt) {
        Tools.Result r = Tools.run("umount", mnt.toString());
        if (r.exit() != 0) {
            Tools.run("umount", "-l", mnt.toString());     // a process left behind: detach it anyway
            Assertions.fail("umount " + mnt + ": " + r);
        }
    }
}

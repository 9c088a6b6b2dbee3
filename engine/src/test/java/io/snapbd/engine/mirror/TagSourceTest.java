package io.snapbd.engine.mirror;

import io.snapbd.engine.format.CorruptMetadataException;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.ConcurrentHashMap;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The tag counter of a mirrored volume: docs/glossary.md, Symantec behaviours 1 and 11 (tags never repeat). */
class TagSourceTest {

    @TempDir
    Path dir;

    private final UUID owner = UUID.randomUUID();

    /** Symantec behaviour 1/11: across crashes (no clean close) and clean restarts, every tag is new and larger. */
    @Test
    void symantec1_tagsNeverRepeatAcrossCrashesAndCleanRestarts() throws IOException {
        List<Long> all = new ArrayList<>();
        for (int life = 0; life < 6; life++) {
            TagSource s = TagSource.open(dir, owner, 5);   // a small lease so lives cross the ceiling
            assertEquals(life % 2 == 1, s.recoveredFromCrash(), "life " + life);
            for (int i = 0; i < 3 + life * 4; i++) {
                all.add(s.next());
            }
            if (life % 2 == 1) {
                s.closeClean();
            }
            // else: a crash, the process just stops
        }
        for (int i = 1; i < all.size(); i++) {
            assertTrue(all.get(i) > all.get(i - 1), "tag " + all.get(i) + " after " + all.get(i - 1) + " in " + all);
        }
        assertTrue(all.get(0) >= 1, "tag 0 means no tag");
    }

    @Test
    void cleanCloseResumesAtTheExactNextTag() throws IOException {
        TagSource s = TagSource.open(dir, owner, 100);
        long last = 0;
        for (int i = 0; i < 7; i++) {
            last = s.next();
        }
        s.closeClean();
        TagSource again = TagSource.open(dir, owner, 100);
        assertFalse(again.recoveredFromCrash());
        assertEquals(last + 1, again.next());
    }

    @Test
    void concurrentTakersGetDistinctTags() throws Exception {
        TagSource s = TagSource.open(dir, owner, 64);
        Set<Long> seen = ConcurrentHashMap.newKeySet();
        List<Thread> threads = new ArrayList<>();
        for (int t = 0; t < 4; t++) {
            threads.add(new Thread(() -> {
                try {
                    for (int i = 0; i < 5000; i++) {
                        assertTrue(seen.add(s.next()));
                    }
                } catch (IOException e) {
                    throw new RuntimeException(e);
                }
            }));
        }
        threads.forEach(Thread::start);
        for (Thread th : threads) {
            th.join();
        }
        assertEquals(20000, seen.size());
        // crash now: the next life starts above every tag handed out
        long max = seen.stream().mapToLong(Long::longValue).max().orElseThrow();
        assertTrue(TagSource.open(dir, owner, 64).next() > max);
    }

    @Test
    void damagedOrForeignFileIsRefusedNamingIt() throws IOException {
        TagSource.open(dir, owner).closeClean();
        Path f = dir.resolve(TagSource.FILE);
        assertThrows(CorruptMetadataException.class, () -> TagSource.open(dir, UUID.randomUUID()));
        byte[] b = Files.readAllBytes(f);
        b[33] ^= 1;
        Files.write(f, b);
        CorruptMetadataException e = assertThrows(CorruptMetadataException.class, () -> TagSource.open(dir, owner));
        assertTrue(e.getMessage().contains(f.toString()) && e.getMessage().contains("checksum"), e.getMessage());
    }
}

package io.snapbd.engine.volume;

import io.snapbd.engine.BlockDevice;
import io.snapbd.engine.TestVolumes;
import io.snapbd.engine.io.FileSpace;
import io.snapbd.engine.mirror.FileLegOpener;
import io.snapbd.engine.mirror.FileTagStore;
import io.snapbd.engine.mirror.LegChanges;
import io.snapbd.engine.mirror.LegInUse;
import io.snapbd.engine.mirror.LegOpener;
import io.snapbd.engine.mirror.MirrorConfig;
import io.snapbd.engine.mirror.MirrorLeg;
import io.snapbd.engine.mirror.TagTable;
import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.UUID;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * A leg that is already another volume's mirror leg is refused by {@code volume create --mirror} and
 * {@code mirror add} before anything is zeroed, naming the leg and the volume its tag table records; force
 * overrides (docs/mirrors.md, "Using it"). The "export" opener stands for an NBD export: its create, like
 * {@code NbdLegOpener}'s, zeroes whatever the leg held, so without the check the other volume's leg is lost.
 */
class LegInUseTest extends LegTestSupport {

    static final long SIZE = 4L << 20;

    /** A leg that, like an NBD export, exists before it is made a leg: create zeroes the files instead of refusing. */
    private static final LegOpener EXPORTS = new LegOpener() {
        @Override
        public MirrorLeg create(String uri, long size, long tableBytes, boolean sparse, FileSpace space) throws IOException {
            Path p = Path.of(uri);
            Path t = FileLegOpener.tableFile(p);
            if (!Files.exists(p)) {
                return FILES.create(uri, size, tableBytes, sparse, space);
            }
            Files.write(p, new byte[(int) size]);
            FileTagStore.create(t, tableBytes).close();
            return FILES.open(uri);
        }

        @Override
        public MirrorLeg open(String uri) throws IOException {
            return FILES.open(uri);
        }

        @Override
        public TagTable.Identity identify(String uri, long volumeSize) throws IOException {
            return FILES.identify(uri, volumeSize);
        }

        @Override
        public void delete(String uri) {
            // an export stays
        }
    };

    private Path vol(String name) {
        return tmp.resolve(name);
    }

    private UUID owner(String name) throws IOException {
        return MirrorConfig.read(vol(name), null).owner();
    }

    private byte[] writeSome(String name) throws IOException {
        byte[] data = TestVolumes.pattern(7, 3 * BS);
        try (Volume v = Volume.open(vol(name), space)) {
            BlockDevice.Session s = v.openSession();
            TestVolumes.write(v, s, 5 * BS, data);
            s.close();
        }
        return data;
    }

    private static byte[] slice(Path f, long off, int n) throws IOException {
        byte[] all = Files.readAllBytes(f);
        byte[] out = new byte[n];
        System.arraycopy(all, (int) off, out, 0, n);
        return out;
    }

    @Test
    void identifyFindsTheOwnerAndNothingInAnEmptyArea() throws IOException {
        Path area = tmp.resolve("t");
        UUID u = UUID.randomUUID();
        try (FileTagStore s = FileTagStore.create(area, TagTable.areaBytes(4))) {
            assertNull(TagTable.identify(s), "zeros are no table");
            TagTable.create(s, u, 3, 4);
            assertEquals(new TagTable.Identity(u, 3), TagTable.identify(s));
        }
    }

    @Test
    void volumeCreateRefusesAnExportThatIsAnotherVolumesLegUnlessForced() throws IOException {
        LegOpener.install(EXPORTS);
        Path leg = tmp.resolve("shared.leg");
        Volume.create(vol("a"), "a", SIZE, BS, 1L << 20, false, space, List.of(leg.toString()));
        byte[] data = writeSome("a");
        UUID a = owner("a");

        LegInUse.LegInUseException e = assertThrows(LegInUse.LegInUseException.class, () ->
                Volume.create(vol("b"), "b", SIZE, BS, 1L << 20, false, space, List.of(leg.toString())));
        assertTrue(e.getMessage().contains(leg.toString()) && e.getMessage().contains(a.toString())
                && e.getMessage().contains("--force"), e.getMessage());
        assertEquals(a, e.holder().owner());
        assertFalse(Files.exists(vol("b")), "nothing of volume b is left");
        assertArrayEquals(data, slice(leg, 5 * BS, data.length), "volume a's leg is untouched");
        try (Volume v = Volume.open(vol("a"), space)) {
            assertEquals(2, v.mirror().legCount(), "volume a still opens with its leg");
        }

        Volume.create(vol("b"), "b", SIZE, BS, 1L << 20, false, space, List.of(leg.toString()), true);
        assertEquals(new TagTable.Identity(owner("b"), 1), LegOpener.FILES.identify(leg.toString(), SIZE),
                "forced: the leg is b's now");
    }

    @Test
    void mirrorAddRefusesAnotherVolumesLegButTakesBackItsOwn() throws IOException {
        LegOpener.install(EXPORTS);
        Path legA = tmp.resolve("a.leg");
        Path legB = tmp.resolve("b.leg");
        Volume.create(vol("a"), "a", SIZE, BS, 1L << 20, false, space, List.of(legA.toString()));
        Volume.create(vol("b"), "b", SIZE, BS, 1L << 20, false, space, List.of(legB.toString()));
        byte[] data = writeSome("a");
        UUID b = owner("b");
        Path dataB = vol("b").resolve(Volume.DATA_FILE);

        LegInUse.LegInUseException e = assertThrows(LegInUse.LegInUseException.class, () ->
                LegChanges.add(vol("b"), b, SIZE, dataB, legA.toString(), false, space, false, (d, t) -> { }));
        assertTrue(e.getMessage().contains(legA.toString()) && e.getMessage().contains(owner("a").toString()), e.getMessage());
        assertArrayEquals(data, slice(legA, 5 * BS, data.length), "volume a's leg is untouched");
        assertEquals(List.of(legB.toString()), MirrorConfig.read(vol("b"), b).extraLegs());

        // b's own leg, removed and added back: its table names b, so it is no conflict
        LegChanges.remove(vol("b"), b, SIZE, legB.toString());
        assertEquals(1, LegChanges.add(vol("b"), b, SIZE, dataB, legB.toString(), false, space, false, (d, t) -> { }));
    }

    @Test
    void aFileLegOfAnotherVolumeIsRefusedNamingItAndForceReplacesIt() throws IOException {
        Path leg = tmp.resolve("f.leg");
        Volume.create(vol("a"), "a", SIZE, BS, 1L << 20, false, space, List.of(leg.toString()));
        UUID a = owner("a");
        IOException e = assertThrows(IOException.class, () ->
                Volume.create(vol("b"), "b", SIZE, BS, 1L << 20, false, space, List.of(leg.toString())));
        assertTrue(e.getMessage().contains(leg.toString()) && e.getMessage().contains(a.toString()), e.getMessage());
        Volume.create(vol("b"), "b", SIZE, BS, 1L << 20, false, space, List.of(leg.toString()), true);
        assertEquals(owner("b"), LegOpener.FILES.identify(leg.toString(), SIZE).owner());
        try (Volume v = Volume.open(vol("b"), space)) {
            assertEquals(2, v.mirror().legCount());
        }
    }
}

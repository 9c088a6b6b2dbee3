package io.snapbd.nativeio;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeFalse;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

class NbdNetlinkTest {

    private static byte[] bytes(ByteBuffer b) {
        byte[] a = new byte[b.remaining()];
        b.duplicate().get(a);
        return a;
    }

    /** Little-endian (x86-64, the only host this runs on) bytes of the expected message. */
    private static ByteBuffer le(int capacity) {
        return ByteBuffer.allocate(capacity).order(ByteOrder.LITTLE_ENDIAN);
    }

    @Test
    void getFamilyRequestIsTheExactBytes() {
        assumeLittleEndian();
        ByteBuffer e = le(28);
        e.putInt(28).putShort((short) 0x10).putShort((short) 5).putInt(7).putInt(0);
        e.put((byte) 3).put((byte) 1).putShort((short) 0);
        e.putShort((short) 8).putShort((short) 2).put(new byte[]{'n', 'b', 'd', 0});
        assertArrayEquals(e.array(), bytes(NbdNetlink.getFamily("nbd", 7)));
    }

    @Test
    void connectRequestIsTheExactBytes() {
        assumeLittleEndian();
        NbdNetlink.ConnectSpec s = new NbdNetlink.ConnectSpec(3, 1L << 30, 4096, 0x1ed, 30, 120, "snapbd:vol0", new int[]{9});
        ByteBuffer e = le(512);
        e.putInt(0).putShort((short) 0x22).putShort((short) 5).putInt(1).putInt(0);   // len patched below
        e.put((byte) 1).put((byte) 1).putShort((short) 0);                             // NBD_CMD_CONNECT, version 1
        e.putShort((short) 8).putShort((short) 1).putInt(3);                           // INDEX u32
        e.putShort((short) 12).putShort((short) 2).putLong(1L << 30);                  // SIZE_BYTES u64
        e.putShort((short) 12).putShort((short) 3).putLong(4096);                      // BLOCK_SIZE_BYTES
        e.putShort((short) 12).putShort((short) 5).putLong(0x1ed);                     // SERVER_FLAGS
        e.putShort((short) 12).putShort((short) 4).putLong(30);                        // TIMEOUT
        e.putShort((short) 12).putShort((short) 8).putLong(120);                       // DEAD_CONN_TIMEOUT
        // BACKEND_IDENTIFIER "snapbd:vol0\0": 4 + 12 = 16, aligned already
        e.putShort((short) 16).putShort((short) 10).put("snapbd:vol0".getBytes()).put((byte) 0);
        // SOCKETS (nested) { SOCK_ITEM (nested) { SOCK_FD u32 9 } }: 4 + (4 + 8) = 16
        e.putShort((short) 16).putShort((short) (7 | 0x8000));
        e.putShort((short) 12).putShort((short) (1 | 0x8000));
        e.putShort((short) 8).putShort((short) 1).putInt(9);
        int len = e.position();
        e.putInt(0, len);
        byte[] expected = new byte[len];
        System.arraycopy(e.array(), 0, expected, 0, len);
        assertArrayEquals(expected, bytes(NbdNetlink.connectMessage(0x22, 1, s)));
    }

    @Test
    void reconfigureRequestCarriesTheBackendIdentifier() {
        assumeLittleEndian();
        ByteBuffer e = le(256);
        e.putInt(0).putShort((short) 0x22).putShort((short) 5).putInt(2).putInt(0);
        e.put((byte) 3).put((byte) 1).putShort((short) 0);                             // NBD_CMD_RECONFIGURE, version 1
        e.putShort((short) 8).putShort((short) 1).putInt(0);                           // INDEX u32
        e.putShort((short) 16).putShort((short) 10).put("snapbd:vol0".getBytes()).put((byte) 0);
        e.putShort((short) 16).putShort((short) (7 | 0x8000));
        e.putShort((short) 12).putShort((short) (1 | 0x8000));
        e.putShort((short) 8).putShort((short) 1).putInt(11);
        int len = e.position();
        e.putInt(0, len);
        byte[] expected = new byte[len];
        System.arraycopy(e.array(), 0, expected, 0, len);
        assertArrayEquals(expected, bytes(NbdNetlink.reconfigureMessage(0x22, 2, 0, "snapbd:vol0", new int[]{11})));
    }

    @Test
    void attributesArePaddedToFourBytes() {
        assumeLittleEndian();
        ByteBuffer m = new NbdNetlink.Message(0x22, 1, 0, 1).string(10, "ab").u32(1, 5).finish();
        // 20 header bytes; "ab\0" attribute: len 7, padded to 8; then the u32 attribute at offset 28
        assertEquals(20 + 8 + 8, m.remaining());
        assertEquals(7, m.getShort(20));
        assertEquals(0, m.get(27));
        assertEquals(8, m.getShort(28));
        assertEquals(1, m.getShort(30));
        assertEquals(5, m.getInt(32));
    }

    @Test
    void parsesAnErrorAReplyAndAStatusDeviceList() throws IOException {
        assumeLittleEndian();
        ByteBuffer d = le(256);
        // a STATUS reply: DEVICE_LIST { ITEM { INDEX 0, CONNECTED 1 }, ITEM { INDEX 4, CONNECTED 0 } }
        int start = d.position();
        d.putInt(0).putShort((short) 0x22).putShort((short) 0).putInt(5).putInt(0);
        d.put((byte) 5).put((byte) 1).putShort((short) 0);
        d.putShort((short) (4 + 2 * 20)).putShort((short) (9 | 0x8000));
        for (int[] dev : new int[][]{{0, 1}, {4, 0}}) {
            d.putShort((short) 20).putShort((short) (1 | 0x8000));
            d.putShort((short) 8).putShort((short) 1).putInt(dev[0]);
            d.putShort((short) 5).putShort((short) 2).put((byte) dev[1]).put(new byte[3]);
        }
        d.putInt(start, d.position() - start);
        // an NLMSG_ERROR carrying -EBUSY (16) for seq 6
        d.putInt(36).putShort((short) 2).putShort((short) 0).putInt(6).putInt(0).putInt(-16).put(new byte[16]);
        d.flip();
        List<NbdNetlink.Reply> replies = NbdNetlink.parse(d);
        assertEquals(2, replies.size());
        assertEquals(5, replies.get(0).cmd());
        assertEquals(5, replies.get(0).seq());
        Map<Integer, Boolean> devices = NbdNetlink.deviceList(replies.get(0).attrs().get(9));
        assertEquals(Map.of(0, true, 4, false), devices);
        assertEquals(2, replies.get(1).type());
        assertEquals(6, replies.get(1).seq());
        assertEquals(-16, replies.get(1).error());
    }

    @Test
    void truncatedMessageIsRefused() {
        ByteBuffer d = ByteBuffer.allocate(20).order(ByteOrder.nativeOrder());
        d.putInt(0, 64);        // claims 64 bytes, has 20
        IOException e = assertThrows(IOException.class, () -> NbdNetlink.parse(d));
        assertTrue(e.getMessage().startsWith("malformed netlink message: length 64"), e.getMessage());
        ByteBuffer a = ByteBuffer.allocate(28).order(ByteOrder.nativeOrder());
        a.putInt(0, 28).putShort(4, (short) 0x22).putShort(20, (short) 40).putShort(22, (short) 1);
        e = assertThrows(IOException.class, () -> NbdNetlink.parse(a));
        assertTrue(e.getMessage().startsWith("malformed netlink attribute: length 40"), e.getMessage());
    }

    // The host kernel answers CTRL_CMD_GETFAMILY itself; it has no nbd driver, so the family is missing.
    @Test
    void missingNbdFamilyIsReportedCleanly() {
        assumeFalse(Files.isDirectory(Path.of("/sys/module/nbd")), "this host has the nbd module loaded");
        NbdNetlink.FamilyMissingException e = assertThrows(NbdNetlink.FamilyMissingException.class, NbdNetlink::open);
        assertEquals("the kernel has no \"nbd\" generic netlink family (modprobe nbd)", e.getMessage());
        assertFalse(NbdNetlink.available());
    }

    // The same socket code resolves a family that does exist: nlctrl itself is always there.
    @Test
    void resolvesAFamilyTheKernelHas() throws IOException {
        try (NbdNetlink n = NbdNetlink.open("nlctrl")) {
            assertEquals(0x10, n.familyId());
        }
    }

    private static void assumeLittleEndian() {
        assumeFalse(ByteOrder.nativeOrder() == ByteOrder.BIG_ENDIAN, "the expected bytes are little-endian");
    }
}

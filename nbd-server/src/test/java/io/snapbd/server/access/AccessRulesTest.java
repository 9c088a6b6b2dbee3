package io.snapbd.server.access;

import org.junit.jupiter.api.Test;

import javax.security.auth.x500.X500Principal;
import java.net.InetAddress;
import java.util.List;

import static io.snapbd.server.access.AccessRules.Grant.NONE;
import static io.snapbd.server.access.AccessRules.Grant.READ_ONLY;
import static io.snapbd.server.access.AccessRules.Grant.READ_WRITE;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class AccessRulesTest {

    static AccessRules rules(String... lines) {
        return new AccessRules(java.util.Arrays.stream(lines).map(l -> AccessRules.parse(l, "test")).toList());
    }

    static Peer cert(String dn) throws Exception {
        return Peer.tcp(InetAddress.getByName("192.0.2.7")).withCertificate(new X500Principal(dn));
    }

    @Test
    void noRulesOpenEverythingReadWrite() throws Exception {
        assertEquals(READ_WRITE, AccessRules.OPEN.grant(Peer.tcp(InetAddress.getByName("192.0.2.7")), "vol0@snap"));
        assertTrue(AccessRules.OPEN.isOpen());
    }

    @Test
    void principalsMatchTheirClientsOnly() throws Exception {
        AccessRules r = rules("a cn:client one rw", "b dn:CN=client two,O=Ex ro", "c any-cert ro", "d loopback rw",
                "e unix rw", "f anyone ro");
        Peer one = cert("CN=client one,O=Ex");
        Peer two = cert("cn=client two, o=Ex");     // the same name, spelled differently
        Peer local = Peer.tcp(InetAddress.getByName("127.0.0.5"));
        Peer v6 = Peer.tcp(InetAddress.getByName("::1"));
        Peer unix = Peer.unix();
        Peer far = Peer.tcp(InetAddress.getByName("192.0.2.7"));
        assertEquals(READ_WRITE, r.grant(one, "a"));
        assertEquals(NONE, r.grant(two, "a"));
        assertEquals(READ_ONLY, r.grant(two, "b"));
        assertEquals(NONE, r.grant(one, "b"));
        assertEquals(READ_ONLY, r.grant(one, "c"));
        assertEquals(NONE, r.grant(far, "c"));
        assertEquals(READ_WRITE, r.grant(local, "d"));
        assertEquals(READ_WRITE, r.grant(v6, "d"));
        assertEquals(NONE, r.grant(unix, "d"));
        assertEquals(NONE, r.grant(far, "d"));
        assertEquals(READ_WRITE, r.grant(unix, "e"));
        assertEquals(NONE, r.grant(local, "e"));
        assertEquals(READ_ONLY, r.grant(far, "f"));
        assertEquals(NONE, r.grant(far, "zzz"));
        assertTrue(r.usesCertificates());
        assertFalse(rules("a unix rw").usesCertificates());
    }

    @Test
    void aCertificateWithSeveralCommonNamesMatchesNoCnRule() throws Exception {
        AccessRules r = rules("a cn:admin rw");
        assertEquals(NONE, r.grant(cert("CN=admin,CN=guest"), "a"));
        assertEquals(READ_WRITE, r.grant(cert("CN=admin,OU=ops"), "a"));
    }

    @Test
    void snapshotsInheritUnlessNamedAndStarAddsAndWidestWins() throws Exception {
        AccessRules r = rules("v cn:one rw", "v@s1 cn:two ro", "* cn:backup ro", "v cn:backup rw");
        assertEquals(READ_WRITE, r.grant(cert("CN=one"), "v@s2"));
        assertEquals(NONE, r.grant(cert("CN=two"), "v@s2"));
        assertEquals(READ_ONLY, r.grant(cert("CN=two"), "v@s1"));
        assertEquals(NONE, r.grant(cert("CN=one"), "v@s1"));
        assertEquals(READ_ONLY, r.grant(cert("CN=backup"), "w"));
        assertEquals(READ_WRITE, r.grant(cert("CN=backup"), "v"));
        assertEquals(READ_ONLY, r.grant(cert("CN=backup"), "v@s1"), "the * rule still applies to a named snapshot");
    }

    @Test
    void parseKeepsSpacesInThePrincipalAndRejectsNonsense() {
        AccessRules.Rule rule = AccessRules.parse("  vol0   cn:client one   ro ", "f:1");
        assertEquals("vol0", rule.export());
        assertEquals("cn:client one", rule.principal());
        assertFalse(rule.readWrite());
        for (String bad : List.of("vol0 rw", "vol0 anyone rx", "vol0 someone rw", "vol0 dn:=== rw", "@s anyone rw",
                "vol0@ anyone rw", "vol0 cn: rw")) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> AccessRules.parse(bad, "f:1"), bad);
            assertFalse(e.getMessage().isEmpty());
        }
    }
}

package io.snapbd.server.client;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.params.provider.ValueSource;

import java.nio.file.Path;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class NbdUriTest {

    @Test
    void tcpWithHostPortAndExport() {
        NbdUri u = NbdUri.parse("nbd://example.com:10810/disk");
        assertEquals(NbdUri.Transport.TCP, u.transport());
        assertEquals("example.com", u.host());
        assertEquals(10810, u.port());
        assertEquals("disk", u.exportName());
        assertNull(u.socket());
    }

    @Test
    void defaultsArePort10809AndLocalhost() {
        assertEquals(10809, NbdUri.parse("nbd://example.com/disk").port());
        assertEquals("localhost", NbdUri.parse("nbd:///disk").host());
        assertEquals("localhost", NbdUri.parse("nbd://:2000/").host());
    }

    /** The examples of doc/uri.md. */
    @ParameterizedTest
    @CsvSource(delimiter = '|', value = {
            "nbd://example.com/disk          | disk",
            "nbd+unix:///disk?socket=sock    | disk",
            "nbd://example.com/              | ''",
            "nbd://example.com               | ''",
            "nbd://example.com//disk         | /disk",
            "nbd://example.com/hello%20world | hello world",
            "nbd://h/vol%40snap              | vol@snap",
            "nbd://h/a+b                     | a+b",
            "nbd://h/%C3%A9t%C3%A9           | \u00e9t\u00e9",
            "nbd://h/x%2Fy%3Fz%23            | x/y?z#",
    })
    void exportNamesArePercentDecoded(String uri, String export) {
        assertEquals(export, NbdUri.parse(uri).exportName());
    }

    @Test
    void unixSocket() {
        NbdUri u = NbdUri.parse("nbd+unix:///vol0?socket=/run/snapbd/nbd.sock");
        assertEquals(NbdUri.Transport.UNIX, u.transport());
        assertEquals(Path.of("/run/snapbd/nbd.sock"), u.socket());
        assertEquals("vol0", u.exportName());
        assertNull(u.host());
        assertEquals(-1, u.port());
        assertEquals(Path.of("/tmp/a b"), NbdUri.parse("nbd+unix:///?socket=/tmp/a%20b").socket());
        assertEquals("", NbdUri.parse("nbd+unix://?socket=s").exportName());
    }

    @Test
    void ipv6LiteralsInBrackets() {
        NbdUri u = NbdUri.parse("nbd://[::1]:10900/e");
        assertEquals("::1", u.host());
        assertEquals(10900, u.port());
        assertEquals("nbd://[::1]:10900/e", u.toString());
        assertEquals(10809, NbdUri.parse("nbd://[fe80::1]/e").port());
    }

    @Test
    void schemeIsCaseInsensitive() {
        assertEquals(NbdUri.tcp("h", 10809, "x"), NbdUri.parse("NBD://h/x"));
    }

    @ParameterizedTest
    @ValueSource(strings = {
            "nbd://example.com/disk",
            "nbd://example.com:1234/",
            "nbd://[::1]/x",
            "nbd://h/hello%20world",
            "nbd://h//slash//double",
            "nbd://h/a%3Fb%23c%25d",
            "nbd://h/%C3%A9",
            "nbd://h/vol@snap",
            "nbd+unix:///vol?socket=/tmp/nbd.sock",
            "nbd+unix:///?socket=relative/path%20with%20space",
            "nbd+unix:///x?socket=/tmp/a%26b%3Dc",
            "nbds://example.com/disk",
            "nbds://h:7000/x?tls-certificates=/etc/pki/snapbd",
            "nbds://h/x?tls-certificates=/a%20b&tls-verify-peer=false",
            "nbds://h/x?tls-verify-peer=false",
            "nbds+unix:///vol?socket=/tmp/nbd.sock&tls-certificates=/pki",
            "nbds+unix:///vol?socket=/s&tls-certificates=/pki&tls-hostname=storage2.example",
            "nbds://127.0.0.1/x?tls-hostname=localhost",
    })
    void formatsBackToTheSameUri(String uri) {
        NbdUri u = NbdUri.parse(uri);
        assertEquals(u, NbdUri.parse(u.toString()), u.toString());
        assertEquals(uri, u.toString());
    }

    /** libnbd's TLS schemes and query parameters. */
    @Test
    void tlsSchemesAndParameters() {
        NbdUri plain = NbdUri.parse("nbd://h/x");
        assertFalse(plain.tls());
        NbdUri u = NbdUri.parse("nbds://h:7000/x?tls-certificates=/pki/dir");
        assertTrue(u.tls());
        assertTrue(u.tlsVerifyPeer());
        assertEquals(Path.of("/pki/dir"), u.tlsCertificates());
        assertEquals(7000, u.port());
        assertEquals("x", u.exportName());
        assertNotEquals(plain, NbdUri.parse("nbds://h/x"));
        assertNull(NbdUri.parse("nbds://h/x").tlsCertificates());
        for (String no : new String[]{"false", "off", "no", "0", "FALSE"}) {
            assertFalse(NbdUri.parse("nbds://h/x?tls-verify-peer=" + no).tlsVerifyPeer(), no);
        }
        assertTrue(NbdUri.parse("nbds://h/x?tls-verify-peer=true").tlsVerifyPeer());
        NbdUri unix = NbdUri.parse("NBDS+UNIX:///v?socket=/s&tls-certificates=/c&tls-verify-peer=false");
        assertEquals(NbdUri.Transport.UNIX, unix.transport());
        assertTrue(unix.tls());
        assertFalse(unix.tlsVerifyPeer());
        assertEquals(Path.of("/s"), unix.socket());
        // A snapshot of the same volume keeps the TLS settings.
        NbdUri snap = u.withExport("x@s1");
        assertTrue(snap.tls());
        assertEquals(Path.of("/pki/dir"), snap.tlsCertificates());
        assertEquals("nbds://h:7000/x@s1?tls-certificates=/pki/dir", snap.toString());
        assertEquals(u, NbdUri.tcp("h", 7000, "x").withTls(Path.of("/pki/dir"), true));
        // tls-hostname: the name the certificate is checked for; without it the TCP host, over Unix none.
        assertEquals("h", u.tlsPeerName());
        assertNull(unix.tlsPeerName());
        NbdUri named = NbdUri.parse("nbds+unix:///v?socket=/s&tls-hostname=storage2");
        assertEquals("storage2", named.tlsHostname());
        assertEquals("storage2", named.tlsPeerName());
        assertEquals("storage2", named.withExport("v@s").tlsPeerName());
        assertNotEquals(named, NbdUri.parse("nbds+unix:///v?socket=/s"));
        assertEquals(NbdUri.parse("nbds+unix:///v?socket=/s"), named.withoutTls().withTls(null, true));
        assertEquals("other", NbdUri.parse("nbds://h/x?tls-hostname=other").tlsPeerName());
    }

    @Test
    void factoriesAndWithExport() {
        NbdUri u = NbdUri.unix(Path.of("/s"), "a b");
        assertEquals("nbd+unix:///a%20b?socket=/s", u.toString());
        assertEquals("vol@s1", u.withExport("vol@s1").exportName());
        assertEquals(Path.of("/s"), u.withExport("x").socket());
        assertEquals("nbd://10.0.0.1:7000/%3F", NbdUri.tcp("10.0.0.1", 7000, "?").toString());
        assertThrows(IllegalArgumentException.class, () -> NbdUri.tcp("h", 0, ""));
        assertThrows(IllegalArgumentException.class, () -> NbdUri.tcp("", 1, ""));
        assertThrows(IllegalArgumentException.class, () -> NbdUri.unix(Path.of("/s"), "nul\0"));
    }

    @ParameterizedTest
    @CsvSource(delimiter = '|', value = {
            "nbds+vsock://1:2/x               | vsock",
            "nbds://h/x?tls-psk-file=/k       | tls-psk-file is not supported",
            "nbds://h/x?tls-verify-peer=maybe | not a boolean",
            "nbds://h/x?tls-certificates=     | needs a directory",
            "nbds://h/x?tls-certificates=a&tls-certificates=b | given twice",
            "nbd://h/x?tls-certificates=/c    | needs a TLS scheme",
            "nbd://h/x?tls-verify-peer=false  | needs a TLS scheme",
            "nbd://h/x?tls-hostname=a         | needs a TLS scheme",
            "nbds://h/x?tls-hostname=a&tls-hostname=b | given twice",
            "nbds://h/x?tls-hostname=         | not a host name",
            "nbds://h/x?tls-hostname=a%20b    | not a host name",
            "nbds+unix:///x                   | nbds+unix URIs need ?socket=PATH",
            "nbds://h/x?socket=s              | belongs to nbds+unix",
            "nbds://user@h/x                  | pre-shared keys",
            "nbd+vsock://1:2/x                | vsock",
            "http://h/x                       | unsupported scheme http",
            "example.com/disk                 | expected nbd://",
            "nbd+unix:///x                    | need ?socket=PATH",
            "nbd+unix:///x?socket=            | need ?socket=PATH",
            "nbd+unix://host/x?socket=s       | take no host",
            "nbd+unix:///x?socket=a&socket=b  | given twice",
            "nbd+unix:///x?socket=%00abstract | abstract",
            "nbd://h/x?socket=s               | belongs to nbd+unix",
            "nbd://h/x?tls-type=x509          | tls-type is not supported",
            "nbd://h/x?foo=bar                | unknown query parameter 'foo'",
            "nbd://h:99999/x                  | outside 1..65535",
            "nbd://h:0/x                      | outside 1..65535",
            "nbd://h:abc/x                    | not a number",
            "nbd://h:/x                       | not a number",
            "nbd://::1/x                      | in brackets",
            "nbd://[::1/x                     | unterminated",
            "nbd://[::1]x/y                   | after the IPv6 literal",
            "nbd://user@h/x                   | user info",
            "nbd://h/x#frag                   | fragment",
            "nbd://h/bad%2                    | bad percent-escape",
            "nbd://h/bad%zz                   | bad percent-escape",
            "nbd://h/%FF                      | not UTF-8",
            "nbd://h/%00                      | NUL",
    })
    void badUrisAreRefusedWithAReason(String uri, String reason) {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> NbdUri.parse(uri));
        assertTrue(e.getMessage().contains(reason), e.getMessage());
    }
}

package io.snapbd.server.client;

import java.io.ByteArrayOutputStream;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.nio.file.InvalidPathException;
import java.nio.file.Path;
import java.util.Locale;
import java.util.Objects;

/**
 * Where an NBD export lives, in the NBD URI format (doc/uri.md of the NetworkBlockDevice project):
 * {@code nbd://HOST[:PORT]/EXPORT} for TCP and {@code nbd+unix:///EXPORT?socket=PATH} for a Unix socket.
 * <p>
 * The export name is the percent-decoded path without its leading {@code /}, so {@code nbd://h} and
 * {@code nbd://h/} both name the default export {@code ""} and {@code nbd://h//disk} names {@code /disk}. A
 * missing host means {@code localhost}, a missing port the IANA port 10809.
 * <p>
 * The TLS schemes {@code nbds://} and {@code nbds+unix://} make TLS mandatory ({@code NBD_OPT_STARTTLS}; the
 * client never falls back to plain text). Their query parameters follow libnbd's: {@code tls-certificates=DIR}
 * (a directory with {@code ca-cert.pem} and optionally {@code client-cert.pem} and {@code client-key.pem}) and
 * {@code tls-verify-peer=true|false} (default true: the server's certificate must be signed by a trusted CA and
 * name the host) and {@code tls-hostname=NAME} (the name the certificate must carry, and the one sent as SNI,
 * instead of the URI's host; over a Unix socket, where there is no host, only the chain is checked without it). Vsock, user info (libnbd's PSK user name), other {@code tls-*} parameters and TLS
 * parameters on a plain scheme are refused with an {@link IllegalArgumentException} that says why: the URI
 * format asks clients to diagnose what they cannot honour rather than to connect without it.
 * <p>
 * {@link #toString()} formats the URI back; {@code parse(u.toString())} equals {@code u}.
 */
public final class NbdUri {

    /** The IANA port of NBD. */
    public static final int DEFAULT_PORT = 10809;

    /** How the server is reached. */
    public enum Transport { TCP, UNIX }

    private final Transport transport;
    private final String host;
    private final int port;
    private final Path socket;
    private final String exportName;
    private final boolean tls;
    private final Path tlsCertificates;
    private final boolean tlsVerifyPeer;
    private final String tlsHostname;

    private NbdUri(Transport transport, String host, int port, Path socket, String exportName) {
        this(transport, host, port, socket, exportName, false, null, true, null);
    }

    private NbdUri(Transport transport, String host, int port, Path socket, String exportName,
                   boolean tls, Path tlsCertificates, boolean tlsVerifyPeer, String tlsHostname) {
        this.transport = transport;
        this.host = host;
        this.port = port;
        this.socket = socket;
        this.exportName = exportName;
        this.tls = tls;
        this.tlsCertificates = tlsCertificates;
        this.tlsVerifyPeer = tlsVerifyPeer;
        this.tlsHostname = tlsHostname;
    }

    /**
     * The same address with TLS required ({@code nbds://}): {@code certificates} is libnbd's
     * {@code tls-certificates} directory or null (the JDK's default trust, no client certificate).
     */
    public NbdUri withTls(Path certificates, boolean verifyPeer) {
        if (certificates != null && certificates.toString().isEmpty()) {
            throw new IllegalArgumentException("empty tls-certificates directory");
        }
        return new NbdUri(transport, host, port, socket, exportName, true, certificates, verifyPeer, tlsHostname);
    }

    /**
     * The same TLS URI checking the server's certificate for {@code name} (libnbd's {@code tls-hostname}) instead
     * of the URI's host; null goes back to the host (none over a Unix socket).
     */
    public NbdUri withTlsHostname(String name) {
        if (!tls) {
            throw new IllegalArgumentException("tls-hostname needs a TLS URI (nbds:// or nbds+unix://)");
        }
        if (name != null && (name.isEmpty() || !name.matches("[A-Za-z0-9._:-]+"))) {
            throw new IllegalArgumentException("tls-hostname '" + name + "' is not a host name or address");
        }
        return new NbdUri(transport, host, port, socket, exportName, true, tlsCertificates, tlsVerifyPeer, name);
    }

    /** A TCP address; {@code host} may be a name or an IP literal (IPv6 without brackets). */
    public static NbdUri tcp(String host, int port, String exportName) {
        Objects.requireNonNull(host, "host");
        if (host.isEmpty()) {
            throw new IllegalArgumentException("empty host");
        }
        if (port < 1 || port > 65535) {
            throw new IllegalArgumentException("port " + port + " is outside 1..65535");
        }
        return new NbdUri(Transport.TCP, host, port, null, checkExport(exportName));
    }

    /** A Unix-socket address. */
    public static NbdUri unix(Path socket, String exportName) {
        Objects.requireNonNull(socket, "socket");
        if (socket.toString().isEmpty()) {
            throw new IllegalArgumentException("empty socket path");
        }
        return new NbdUri(Transport.UNIX, null, -1, socket, checkExport(exportName));
    }

    /** The same address and export without TLS ({@code nbd://}, {@code nbd+unix://}). */
    public NbdUri withoutTls() {
        return new NbdUri(transport, host, port, socket, exportName);
    }

    /** The same server with another export (e.g. a snapshot {@code vol@snap} of the same volume). */
    public NbdUri withExport(String exportName) {
        return new NbdUri(transport, host, port, socket, checkExport(exportName), tls, tlsCertificates, tlsVerifyPeer, tlsHostname);
    }

    /**
     * Parses an NBD URI.
     *
     * @throws IllegalArgumentException naming what is wrong or unsupported
     */
    public static NbdUri parse(String uri) {
        Objects.requireNonNull(uri, "uri");
        int colon = uri.indexOf("://");
        if (colon < 0) {
            throw bad(uri, "expected nbd://HOST[:PORT]/EXPORT or nbd+unix:///EXPORT?socket=PATH");
        }
        String scheme = uri.substring(0, colon).toLowerCase(Locale.ROOT);
        String rest = uri.substring(colon + 3);
        switch (scheme) {
            case "nbd":
            case "nbd+unix":
            case "nbds":
            case "nbds+unix":
                break;
            case "nbd+vsock":
            case "nbds+vsock":
                throw bad(uri, "scheme " + scheme + ":// (vsock) is not supported");
            default:
                throw bad(uri, "unsupported scheme " + scheme + "://; expected nbd://, nbd+unix://, nbds:// or nbds+unix://");
        }
        int hash = rest.indexOf('#');
        if (hash >= 0) {
            throw bad(uri, "an NBD URI has no fragment (#" + rest.substring(hash + 1) + ")");
        }
        int question = rest.indexOf('?');
        String query = question < 0 ? null : rest.substring(question + 1);
        String beforeQuery = question < 0 ? rest : rest.substring(0, question);
        int slash = beforeQuery.indexOf('/');
        String authority = slash < 0 ? beforeQuery : beforeQuery.substring(0, slash);
        String path = slash < 0 ? "" : beforeQuery.substring(slash + 1);
        String export = decode(uri, path, "export name");

        boolean tls = scheme.startsWith("nbds");
        String socketParam = null;
        String certificatesParam = null;
        Boolean verifyParam = null;
        String hostnameParam = null;
        if (query != null && !query.isEmpty()) {
            for (String param : query.split("&", -1)) {
                int eq = param.indexOf('=');
                String key = decode(uri, eq < 0 ? param : param.substring(0, eq), "query parameter");
                String value = eq < 0 ? "" : decode(uri, param.substring(eq + 1), "query parameter " + key);
                switch (key) {
                    case "socket" -> {
                        if (socketParam != null) {
                            throw bad(uri, "socket= is given twice");
                        }
                        socketParam = value;
                    }
                    case "tls-certificates" -> {
                        if (!tls) {
                            throw bad(uri, "tls-certificates= needs a TLS scheme (nbds:// or nbds+unix://)");
                        }
                        if (certificatesParam != null) {
                            throw bad(uri, "tls-certificates= is given twice");
                        }
                        if (value.isEmpty() || value.indexOf('\0') >= 0) {
                            throw bad(uri, "tls-certificates= needs a directory");
                        }
                        certificatesParam = value;
                    }
                    case "tls-verify-peer" -> {
                        if (!tls) {
                            throw bad(uri, "tls-verify-peer= needs a TLS scheme (nbds:// or nbds+unix://)");
                        }
                        if (verifyParam != null) {
                            throw bad(uri, "tls-verify-peer= is given twice");
                        }
                        verifyParam = parseBoolean(uri, value);
                    }
                    case "tls-hostname" -> {
                        if (!tls) {
                            throw bad(uri, "tls-hostname= needs a TLS scheme (nbds:// or nbds+unix://)");
                        }
                        if (hostnameParam != null) {
                            throw bad(uri, "tls-hostname= is given twice");
                        }
                        hostnameParam = value;
                    }
                    default -> throw bad(uri, key.startsWith("tls")
                            ? "query parameter " + key + " is not supported (only tls-certificates=, tls-verify-peer= and tls-hostname=)"
                            : "unknown query parameter '" + key + "'");
                }
            }
        }
        NbdUri parsed = parseAddress(uri, scheme, authority, export, socketParam);
        if (!tls) {
            return parsed;
        }
        try {
            parsed = parsed.withTls(certificatesParam == null ? null : Path.of(certificatesParam),
                    verifyParam == null || verifyParam);
        } catch (InvalidPathException e) {
            throw bad(uri, "tls-certificates is not a valid path: " + e.getMessage());
        }
        try {
            return hostnameParam == null ? parsed : parsed.withTlsHostname(hostnameParam);
        } catch (IllegalArgumentException e) {
            throw bad(uri, e.getMessage());
        }
    }

    private static boolean parseBoolean(String uri, String value) {
        switch (value.toLowerCase(Locale.ROOT)) {
            case "true", "on", "yes", "1":
                return true;
            case "false", "off", "no", "0":
                return false;
            default:
                throw bad(uri, "tls-verify-peer='" + value + "' is not a boolean (true or false)");
        }
    }

    private static NbdUri parseAddress(String uri, String scheme, String authority, String export, String socketParam) {
        if (scheme.endsWith("+unix")) {
            if (!authority.isEmpty()) {
                throw bad(uri, scheme + " URIs take no host or port (write " + scheme + ":///EXPORT?socket=PATH)");
            }
            if (socketParam == null || socketParam.isEmpty()) {
                throw bad(uri, scheme + " URIs need ?socket=PATH");
            }
            if (socketParam.charAt(0) == '\0') {
                throw bad(uri, "abstract Unix sockets (socket=%00...) are not supported");
            }
            try {
                return unix(Path.of(socketParam), export);
            } catch (InvalidPathException e) {
                throw bad(uri, "socket path is not a valid path: " + e.getMessage());
            }
        }
        if (socketParam != null) {
            throw bad(uri, "socket= belongs to " + scheme + "+unix URIs; " + scheme + ":// is TCP");
        }
        return parseTcp(uri, authority, export);
    }

    private static NbdUri parseTcp(String uri, String authority, String export) {
        if (authority.contains("@")) {
            throw bad(uri, "user info (USER@) is only used for TLS with pre-shared keys, which this client does not support");
        }
        String host;
        String portText = null;
        if (authority.startsWith("[")) {
            int close = authority.indexOf(']');
            if (close < 0) {
                throw bad(uri, "unterminated IPv6 literal");
            }
            host = authority.substring(1, close);
            String after = authority.substring(close + 1);
            if (!after.isEmpty()) {
                if (!after.startsWith(":")) {
                    throw bad(uri, "unexpected '" + after + "' after the IPv6 literal");
                }
                portText = after.substring(1);
            }
            if (host.isEmpty()) {
                throw bad(uri, "empty IPv6 literal");
            }
        } else {
            int c = authority.lastIndexOf(':');
            if (c >= 0 && authority.indexOf(':') != c) {
                throw bad(uri, "IPv6 addresses must be in brackets, e.g. nbd://[::1]:10809/");
            }
            host = c < 0 ? authority : authority.substring(0, c);
            portText = c < 0 ? null : authority.substring(c + 1);
            host = decode(uri, host, "host");
        }
        int port = DEFAULT_PORT;
        if (portText != null) {
            if (portText.isEmpty() || portText.length() > 5 || !portText.chars().allMatch(ch -> ch >= '0' && ch <= '9')) {
                throw bad(uri, "port '" + portText + "' is not a number");
            }
            port = Integer.parseInt(portText);
            if (port < 1 || port > 65535) {
                throw bad(uri, "port " + port + " is outside 1..65535");
            }
        }
        return tcp(host.isEmpty() ? "localhost" : host, port, export);
    }

    private static String checkExport(String exportName) {
        Objects.requireNonNull(exportName, "exportName");
        if (exportName.indexOf('\0') >= 0) {
            throw new IllegalArgumentException("export names cannot contain NUL");
        }
        if (exportName.getBytes(StandardCharsets.UTF_8).length > 4096) {
            throw new IllegalArgumentException("export name longer than 4096 bytes");
        }
        return exportName;
    }

    private static IllegalArgumentException bad(String uri, String why) {
        return new IllegalArgumentException("bad NBD URI '" + uri + "': " + why);
    }

    /** Percent-decodes (RFC 3986; '+' stays '+') and checks that the bytes are UTF-8. */
    private static String decode(String uri, String s, String what) {
        if (s.indexOf('%') < 0) {
            return s;
        }
        ByteArrayOutputStream bytes = new ByteArrayOutputStream(s.length());
        int i = 0;
        while (i < s.length()) {
            if (s.charAt(i) != '%') {
                int next = s.indexOf('%', i);
                int end = next < 0 ? s.length() : next;
                bytes.writeBytes(s.substring(i, end).getBytes(StandardCharsets.UTF_8));
                i = end;
                continue;
            }
            int hi = i + 2 < s.length() ? Character.digit(s.charAt(i + 1), 16) : -1;
            int lo = i + 2 < s.length() ? Character.digit(s.charAt(i + 2), 16) : -1;
            if (hi < 0 || lo < 0) {
                throw bad(uri, "bad percent-escape in the " + what + " at '" + s.substring(i, Math.min(s.length(), i + 3)) + "'");
            }
            bytes.write(hi << 4 | lo);
            i += 3;
        }
        try {
            return StandardCharsets.UTF_8.newDecoder()
                    .onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT)
                    .decode(ByteBuffer.wrap(bytes.toByteArray())).toString();
        } catch (CharacterCodingException e) {
            throw bad(uri, "the " + what + " is not UTF-8 once percent-decoded");
        }
    }

    /** Percent-encodes everything but RFC 3986 unreserved characters and those in {@code keep}. */
    private static String encode(String s, String keep) {
        StringBuilder sb = new StringBuilder(s.length());
        for (byte b : s.getBytes(StandardCharsets.UTF_8)) {
            int c = b & 0xff;
            if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
                    || "-._~".indexOf(c) >= 0 || (c < 0x80 && keep.indexOf(c) >= 0)) {
                sb.append((char) c);
            } else {
                sb.append('%').append(Character.toUpperCase(Character.forDigit(c >> 4, 16)))
                        .append(Character.toUpperCase(Character.forDigit(c & 15, 16)));
            }
        }
        return sb.toString();
    }

    public Transport transport() {
        return transport;
    }

    /** The host name or IP literal (TCP only; {@code null} for Unix sockets). */
    public String host() {
        return host;
    }

    /** The TCP port ({@code -1} for Unix sockets). */
    public int port() {
        return port;
    }

    /** The Unix socket path ({@code null} for TCP). */
    public Path socket() {
        return socket;
    }

    /** The decoded export name; {@code ""} is the server's default export. */
    public String exportName() {
        return exportName;
    }

    /** Whether TLS is required ({@code nbds://}, {@code nbds+unix://}). */
    public boolean tls() {
        return tls;
    }

    /** libnbd's {@code tls-certificates} directory, or null (default trust store, no client certificate). */
    public Path tlsCertificates() {
        return tlsCertificates;
    }

    /** libnbd's {@code tls-verify-peer}: authenticate the server (default true). */
    public boolean tlsVerifyPeer() {
        return tlsVerifyPeer;
    }

    /** libnbd's {@code tls-hostname}: the name the server's certificate must carry instead of the host, or null. */
    public String tlsHostname() {
        return tlsHostname;
    }

    /** The name the server's certificate is checked against: {@code tls-hostname}, else the TCP host, else null. */
    public String tlsPeerName() {
        return tlsHostname != null ? tlsHostname : transport == Transport.TCP ? host : null;
    }

    /** The URI text; {@code parse} of it gives an equal object. */
    @Override
    public String toString() {
        // sub-delims and ":@/" are legal in a path; '?' and '#' and '%' are not, so they get escaped.
        String path = "/" + encode(exportName, "!$&'()*+,;=:@/");
        String scheme = tls ? "nbds" : "nbd";
        StringBuilder query = new StringBuilder();
        if (transport == Transport.UNIX) {
            query.append("?socket=").append(encode(socket.toString(), "!$'()*+,;:@/"));
        }
        if (tlsCertificates != null) {
            query.append(query.length() == 0 ? '?' : '&').append("tls-certificates=")
                    .append(encode(tlsCertificates.toString(), "!$'()*+,;:@/"));
        }
        if (tls && !tlsVerifyPeer) {
            query.append(query.length() == 0 ? '?' : '&').append("tls-verify-peer=false");
        }
        if (tlsHostname != null) {
            query.append(query.length() == 0 ? '?' : '&').append("tls-hostname=").append(tlsHostname);
        }
        if (transport == Transport.UNIX) {
            return scheme + "+unix://" + path + query;
        }
        String h = host.indexOf(':') >= 0 ? "[" + host + "]" : encode(host, "!$&'()*+,;=");
        return scheme + "://" + h + (port == DEFAULT_PORT ? "" : ":" + port) + path + query;
    }

    @Override
    public boolean equals(Object o) {
        if (!(o instanceof NbdUri)) {
            return false;
        }
        NbdUri u = (NbdUri) o;
        return transport == u.transport && port == u.port && Objects.equals(host, u.host)
                && Objects.equals(socket, u.socket) && exportName.equals(u.exportName)
                && tls == u.tls && Objects.equals(tlsCertificates, u.tlsCertificates) && tlsVerifyPeer == u.tlsVerifyPeer
                && Objects.equals(tlsHostname, u.tlsHostname);
    }

    @Override
    public int hashCode() {
        return Objects.hash(transport, host, port, socket, exportName, tls, tlsCertificates, tlsVerifyPeer, tlsHostname);
    }
}

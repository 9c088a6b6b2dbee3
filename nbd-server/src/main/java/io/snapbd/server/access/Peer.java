package io.snapbd.server.access;

import javax.naming.InvalidNameException;
import javax.naming.ldap.LdapName;
import javax.naming.ldap.Rdn;
import javax.security.auth.x500.X500Principal;
import java.net.InetAddress;

/**
 * Who is at the other end of an NBD connection, as far as access rules can tell: how it came (TCP, the Unix
 * socket, or a socket pair of our own), its address for TCP, and, after STARTTLS, the subject of the client
 * certificate the TLS handshake verified against ca-cert.pem (null without one).
 */
public record Peer(Transport transport, InetAddress address, X500Principal certificate) {

    public enum Transport { TCP, UNIX, INTERNAL }

    public static Peer tcp(InetAddress address) {
        return new Peer(Transport.TCP, address, null);
    }

    public static Peer unix() {
        return new Peer(Transport.UNIX, null, null);
    }

    /** A channel the server made itself (a kernel attachment's socket pair). */
    public static Peer internal() {
        return new Peer(Transport.INTERNAL, null, null);
    }

    /** This peer after a TLS handshake that verified {@code subject} (null: no client certificate). */
    public Peer withCertificate(X500Principal subject) {
        return new Peer(transport, address, subject);
    }

    public boolean loopback() {
        return transport == Transport.TCP && address != null && address.isLoopbackAddress();
    }

    /** The certificate subject's common name when it has exactly one, else null. */
    public String commonName() {
        return commonName(certificate);
    }

    static String commonName(X500Principal subject) {
        if (subject == null) {
            return null;
        }
        try {
            String cn = null;
            for (Rdn rdn : new LdapName(subject.getName(X500Principal.RFC2253)).getRdns()) {
                if (rdn.getType().equalsIgnoreCase("CN")) {
                    if (cn != null) {
                        return null;        // several CNs: a cn: rule could match the wrong one
                    }
                    cn = String.valueOf(rdn.getValue());
                }
            }
            return cn;
        } catch (InvalidNameException e) {
            return null;
        }
    }

    /** For log lines. */
    public String describe() {
        String how = switch (transport) {
            case TCP -> "tcp " + (address == null ? "?" : address.getHostAddress());
            case UNIX -> "unix socket";
            case INTERNAL -> "internal";
        };
        return certificate == null ? how : how + ", certificate " + certificate.getName(X500Principal.RFC2253);
    }
}

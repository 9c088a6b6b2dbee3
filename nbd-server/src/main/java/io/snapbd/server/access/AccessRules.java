package io.snapbd.server.access;

import io.snapbd.server.export.ExportName;

import javax.security.auth.x500.X500Principal;
import java.util.ArrayList;
import java.util.List;

/**
 * Per-export access rules: which clients may see and open which exports, read-write or read-only. Each rule is
 * one line {@code EXPORT PRINCIPAL ro|rw} (config file {@code access = ...}, or {@code serve --access}):
 * <ul>
 *   <li>EXPORT: a volume ({@code vol0}, which also covers its snapshots), one snapshot ({@code vol0@daily}),
 *       or {@code *} (every export);</li>
 *   <li>PRINCIPAL: {@code cn:NAME} (a verified client certificate whose subject has the common name NAME),
 *       {@code dn:DN} (that exact subject, e.g. {@code dn:CN=backup,O=Example}), {@code any-cert} (any client
 *       with a certificate the CA in ca-cert.pem signed), {@code loopback} (TCP from 127.0.0.0/8 or ::1),
 *       {@code unix} (the Unix socket), {@code anyone}.</li>
 * </ul>
 * Rules grant; nothing else does once there is at least one rule (none at all: everyone may open everything,
 * read-write, as without this feature). The rules for a snapshot are those naming it; when none does, those of
 * its volume. {@code *} rules add to either. The widest matching grant wins (rw over ro). A read-only grant never
 * makes a read-only export writable.
 */
public final class AccessRules {

    /** What a client may do with an export. */
    public enum Grant { NONE, READ_ONLY, READ_WRITE }

    /** One rule, as written ({@code origin} names its file and line, or the option). */
    public record Rule(String export, String principal, boolean readWrite, String origin) {
        boolean matches(Peer p) {
            if (principal.equals("anyone")) {
                return true;
            }
            if (principal.equals("unix")) {
                return p.transport() == Peer.Transport.UNIX;
            }
            if (principal.equals("loopback")) {
                return p.loopback();
            }
            if (principal.equals("any-cert")) {
                return p.certificate() != null;
            }
            if (principal.startsWith("cn:")) {
                String cn = p.commonName();
                return cn != null && cn.equals(principal.substring(3));
            }
            if (principal.startsWith("dn:")) {
                return p.certificate() != null && p.certificate().equals(new X500Principal(principal.substring(3)));
            }
            return false;
        }

        boolean certificateBased() {
            return principal.equals("any-cert") || principal.startsWith("cn:") || principal.startsWith("dn:");
        }

        @Override
        public String toString() {
            return export + " " + principal + " " + (readWrite ? "rw" : "ro");
        }
    }

    /** No rules: everyone may open everything (the behaviour before access rules existed). */
    public static final AccessRules OPEN = new AccessRules(List.of());

    private final List<Rule> rules;

    public AccessRules(List<Rule> rules) {
        this.rules = List.copyOf(rules);
    }

    public List<Rule> rules() {
        return rules;
    }

    public boolean isOpen() {
        return rules.isEmpty();
    }

    /** True when a rule names a certificate: the TLS handshake then asks clients for one. */
    public boolean usesCertificates() {
        for (Rule r : rules) {
            if (r.certificateBased()) {
                return true;
            }
        }
        return false;
    }

    /** What {@code peer} may do with the export named {@code export} ({@code VOLUME} or {@code VOLUME@SNAPSHOT}). */
    public Grant grant(Peer peer, String export) {
        if (rules.isEmpty()) {
            return Grant.READ_WRITE;
        }
        ExportName name = ExportName.parse(export);
        boolean snapshotNamed = false;
        if (name.isSnapshot()) {
            for (Rule r : rules) {
                snapshotNamed |= r.export.equals(export);
            }
        }
        Grant g = Grant.NONE;
        for (Rule r : rules) {
            boolean applies = r.export.equals("*")
                    || (snapshotNamed ? r.export.equals(export) : r.export.equals(name.volume()));
            if (applies && r.matches(peer)) {
                if (r.readWrite) {
                    return Grant.READ_WRITE;
                }
                g = Grant.READ_ONLY;
            }
        }
        return g;
    }

    /**
     * Parses one rule: {@code EXPORT PRINCIPAL ro|rw}, the principal being everything between the first and the
     * last word (a subject may hold spaces). Errors say what is wrong, for a message naming the origin.
     */
    public static Rule parse(String line, String origin) {
        String s = line.strip();
        int first = s.indexOf(' ');
        int last = s.lastIndexOf(' ');
        if (first < 0 || last <= first) {
            throw new IllegalArgumentException("expected 'EXPORT PRINCIPAL ro|rw', got '" + s + "'");
        }
        String export = s.substring(0, first);
        String principal = s.substring(first, last).strip();
        String mode = s.substring(last + 1);
        boolean rw;
        if (mode.equals("rw")) {
            rw = true;
        } else if (mode.equals("ro")) {
            rw = false;
        } else {
            throw new IllegalArgumentException("the last word must be ro or rw, not '" + mode + "'");
        }
        if (!export.equals("*")) {
            ExportName n = ExportName.parse(export);
            if (n.volume().isEmpty() || (n.isSnapshot() && n.snapshot().isEmpty())) {
                throw new IllegalArgumentException("'" + export + "' is not an export name (VOLUME, VOLUME@SNAPSHOT or *)");
            }
        }
        switch (principal) {
            case "anyone", "unix", "loopback", "any-cert" -> {
            }
            default -> {
                if (principal.startsWith("cn:") && principal.length() > 3) {
                    break;
                }
                if (principal.startsWith("dn:") && principal.length() > 3) {
                    try {
                        new X500Principal(principal.substring(3));
                    } catch (IllegalArgumentException e) {
                        throw new IllegalArgumentException("'" + principal.substring(3) + "' is not a distinguished name (e.g. CN=client1,O=Example)");
                    }
                    break;
                }
                throw new IllegalArgumentException("unknown principal '" + principal
                        + "' (one of cn:NAME, dn:DN, any-cert, loopback, unix, anyone)");
            }
        }
        return new Rule(export, principal, rw, origin);
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof AccessRules a && a.rules.stream().map(Rule::toString).toList()
                .equals(rules.stream().map(Rule::toString).toList());
    }

    @Override
    public int hashCode() {
        return rules.stream().map(Rule::toString).toList().hashCode();
    }

    @Override
    public String toString() {
        if (rules.isEmpty()) {
            return "none (every client may open every export)";
        }
        List<String> out = new ArrayList<>();
        for (Rule r : rules) {
            out.add(r.toString());
        }
        return String.join("; ", out);
    }
}

package io.snapbd.server.config;

import java.nio.file.Path;
import java.util.Locale;

/**
 * TLS on the NBD TCP listeners, with nbdkit's option names: {@code tls = off|on|require},
 * {@code tls-certificates = DIR} (ca-cert.pem, server-cert.pem, server-key.pem), {@code tls-verify-peer}.
 *
 * @param mode         off: STARTTLS is not offered; on: offered, plain clients still served; require: nothing but
 *                     STARTTLS and ABORT before TLS
 * @param certificates the directory of PEM files; required unless the mode is off
 * @param verifyPeer   require a client certificate signed by the directory's ca-cert.pem
 */
public record TlsSettings(Mode mode, Path certificates, boolean verifyPeer) {

    public enum Mode { OFF, ON, REQUIRE }

    public static final TlsSettings OFF = new TlsSettings(Mode.OFF, null, false);

    public TlsSettings {
        mode = mode == null ? Mode.OFF : mode;
    }

    public static Mode parseMode(String v) {
        return switch (v.strip().toLowerCase(Locale.ROOT)) {
            case "off", "false", "no" -> Mode.OFF;
            case "on", "true", "yes" -> Mode.ON;
            case "require" -> Mode.REQUIRE;
            default -> throw new IllegalArgumentException("'" + v + "' must be off, on or require");
        };
    }

    /** Checks that the settings hang together: any mode but off needs a certificates directory. */
    public TlsSettings validate() {
        if (mode != Mode.OFF && certificates == null) {
            throw new IllegalArgumentException("tls=" + mode.name().toLowerCase(Locale.ROOT)
                    + " needs the certificates directory (--tls-certificates=DIR or tls-certificates = DIR)");
        }
        if (mode == Mode.OFF && verifyPeer) {
            throw new IllegalArgumentException("tls-verify-peer needs tls=on or tls=require");
        }
        return this;
    }

    public boolean enabled() {
        return mode != Mode.OFF;
    }
}

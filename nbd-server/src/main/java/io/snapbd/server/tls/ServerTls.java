package io.snapbd.server.tls;

import io.snapbd.server.config.TlsSettings;

import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLEngine;
import javax.net.ssl.SSLParameters;
import javax.net.ssl.TrustManagerFactory;
import java.io.ByteArrayInputStream;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermission;
import java.nio.file.attribute.PosixFilePermissions;
import java.security.GeneralSecurityException;
import java.security.KeyFactory;
import java.security.KeyStore;
import java.security.PrivateKey;
import java.security.Signature;
import java.security.cert.Certificate;
import java.security.cert.CertificateException;
import java.security.cert.CertificateFactory;
import java.security.cert.X509Certificate;
import java.security.spec.PKCS8EncodedKeySpec;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Base64;
import java.util.EnumSet;
import java.util.List;
import java.util.Set;

/**
 * The server side of NBD's STARTTLS: an SSLContext built from the PEM files nbdkit and qemu-nbd read
 * ({@code ca-cert.pem}, {@code server-cert.pem}, {@code server-key.pem} in one directory) with the JDK's
 * classes only, and one SSLEngine per connection (TLS 1.3 and 1.2). Errors name the file and never quote
 * key material.
 */
public final class ServerTls {

    static {
        // A TLS 1.2 client could otherwise start a renegotiation in the middle of the transmission phase, which
        // TlsChannel (one reader, one writer) does not drive. Only set when the operator has not chosen.
        if (System.getProperty("jdk.tls.rejectClientInitiatedRenegotiation") == null) {
            System.setProperty("jdk.tls.rejectClientInitiatedRenegotiation", "true");
        }
    }

    public static final String CA_CERT = "ca-cert.pem";
    public static final String SERVER_CERT = "server-cert.pem";
    public static final String SERVER_KEY = "server-key.pem";
    private static final String[] PROTOCOLS = {"TLSv1.3", "TLSv1.2"};

    private final TlsSettings settings;
    private final SSLContext context;
    /** The JDK's enabled suites with AES-128-GCM moved ahead of AES-256-GCM ({@link #aes128First}), or null. */
    private final String[] suites;
    /** True when ca-cert.pem was loaded: client certificates are then checked against it, never the JDK's CAs. */
    private final boolean ownTrust;

    /** The server's own certificate: the in-memory client of {@link #warmUp} trusts exactly it. */
    private final X509Certificate certificate;

    private ServerTls(TlsSettings settings, SSLContext context, boolean ownTrust, X509Certificate certificate) {
        this.settings = settings;
        this.certificate = certificate;
        this.context = context;
        this.ownTrust = ownTrust;
        SSLEngine template = context.createSSLEngine();
        template.setUseClientMode(false);
        this.suites = System.getProperty("jdk.tls.server.cipherSuites") == null
                ? aes128First(template.getEnabledCipherSuites()) : null;
    }

    /**
     * The same cipher suites, each AES-128-GCM suite moved to just before its AES-256-GCM twin (the JDK lists
     * AES-256 first). Nothing is added or removed, so the list is no weaker; but every record costs 10 AES rounds
     * instead of 14 on both ends, which is most of what TLS costs per 4 KiB request. An operator who sets
     * {@code jdk.tls.server.cipherSuites} (or {@code jdk.tls.client.cipherSuites} for our client) keeps that order.
     */
    static String[] aes128First(String[] enabled) {
        List<String> all = Arrays.asList(enabled);
        List<String> out = new ArrayList<>(enabled.length);
        for (String s : enabled) {
            if (out.contains(s)) {
                continue;
            }
            if (s.endsWith("_AES_256_GCM_SHA384")) {
                String twin = s.substring(0, s.length() - "_AES_256_GCM_SHA384".length()) + "_AES_128_GCM_SHA256";
                if (all.contains(twin) && !out.contains(twin)) {
                    out.add(twin);
                }
            }
            out.add(s);
        }
        return out.toArray(new String[0]);
    }

    /** Null when TLS is off; otherwise the loaded context, or an IOException naming the file at fault. */
    public static ServerTls load(TlsSettings settings) throws IOException {
        if (settings == null || !settings.enabled()) {
            return null;
        }
        settings.validate();
        Path dir = settings.certificates();
        if (!Files.isDirectory(dir)) {
            throw new IOException("TLS certificates directory " + dir + " does not exist or is not a directory");
        }
        Path keyFile = dir.resolve(SERVER_KEY);
        checkKeyPermissions(keyFile);
        List<X509Certificate> chain = certificates(dir.resolve(SERVER_CERT));
        PrivateKey key = privateKey(keyFile, chain.get(0));
        try {
            KeyStore ks = KeyStore.getInstance("PKCS12");
            ks.load(null, null);
            char[] none = new char[0];
            ks.setKeyEntry("server", key, none, chain.toArray(new Certificate[0]));
            KeyManagerFactory kmf = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
            kmf.init(ks, none);
            TrustManagerFactory tmf = null;
            if (settings.verifyPeer() || Files.exists(dir.resolve(CA_CERT))) {
                KeyStore trust = KeyStore.getInstance("PKCS12");
                trust.load(null, null);
                int i = 0;
                for (X509Certificate ca : certificates(dir.resolve(CA_CERT))) {
                    trust.setCertificateEntry("ca" + i++, ca);
                }
                tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
                tmf.init(trust);
            }
            SSLContext ctx = SSLContext.getInstance("TLS");
            ctx.init(kmf.getKeyManagers(), tmf == null ? null : tmf.getTrustManagers(), null);
            return new ServerTls(settings, ctx, tmf != null, chain.get(0));
        } catch (GeneralSecurityException e) {
            throw new IOException("cannot set up TLS from " + dir + ": " + e.getMessage(), e);
        }
    }

    public TlsSettings settings() {
        return settings;
    }

    public boolean required() {
        return settings.mode() == TlsSettings.Mode.REQUIRE;
    }

    /**
     * Runs the TLS record path in memory until the JIT has compiled it, at most about {@code budget}
     * ({@link TlsWarmUp}), so the first clients after a start do not get interpreted AES-GCM. Returns the log line.
     */
    public String warmUp(java.time.Duration budget) throws IOException {
        SSLEngine e = context.createSSLEngine();
        e.setUseClientMode(false);
        SSLParameters p = e.getSSLParameters();
        p.setProtocols(PROTOCOLS);
        if (suites != null) {
            p.setCipherSuites(suites);
            p.setUseCipherSuitesOrder(true);
        }
        e.setSSLParameters(p);
        TlsWarmUp.Result r = TlsWarmUp.run(e, certificate, budget);
        return String.format("TLS record path warmed up: %d rounds, %d records (%d of them full 16 KiB records, %s) in memory in %d ms"
                + " (warm-up = off skips it)", r.rounds(), r.records(), r.fullRecords(), r.suite(), r.nanos() / 1_000_000);
    }

    /** A new server-side engine for one connection. */
    public SSLEngine newEngine() {
        return newEngine(false);
    }

    /**
     * A new server-side engine; {@code askForCertificate} (access rules name certificates): without
     * --tls-verify-peer, clients are asked for a certificate but may go on without one. One they send must
     * still be signed by ca-cert.pem (without that file they are not asked: the JDK's default CAs never count).
     */
    public SSLEngine newEngine(boolean askForCertificate) {
        SSLEngine e = context.createSSLEngine();
        e.setUseClientMode(false);
        SSLParameters p = e.getSSLParameters();
        p.setProtocols(PROTOCOLS);
        if (suites != null) {
            p.setCipherSuites(suites);
            p.setUseCipherSuitesOrder(true);    // the server's order decides, as the JDK's default already does
        }
        if (settings.verifyPeer()) {
            p.setNeedClientAuth(true);
        } else if (askForCertificate && ownTrust) {
            p.setWantClientAuth(true);
        }
        e.setSSLParameters(p);
        return e;
    }

    /** True when client certificates can be verified (ca-cert.pem is there). */
    public boolean verifiesClientCertificates() {
        return ownTrust;
    }

    /** Refuses a private key that others than its owner may read, as ssh does. */
    static void checkKeyPermissions(Path keyFile) throws IOException {
        Set<PosixFilePermission> perms;
        try {
            perms = Files.getPosixFilePermissions(keyFile);
        } catch (NoSuchFileException e) {
            throw new IOException("TLS private key " + keyFile + " does not exist");
        } catch (UnsupportedOperationException e) {
            return;     // not a POSIX file system: nothing to check
        }
        Set<PosixFilePermission> open = EnumSet.noneOf(PosixFilePermission.class);
        for (PosixFilePermission p : perms) {
            if (!p.name().startsWith("OWNER_")) {
                open.add(p);
            }
        }
        if (!open.isEmpty()) {
            throw new IOException("TLS private key " + keyFile + " is accessible by group or others ("
                    + PosixFilePermissions.toString(perms)
                    + "): refused; make it readable by its owner only (chmod 600 " + keyFile + ")");
        }
    }

    static List<X509Certificate> certificates(Path file) throws IOException {
        byte[] pem = read(file, "certificate");
        try {
            CertificateFactory cf = CertificateFactory.getInstance("X.509");
            List<X509Certificate> out = new ArrayList<>();
            for (Certificate c : cf.generateCertificates(new ByteArrayInputStream(pem))) {
                out.add((X509Certificate) c);
            }
            if (out.isEmpty()) {
                throw new IOException(file + " holds no PEM certificate");
            }
            return out;
        } catch (CertificateException e) {
            throw new IOException(file + " is not a valid PEM certificate file: " + e.getMessage());
        }
    }

    /**
     * An unencrypted PKCS#8 key ({@code BEGIN PRIVATE KEY}, what openssl 3 writes) or an RSA PKCS#1 key
     * ({@code BEGIN RSA PRIVATE KEY}, what certtool writes), of the certificate's key algorithm.
     */
    static PrivateKey privateKey(Path file, X509Certificate cert) throws IOException {
        String text = new String(read(file, "private key"), StandardCharsets.US_ASCII);
        String kind;
        byte[] der;
        if (text.contains("-----BEGIN PRIVATE KEY-----")) {
            kind = "PKCS#8";
            der = base64(text, "PRIVATE KEY", file);
        } else if (text.contains("-----BEGIN RSA PRIVATE KEY-----")) {
            kind = "PKCS#1";
            der = pkcs1ToPkcs8(base64(text, "RSA PRIVATE KEY", file));
        } else if (text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----")) {
            throw new IOException(file + " is an encrypted private key: the server cannot ask for a passphrase; "
                    + "write it unencrypted (openssl pkcs8 -topk8 -nocrypt) and keep it mode 600");
        } else {
            throw new IOException(file + " is not a PEM private key of a supported kind (PKCS#8 'BEGIN PRIVATE KEY' "
                    + "or 'BEGIN RSA PRIVATE KEY'; convert with: openssl pkcs8 -topk8 -nocrypt -in OLD -out " + file + ")");
        }
        String alg = cert.getPublicKey().getAlgorithm();
        try {
            PrivateKey key = KeyFactory.getInstance(alg).generatePrivate(new PKCS8EncodedKeySpec(der));
            Arrays.fill(der, (byte) 0);
            if (!matches(key, cert)) {
                throw new IOException(file + " does not match the certificate's public key (server-cert.pem)");
            }
            return key;
        } catch (GeneralSecurityException e) {
            throw new IOException(file + ": cannot read the " + kind + " key as a " + alg
                    + " key (the key of server-cert.pem's algorithm)");
        }
    }

    /** Signs a fixed message with the key and checks it with the certificate, so a mismatch is caught at start. */
    private static boolean matches(PrivateKey key, X509Certificate cert) throws GeneralSecurityException {
        String sig = switch (key.getAlgorithm()) {
            case "RSA" -> "SHA256withRSA";
            case "EC" -> "SHA256withECDSA";
            case "Ed25519", "Ed448", "EdDSA" -> key.getAlgorithm();
            default -> null;
        };
        if (sig == null) {
            return true;        // left to the TLS handshake
        }
        byte[] msg = "snapbd key check".getBytes(StandardCharsets.US_ASCII);
        Signature signer = Signature.getInstance(sig);
        signer.initSign(key);
        signer.update(msg);
        byte[] signature = signer.sign();
        Signature verifier = Signature.getInstance(sig);
        verifier.initVerify(cert.getPublicKey());
        verifier.update(msg);
        return verifier.verify(signature);
    }

    private static byte[] read(Path file, String what) throws IOException {
        try {
            return Files.readAllBytes(file);
        } catch (NoSuchFileException e) {
            throw new IOException("TLS " + what + " " + file + " does not exist");
        } catch (IOException e) {
            throw new IOException("cannot read TLS " + what + " " + file + ": " + e.getMessage());
        }
    }

    private static byte[] base64(String text, String label, Path file) throws IOException {
        String begin = "-----BEGIN " + label + "-----";
        String end = "-----END " + label + "-----";
        int b = text.indexOf(begin);
        int e = text.indexOf(end, b);
        if (e < 0) {
            throw new IOException(file + ": no '" + end + "' line");
        }
        String body = text.substring(b + begin.length(), e);
        if (body.contains(":")) {
            throw new IOException(file + " is an encrypted (Proc-Type) private key: write it unencrypted and keep it mode 600");
        }
        try {
            return Base64.getMimeDecoder().decode(body);
        } catch (IllegalArgumentException ex) {
            throw new IOException(file + ": the key's base64 body is damaged");
        }
    }

    /** Wraps an RSAPrivateKey (PKCS#1) in a PrivateKeyInfo (PKCS#8): version 0, rsaEncryption, the key. */
    static byte[] pkcs1ToPkcs8(byte[] pkcs1) {
        byte[] algId = {0x30, 0x0d, 0x06, 0x09, 0x2a, (byte) 0x86, 0x48, (byte) 0x86, (byte) 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00};
        byte[] version = {0x02, 0x01, 0x00};
        byte[] octet = der(0x04, pkcs1);
        byte[] body = new byte[version.length + algId.length + octet.length];
        System.arraycopy(version, 0, body, 0, version.length);
        System.arraycopy(algId, 0, body, version.length, algId.length);
        System.arraycopy(octet, 0, body, version.length + algId.length, octet.length);
        return der(0x30, body);
    }

    private static byte[] der(int tag, byte[] content) {
        int n = content.length;
        byte[] len;
        if (n < 0x80) {
            len = new byte[]{(byte) n};
        } else if (n < 0x100) {
            len = new byte[]{(byte) 0x81, (byte) n};
        } else if (n < 0x10000) {
            len = new byte[]{(byte) 0x82, (byte) (n >> 8), (byte) n};
        } else {
            len = new byte[]{(byte) 0x83, (byte) (n >> 16), (byte) (n >> 8), (byte) n};
        }
        byte[] out = new byte[1 + len.length + n];
        out[0] = (byte) tag;
        System.arraycopy(len, 0, out, 1, len.length);
        System.arraycopy(content, 0, out, 1 + len.length, n);
        return out;
    }
}

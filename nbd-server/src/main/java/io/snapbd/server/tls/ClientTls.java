package io.snapbd.server.tls;

import javax.net.ssl.KeyManager;
import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLEngine;
import javax.net.ssl.SSLParameters;
import javax.net.ssl.TrustManager;
import javax.net.ssl.TrustManagerFactory;
import javax.net.ssl.X509TrustManager;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.GeneralSecurityException;
import java.security.KeyStore;
import java.security.PrivateKey;
import java.security.cert.Certificate;
import java.security.cert.X509Certificate;
import java.util.List;

/**
 * The client side of NBD's STARTTLS, for snapbd's own NBD client: an SSLContext built the way libnbd reads a
 * {@code tls-certificates=DIR} directory, with the JDK's classes only (TLS 1.3 and 1.2).
 * <ul>
 *   <li>{@code ca-cert.pem}: the CAs trusted to sign the server's certificate. Without the file (or without a
 *       directory at all) the JDK's default trust store is used.</li>
 *   <li>{@code client-cert.pem} and {@code client-key.pem}: the client's own certificate, for servers that
 *       verify their peers; optional, but both or neither. The key must be readable by its owner only.</li>
 * </ul>
 * With {@code verifyPeer} (libnbd's default) the server's certificate chain must lead to a trusted CA and, over
 * TCP, name the host the client connected to (subjectAltName DNS or IP, as HTTPS checks it). Without it the
 * connection is encrypted but the server is not authenticated. Errors name the file and never quote key material.
 */
public final class ClientTls {

    public static final String CLIENT_CERT = "client-cert.pem";
    public static final String CLIENT_KEY = "client-key.pem";
    private static final String[] PROTOCOLS = {"TLSv1.3", "TLSv1.2"};

    private final SSLContext context;
    private final boolean verifyPeer;

    private ClientTls(SSLContext context, boolean verifyPeer) {
        this.context = context;
        this.verifyPeer = verifyPeer;
    }

    /**
     * Loads the client's TLS settings: {@code certificates} may be null (default trust, no client certificate).
     *
     * @throws IOException naming the file at fault
     */
    public static ClientTls load(Path certificates, boolean verifyPeer) throws IOException {
        KeyManager[] keys = null;
        TrustManager[] trust = null;
        try {
            if (certificates != null) {
                if (!Files.isDirectory(certificates)) {
                    throw new IOException("TLS certificates directory " + certificates + " does not exist or is not a directory");
                }
                Path cert = certificates.resolve(CLIENT_CERT);
                Path key = certificates.resolve(CLIENT_KEY);
                if (Files.exists(cert) != Files.exists(key)) {
                    throw new IOException("TLS certificates directory " + certificates + " holds "
                            + (Files.exists(cert) ? CLIENT_CERT + " but no " + CLIENT_KEY : CLIENT_KEY + " but no " + CLIENT_CERT)
                            + ": a client certificate needs both");
                }
                if (Files.exists(cert)) {
                    ServerTls.checkKeyPermissions(key);
                    List<X509Certificate> chain = ServerTls.certificates(cert);
                    PrivateKey privateKey = ServerTls.privateKey(key, chain.get(0));
                    KeyStore ks = KeyStore.getInstance("PKCS12");
                    ks.load(null, null);
                    char[] none = new char[0];
                    ks.setKeyEntry("client", privateKey, none, chain.toArray(new Certificate[0]));
                    KeyManagerFactory kmf = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
                    kmf.init(ks, none);
                    keys = kmf.getKeyManagers();
                }
                Path ca = certificates.resolve(ServerTls.CA_CERT);
                if (verifyPeer && Files.exists(ca)) {
                    KeyStore ts = KeyStore.getInstance("PKCS12");
                    ts.load(null, null);
                    int i = 0;
                    for (X509Certificate c : ServerTls.certificates(ca)) {
                        ts.setCertificateEntry("ca" + i++, c);
                    }
                    TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
                    tmf.init(ts);
                    trust = tmf.getTrustManagers();
                }
            }
            if (!verifyPeer) {
                trust = new TrustManager[]{TrustAny.INSTANCE};
            }
            SSLContext ctx = SSLContext.getInstance("TLS");
            ctx.init(keys, trust, null);
            return new ClientTls(ctx, verifyPeer);
        } catch (GeneralSecurityException e) {
            throw new IOException("cannot set up TLS from " + certificates + ": " + e.getMessage(), e);
        }
    }

    /**
     * A client-mode engine for one connection; {@code host} is what the certificate must name (the URI's
     * {@code tls-hostname}, else its TCP host; null over a Unix socket without one: then only the chain is checked).
     */
    public SSLEngine newEngine(String host, int port) {
        SSLEngine e = host == null ? context.createSSLEngine() : context.createSSLEngine(host, port);
        e.setUseClientMode(true);
        SSLParameters p = e.getSSLParameters();
        p.setProtocols(PROTOCOLS);
        if (System.getProperty("jdk.tls.client.cipherSuites") == null) {
            p.setCipherSuites(ServerTls.aes128First(e.getEnabledCipherSuites()));  // a server that takes our order
        }
        if (verifyPeer && host != null) {
            p.setEndpointIdentificationAlgorithm("HTTPS");
        }
        e.setSSLParameters(p);
        return e;
    }

    /** tls-verify-peer=false: encryption without authenticating the server, as libnbd does on request. */
    private static final class TrustAny implements X509TrustManager {
        static final TrustAny INSTANCE = new TrustAny();

        @Override
        public void checkClientTrusted(X509Certificate[] chain, String authType) {
        }

        @Override
        public void checkServerTrusted(X509Certificate[] chain, String authType) {
        }

        @Override
        public X509Certificate[] getAcceptedIssuers() {
            return new X509Certificate[0];
        }
    }
}

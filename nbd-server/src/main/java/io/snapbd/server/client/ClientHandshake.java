package io.snapbd.server.client;

import io.snapbd.server.protocol.Nbd;
import io.snapbd.server.tls.ClientTls;
import io.snapbd.server.tls.TlsChannel;

import java.io.EOFException;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.StandardSocketOptions;
import java.net.UnixDomainSocketAddress;
import java.net.UnknownHostException;
import java.nio.ByteBuffer;
import java.nio.channels.ByteChannel;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import javax.net.ssl.SSLException;
import javax.net.ssl.SSLEngine;

/**
 * The client side of the fixed-newstyle handshake on a blocking channel: greeting, option haggling and the
 * move to transmission. Every method follows the order a server expects; {@link NbdClient} drives it. For
 * {@code nbds://} URIs {@link #greet} also runs {@code NBD_OPT_STARTTLS} and the TLS handshake, and the rest of
 * the haggling and the transmission go over {@link #tls()}.
 */
final class ClientHandshake {

    /** What oldstyle servers send where newstyle ones send IHAVEOPT. */
    private static final long OLDSTYLE_MAGIC = 0x00420281861253L;
    /** Largest option reply accepted; a LIST of thousands of exports stays far below it. */
    private static final int MAX_OPTION_REPLY = 16 << 20;

    /** What the handshake agreed on: the export and how to talk to it. */
    record Result(String exportName, String description, long size, int flags, BlockSize blockSize,
                  boolean structuredReplies, Map<String, Integer> metaContexts) {
    }

    private record Reply(int type, ByteBuffer data) {
    }

    private final SocketChannel socket;
    private final NbdUri uri;
    private final String peer;
    private ByteChannel channel;
    private TlsChannel tls;
    private boolean fixedNewstyle;
    private boolean noZeroes;

    ClientHandshake(SocketChannel channel, NbdUri uri) {
        this.socket = channel;
        this.channel = channel;
        this.uri = uri;
        this.peer = uri.toString();
    }

    /** The TLS channel once {@link #greet} has started TLS, else null. */
    TlsChannel tls() {
        return tls;
    }

    /** Connects an unconnected blocking channel to the URI's server (TCP with TCP_NODELAY, or a Unix socket). */
    static void connect(SocketChannel channel, NbdUri uri) throws IOException {
        try {
            if (uri.transport() == NbdUri.Transport.UNIX) {
                channel.connect(UnixDomainSocketAddress.of(uri.socket()));
                return;
            }
            InetSocketAddress address = new InetSocketAddress(uri.host(), uri.port());
            if (address.isUnresolved()) {
                throw new UnknownHostException(uri.host());
            }
            // Requests are small and latency-bound: never let Nagle hold one back waiting for an ACK.
            channel.setOption(StandardSocketOptions.TCP_NODELAY, true);
            channel.connect(address);
        } catch (IOException e) {
            throw new IOException(uri + ": cannot connect: " + e, e);
        }
    }

    /** Reads the server's greeting and answers with our flags. */
    void greet() throws IOException {
        ByteBuffer b = read(18, "the greeting");
        if (b.getLong() != Nbd.NBDMAGIC) {
            throw violation("not an NBD server (no NBDMAGIC in the greeting)");
        }
        long style = b.getLong();
        if (style == OLDSTYLE_MAGIC) {
            throw new IOException(peer + " speaks oldstyle NBD, which this client does not support");
        }
        if (style != Nbd.IHAVEOPT) {
            throw violation("unknown handshake style 0x" + Long.toHexString(style));
        }
        int flags = Short.toUnsignedInt(b.getShort());
        fixedNewstyle = (flags & Nbd.FLAG_FIXED_NEWSTYLE) != 0;
        noZeroes = (flags & Nbd.FLAG_NO_ZEROES) != 0;
        int clientFlags = (fixedNewstyle ? Nbd.FLAG_C_FIXED_NEWSTYLE : 0) | (noZeroes ? Nbd.FLAG_C_NO_ZEROES : 0);
        write(ByteBuffer.allocate(4).putInt(clientFlags).flip());
        if (uri.tls()) {
            startTls();
        }
    }

    /**
     * {@code NBD_OPT_STARTTLS}, then the TLS handshake. TLS is mandatory for an {@code nbds://} URI: any reply but
     * {@code NBD_REP_ACK} ends the session (with {@code NBD_OPT_ABORT}) instead of going on in plain text.
     */
    private void startTls() throws IOException {
        // Load the certificates first: a missing or unreadable file is the user's to fix, the server need not hear of it.
        ClientTls config = ClientTls.load(uri.tlsCertificates(), uri.tlsVerifyPeer());
        if (!fixedNewstyle) {
            throw new IOException(peer + ": the server does not speak fixed newstyle, so it cannot start TLS; "
                    + "refusing to continue in plain text");
        }
        sendOption(Nbd.OPT_STARTTLS, ByteBuffer.allocate(0));
        Reply r = readReply(Nbd.OPT_STARTTLS);
        if (r.type != Nbd.REP_ACK) {
            String why = isError(r.type) ? replyName(r.type) + errorText(r.data) : "unexpected reply " + replyName(r.type);
            abort();
            throw new IOException(peer + ": the server does not offer TLS (" + why + "); an nbds:// URI requires TLS, "
                    + "so the client refuses to continue in plain text");
        }
        SSLEngine engine = config.newEngine(uri.tlsPeerName(), uri.port());
        try {
            tls = TlsChannel.connect(socket, engine);
        } catch (SSLException e) {
            throw new IOException(peer + ": TLS handshake failed: " + tlsReason(e), e);
        } catch (EOFException e) {
            throw new IOException(peer + ": the server closed the connection during the TLS handshake", e);
        }
        channel = tls;
    }

    /** The handshake failure in words a user can act on, with the JDK's message. */
    private String tlsReason(SSLException e) {
        StringBuilder causes = new StringBuilder();
        for (Throwable t = e; t != null; t = t.getCause()) {
            causes.append(t.getClass().getName()).append(' ').append(t.getMessage()).append('\n');
        }
        String all = causes.toString();
        String hint = "";
        if (all.contains("CertPathBuilderException") || all.contains("CertPathValidatorException")
                || all.contains("unable to find valid certification path")) {
            hint = "the server's certificate is not signed by a trusted CA ("
                    + (uri.tlsCertificates() == null ? "the JDK's default trust store; set tls-certificates=DIR"
                    : uri.tlsCertificates().resolve("ca-cert.pem").toString()) + ")";
        } else if (all.contains("No subject alternative") || all.contains("No name matching")) {
            hint = "the server's certificate does not name host " + uri.tlsPeerName() + " (subjectAltName)";
        } else if (all.contains("certificate_required") || all.contains("bad_certificate")
                || all.contains("unknown_ca") || all.contains("certificate_unknown")) {
            hint = "the server refused the client certificate"
                    + (uri.tlsCertificates() == null ? " (none given: set tls-certificates=DIR with client-cert.pem and client-key.pem)"
                    : " from " + uri.tlsCertificates());
        } else if (all.contains("expired") || all.contains("NotAfter")) {
            hint = "a certificate has expired";
        }
        String msg = e.getMessage();
        return hint.isEmpty() ? msg : hint + ": " + msg;
    }

    /** {@code NBD_OPT_STRUCTURED_REPLY}; false when the server cannot or will not. */
    boolean structuredReplies() throws IOException {
        if (!fixedNewstyle) {
            return false;       // plain newstyle knows NBD_OPT_EXPORT_NAME only
        }
        sendOption(Nbd.OPT_STRUCTURED_REPLY, ByteBuffer.allocate(0));
        Reply r = readReply(Nbd.OPT_STRUCTURED_REPLY);
        if (r.type == Nbd.REP_ACK) {
            return true;
        }
        if (isError(r.type)) {
            return false;
        }
        throw violation("unexpected reply " + replyName(r.type) + " to NBD_OPT_STRUCTURED_REPLY");
    }

    /**
     * {@code NBD_OPT_SET_META_CONTEXT}: the contexts the server selected, by name, with their ids. A query
     * the server does not answer is simply absent; an error reply selects nothing.
     */
    Map<String, Integer> setMetaContexts(String export, List<String> queries) throws IOException {
        byte[] name = export.getBytes(StandardCharsets.UTF_8);
        int size = 4 + name.length + 4;
        List<byte[]> encoded = new ArrayList<>();
        for (String q : queries) {
            byte[] b = q.getBytes(StandardCharsets.UTF_8);
            encoded.add(b);
            size += 4 + b.length;
        }
        ByteBuffer data = ByteBuffer.allocate(size).putInt(name.length).put(name).putInt(encoded.size());
        for (byte[] b : encoded) {
            data.putInt(b.length).put(b);
        }
        sendOption(Nbd.OPT_SET_META_CONTEXT, data.flip());
        Map<String, Integer> selected = new LinkedHashMap<>();
        while (true) {
            Reply r = readReply(Nbd.OPT_SET_META_CONTEXT);
            if (r.type == Nbd.REP_ACK) {
                return Collections.unmodifiableMap(selected);
            }
            if (isError(r.type)) {
                return Map.of();
            }
            if (r.type != Nbd.REP_META_CONTEXT || r.data.remaining() < 5) {
                throw violation("unexpected reply " + replyName(r.type) + " to NBD_OPT_SET_META_CONTEXT");
            }
            int id = r.data.getInt();
            selected.put(utf8(r.data), id);
        }
    }

    /**
     * {@code NBD_OPT_GO} asking for the name, description and block size; {@code null} when the server does
     * not know the option or cannot have it (the caller then falls back to {@code NBD_OPT_EXPORT_NAME}).
     */
    Result go(String export, boolean structured, Map<String, Integer> contexts) throws IOException {
        if (!fixedNewstyle) {
            return null;
        }
        byte[] name = export.getBytes(StandardCharsets.UTF_8);
        ByteBuffer data = ByteBuffer.allocate(4 + name.length + 2 + 6).putInt(name.length).put(name)
                .putShort((short) 3).putShort((short) Nbd.INFO_BLOCK_SIZE).putShort((short) Nbd.INFO_NAME)
                .putShort((short) Nbd.INFO_DESCRIPTION);
        sendOption(Nbd.OPT_GO, data.flip());
        long size = -1;
        int flags = 0;
        String canonical = export;
        String description = "";
        BlockSize blockSize = BlockSize.DEFAULT;
        while (true) {
            Reply r = readReply(Nbd.OPT_GO);
            ByteBuffer d = r.data;
            if (r.type == Nbd.REP_ACK) {
                if (size < 0) {
                    throw violation("NBD_OPT_GO succeeded without NBD_INFO_EXPORT");
                }
                return new Result(canonical, description, size, flags, blockSize, structured, contexts);
            }
            if (r.type == Nbd.REP_ERR_UNSUP) {
                return null;
            }
            if (isError(r.type)) {
                throw new IOException(peer + ": the server refused export '" + export + "': " + replyName(r.type)
                        + errorText(d));
            }
            if (r.type != Nbd.REP_INFO || d.remaining() < 2) {
                throw violation("unexpected reply " + replyName(r.type) + " to NBD_OPT_GO");
            }
            int info = Short.toUnsignedInt(d.getShort());
            switch (info) {
                case Nbd.INFO_EXPORT:
                    if (d.remaining() != 10) {
                        throw violation("NBD_INFO_EXPORT of " + (d.remaining() + 2) + " bytes");
                    }
                    size = d.getLong();
                    flags = exportFlags(d.getShort());
                    break;
                case Nbd.INFO_NAME:
                    canonical = utf8(d);
                    break;
                case Nbd.INFO_DESCRIPTION:
                    description = utf8(d);
                    break;
                case Nbd.INFO_BLOCK_SIZE:
                    if (d.remaining() != 12) {
                        throw violation("NBD_INFO_BLOCK_SIZE of " + (d.remaining() + 2) + " bytes");
                    }
                    blockSize = new BlockSize(Integer.toUnsignedLong(d.getInt()), Integer.toUnsignedLong(d.getInt()),
                            Integer.toUnsignedLong(d.getInt()), true);
                    break;
                default:
                    break;      // the spec lets servers send information we did not ask for
            }
        }
    }

    /** {@code NBD_OPT_EXPORT_NAME}: the old way into transmission, for servers without NBD_OPT_GO. */
    Result exportName(String export, boolean structured, Map<String, Integer> contexts) throws IOException {
        sendOption(Nbd.OPT_EXPORT_NAME, ByteBuffer.wrap(export.getBytes(StandardCharsets.UTF_8)));
        ByteBuffer b;
        try {
            b = read(10, "the NBD_OPT_EXPORT_NAME reply");
        } catch (EOFException e) {
            // This option cannot fail politely: a server closes the connection for an unknown export.
            throw new IOException(peer + ": the server closed the connection on NBD_OPT_EXPORT_NAME; "
                    + "export '" + export + "' probably does not exist", e);
        }
        long size = b.getLong();
        int flags = exportFlags(b.getShort());
        if (!noZeroes) {
            read(124, "the zero padding after NBD_OPT_EXPORT_NAME");
        }
        return new Result(export, "", size, flags, BlockSize.DEFAULT, structured, contexts);
    }

    /** {@code NBD_OPT_LIST}. */
    List<ExportEntry> list() throws IOException {
        if (!fixedNewstyle) {
            throw new IOException(peer + ": the server does not speak fixed newstyle, so it cannot list exports");
        }
        sendOption(Nbd.OPT_LIST, ByteBuffer.allocate(0));
        List<ExportEntry> exports = new ArrayList<>();
        while (true) {
            Reply r = readReply(Nbd.OPT_LIST);
            if (r.type == Nbd.REP_ACK) {
                return List.copyOf(exports);
            }
            if (isError(r.type)) {
                throw new IOException(peer + ": the server refused NBD_OPT_LIST: " + replyName(r.type) + errorText(r.data));
            }
            ByteBuffer d = r.data;
            if (r.type != Nbd.REP_SERVER || d.remaining() < 4 || Integer.toUnsignedLong(d.getInt(0)) > d.remaining() - 4) {
                throw violation("unexpected reply " + replyName(r.type) + " to NBD_OPT_LIST");
            }
            int nameLength = d.getInt();
            ByteBuffer name = d.slice(d.position(), nameLength);
            d.position(d.position() + nameLength);
            exports.add(new ExportEntry(utf8(name), utf8(d)));
        }
    }

    /** {@code NBD_OPT_ABORT}: ends the session politely; a server that just hangs up is fine too. */
    void abort() {
        try {
            sendOption(Nbd.OPT_ABORT, ByteBuffer.allocate(0));
            readReply(Nbd.OPT_ABORT);
        } catch (IOException e) {
            // Older servers close without replying, which the spec allows: nothing is lost.
        }
    }

    // ---- wire ------------------------------------------------------------------------------------------

    private static int exportFlags(short raw) {
        int flags = Short.toUnsignedInt(raw);
        // Without HAS_FLAGS the other bits mean nothing: assume no optional features at all.
        return (flags & Nbd.FLAG_HAS_FLAGS) != 0 ? flags : 0;
    }

    private void sendOption(int option, ByteBuffer data) throws IOException {
        ByteBuffer h = ByteBuffer.allocate(16).putLong(Nbd.IHAVEOPT).putInt(option).putInt(data.remaining()).flip();
        write(h);
        write(data);
    }

    private Reply readReply(int option) throws IOException {
        ByteBuffer h = read(20, "an option reply");
        long magic = h.getLong();
        int opt = h.getInt();
        int type = h.getInt();
        long length = Integer.toUnsignedLong(h.getInt());
        if (magic != Nbd.OPTION_REPLY_MAGIC) {
            throw violation("bad option reply magic 0x" + Long.toHexString(magic));
        }
        if (opt != option) {
            throw violation("reply to option " + opt + " while waiting for option " + option);
        }
        if (length > MAX_OPTION_REPLY) {
            throw violation("option reply of " + length + " bytes");
        }
        return new Reply(type, read((int) length, "an option reply"));
    }

    private ByteBuffer read(int n, String what) throws IOException {
        ByteBuffer b = ByteBuffer.allocate(n);
        try {
            while (b.hasRemaining()) {
                if (channel.read(b) < 0) {
                    throw new EOFException(peer + ": the server closed the connection while sending " + what);
                }
            }
        } catch (SSLException e) {
            // In TLS 1.3 the server judges the client certificate after the client's handshake has ended: its
            // refusal arrives as an alert on the first read.
            throw new IOException(peer + ": TLS failed: " + tlsReason(e), e);
        }
        return b.flip();
    }

    private void write(ByteBuffer b) throws IOException {
        try {
            while (b.hasRemaining()) {
                channel.write(b);
            }
        } catch (SSLException e) {
            throw new IOException(peer + ": TLS failed: " + tlsReason(e), e);
        }
    }

    private static boolean isError(int replyType) {
        return replyType < 0;       // bit 31 marks every error reply
    }

    private static String utf8(ByteBuffer b) {
        byte[] bytes = new byte[b.remaining()];
        b.get(bytes);
        return new String(bytes, StandardCharsets.UTF_8);
    }

    private static String errorText(ByteBuffer data) {
        String text = utf8(data);
        return text.isEmpty() ? "" : " (" + text + ")";
    }

    private static String replyName(int type) {
        switch (type) {
            case Nbd.REP_ACK: return "NBD_REP_ACK";
            case Nbd.REP_SERVER: return "NBD_REP_SERVER";
            case Nbd.REP_INFO: return "NBD_REP_INFO";
            case Nbd.REP_META_CONTEXT: return "NBD_REP_META_CONTEXT";
            case Nbd.REP_ERR_UNSUP: return "NBD_REP_ERR_UNSUP";
            case Nbd.REP_ERR_POLICY: return "NBD_REP_ERR_POLICY";
            case Nbd.REP_ERR_INVALID: return "NBD_REP_ERR_INVALID";
            case Nbd.REP_ERR_PLATFORM: return "NBD_REP_ERR_PLATFORM";
            case Nbd.REP_ERR_TLS_REQD: return "NBD_REP_ERR_TLS_REQD (the server requires TLS: use an nbds:// URI)";
            case Nbd.REP_ERR_UNKNOWN: return "NBD_REP_ERR_UNKNOWN (no such export)";
            case Nbd.REP_ERR_SHUTDOWN: return "NBD_REP_ERR_SHUTDOWN";
            case Nbd.REP_ERR_BLOCK_SIZE_REQD: return "NBD_REP_ERR_BLOCK_SIZE_REQD";
            case Nbd.REP_ERR_TOO_BIG: return "NBD_REP_ERR_TOO_BIG";
            default: return (isError(type) ? "error reply 0x" : "reply type 0x") + Integer.toHexString(type);
        }
    }

    private IOException violation(String what) {
        return new IOException(peer + ": NBD protocol violation in the handshake: " + what);
    }
}

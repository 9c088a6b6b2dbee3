package io.snapbd.server.handshake;

import io.snapbd.server.access.AccessRules;
import io.snapbd.server.access.Peer;
import io.snapbd.server.export.Export;
import io.snapbd.server.export.ExportRegistry;
import io.snapbd.server.export.MetaContext;
import io.snapbd.server.protocol.Nbd;
import io.snapbd.server.protocol.ProtocolViolation;
import io.snapbd.server.protocol.Wire;
import io.snapbd.server.tls.ServerTls;
import io.snapbd.server.tls.TlsChannel;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.ByteChannel;
import java.nio.channels.GatheringByteChannel;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;

/**
 * Fixed-newstyle negotiation: greeting, client flags, then option haggling until EXPORT_NAME or a successful
 * GO. Errors that leave the stream in sync get an NBD_REP_ERR_* reply; anything else ends the connection.
 * With TLS configured, NBD_OPT_STARTTLS (else NBD_REP_ERR_UNSUP) switches the rest of the handshake (and, through {@link #channel()} and
 * {@link #output()}, the transmission phase) to a {@link TlsChannel}; with TLS required, every other option but
 * ABORT is refused with NBD_REP_ERR_TLS_REQD until then, and EXPORT_NAME closes the connection.
 * {@link AccessRules} decide per export what this {@link Peer} may do: an export it may not open is not listed and
 * is answered exactly like one that does not exist; a read-only grant is advertised with NBD_FLAG_READ_ONLY.
 */
public final class Handshake {

    private ByteChannel ch;
    private GatheringByteChannel out;
    private final ExportRegistry exports;
    private final ServerTls tls;
    private final AccessRules access;
    private Peer peer;
    private TlsChannel tlsChannel;
    private final ByteBuffer hdr = ByteBuffer.allocate(20).order(ByteOrder.BIG_ENDIAN);
    private boolean noZeroes;
    private boolean structured;
    /** Export the last SET_META_CONTEXT referred to, and the contexts it selected (ids 1..n). */
    private String metaExport;
    private List<MetaContext> metaSelected = List.of();

    /** Without TLS (STARTTLS refused with NBD_REP_ERR_UNSUP). */
    public Handshake(ByteChannel ch, ExportRegistry exports) {
        this(ch, ch instanceof GatheringByteChannel g ? g : null, exports, null);
    }

    /** {@code tls} null: TLS off on this connection. No access rules: every export, read-write. */
    public Handshake(ByteChannel ch, GatheringByteChannel out, ExportRegistry exports, ServerTls tls) {
        this(ch, out, exports, tls, Peer.internal(), AccessRules.OPEN);
    }

    /** With the access rules in force when the connection came, for the client {@code peer}. */
    public Handshake(ByteChannel ch, GatheringByteChannel out, ExportRegistry exports, ServerTls tls, Peer peer, AccessRules access) {
        this.ch = ch;
        this.out = out;
        this.exports = exports;
        this.tls = tls;
        this.peer = peer;
        this.access = access;
    }

    /** The client as the access rules see it (with its certificate's subject after STARTTLS). */
    public Peer peer() {
        return peer;
    }

    /** What this client may do with {@code e}. */
    private AccessRules.Grant grant(Export e) {
        return access.grant(peer, e.name());
    }

    /** The transmission flags for this client: a read-only grant adds READ_ONLY and drops the write flags. */
    private int flags(Export e, boolean readOnly) {
        int f = e.transmissionFlags(structured);
        if (readOnly) {
            f = (f | Nbd.FLAG_READ_ONLY) & ~(Nbd.FLAG_SEND_FUA | Nbd.FLAG_SEND_TRIM | Nbd.FLAG_SEND_WRITE_ZEROES | Nbd.FLAG_SEND_FAST_ZERO);
        }
        return f;
    }

    /** The channel to read the transmission phase from: the TLS channel after a STARTTLS, else the socket. */
    public ByteChannel channel() {
        return ch;
    }

    /** The channel to write the transmission phase to (the same TLS channel after a STARTTLS). */
    public GatheringByteChannel output() {
        return out;
    }

    /** The TLS channel, once STARTTLS succeeded; else null. */
    public TlsChannel tls() {
        return tlsChannel;
    }

    /** Runs the negotiation; null when the client aborted or disconnected cleanly before choosing an export. */
    public Negotiated run() throws IOException {
        ByteBuffer greet = ByteBuffer.allocate(18);
        greet.putLong(Nbd.NBDMAGIC).putLong(Nbd.IHAVEOPT).putShort((short) (Nbd.FLAG_FIXED_NEWSTYLE | Nbd.FLAG_NO_ZEROES));
        Wire.writeFully(ch, greet.flip());

        ByteBuffer cflags = ByteBuffer.allocate(4);
        Wire.readFully(ch, cflags);
        int clientFlags = cflags.getInt(0);
        if ((clientFlags & ~(Nbd.FLAG_C_FIXED_NEWSTYLE | Nbd.FLAG_C_NO_ZEROES)) != 0) {
            throw new ProtocolViolation("client sent unknown handshake flags 0x" + Integer.toHexString(clientFlags));
        }
        noZeroes = (clientFlags & Nbd.FLAG_C_NO_ZEROES) != 0;

        while (true) {
            hdr.clear().limit(16);
            Wire.readFully(ch, hdr);
            long magic = hdr.getLong(0);
            if (magic != Nbd.IHAVEOPT) {
                throw new ProtocolViolation("bad option magic 0x" + Long.toHexString(magic));
            }
            int option = hdr.getInt(8);
            long length = Integer.toUnsignedLong(hdr.getInt(12));
            if (length > Nbd.MAX_OPTION_BYTES) {
                // Reading (and dropping) gigabytes to stay in sync would let one client burn our time: refuse and close.
                reply(option, Nbd.REP_ERR_TOO_BIG, "option data of " + length + " bytes exceeds the " + Nbd.MAX_OPTION_BYTES + " byte limit");
                throw new ProtocolViolation("option " + option + " carries " + length + " bytes");
            }
            ByteBuffer data = ByteBuffer.allocate((int) length);
            Wire.readFully(ch, data);
            data.flip();
            Negotiated done = handleOption(option, data);
            if (done != null) {
                return done;
            }
            if (option == Nbd.OPT_ABORT) {
                return null;
            }
        }
    }

    private Negotiated handleOption(int option, ByteBuffer data) throws IOException {
        if (option == Nbd.OPT_STARTTLS) {
            startTls(data);
            return null;
        }
        if (tls != null && tls.required() && tlsChannel == null && option != Nbd.OPT_ABORT) {
            if (option == Nbd.OPT_EXPORT_NAME) {
                // EXPORT_NAME cannot carry an error: the spec says to close the connection.
                throw new ProtocolViolation("client asked for an export without TLS, which this server requires (tls=require)");
            }
            reply(option, Nbd.REP_ERR_TLS_REQD, "this server requires TLS: send NBD_OPT_STARTTLS first");
            return null;
        }
        switch (option) {
            case Nbd.OPT_EXPORT_NAME:
                return exportName(data);
            case Nbd.OPT_ABORT:
                replyAck(option);
                return null;
            case Nbd.OPT_LIST:
                list(data);
                return null;
            case Nbd.OPT_INFO:
            case Nbd.OPT_GO:
                return infoOrGo(option, data);
            case Nbd.OPT_STRUCTURED_REPLY:
                if (data.hasRemaining()) {
                    reply(option, Nbd.REP_ERR_INVALID, "STRUCTURED_REPLY takes no data");
                } else {
                    structured = true;
                    replyAck(option);
                }
                return null;
            case Nbd.OPT_LIST_META_CONTEXT:
            case Nbd.OPT_SET_META_CONTEXT:
                metaContext(option, data);
                return null;
            default:
                reply(option, Nbd.REP_ERR_UNSUP, "option " + option + " is not supported");
                return null;
        }
    }

    /**
     * ACKs and runs the TLS handshake; from then on every byte goes through the TLS channel. What was negotiated
     * in plain text (structured replies, meta contexts) is forgotten: a man in the middle could have chosen it.
     */
    private void startTls(ByteBuffer data) throws IOException {
        if (tls == null) {
            // UNSUP, as before TLS existed here; the spec allows it as well as POLICY for a server without TLS.
            reply(Nbd.OPT_STARTTLS, Nbd.REP_ERR_UNSUP, "TLS is not enabled on this server (serve --tls=on|require)");
            return;
        }
        if (tlsChannel != null) {
            reply(Nbd.OPT_STARTTLS, Nbd.REP_ERR_INVALID, "TLS is already on");
            return;
        }
        if (data.hasRemaining()) {
            reply(Nbd.OPT_STARTTLS, Nbd.REP_ERR_INVALID, "STARTTLS takes no data");
            return;
        }
        replyAck(Nbd.OPT_STARTTLS);
        TlsChannel t;
        try {
            t = TlsChannel.accept(ch, tls.newEngine(access.usesCertificates()));
        } catch (javax.net.ssl.SSLException e) {
            throw new IOException("TLS handshake failed: " + e.getMessage(), e);
        }
        tlsChannel = t;
        ch = t;
        out = t;
        peer = peer.withCertificate(t.peerPrincipal());
        structured = false;
        metaExport = null;
        metaSelected = List.of();
    }

    private Negotiated exportName(ByteBuffer data) throws IOException {
        if (data.remaining() > Nbd.MAX_NAME_BYTES) {
            throw new ProtocolViolation("export name of " + data.remaining() + " bytes is too long");
        }
        String name = string(data, data.remaining());
        Export e = exports.lookup(name == null ? "" : name);
        AccessRules.Grant g = e == null ? AccessRules.Grant.NONE : grant(e);
        if (name == null || e == null || g == AccessRules.Grant.NONE || e.unavailableReason() != null) {
            // EXPORT_NAME cannot carry an error: the spec says to close the connection.
            throw new ProtocolViolation("client asked for unknown or unavailable export '" + name + "'"
                    + (e != null && g == AccessRules.Grant.NONE ? " (not allowed to " + peer.describe() + " by the access rules)" : ""));
        }
        boolean readOnly = g == AccessRules.Grant.READ_ONLY;
        ByteBuffer b = ByteBuffer.allocate(noZeroes ? 10 : 134);
        b.putLong(e.device().size()).putShort((short) flags(e, readOnly));
        Wire.writeFully(ch, b.position(0));
        return new Negotiated(e, structured, selectedContexts(e), readOnly);
    }

    private void list(ByteBuffer data) throws IOException {
        if (data.hasRemaining()) {
            reply(Nbd.OPT_LIST, Nbd.REP_ERR_INVALID, "LIST takes no data");
            return;
        }
        for (Export e : exports.list()) {
            if (e.unavailableReason() != null || grant(e) == AccessRules.Grant.NONE) {
                // terminated snapshots and clones in progress cannot be used, and this client may not open some:
                // do not advertise them
                continue;
            }
            byte[] n = e.name().getBytes(StandardCharsets.UTF_8);
            ByteBuffer b = ByteBuffer.allocate(4 + n.length);
            b.putInt(n.length).put(n).flip();
            reply(Nbd.OPT_LIST, Nbd.REP_SERVER, b);
        }
        replyAck(Nbd.OPT_LIST);
    }

    private Negotiated infoOrGo(int option, ByteBuffer data) throws IOException {
        if (data.remaining() < 6) {
            reply(option, Nbd.REP_ERR_INVALID, "INFO/GO data too short");
            return null;
        }
        long nameLen = Integer.toUnsignedLong(data.getInt());
        if (nameLen > data.remaining() - 2) {
            reply(option, Nbd.REP_ERR_INVALID, "export name length " + nameLen + " runs past the option data");
            return null;
        }
        if (nameLen > Nbd.MAX_NAME_BYTES) {
            reply(option, Nbd.REP_ERR_TOO_BIG, "export name longer than " + Nbd.MAX_NAME_BYTES + " bytes");
            return null;
        }
        String name = string(data, (int) nameLen);
        int n = Short.toUnsignedInt(data.getShort());
        if (data.remaining() != 2 * n) {
            reply(option, Nbd.REP_ERR_INVALID, "information request count " + n + " does not match the option length");
            return null;
        }
        boolean wantName = false;
        boolean wantDescription = false;
        for (int i = 0; i < n; i++) {
            int info = Short.toUnsignedInt(data.getShort());
            wantName |= info == Nbd.INFO_NAME;
            wantDescription |= info == Nbd.INFO_DESCRIPTION;
        }
        if (name == null) {
            reply(option, Nbd.REP_ERR_INVALID, "export name is not valid UTF-8");
            return null;
        }
        Export e = exports.lookup(name);
        AccessRules.Grant g = e == null ? AccessRules.Grant.NONE : grant(e);
        if (e == null || g == AccessRules.Grant.NONE) {
            // An export this client may not open is answered as if it did not exist, and so is a withheld volume
            // it would not be allowed to open: nothing tells it that the name exists.
            String why = access.grant(peer, name) == AccessRules.Grant.NONE ? null : exports.withheldReason(name);
            reply(option, Nbd.REP_ERR_UNKNOWN, "no export named '" + name + "'" + (why == null ? "" : ": " + why));
            return null;
        }
        boolean readOnly = g == AccessRules.Grant.READ_ONLY;
        if (e.unavailableReason() != null) {
            reply(option, Nbd.REP_ERR_POLICY, "export '" + e.name() + "' is not available: " + e.unavailableReason());
            return null;
        }
        ByteBuffer info = ByteBuffer.allocate(12);
        info.putShort((short) Nbd.INFO_EXPORT).putLong(e.device().size()).putShort((short) flags(e, readOnly)).flip();
        reply(option, Nbd.REP_INFO, info);
        if (wantName) {
            byte[] nb = e.name().getBytes(StandardCharsets.UTF_8);
            reply(option, Nbd.REP_INFO, ByteBuffer.allocate(2 + nb.length).putShort((short) Nbd.INFO_NAME).put(nb).flip());
        }
        if (wantDescription && e.description() != null) {
            byte[] db = e.description().getBytes(StandardCharsets.UTF_8);
            reply(option, Nbd.REP_INFO, ByteBuffer.allocate(2 + db.length).putShort((short) Nbd.INFO_DESCRIPTION).put(db).flip());
        }
        // Always sent: any byte alignment is accepted (minimum 1), the block size is preferred.
        ByteBuffer bs = ByteBuffer.allocate(14);
        bs.putShort((short) Nbd.INFO_BLOCK_SIZE).putInt(1).putInt(e.device().blockSize()).putInt(Nbd.MAX_PAYLOAD).flip();
        reply(option, Nbd.REP_INFO, bs);
        replyAck(option);
        if (option == Nbd.OPT_GO) {
            return new Negotiated(e, structured, selectedContexts(e), readOnly);
        }
        return null;
    }

    private List<MetaContext> selectedContexts(Export chosen) {
        if (metaExport == null || metaSelected.isEmpty()) {
            return List.of();
        }
        return exports.lookup(metaExport) == chosen ? metaSelected : List.of();
    }

    private void metaContext(int option, ByteBuffer data) throws IOException {
        boolean set = option == Nbd.OPT_SET_META_CONTEXT;
        if (set) {
            metaExport = null;
            metaSelected = List.of();
        }
        if (!structured) {
            reply(option, Nbd.REP_ERR_INVALID, "negotiate STRUCTURED_REPLY before meta contexts");
            return;
        }
        if (data.remaining() < 8) {
            reply(option, Nbd.REP_ERR_INVALID, "meta context data too short");
            return;
        }
        long nameLen = Integer.toUnsignedLong(data.getInt());
        if (nameLen > data.remaining() - 4 || nameLen > Nbd.MAX_NAME_BYTES) {
            reply(option, Nbd.REP_ERR_INVALID, "export name length " + nameLen + " is invalid");
            return;
        }
        String name = string(data, (int) nameLen);
        long count = Integer.toUnsignedLong(data.getInt());
        List<String> queries = new ArrayList<>();
        for (long i = 0; i < count; i++) {
            if (data.remaining() < 4) {
                reply(option, Nbd.REP_ERR_INVALID, "query " + i + " runs past the option data");
                return;
            }
            long qlen = Integer.toUnsignedLong(data.getInt());
            if (qlen > data.remaining()) {
                reply(option, Nbd.REP_ERR_INVALID, "query " + i + " runs past the option data");
                return;
            }
            String q = string(data, (int) qlen);
            if (q == null) {
                reply(option, Nbd.REP_ERR_INVALID, "query " + i + " is not valid UTF-8");
                return;
            }
            queries.add(q);
        }
        if (data.hasRemaining()) {
            reply(option, Nbd.REP_ERR_INVALID, "trailing bytes after the queries");
            return;
        }
        Export target = name == null ? null : exports.lookup(name);
        if (target == null || grant(target) == AccessRules.Grant.NONE) {
            reply(option, Nbd.REP_ERR_UNKNOWN, "no export named '" + name + "'");
            return;
        }
        // LIST with no query lists everything; LIST takes "ns:" prefixes as wildcards; SET selects exact names only.
        List<MetaContext> chosen = new ArrayList<>();
        for (MetaContext c : MetaContext.available(target)) {
            boolean match = !set && queries.isEmpty();
            for (String q : queries) {
                match |= set ? q.equals(c.name()) : MetaContext.matchesListQuery(q, c.name());
            }
            if (match) {
                chosen.add(c);
            }
        }
        for (int i = 0; i < chosen.size(); i++) {
            byte[] nb = chosen.get(i).name().getBytes(StandardCharsets.UTF_8);
            ByteBuffer b = ByteBuffer.allocate(4 + nb.length);
            b.putInt(set ? i + 1 : 0).put(nb).flip();
            reply(option, Nbd.REP_META_CONTEXT, b);
        }
        if (set) {
            metaExport = name;
            metaSelected = List.copyOf(chosen);
        }
        replyAck(option);
    }

    /** Decodes {@code len} bytes as strict UTF-8; null if they are not valid. */
    private static String string(ByteBuffer data, int len) {
        ByteBuffer slice = data.slice().limit(len);
        data.position(data.position() + len);
        try {
            return StandardCharsets.UTF_8.newDecoder().onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT).decode(slice).toString();
        } catch (CharacterCodingException e) {
            return null;
        }
    }

    private void replyAck(int option) throws IOException {
        reply(option, Nbd.REP_ACK, ByteBuffer.allocate(0));
    }

    private void reply(int option, int type, String message) throws IOException {
        reply(option, type, ByteBuffer.wrap(message.getBytes(StandardCharsets.UTF_8)));
    }

    private void reply(int option, int type, ByteBuffer payload) throws IOException {
        ByteBuffer b = ByteBuffer.allocate(20 + payload.remaining());
        b.putLong(Nbd.OPTION_REPLY_MAGIC).putInt(option).putInt(type).putInt(payload.remaining()).put(payload).flip();
        Wire.writeFully(ch, b);
    }
}

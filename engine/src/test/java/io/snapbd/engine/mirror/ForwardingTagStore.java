package io.snapbd.engine.mirror;

import java.io.IOException;
import java.nio.ByteBuffer;

/** A {@link TagStore} that passes every call to {@code in}; tests override the calls they make fail or wait. */
public class ForwardingTagStore implements TagStore {
    protected final TagStore in;

    public ForwardingTagStore(TagStore in) {
        this.in = in;
    }

    @Override
    public long size() throws IOException {
        return in.size();
    }

    @Override
    public void read(ByteBuffer dst, long pos) throws IOException {
        in.read(dst, pos);
    }

    @Override
    public void write(ByteBuffer src, long pos) throws IOException {
        in.write(src, pos);
    }

    @Override
    public void force() throws IOException {
        in.force();
    }

    @Override
    public String describe() {
        return in.describe();
    }

    @Override
    public void close() throws IOException {
        in.close();
    }
}

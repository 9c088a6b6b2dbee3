package io.snapbd.bench.latency;

import java.util.Locale;

/** The request mixes the load generator runs; each has its own default request size. */
public enum Workload {
    /** 4 KiB random writes; offsets follow a permutation, so no block is written twice before all were. */
    RANDWRITE("randwrite", 4096, 0, true),
    /** 4 KiB random requests, 70 % reads and 30 % writes. */
    RANDRW("randrw", 4096, 70, true),
    /** 64 KiB sequential writes; each connection writes its own contiguous share of the range. */
    SEQWRITE("seqwrite", 65536, 0, false);

    public final String label;
    public final int defaultBlockSize;
    /** Percentage of requests that are reads. */
    public final int readPercent;
    public final boolean random;

    Workload(String label, int defaultBlockSize, int readPercent, boolean random) {
        this.label = label;
        this.defaultBlockSize = defaultBlockSize;
        this.readPercent = readPercent;
        this.random = random;
    }

    public boolean writes() {
        return readPercent < 100;
    }

    public static Workload parse(String s) {
        for (Workload w : values()) {
            if (w.label.equals(s.toLowerCase(Locale.ROOT))) {
                return w;
            }
        }
        throw new IllegalArgumentException("unknown workload '" + s + "'; expected randwrite, randrw or seqwrite");
    }
}

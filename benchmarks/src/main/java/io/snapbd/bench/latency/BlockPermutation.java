package io.snapbd.bench.latency;

/**
 * A pseudo-random bijection of [0, n): index i → block. Walking indices 0, 1, 2, … visits every block once
 * in a scattered order before any repeats, like fio's random map, but with no memory: a keyed mix of
 * invertible steps on the smallest power of two ≥ n, cycle-walked back into range.
 */
public final class BlockPermutation {

    private final long n;
    private final long mask;
    private final int half;
    private final long key;

    public BlockPermutation(long n, long seed) {
        if (n < 1) {
            throw new IllegalArgumentException("empty range");
        }
        this.n = n;
        int bits = Math.max(2, 64 - Long.numberOfLeadingZeros(n - 1));
        this.mask = bits == 64 ? -1L : (1L << bits) - 1;
        this.half = Math.max(1, bits / 2);
        this.key = seed * 0x9E3779B97F4A7C15L;
    }

    long size() {
        return n;
    }

    /** The block at position {@code index} (taken modulo n). */
    public long block(long index) {
        long x = Math.floorMod(index, n);
        do {
            x = mix(x);
        } while (x >= n); // cycle walking: mix is a bijection of [0, mask], so this ends and stays a bijection
        return x;
    }

    private long mix(long x) {
        // Each step is invertible modulo 2^bits: add a constant, multiply by an odd number, xor-shift right.
        x = (x + key) & mask;
        x = (x * 0xBF58476D1CE4E5B9L) & mask;
        x ^= x >>> half;
        x = (x * 0x94D049BB133111EBL) & mask;
        x ^= x >>> half;
        x = (x + (key >>> 17)) & mask;
        return x;
    }
}

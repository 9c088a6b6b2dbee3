package io.snapbd.bench.latency;

import com.fasterxml.jackson.annotation.JsonProperty;
import org.HdrHistogram.Histogram;

/** One request type of one run, in the units people read: requests per second and microseconds. */
public record LatencySummary(
        @JsonProperty("op") String op,
        @JsonProperty("requests") long requests,
        @JsonProperty("iops") double iops,
        @JsonProperty("mean_us") double meanUs,
        @JsonProperty("p50_us") double p50Us,
        @JsonProperty("p90_us") double p90Us,
        @JsonProperty("p99_us") double p99Us,
        @JsonProperty("p99_9_us") double p999Us,
        @JsonProperty("p99_99_us") double p9999Us,
        @JsonProperty("max_us") double maxUs) {

    /** {@code h} holds nanoseconds recorded over {@code seconds}. */
    static LatencySummary of(String op, Histogram h, double seconds) {
        long n = h.getTotalCount();
        return new LatencySummary(op, n, seconds > 0 ? n / seconds : 0, n == 0 ? 0 : h.getMean() / 1000.0,
                us(h, 50), us(h, 90), us(h, 99), us(h, 99.9), us(h, 99.99), n == 0 ? 0 : h.getMaxValue() / 1000.0);
    }

    private static double us(Histogram h, double percentile) {
        return h.getTotalCount() == 0 ? 0 : h.getValueAtPercentile(percentile) / 1000.0;
    }
}

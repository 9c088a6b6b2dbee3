package io.snapbd.server.config;

import io.snapbd.server.Log;

import java.net.InetSocketAddress;
import java.time.Duration;
import java.util.List;
import java.util.Locale;

/**
 * The production-host part of the configuration file (docs/production.md): the metrics endpoint, the log level,
 * the bound on a graceful stop, and the volumes to create when they do not exist yet. Kept apart from
 * {@link ServerConfig} so tests and tools that build a ServerConfig by hand need not know about it.
 *
 * @param metrics     address of the Prometheus endpoint, null when off (the default)
 * @param logLevel    null when the file does not set it (the command line or the default decides)
 * @param stopTimeout how long a graceful stop may take before the process exits anyway
 * @param volumes     {@code volume.NAME = ...} lines, in file order
 * @param latencyHistograms {@code latency-histograms = on|off}: per-export latency histograms (default on)
 * @param warmUp      {@code warm-up = on|off}: run the copy-on-write path on a scratch volume at start (default on)
 */
public record ServiceSettings(InetSocketAddress metrics, Log.Level logLevel, Duration stopTimeout, List<VolumeSpec> volumes,
                              boolean latencyHistograms, boolean warmUp) {

    public static final Duration DEFAULT_STOP_TIMEOUT = Duration.ofSeconds(60);
    public static final ServiceSettings DEFAULTS = new ServiceSettings(null, null, DEFAULT_STOP_TIMEOUT, List.of(), true, true);

    public ServiceSettings {
        stopTimeout = stopTimeout == null ? DEFAULT_STOP_TIMEOUT : stopTimeout;
        volumes = volumes == null ? List.of() : List.copyOf(volumes);
    }

    public ServiceSettings(InetSocketAddress metrics, Log.Level logLevel, Duration stopTimeout, List<VolumeSpec> volumes) {
        this(metrics, logLevel, stopTimeout, volumes, true, true);
    }

    public ServiceSettings withLatencyHistograms(boolean on) {
        return new ServiceSettings(metrics, logLevel, stopTimeout, volumes, on, warmUp);
    }

    public ServiceSettings withWarmUp(boolean on) {
        return new ServiceSettings(metrics, logLevel, stopTimeout, volumes, latencyHistograms, on);
    }

    /** {@code on}/{@code off} (also true/false, yes/no, 1/0). */
    public static boolean parseOnOff(String v) {
        return switch (v.strip().toLowerCase(Locale.ROOT)) {
            case "on", "true", "yes", "1" -> true;
            case "off", "false", "no", "0" -> false;
            default -> throw new IllegalArgumentException("'" + v + "' must be on or off");
        };
    }
}

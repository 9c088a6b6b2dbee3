package io.snapbd.server.export;

import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.concurrent.ConcurrentHashMap;

/** Exports by name. The empty name means the default export. */
public final class ExportRegistry {

    private final ConcurrentHashMap<String, Export> exports = new ConcurrentHashMap<>();
    /** Why a volume (and its snapshots) is not exported, for the handshake's "unknown export" reply. */
    private final ConcurrentHashMap<String, String> withheld = new ConcurrentHashMap<>();
    private volatile String defaultName;
    private volatile boolean latencyHistograms = true;

    public void add(Export e) {
        e.stats().setHistograms(latencyHistograms);
        if (exports.putIfAbsent(e.name(), e) != null) {
            throw new IllegalStateException("export " + e.name() + " already exists");
        }
        if (defaultName == null) {
            defaultName = e.name();
        }
    }

    public Export remove(String name) {
        Export e = exports.remove(name);
        if (name.equals(defaultName)) {
            defaultName = exports.keySet().stream().sorted().findFirst().orElse(null);
        }
        return e;
    }

    /** Latency histograms on or off for every export, now and added later ({@code latency-histograms}). */
    public void setLatencyHistograms(boolean on) {
        latencyHistograms = on;
        exports.values().forEach(e -> e.stats().setHistograms(on));
    }

    public boolean latencyHistograms() {
        return latencyHistograms;
    }

    public void setDefault(String name) {
        this.defaultName = name;
    }

    public String defaultName() {
        return defaultName;
    }

    /** The export for {@code name}; the empty name resolves to the default export. Null when unknown. */
    public Export lookup(String name) {
        if (name.isEmpty()) {
            String d = defaultName;
            return d == null ? null : exports.get(d);
        }
        return exports.get(name);
    }

    /** Records why volume {@code volume} is not exported (set aside); null clears it (deleted). */
    public void withhold(String volume, String reason) {
        if (reason == null) {
            withheld.remove(volume);
        } else {
            withheld.put(volume, reason);
        }
    }

    /** Why the export {@code name} (VOLUME or VOLUME@SNAPSHOT) is not served, or null when nothing is known. */
    public String withheldReason(String name) {
        return withheld.get(ExportName.parse(name).volume());
    }

    public List<Export> list() {
        List<Export> l = new ArrayList<>(exports.values());
        l.sort(Comparator.comparing(Export::name));
        return l;
    }
}

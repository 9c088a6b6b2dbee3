package io.snapbd.server.config;

import java.util.regex.Pattern;

/**
 * One kernel attachment: export {@code export} on the nbd device {@code device}. Given on the command line
 * ({@code snapbd attach}) or in the configuration file ({@code attach = EXPORT /dev/nbdN [read-only] [timeout=S]}),
 * where {@code origin} says which file and line, for error messages.
 */
public record AttachSpec(String export, String device, boolean readOnly, Integer timeoutSeconds, String origin) {

    private static final Pattern NBD = Pattern.compile("/dev/nbd[0-9]+");

    public AttachSpec {
        if (export == null || export.isBlank()) {
            throw new IllegalArgumentException("attach needs an export name");
        }
        device = normalizeDevice(device);
        if (timeoutSeconds != null && (timeoutSeconds < 1 || timeoutSeconds > 86400)) {
            throw new IllegalArgumentException("timeout " + timeoutSeconds + " must be between 1 and 86400 seconds");
        }
    }

    /** {@code nbd0} and {@code /dev/nbd0} both mean {@code /dev/nbd0}; anything else is refused. */
    public static String normalizeDevice(String device) {
        if (device == null || device.isBlank()) {
            throw new IllegalArgumentException("attach needs an nbd device such as /dev/nbd0");
        }
        String d = device.strip();
        if (!d.startsWith("/")) {
            d = "/dev/" + d;
        }
        if (!NBD.matcher(d).matches()) {
            throw new IllegalArgumentException("'" + device + "' is not an nbd device: use /dev/nbdN");
        }
        return d;
    }

    /** Parses the value of an {@code attach} line: {@code EXPORT /dev/nbdN [read-only] [timeout=SECONDS]}. */
    public static AttachSpec parse(String value, String origin) {
        String[] words = value.strip().split("\\s+");
        if (words.length < 2) {
            throw new IllegalArgumentException("expected 'EXPORT /dev/nbdN [read-only] [timeout=SECONDS]', got '" + value.strip() + "'");
        }
        boolean readOnly = false;
        Integer timeout = null;
        for (int i = 2; i < words.length; i++) {
            String w = words[i];
            if (w.equals("read-only") || w.equals("ro")) {
                readOnly = true;
            } else if (w.startsWith("timeout=")) {
                try {
                    timeout = Integer.parseInt(w.substring("timeout=".length()));
                } catch (NumberFormatException e) {
                    throw new IllegalArgumentException("'" + w + "': the timeout is a whole number of seconds");
                }
            } else {
                throw new IllegalArgumentException("unknown attach option '" + w + "' (known: read-only, timeout=SECONDS)");
            }
        }
        return new AttachSpec(words[0], words[1], readOnly, timeout, origin);
    }
}

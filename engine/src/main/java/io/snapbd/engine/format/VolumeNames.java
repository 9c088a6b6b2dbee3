package io.snapbd.engine.format;

import java.util.regex.Pattern;

/** Volume and snapshot names: safe as directory names and unambiguous in {@code VOLUME@SNAPSHOT}. */
public final class VolumeNames {
    private static final Pattern NAME = Pattern.compile("[A-Za-z0-9][A-Za-z0-9._-]{0,63}");

    private VolumeNames() {
    }

    public static void check(String name) {
        if (name == null || !NAME.matcher(name).matches()) {
            throw new IllegalArgumentException("invalid name '" + name
                    + "': use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit");
        }
    }
}

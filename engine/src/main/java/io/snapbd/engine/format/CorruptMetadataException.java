package io.snapbd.engine.format;

import java.io.IOException;
import java.nio.file.Path;

/** A metadata file failed its magic, version or checksum test; the message names the file and the field. */
public final class CorruptMetadataException extends IOException {
    public CorruptMetadataException(Path file, String what) {
        super(file + ": " + what);
    }
}

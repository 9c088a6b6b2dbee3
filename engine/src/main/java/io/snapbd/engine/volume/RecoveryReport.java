package io.snapbd.engine.volume;

/**
 * What opening a volume found. After an unclean stop the meta bit map is rebuilt for every region that had
 * a write intent (and every page whose checksum failed) by scanning the data for non-zero blocks.
 */
public record RecoveryReport(boolean wasClean, long regionsScanned, long blocksMarkedInUse, int damagedPages,
                             long openCount) {
}

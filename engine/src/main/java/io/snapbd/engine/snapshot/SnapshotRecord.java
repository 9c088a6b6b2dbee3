package io.snapbd.engine.snapshot;

/**
 * The persistent identity and state of one snapshot, as stored in {@code snapshots.meta}. The LUN state
 * fields hold the volume's state at creation (filled by the LUN-state feature; zero until then).
 */
public record SnapshotRecord(long seq, String name, long createdNanos, State state, String reason,
                             long lunCounter, long lunTimestamp, boolean lunEnabled) {

    public enum State {
        ACTIVE(1), INVALID(2);
        final int code;

        State(int code) {
            this.code = code;
        }

        static State of(int code) {
            for (State s : values()) {
                if (s.code == code) {
                    return s;
                }
            }
            throw new IllegalArgumentException("unknown snapshot state " + code);
        }
    }

    public SnapshotRecord invalid(String why) {
        return new SnapshotRecord(seq, name, createdNanos, State.INVALID, why, lunCounter, lunTimestamp, lunEnabled);
    }
}

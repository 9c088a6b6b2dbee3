package io.snapbd.engine.snapshot;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.UUID;

import static org.junit.jupiter.api.Assertions.assertEquals;

class ExceptionLogTest {

    @TempDir
    Path tmp;

    private final UUID owner = UUID.randomUUID();

    private static void append(ExceptionLog log, long snap, long block, int chunk) {
        ByteBuffer rec = ByteBuffer.allocate(ExceptionLog.RECORD_BYTES).order(ByteOrder.LITTLE_ENDIAN);
        ExceptionLog.encode(rec, snap, block, chunk);
        log.append(rec);
    }

    private List<ExceptionLog.Entry> read(Path p) throws IOException {
        List<ExceptionLog.Entry> out = new ArrayList<>();
        ExceptionLog.open(p, owner, (s, b, c) -> out.add(new ExceptionLog.Entry(s, b, c)), new long[1]).close();
        return out;
    }

    @Test
    void appendsStayInMemoryUntilForcedThenReachTheFileInOrder() throws IOException {
        Path p = tmp.resolve("exceptions.log");
        try (ExceptionLog log = ExceptionLog.create(p, owner)) {
            for (int i = 0; i < 5000; i++) {       // more than the initial buffer holds
                append(log, 1, i, i);
            }
            assertEquals(5000, log.records());
            assertEquals(ExceptionLog.HEADER_BYTES, Files.size(p));   // no write on the appender's path
            log.force();
            assertEquals(5000, log.records());
            append(log, 2, 7, 5000);
            log.force();
        }
        List<ExceptionLog.Entry> e = read(p);
        assertEquals(5001, e.size());
        for (int i = 0; i < 5000; i++) {
            assertEquals(new ExceptionLog.Entry(1, i, i), e.get(i));
        }
        assertEquals(new ExceptionLog.Entry(2, 7, 5000), e.get(5000));
    }

    @Test
    void appendsContinueAfterReopen() throws IOException {
        Path p = tmp.resolve("exceptions.log");
        try (ExceptionLog log = ExceptionLog.create(p, owner)) {
            append(log, 1, 1, 1);
            log.force();
        }
        try (ExceptionLog log = ExceptionLog.open(p, owner, (s, b, c) -> { }, new long[1])) {
            append(log, 1, 2, 2);
            log.force();
        }
        assertEquals(List.of(new ExceptionLog.Entry(1, 1, 1), new ExceptionLog.Entry(1, 2, 2)), read(p));
    }

    @Test
    void aRewriteReplacesRecordsStillBuffered() throws IOException {
        Path p = tmp.resolve("exceptions.log");
        try (ExceptionLog log = ExceptionLog.create(p, owner)) {
            append(log, 1, 1, 1);
            log.force();
            append(log, 1, 2, 2);       // buffered: its entry was, say, freed by a delete
            log.rewrite(List.of(new ExceptionLog.Entry(1, 1, 1)));
            log.force();                // must not bring the stale record back
            append(log, 3, 4, 5);
            log.force();
        }
        assertEquals(List.of(new ExceptionLog.Entry(1, 1, 1), new ExceptionLog.Entry(3, 4, 5)), read(p));
    }
}

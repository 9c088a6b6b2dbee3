package io.snapbd.engine.volume;

import io.snapbd.engine.io.FileSpace;
import io.snapbd.engine.io.JavaFileSpace;
import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;

class CommitterPriorityTest {

    /** A thread's nice value with the kernel's rule: raising it is free, lowering it needs the privilege. */
    static class NiceSpace implements FileSpace {
        final boolean privileged;
        final List<Integer> calls = new ArrayList<>();
        int nice;

        NiceSpace(boolean privileged) {
            this.privileged = privileged;
        }

        @Override
        public boolean setCurrentThreadNice(int value) {
            calls.add(value);
            if (value < nice && !privileged) {
                return false;
            }
            nice = value;
            return true;
        }

        @Override
        public void preallocate(Path file, long size) throws IOException {
            new JavaFileSpace().preallocate(file, size);
        }

        @Override
        public Zeroer openZeroer(Path file) {
            return new JavaFileSpace().openZeroer(file);
        }

        @Override
        public String describe() {
            return "nice-recording";
        }
    }

    @Test
    void runsLowUntilWritersWaitThenAtTheirPriorityThenLowAgain() {
        NiceSpace space = new NiceSpace(true);
        CommitterPriority p = new CommitterPriority(space, 19, 0, "v");
        p.adjust(false);
        assertEquals(19, space.nice);
        p.adjust(false);
        p.adjust(true);
        assertEquals(0, space.nice);
        p.adjust(true);
        p.adjust(false);
        assertEquals(19, space.nice);
        assertEquals(List.of(19, 0, 19), space.calls, "a system call only when the priority changes");
    }

    @Test
    void withoutThePrivilegeToGoBackItStaysLowAndStopsTrying() {
        NiceSpace space = new NiceSpace(false);
        CommitterPriority p = new CommitterPriority(space, 19, 0, "v");
        p.adjust(false);
        p.adjust(true);
        assertEquals(19, space.nice);
        assertEquals(19, p.current());
        p.adjust(false);
        p.adjust(true);
        assertEquals(List.of(19, 0), space.calls, "the refused boost is not retried");
    }

    @Test
    void aSpaceThatCannotSetPrioritiesIsAskedOnce() {
        List<Integer> asked = new ArrayList<>();
        FileSpace pureJava = new JavaFileSpace();
        CommitterPriority p = new CommitterPriority(new NiceSpace(true) {
            @Override
            public boolean setCurrentThreadNice(int value) {
                asked.add(value);
                return pureJava.setCurrentThreadNice(value);
            }
        }, 19, 0, "v");
        p.adjust(false);
        p.adjust(true);
        p.adjust(false);
        assertEquals(List.of(19), asked);
    }
}

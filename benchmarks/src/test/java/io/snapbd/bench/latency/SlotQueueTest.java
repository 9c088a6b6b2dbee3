package io.snapbd.bench.latency;

import org.junit.jupiter.api.Test;

import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.BlockingQueue;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

class SlotQueueTest {

    @Test
    void startsWithEverySlotFree() {
        SlotQueue q = new SlotQueue(5);
        assertEquals(5, q.free());
        boolean[] seen = new boolean[5];
        for (int i = 0; i < 5; i++) {
            seen[q.take(() -> false)] = true;
        }
        for (boolean s : seen) {
            assertTrue(s);
        }
        assertEquals(0, q.free());
        assertEquals(-1, q.take(() -> true), "an empty queue returns -1 once told to stop");
    }

    @Test
    void slotsCirculateBetweenTwoThreadsWithoutLossOrDuplication() throws Exception {
        int slots = 32;
        int rounds = 200_000;
        SlotQueue q = new SlotQueue(slots);
        BlockingQueue<Integer> inFlight = new ArrayBlockingQueue<>(slots);
        Thread completer = new Thread(() -> {
            try {
                for (int i = 0; i < rounds; i++) {
                    q.put(inFlight.take());
                }
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        });
        completer.start();
        int[] uses = new int[slots];
        for (int i = 0; i < rounds; i++) {
            int s = q.take(() -> false);
            uses[s]++;
            inFlight.put(s);
        }
        completer.join();
        assertEquals(slots, q.free(), "every slot came back");
        long total = 0;
        for (int u : uses) {
            total += u;
        }
        assertEquals(rounds, total);
        boolean[] seen = new boolean[slots];
        for (int i = 0; i < slots; i++) {
            int s = q.take(() -> false);
            assertTrue(!seen[s], "slot " + s + " is free twice");
            seen[s] = true;
        }
    }
}

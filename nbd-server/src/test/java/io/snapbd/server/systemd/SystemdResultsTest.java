package io.snapbd.server.systemd;

import org.junit.jupiter.api.Test;

import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;

/** How {@link SystemdUmlIT} reads the guest's results.txt: by the status field, never by a substring. */
class SystemdResultsTest {

    @Test
    void theStatusIsTheThirdFieldNotAWordInTheDetail() {
        Map<String, SystemdUmlIT.StepResult> r = SystemdUmlIT.parseResults(String.join("\n",
                "STEP boot PASS ok (3 s)",
                "STEP stop FAIL journal says: snapbd.service PASS SKIP (2 s)",
                "STEP socket SKIP no nbd module: PASS needs it (0 s)",
                "STEP mount FAIL",
                "noise STEP reload PASS",
                "STEP"));
        assertEquals("PASS", r.get("boot").status());
        assertEquals("FAIL", r.get("stop").status(), "a FAIL quoting ' PASS ' is a FAIL");
        assertEquals("SKIP", r.get("socket").status());
        assertEquals("FAIL", r.get("mount").status(), "a FAIL without detail");
        assertNull(r.get("reload"), "only lines that start with STEP are results");
        assertEquals(4, r.size());
    }
}

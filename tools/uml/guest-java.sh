# tools/uml/guest-java.sh — the JVM options of snapbd's processes inside User-Mode Linux, sourced by the guest
# scenarios (kernel-lib.sh, restart-steps.sh, systemd-steps.sh, benchmarks/soak-guest.sh).
# Under UML every system call and page fault is a round trip to the host and the guest has one CPU, so the JIT
# compilers cost more than they save in a short-lived JVM: a CLI call that asks the server for something took
# ~11 s with C1 and ~6.5 s interpreted (same guest, three runs each; docs/architecture.md, "Where the tests live").
#   GUEST_CLI_JAVA_OPTS   one-shot CLI calls whose work is done by the server (status, attach, detach, snapshot
#                         create, restart, ...): interpreted, small serial heap
#   GUEST_JAVA_OPTS       servers, and CLI calls that do work themselves (fsck, volume create): C1 only, serial
#                         heap (each script adds its -Xmx)
GUEST_CLI_JAVA_OPTS="-Xint -XX:+UseSerialGC -Xmx128m -XX:-UsePerfData"
GUEST_JAVA_OPTS="-XX:TieredStopAtLevel=1 -XX:+UseSerialGC -XX:-UsePerfData"

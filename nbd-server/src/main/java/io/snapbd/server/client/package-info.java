/**
 * A small NBD client: {@link io.snapbd.server.client.NbdUri} names an export,
 * {@link io.snapbd.server.client.NbdClient} connects to it (fixed-newstyle handshake, structured replies,
 * metadata contexts) and pipelines requests, blocking or asynchronous, over TCP or a Unix socket. It talks to
 * any NBD server (nbdkit, qemu-nbd, nbd-server, snapbd); replication and the latency harness build on it.
 */
package io.snapbd.server.client;

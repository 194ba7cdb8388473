// Package bench is fabric-bench, the load program of `make bench`. It
// measures, printing each figure as it goes and ending with one JSON line of
// all of them:
//
//   - mesh: how long a cluster of namespace hosts running fabricd with real
//     WireGuard (testbed/nshost) takes from `fabric activate` to a full mesh;
//   - inproc: the same, in-process, with fake networks (testbed/inproc);
//   - signed: the cost of signed gRPC calls (internal/signedrpc) against
//     plain ones on loopback, latency and parallel throughput, and raw
//     ed25519 sign and verify times;
//   - pastiche: the throughput of `fabric pastiche send` of a 1 GiB file
//     between two namespace hosts, against iperf3 over the same WireGuard
//     tunnel;
//   - vm: the fabric image (--image) booted with qemu: boot to a serving
//     fabricd, from the disk and by direct kernel boot, activation to a full
//     mesh of 3 VMs over kernel WireGuard next to 3 namespace hosts over
//     wireguard-go, and iperf3 between two VMs through the tunnel against
//     their underlay;
//   - flood: a coordinator's pubapi under 5,000 half-open connections from
//     one source and from 50: `fabric status` latency meanwhile, the
//     connections it keeps, its resident memory;
//   - failover: two coordinators on a three-member etcd, killed in turn
//     with SIGKILL: the time from the kill to each node, and to every
//     node, watching the other coordinator (p50, p99, max).
//
// Scenarios on namespace hosts need root; without it they are skipped with
// a line saying why.
package bench

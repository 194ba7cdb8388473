// Package scale is fabric-scale, the program of `make bench-scale`: the
// coordinator's control plane at thousands of nodes.
//
// For each size N (-n, default 1,000 and 10,000) it builds a lab of two
// namespace hosts (testbed/nshost): an admin host that runs the real CLI,
// and a host running the real fabricd, activated with `fabric activate`
// and `fabric add-nodes` (at most core.MaxNodesPerActivation endpoints per
// request, the requests running at once). On that host runs a separate
// process, `fabric-scale simulate`, holding N nodes (and one spare per
// measured join). Each simulated node has its own ed25519 signing key,
// WireGuard key, reeve key and pastiche client key, and:
//
//   - serves the node side of the pubapi (GetState, ActivateAsNode, Leave)
//     at its own loopback address 127.2.x.y:17443, checking the bootstrap
//     key as a node does; one listener on the wildcard address answers for
//     every node and tells them apart by the address the coordinator
//     dialled, and one TLS certificate serves them all (the coordinator
//     pins no node certificate at activation);
//   - once activated, puts its VPN IP on lo (inside the coordinator's
//     namespace a local address wins over the route into the coordinator's
//     WireGuard interface: the node's connections come from its VPN IP and
//     the registry's callback reaches it), opens its own authenticated
//     connection to the coordinator's vpnapi (gRPC, TLS 1.3, authconn with
//     its key, pinning the coordinator's certificate) and keeps the real
//     WatchUpdates stream open with a node's connection options (the
//     kernel's probes of vpnapi.WatchDial and the fixed flow-control
//     windows), answering every message, keepalives too, with the revision
//     it applied;
//   - runs its reeve's registration (Register on the vpnapi, the registry's
//     signed callback to its reeve endpoint, the nonce signed with its
//     reeve key) and sends its pastiche endpoint and client to the steward
//     with a signed call, in the hordes sharks and jets alternately;
//   - applies every answer to its own state with a fake network manager:
//     its WireGuard peers and its service view, held as digests (see
//     nodeState).
//
// It measures the time for N nodes to join (until every node is active,
// registered, has its pastiche recorded and holds every peer and slice);
// the coordinator's CPU (utime+stime of /proc/PID/stat) and resident memory
// (VmRSS) with every node connected and idle; and, for joins, WireGuard
// endpoint changes and removals (`fabric nodes remove`), the time from the
// change's commit (its event's time, `fabric events`) until every other
// node applied it (p50, p99, max), the bytes each node received for it
// (read on its connection: TLS records, HTTP/2 frames and the message) and
// the coordinator's CPU per change. At the end it stops the coordinator and
// compares every node's state with the coordinator's from-scratch answer
// for it, computed from its fabric.db (converged). It ends with one JSON
// line per N.
//
// The simulator's nodes share the coordinator's host, so every packet of
// theirs crosses one loopback backlog, which real nodes on their own
// machines do not: a run raises net.core.netdev_max_backlog to three
// packets per node (at least the 1,000 default) and restores it after.
// The kernel's keepalive timers of connections that went quiet together
// fire in one softirq; at the default their probes were dropped and the
// user timeouts gave up live watches (5,000 nodes: 1,280 at once).
//
// With --store etcd the coordinator keeps the cluster's records in an etcd
// cluster of 3 members, each on a namespace host of its own, and the check
// reads them from there.
//
// The simulated nodes run no WireGuard, so by default they report no
// WireGuard endpoint, as roaming peers do: the coordinator's wireguard-go
// waits for them to write first. With --wg-endpoints they report loopback
// ports where nothing listens, and the coordinator's wireguard-go retries
// a handshake with every node every 5 s, which a real node would answer.
package scale

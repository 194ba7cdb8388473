// Package nshost builds a local cluster of hosts out of Linux network
// namespaces: the one harness that `make demo`, the multi-host root tests and
// the benchmarks share.
//
// A Lab owns a switch namespace holding a bridge (br0) and, for each Host, a
// namespace of its own whose "eth0" is one end of a veth pair; the other end
// sits on the bridge. Hosts get consecutive underlay addresses (.10, .11, ...)
// from 198.51.100.0/24 or 192.0.2.0/24 and have no route out of the lab: the
// switch namespace has no uplink. The root namespace's interfaces, routes and
// addresses are never touched.
//
// Every command a Host runs goes through
//
//	ip netns exec <ns> sh -c 'mount --bind <Dir()>/run-wireguard /run/wireguard && exec ...'
//
// so each host has a private /run/wireguard (where wireguard-go puts its UAPI
// sockets and where wg looks for them), even though that directory is
// otherwise shared by all network namespaces of the machine. `ip netns exec`
// gives each command a private mount namespace, so the bind mount never leaks
// into the root mount namespace. To look at a host by hand, use the same
// wrapper (or Host.Command), not a bare `ip netns exec`, or `wg show` will
// see the root namespace's /run/wireguard.
//
// Lab.Close stops every process the lab started (by PID: SIGTERM, then
// SIGKILL after a grace period) and deletes every namespace it created, also
// after partial failures. If the test binary itself is killed, the namespaces
// remain; they are named <Prefix>-<host> and <Prefix>-sw, so
// `ip netns list | grep <Prefix>` finds them.
//
// The package is generic: fabric-specific helpers (starting fabricd,
// activating, checking the mesh) build on Lab, Host and Process.
package nshost

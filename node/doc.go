// Package node is fabricd, the daemon every machine of a cluster runs.
//
// It wires the peer together: its identity and store in the state
// directory, core, the pubapi server on the public endpoint, and, once the
// peer has a role, what that role needs (the vpnapi server on a
// coordinator, the watch of the coordinator on a node). A restarted daemon
// comes back in the same role with the same VPN IP and keys.
//
// Config's last fields replace the real network with fakes so that the
// in-process cluster tests run many daemons in one process without root.
package node

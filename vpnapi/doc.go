// Package vpnapi is the coordinator's API inside the VPN, and the node's
// client of it. Nodes authenticate with their ed25519 key and pin the
// coordinator's TLS certificate (internal/authconn); the server learns the
// calling node from the connection, never from the request.
//
// WatchUpdates is a bidirectional stream: the node opens it with the
// revision it has applied and reports on it each revision it applies and a
// heartbeat; the server sends an answer as soon as a change concerns the
// node (coordinator/feed) and a keepalive after its keepalive interval
// without one, so a silent network is noticed on both sides.
package vpnapi

// Package vpnapi is the coordinator's API inside the VPN, and the node's
// client of it. Nodes authenticate with their ed25519 key and pin the
// coordinator's TLS certificate (internal/authconn); the server learns the
// calling node from the connection, never from the request.
//
// WatchUpdates is a bidirectional stream: the node opens it with the
// revision it has applied and answers every message with a report of the
// revision it applied; the server sends an answer as soon as a change
// concerns the node (coordinator/feed) and a keepalive after its keepalive
// interval without one. The kernels at both ends probe the connection
// (WatchDial, Listener), so a peer gone silently is noticed on both sides
// without either process waking for it.
package vpnapi

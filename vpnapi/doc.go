// Package vpnapi is the coordinator's API inside the VPN, and the node's
// client of it. Nodes authenticate with their ed25519 key and pin the
// coordinator's TLS certificate (internal/authconn); the server learns the
// calling node from the connection, never from the request.
//
// WatchUpdates is a long poll: the node sends the revision it has applied
// (which also reports it), the server answers as soon as the cluster
// revision moves past it, or after its hold time with no change, so a
// silent network is noticed within one hold time.
package vpnapi

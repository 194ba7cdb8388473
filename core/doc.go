// Package core is the logic and state machine of a fabric peer: the states
// accepting-init, activating, coordinator, node and failed, and the
// activation flows between them.
//
// core does no I/O of its own. It reaches the world through small interfaces
// declared beside the code that uses them (NetworkManager, the store, the
// node activator and the VPN dialer), each with a real implementation
// elsewhere and a fake here for unit tests. A test (deps_test.go) fails if
// core imports gRPC, netlink, wgctrl, bbolt, os or os/exec.
package core

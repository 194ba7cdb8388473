// Package crashpoint lets a test kill or freeze fabricd at named points of
// its work, to prove that a crash at any of them leaves a state the cluster
// recovers from.
//
// A package declares its points once, at package level:
//
//	var crashReserved = crashpoint.New("core/coordinator/node-reserved", "after a node's VPN IP is reserved, before the node is called")
//
// and marks the place with crashReserved.Hit(). Hit does nothing unless
// the process was started with FABRIC_CRASH_AT or FABRIC_PAUSE_AT naming
// the point (a comma-separated list of NAME or NAME:N, the Nth time the
// point is reached; default the first):
//
//   - FABRIC_CRASH_AT: the process writes "fabric crashpoint: killing
//     process at NAME" to stderr and sends itself SIGKILL, as a crash
//     would: no deferred function runs, nothing is flushed or closed.
//   - FABRIC_PAUSE_AT: the process writes "fabric crashpoint: pausing
//     process at NAME" and sends itself SIGSTOP; it goes on when it gets
//     SIGCONT. A test uses the pause to act at an exact moment (fill the
//     disk, kill another process).
//
// The variables are read once, when the package is initialized; without
// them Hit costs one atomic load. All lists every declared point, so a
// test can check that it exercises each one.
package crashpoint

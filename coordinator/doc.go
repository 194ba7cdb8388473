// Package coordinator is what a coordinator runs besides core: the
// registration handshake (Registrar), the steward's service registry
// endpoint (StewardServer) and the per-node service views (Views), all over
// the cluster records of coordinator/registry and the rules of
// coordinator/steward.
package coordinator

// Package registry is the coordinator's record of the cluster: its
// configuration, every peer (coordinator, nodes, admins) with its VPN IP and
// public keys, and the cluster revision.
//
// Every change is one store transaction that also bumps the revision and
// stamps the changed records with it, so a reader can ask for everything
// that changed after a revision it holds. VPN IPs are allocated from the VPN
// CIDR in order and are never reused, even after a failed activation: a
// retried activation of the same public endpoint gets its reserved address
// back. The registry keeps an in-memory copy of the records for reads and
// wakes watchers when the revision moves.
package registry

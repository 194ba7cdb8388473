// Package update holds what a node applies to follow its cluster: the
// answer the coordinator's feed computes from the change log and the
// vpnapi carries to the node.
package update

import (
	"net/netip"

	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/view"
)

// Kind says how an Update relates to the state the node holds.
type Kind int

// Kinds of updates. The zero Kind is not valid.
const (
	// Unchanged: nothing that concerns the node changed; it is now at
	// Revision. Keepalives are Unchanged updates of the node's revision.
	Unchanged Kind = iota + 1
	// Delta: apply Peers, RemovedPeers and View to the state held.
	Delta
	// Full: Peers and View replace what the node holds (a resync: its
	// revision was unknown, ahead of the coordinator's or compacted away).
	Full
	// Removed: the node was removed from the cluster and must leave.
	Removed
)

func (k Kind) String() string {
	switch k {
	case Unchanged:
		return "unchanged"
	case Delta:
		return "delta"
	case Full:
		return "full"
	case Removed:
		return "removed"
	}
	return "invalid"
}

// Update is the coordinator's answer to a node's watch: what turns the
// node's state at the revision it applied into the state at Revision.
type Update struct {
	Revision uint64
	Kind     Kind
	// Peers are the WireGuard peers added or changed (Delta), or all of
	// them (Full).
	Peers []records.Peer
	// RemovedPeers are the VPN IPs of peers that left (Delta).
	RemovedPeers []netip.Addr
	View         ViewUpdate
	// HasSSHUsers says SSHUsers is the cluster's whole set of SSH users:
	// they changed since the node's revision (always with Full).
	HasSSHUsers bool
	SSHUsers    []records.SSHUser
}

// ViewKind says how a ViewUpdate relates to the view the node holds.
type ViewKind int

// Kinds of view updates. The zero ViewKind leaves the view unchanged.
const (
	ViewUnchanged ViewKind = iota
	// ViewDelta: each slice replaces the entries the view shares with
	// its node.
	ViewDelta
	// ViewFull: Full replaces the view (an empty Full empties it).
	ViewFull
)

// ViewUpdate is a change of a node's service view.
type ViewUpdate struct {
	Kind   ViewKind
	Full   view.View
	Slices []view.Slice
}

// Empty reports whether u changes nothing but the revision.
func (u Update) Empty() bool {
	return u.Kind == Unchanged || (u.Kind == Delta && len(u.Peers) == 0 && len(u.RemovedPeers) == 0 &&
		u.View.Kind == ViewUnchanged && !u.HasSSHUsers)
}

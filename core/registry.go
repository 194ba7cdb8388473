package core

import (
	"context"
	"net/netip"
	"time"

	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/store"
	"github.com/fabricmesh/fabric/internal/update"
)

// Registry is the coordinator's records, as core reads and changes them
// (coordinator/registry). Every peer has one; a node's stays empty.
type Registry interface {
	Cluster() (records.Cluster, bool)
	Revision() uint64
	Peers() (uint64, []records.Peer)
	// Coordinators are the active coordinators' records.
	Coordinators() []records.Peer
	Peer(ip netip.Addr) (records.Peer, bool)
	PeerByName(name string) (records.Peer, bool)
	PeerByEndpoint(publicEndpoint string) (records.Peer, bool)
	LookupSigningKey(signingPubKey []byte) (records.Peer, bool)
	Init(c records.Cluster, coordinator records.Peer, admins []records.Peer, users []records.SSHUser, extra func(store.Tx) error) ([]records.Peer, error)
	Reserve(publicEndpoint, name string, vpnPubKey, signingPubKey []byte, replaceActive bool) (records.Peer, error)
	ReserveCoordinator(publicEndpoint, name string, vpnPubKey, signingPubKey []byte) (records.Peer, error)
	Activate(ip netip.Addr, a records.Activated) (records.Peer, error)
	Fail(publicEndpoint, reason string) (records.Peer, error)
	Remove(ip netip.Addr) (records.Peer, error)
	SSHUsers() (uint64, []records.SSHUser)
	UpdateSSHUsers(fn func([]records.SSHUser) ([]records.SSHUser, error)) (changed bool, rev uint64, users []records.SSHUser, err error)
}

// Feed gives a peer what it must apply after a revision (coordinator/feed):
// the coordinator follows its own records through it.
type Feed interface {
	Next(ctx context.Context, ip netip.Addr, after uint64, wait time.Duration) (update.Update, error)
}

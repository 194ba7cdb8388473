package registry

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"

	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/store"
)

// Errors callers act on (shared with the callers through records).
var (
	ErrNotInitialized = records.ErrNotInitialized
	ErrAlreadyActive  = records.ErrAlreadyActive
	ErrUnknownPeer    = records.ErrUnknownPeer
	ErrConflict       = records.ErrConflict
	ErrRemoved        = records.ErrRemoved
	ErrCIDRFull       = records.ErrCIDRFull
)

const (
	keyCluster   = "registry/cluster"
	keyRevision  = "registry/revision"
	keyNextIP    = "registry/ipam/next"
	prefixPeers  = "registry/peers/"
	prefixByEndp = "registry/endpoints/"
	prefixSvcs   = "registry/services/"
	prefixLive   = "registry/liveness/"
)

// Registry holds the cluster's records. It is safe for concurrent use.
//
// Writes go through one writer at a time (see commit.go): each change is
// checked and applied against the writers' copy of the state, changes that
// arrive together are committed in one store transaction (each with its
// own revision and change-log entry), and only then applied to the copy
// that readers see and passed to the observers. A failed transaction
// changes neither copy.
type Registry struct {
	store store.Store
	// LogCapacity is how many change-log entries the store keeps; older
	// ones are compacted away (default DefaultLogCapacity).
	logCapacity int

	qmu        sync.Mutex // guards pending and committing
	pending    []*op
	committing bool
	work       *state // the writers' state; only the committing goroutine uses it

	// pubMu orders the publication of changes, the registry's own and
	// those it follows, so observers see every revision once, in order.
	pubMu sync.Mutex

	mu        sync.RWMutex
	committed *state
	logFirst  uint64 // the oldest revision still in the change log
	changed   chan struct{}
	observers []func([]Entry)
}

// DefaultLogCapacity is how many change-log entries are kept by default.
const DefaultLogCapacity = 10000

// Options tune a registry.
type Options struct {
	// LogCapacity is how many change-log entries the store keeps (default
	// DefaultLogCapacity).
	LogCapacity int
}

// Open loads the registry from st. An empty store gives an uninitialized
// registry (see Init).
func Open(st store.Store, opts ...Options) (*Registry, error) {
	r := &Registry{store: st, logCapacity: DefaultLogCapacity, changed: make(chan struct{})}
	for _, o := range opts {
		if o.LogCapacity > 0 {
			r.logCapacity = o.LogCapacity
		}
	}
	s := newState()
	err := st.View(func(tx store.Tx) error {
		if err := checkMarks(tx); err != nil {
			return err
		}
		if _, err := tx.Get(keyCluster); errors.Is(err, store.ErrNotFound) {
			return nil
		} else if err != nil {
			return err
		}
		if err := s.loadAll(tx); err != nil {
			return err
		}
		first, err := loadLogFirst(tx)
		r.logFirst = first
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("loading registry: %w", err)
	}
	r.committed, r.work = s, s.clone()
	return r, nil
}

// Observe registers fn to be called after every commit with its entries,
// in revision order, before the writers that made them return. fn runs on
// the committing goroutine and must not write to the registry.
func (r *Registry) Observe(fn func([]Entry)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.observers = append(r.observers, fn)
}

// Cluster returns the cluster configuration, or false before Init.
func (r *Registry) Cluster() (records.Cluster, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.committed.cluster == nil {
		return records.Cluster{}, false
	}
	return *r.committed.cluster, true
}

// Revision returns the current cluster revision.
func (r *Registry) Revision() uint64 {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.committed.rev
}

// Peer returns the record of the peer at ip (removed peers included).
func (r *Registry) Peer(ip netip.Addr) (records.Peer, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	p, ok := r.committed.peers[ip]
	return p, ok
}

// PeerByName finds the active peer named name.
func (r *Registry) PeerByName(name string) (records.Peer, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	p, ok := r.committed.byName(name)
	if !ok || p.State != records.StateActive {
		return records.Peer{}, false
	}
	return p, true
}

// PeerByEndpoint finds the peer (not removed) at a public endpoint.
func (r *Registry) PeerByEndpoint(publicEndpoint string) (records.Peer, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.committed.byEndpoint(publicEndpoint)
}

// LookupSigningKey finds the peer holding signingPubKey: an active peer, or
// a removed one (whose keys are refused; see records.StateRemoved).
func (r *Registry) LookupSigningKey(signingPubKey []byte) (records.Peer, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	ip, ok := r.committed.bySigningKey[string(signingPubKey)]
	if !ok {
		return records.Peer{}, false
	}
	return r.committed.peers[ip], true
}

// Peers returns the revision and every record that is not removed, ordered
// by VPN IP.
func (r *Registry) Peers() (uint64, []records.Peer) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.committed.rev, r.committed.sortedPeers()
}

// Coordinators returns the active coordinators' records, by VPN IP.
func (r *Registry) Coordinators() []records.Peer {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]records.Peer, 0, len(r.committed.coordinators))
	for ip := range r.committed.coordinators {
		out = append(out, r.committed.peers[ip])
	}
	slices.SortFunc(out, func(a, b records.Peer) int { return a.VPNIP.Compare(b.VPNIP) })
	return out
}

// Services returns every node's service records, by VPN IP.
func (r *Registry) Services() map[netip.Addr]records.Services {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make(map[netip.Addr]records.Services, len(r.committed.services))
	for ip, s := range r.committed.services {
		out[ip] = s
	}
	return out
}

// Snapshot returns the revision, every record that is not removed and every
// node's service records, all as of that revision.
func (r *Registry) Snapshot() (uint64, []records.Peer, map[netip.Addr]records.Services) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	services := make(map[netip.Addr]records.Services, len(r.committed.services))
	for ip, s := range r.committed.services {
		services[ip] = s
	}
	return r.committed.rev, r.committed.sortedPeers(), services
}

// Liveness returns what the registry last recorded of each peer's
// liveness, by VPN IP.
func (r *Registry) Liveness() map[netip.Addr]Liveness {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make(map[netip.Addr]Liveness, len(r.committed.liveness))
	for ip, l := range r.committed.liveness {
		out[ip] = l
	}
	return out
}

// Wait blocks until the revision is greater than after, or ctx ends, and
// returns the revision.
func (r *Registry) Wait(ctx context.Context, after uint64) (uint64, error) {
	for {
		r.mu.RLock()
		rev, ch := r.committed.rev, r.changed
		r.mu.RUnlock()
		if rev > after {
			return rev, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return rev, ctx.Err()
		}
	}
}

// state is one copy of the records with their indexes.
type state struct {
	cluster  *records.Cluster
	rev      uint64
	nextIP   uint64
	peers    map[netip.Addr]records.Peer // every record, removed ones included
	services map[netip.Addr]records.Services
	liveness map[netip.Addr]Liveness
	// users are the SSH users, sorted by name; usersRev the revision of
	// their last change.
	users    []records.SSHUser
	usersRev uint64
	// Indexes of the records that are not removed (bySigningKey and
	// byVPNKey also hold removed peers, whose keys stay refused).
	endpoints    map[string]netip.Addr
	names        map[string]netip.Addr // names held by pending or active peers
	bySigningKey map[string]netip.Addr // active and removed peers
	byVPNKey     map[string]netip.Addr // active and removed peers
	revoked      map[string]netip.Addr // reeve and service keys of removed peers
	coordinators map[netip.Addr]bool   // active coordinators
}

func newState() *state {
	return &state{
		peers: map[netip.Addr]records.Peer{}, services: map[netip.Addr]records.Services{},
		liveness:  map[netip.Addr]Liveness{},
		endpoints: map[string]netip.Addr{}, names: map[string]netip.Addr{},
		bySigningKey: map[string]netip.Addr{}, byVPNKey: map[string]netip.Addr{}, revoked: map[string]netip.Addr{},
		coordinators: map[netip.Addr]bool{},
	}
}

func (s *state) clone() *state {
	c := newState()
	if s.cluster != nil {
		cl := *s.cluster
		c.cluster = &cl
	}
	c.rev, c.nextIP = s.rev, s.nextIP
	c.users, c.usersRev = slices.Clone(s.users), s.usersRev
	for _, p := range s.peers {
		c.putPeer(p)
	}
	for ip, sv := range s.services {
		c.services[ip] = sv
	}
	for ip, l := range s.liveness {
		c.liveness[ip] = l
	}
	return c
}

// putPeer replaces the record of p.VPNIP and keeps the indexes.
func (s *state) putPeer(p records.Peer) {
	if old, ok := s.peers[p.VPNIP]; ok {
		s.unindex(old)
	}
	s.peers[p.VPNIP] = p
	s.index(p)
}

func (s *state) index(p records.Peer) {
	if p.Role == records.RoleCoordinator && p.State == records.StateActive {
		s.coordinators[p.VPNIP] = true
	}
	if p.State == records.StateRemoved || p.State == records.StateActive {
		if len(p.SigningPubKey) > 0 {
			s.bySigningKey[string(p.SigningPubKey)] = p.VPNIP
		}
		if len(p.WGPubKey) > 0 {
			s.byVPNKey[string(p.WGPubKey)] = p.VPNIP
		}
	}
	if p.State == records.StateRemoved {
		for _, k := range p.RevokedKeys {
			s.revoked[string(k)] = p.VPNIP
		}
		return
	}
	if p.PublicEndpoint != "" {
		s.endpoints[p.PublicEndpoint] = p.VPNIP
	}
	if p.Name != "" && p.State != records.StateFailed {
		s.names[p.Name] = p.VPNIP
	}
}

func (s *state) unindex(p records.Peer) {
	deleteIf := func(m map[string]netip.Addr, k string) {
		if k != "" && m[k] == p.VPNIP {
			delete(m, k)
		}
	}
	delete(s.coordinators, p.VPNIP)
	deleteIf(s.endpoints, p.PublicEndpoint)
	deleteIf(s.names, p.Name)
	deleteIf(s.bySigningKey, string(p.SigningPubKey))
	deleteIf(s.byVPNKey, string(p.WGPubKey))
	for _, k := range p.RevokedKeys {
		deleteIf(s.revoked, string(k))
	}
}

func (s *state) byEndpoint(publicEndpoint string) (records.Peer, bool) {
	ip, ok := s.endpoints[publicEndpoint]
	if !ok {
		return records.Peer{}, false
	}
	return s.peers[ip], true
}

func (s *state) byName(name string) (records.Peer, bool) {
	ip, ok := s.names[name]
	if !ok {
		return records.Peer{}, false
	}
	return s.peers[ip], true
}

func (s *state) sortedPeers() []records.Peer {
	var out []records.Peer
	for _, p := range s.peers {
		if p.State != records.StateRemoved {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b records.Peer) int { return a.VPNIP.Compare(b.VPNIP) })
	return out
}

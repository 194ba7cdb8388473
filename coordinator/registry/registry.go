package registry

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/store"
)

// Errors callers act on.
var (
	ErrNotInitialized = errors.New("registry is not initialized")
	ErrAlreadyActive  = errors.New("peer is already active")
	ErrUnknownPeer    = errors.New("unknown peer")
	ErrConflict       = errors.New("conflicts with another peer")
)

const (
	keyCluster   = "registry/cluster"
	keyRevision  = "registry/revision"
	keyNextIP    = "registry/ipam/next"
	prefixPeers  = "registry/peers/"
	prefixByEndp = "registry/endpoints/"
	prefixSvcs   = "registry/services/"
	// The SSH users, one record per user, and the revision of their last
	// change (a removal leaves no record, so it is kept apart).
	prefixSSHUsers      = "registry/sshusers/"
	keySSHUsersRevision = "registry/sshusers-revision"
)

// Registry holds the cluster's records. It is safe for concurrent use.
type Registry struct {
	store store.Store

	wmu sync.Mutex // serializes writers, so the cache follows commit order

	mu         sync.RWMutex
	cluster    *records.Cluster
	revision   uint64
	peers      map[netip.Addr]records.Peer
	byEndpoint map[string]netip.Addr
	changed    chan struct{} // closed and replaced when the revision moves
	applied    map[netip.Addr]Applied
	services   map[netip.Addr]records.Services
	sshUsers   sshUsers
}

// Applied is what a peer last reported: the revision it has applied and
// when it reported it. It lives in memory only; peers report on every
// watch call, so it is rebuilt within one poll after a restart.
type Applied struct {
	Revision uint64
	At       int64 // unix seconds
}

// Open loads the registry from st. An empty store gives an uninitialized
// registry (see Init).
func Open(st store.Store) (*Registry, error) {
	r := &Registry{
		store:      st,
		peers:      map[netip.Addr]records.Peer{},
		byEndpoint: map[string]netip.Addr{},
		changed:    make(chan struct{}),
		applied:    map[netip.Addr]Applied{},
		services:   map[netip.Addr]records.Services{},
	}
	err := st.View(func(tx store.Tx) error {
		var c records.Cluster
		if err := store.GetJSON(tx, keyCluster, &c); errors.Is(err, store.ErrNotFound) {
			return nil
		} else if err != nil {
			return err
		}
		r.cluster = &c
		if err := store.GetJSON(tx, keyRevision, &r.revision); err != nil {
			return err
		}
		if err := scanPeers(tx, func(p records.Peer) { r.cachePeer(p) }); err != nil {
			return err
		}
		if err := scanSSHUsers(tx, &r.sshUsers); err != nil {
			return err
		}
		return scanServices(tx, r.services)
	})
	if err != nil {
		return nil, fmt.Errorf("loading registry: %w", err)
	}
	return r, nil
}

func scanPeers(tx store.Tx, fn func(records.Peer)) error {
	return tx.Scan(prefixPeers, func(key string, value []byte) error {
		var p records.Peer
		if err := store.DecodeJSON(key, value, &p); err != nil {
			return err
		}
		fn(p)
		return nil
	})
}

func (r *Registry) cachePeer(p records.Peer) {
	r.peers[p.VPNIP] = p
	if p.PublicEndpoint != "" {
		r.byEndpoint[p.PublicEndpoint] = p.VPNIP
	}
}

// Cluster returns the cluster configuration, or false before Init.
func (r *Registry) Cluster() (records.Cluster, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.cluster == nil {
		return records.Cluster{}, false
	}
	return *r.cluster, true
}

// Revision returns the current cluster revision.
func (r *Registry) Revision() uint64 {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.revision
}

// mutation collects one transaction's changes.
type mutation struct {
	tx       store.Tx
	rev      uint64
	cluster  *records.Cluster
	changed  []records.Peer
	services map[netip.Addr]records.Services
	sshUsers *sshUsers // set when the SSH users changed
	lookupIP func(netip.Addr) (records.Peer, bool)
}

// put stamps p with the transaction's revision and writes it.
func (m *mutation) put(p records.Peer) (records.Peer, error) {
	p.Revision = m.rev
	if err := store.PutJSON(m.tx, prefixPeers+p.VPNIP.String(), p); err != nil {
		return records.Peer{}, err
	}
	if p.PublicEndpoint != "" {
		if err := m.tx.Put(prefixByEndp+p.PublicEndpoint, []byte(p.VPNIP.String())); err != nil {
			return records.Peer{}, err
		}
	}
	m.changed = append(m.changed, p)
	return p, nil
}

// allocate hands out the next never-used VPN IP.
func (m *mutation) allocate() (netip.Addr, error) {
	var next uint64
	if err := store.GetJSON(m.tx, keyNextIP, &next); err != nil {
		return netip.Addr{}, fmt.Errorf("reading next vpn ip: %w", err)
	}
	addr, ok := addrAt(m.cluster.VPNCIDR, next)
	if !ok {
		return netip.Addr{}, fmt.Errorf("%w: %s has %d usable addresses and all have been allocated (addresses are never reused)",
			ErrCIDRFull, m.cluster.VPNCIDR, usable(m.cluster.VPNCIDR))
	}
	if err := store.PutJSON(m.tx, keyNextIP, next+1); err != nil {
		return netip.Addr{}, err
	}
	return addr, nil
}

// update runs fn in one store transaction that bumps the revision, then
// publishes the changed records. fn reading the cache through m.lookupIP
// sees the state before the transaction.
func (r *Registry) update(fn func(m *mutation) error) error {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	r.mu.RLock()
	m := &mutation{rev: r.revision + 1, cluster: r.cluster, lookupIP: r.Peer}
	r.mu.RUnlock()
	err := r.store.Update(func(tx store.Tx) error {
		m.tx = tx
		m.changed = m.changed[:0]
		m.services = map[netip.Addr]records.Services{}
		m.sshUsers = nil
		if err := fn(m); err != nil {
			return err
		}
		return store.PutJSON(tx, keyRevision, m.rev)
	})
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if m.cluster != nil {
		c := *m.cluster
		r.cluster = &c
	}
	for _, p := range m.changed {
		r.cachePeer(p)
	}
	for ip, svcs := range m.services {
		r.services[ip] = svcs
	}
	if m.sshUsers != nil {
		r.sshUsers = *m.sshUsers
	}
	r.revision = m.rev
	close(r.changed)
	r.changed = make(chan struct{})
	return nil
}

// Init records a new cluster, its coordinator (which gets the first address
// of the VPN CIDR), its first admins (the next addresses) and its SSH users
// (checked by the caller), all in one transaction. extra runs in the same
// transaction, so the caller can persist its own state atomically with the
// registry's. It returns the coordinator's record followed by the admins'.
func (r *Registry) Init(c records.Cluster, coordinator records.Peer, admins []records.Peer, users []records.SSHUser, extra func(store.Tx) error) ([]records.Peer, error) {
	first, ok := addrAt(c.VPNCIDR, 1)
	if !ok {
		return nil, fmt.Errorf("vpn cidr %s has no usable address", c.VPNCIDR)
	}
	c.CoordinatorVPNIP = first
	coordinator.Role, coordinator.VPNIP, coordinator.State = records.RoleCoordinator, first, records.StateActive
	var out []records.Peer
	err := r.update(func(m *mutation) error {
		// Checked here, under the writer lock: a check before update
		// would let concurrent Inits all pass and overwrite each other.
		if m.cluster != nil {
			return errors.New("registry is already initialized")
		}
		out = out[:0]
		m.cluster = &c
		if err := store.PutJSON(m.tx, keyCluster, c); err != nil {
			return err
		}
		if err := store.PutJSON(m.tx, keyNextIP, uint64(2)); err != nil {
			return err
		}
		p, err := m.put(coordinator)
		if err != nil {
			return err
		}
		out = append(out, p)
		for _, a := range admins {
			if a.VPNIP, err = m.allocate(); err != nil {
				return err
			}
			a.Role, a.State = records.RoleAdmin, records.StateActive
			if p, err = m.put(a); err != nil {
				return err
			}
			out = append(out, p)
		}
		if err := m.putSSHUsers(users, nil); err != nil {
			return err
		}
		if extra != nil {
			return extra(m.tx)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("initializing registry: %w", err)
	}
	return out, nil
}

// Reserve returns the record of the node at publicEndpoint, allocating a VPN
// IP on first sight, and marks it pending under name with the WireGuard key
// it reported (so the coordinator can accept its first packets before it is
// active). A node already active gives ErrAlreadyActive with its record. A
// name used by another peer that is not failed gives ErrConflict.
//
// With replaceActive, an active node is reserved again (same VPN IP, its
// registration cleared): the node at that endpoint lost its state and asks
// to be activated afresh.
func (r *Registry) Reserve(publicEndpoint, name string, wgPubKey []byte, replaceActive bool) (records.Peer, error) {
	var out records.Peer
	err := r.update(func(m *mutation) error {
		if m.cluster == nil {
			return ErrNotInitialized
		}
		p, known := r.byEndpointLocked(publicEndpoint)
		if known && p.State == records.StateActive && !replaceActive {
			out = p
			return ErrAlreadyActive
		}
		if known && p.Role != records.RoleNode {
			return fmt.Errorf("%w: %s is the %s", ErrConflict, publicEndpoint, p.Role)
		}
		p.Registered, p.ReevePubKey, p.RegisteredAt, p.RegistrationError = false, nil, time.Time{}, ""
		if other, taken := r.activeName(name, p.VPNIP); taken {
			return fmt.Errorf("%w: name %q is already used by %s (%s)", ErrConflict, name, other.VPNIP, other.PublicEndpoint)
		}
		if !known {
			ip, err := m.allocate()
			if err != nil {
				return err
			}
			p = records.Peer{Role: records.RoleNode, VPNIP: ip, PublicEndpoint: publicEndpoint}
		}
		p.Name, p.WGPubKey, p.State, p.LastError = name, wgPubKey, records.StatePending, ""
		var err error
		out, err = m.put(p)
		return err
	})
	if err != nil && !errors.Is(err, ErrAlreadyActive) {
		return records.Peer{}, fmt.Errorf("reserving %s: %w", publicEndpoint, err)
	}
	return out, err
}

func (r *Registry) byEndpointLocked(publicEndpoint string) (records.Peer, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	ip, ok := r.byEndpoint[publicEndpoint]
	if !ok {
		return records.Peer{}, false
	}
	return r.peers[ip], true
}

// activeName finds a peer other than self that holds name and is not failed.
func (r *Registry) activeName(name string, self netip.Addr) (records.Peer, bool) {
	if name == "" {
		return records.Peer{}, false
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, p := range r.peers {
		if p.Name == name && p.VPNIP != self && p.State != records.StateFailed {
			return p, true
		}
	}
	return records.Peer{}, false
}

// Activate marks the pending node at ip active with its keys. Keys already
// held by another peer give ErrConflict (a cloned state directory).
func (r *Registry) Activate(ip netip.Addr, a records.Activated) (records.Peer, error) {
	var out records.Peer
	err := r.update(func(m *mutation) error {
		p, ok := m.lookupIP(ip)
		if !ok || p.Role != records.RoleNode {
			return fmt.Errorf("%w %s", ErrUnknownPeer, ip)
		}
		if len(a.WGPubKey) != 32 || len(a.SigningPubKey) != ed25519.PublicKeySize {
			return fmt.Errorf("node reported keys of %d and %d bytes, want 32 and %d", len(a.WGPubKey), len(a.SigningPubKey), ed25519.PublicKeySize)
		}
		if other, dup := r.sameKeys(a, ip); dup {
			return fmt.Errorf("%w: %s (%s) already has the same keys; was its state directory copied?", ErrConflict, other.Name, other.VPNIP)
		}
		p.Name, p.Horde, p.WGEndpoint = a.Name, a.Horde, a.WGEndpoint
		p.WGPubKey, p.SigningPubKey = a.WGPubKey, a.SigningPubKey
		p.State, p.LastError = records.StateActive, ""
		var err error
		out, err = m.put(p)
		return err
	})
	if err != nil {
		return records.Peer{}, fmt.Errorf("activating %s: %w", ip, err)
	}
	return out, nil
}

func (r *Registry) sameKeys(a records.Activated, self netip.Addr) (records.Peer, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, p := range r.peers {
		if p.VPNIP == self || p.State != records.StateActive {
			continue
		}
		if bytes.Equal(p.WGPubKey, a.WGPubKey) || bytes.Equal(p.SigningPubKey, a.SigningPubKey) {
			return p, true
		}
	}
	return records.Peer{}, false
}

// Fail records why the activation of the node at publicEndpoint failed,
// reserving its VPN IP if it has none yet, so a retry reuses it.
func (r *Registry) Fail(publicEndpoint, reason string) (records.Peer, error) {
	var out records.Peer
	err := r.update(func(m *mutation) error {
		if m.cluster == nil {
			return ErrNotInitialized
		}
		p, known := r.byEndpointLocked(publicEndpoint)
		if known && p.State == records.StateActive {
			return fmt.Errorf("%w: cannot mark it failed", ErrAlreadyActive)
		}
		if !known {
			ip, err := m.allocate()
			if err != nil {
				return err
			}
			p = records.Peer{Role: records.RoleNode, VPNIP: ip, PublicEndpoint: publicEndpoint}
		}
		p.State, p.LastError = records.StateFailed, reason
		var err error
		out, err = m.put(p)
		return err
	})
	if err != nil {
		return records.Peer{}, fmt.Errorf("recording failure of %s: %w", publicEndpoint, err)
	}
	return out, nil
}

// Peers returns the revision and every record, ordered by VPN IP.
func (r *Registry) Peers() (uint64, []records.Peer) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.revision, r.sortedLocked(func(records.Peer) bool { return true })
}

func (r *Registry) sortedLocked(keep func(records.Peer) bool) []records.Peer {
	var out []records.Peer
	for _, p := range r.peers {
		if keep(p) {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b records.Peer) int { return a.VPNIP.Compare(b.VPNIP) })
	return out
}

// Changes returns the current revision and the records changed after since.
// full is true when since is 0 or newer than the registry (the caller's
// view is unknown), and the records are then all of them.
func (r *Registry) Changes(since uint64) (rev uint64, full bool, changed []records.Peer) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if since == 0 || since > r.revision {
		return r.revision, true, r.sortedLocked(func(records.Peer) bool { return true })
	}
	return r.revision, false, r.sortedLocked(func(p records.Peer) bool { return p.Revision > since })
}

// Wait blocks until the revision is greater than after, or ctx ends, and
// returns the revision.
func (r *Registry) Wait(ctx context.Context, after uint64) (uint64, error) {
	for {
		r.mu.RLock()
		rev, ch := r.revision, r.changed
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

// LookupSigningKey finds the active peer holding signingPubKey.
func (r *Registry) LookupSigningKey(signingPubKey []byte) (records.Peer, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, p := range r.peers {
		if p.State == records.StateActive && bytes.Equal(p.SigningPubKey, signingPubKey) {
			return p, true
		}
	}
	return records.Peer{}, false
}

// ReportApplied records that the peer at ip has applied rev.
func (r *Registry) ReportApplied(ip netip.Addr, rev uint64, unixNow int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.applied[ip] = Applied{Revision: rev, At: unixNow}
}

// Applied returns what the peer at ip last reported.
func (r *Registry) Applied(ip netip.Addr) Applied {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.applied[ip]
}

package feed

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/fabricmesh/fabric/coordinator/registry"
	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/rules"
	"github.com/fabricmesh/fabric/internal/update"
)

// Source is the registry as the feed follows it.
type Source interface {
	Subscribe(fn func([]registry.Entry)) (registry.State, error)
	State() (registry.State, error)
}

// ErrUnknownNode is returned for a VPN IP that has no record.
var ErrUnknownNode = errors.New("unknown node")

// Feed answers nodes from the change log. It is safe for concurrent use.
type Feed struct {
	src       Source
	rules     rules.Rules
	byClient  map[string][]rules.Rule
	byService map[string][]rules.Rule
	capacity  int

	mu       sync.RWMutex
	rev      uint64
	log      []registry.Entry // the entries after first-1, in order
	first    uint64           // the revision of log[0], or rev+1 when empty
	peers    map[netip.Addr]records.Peer
	services map[netip.Addr]records.Services
	users    []records.SSHUser
	index    index
	changed  chan struct{} // closed and replaced when rev moves
}

// Options tune a feed.
type Options struct {
	// LogCapacity is how many entries the feed keeps in memory (default
	// registry.DefaultLogCapacity); a node further behind gets a full
	// snapshot.
	LogCapacity int
}

// New returns a feed following src under the cluster's rules.
func New(src Source, r rules.Rules, opts Options) (*Feed, error) {
	f := &Feed{
		rules: r, byClient: r.ByClient(), byService: r.ByService(), capacity: opts.LogCapacity,
		peers: map[netip.Addr]records.Peer{}, services: map[netip.Addr]records.Services{},
		index: newIndex(), changed: make(chan struct{}),
	}
	if f.capacity <= 0 {
		f.capacity = registry.DefaultLogCapacity
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	st, err := src.Subscribe(f.observe)
	if err != nil {
		return nil, err
	}
	f.src = src
	f.load(st)
	return f, nil
}

// load replaces the feed's state with st. f.mu is held.
func (f *Feed) load(st registry.State) {
	f.peers, f.services, f.index = map[netip.Addr]records.Peer{}, map[netip.Addr]records.Services{}, newIndex()
	f.log = nil
	f.rev, f.first = st.Revision, st.LogFirst
	for _, p := range st.Peers {
		f.peers[p.VPNIP] = p
	}
	for ip, s := range st.Services {
		f.services[ip] = s
	}
	f.users = st.Users
	for ip := range f.peers {
		f.index.put(f.memberAt(ip))
	}
	for _, e := range st.Log {
		if e.Revision >= f.first && e.Revision <= f.rev {
			f.log = append(f.log, e)
		}
	}
	if len(f.log) == 0 || f.log[0].Revision != f.first {
		// The store's log does not reach back to its first revision
		// (written before it kept one): answer from here on.
		f.log, f.first = nil, f.rev+1
	}
	f.trim()
}

// observe applies committed entries, in order.
func (f *Feed) observe(entries []registry.Entry) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, e := range entries {
		if e.Kind == registry.KindReset {
			// The registry reloaded its state: so does the feed, and
			// every node gets a full snapshot.
			st, err := f.src.State()
			if err == nil {
				f.load(st)
				f.log, f.first = nil, f.rev+1
			}
			continue
		}
		if e.Revision <= f.rev {
			continue
		}
		// The feed keeps the entry without the records after the change
		// (they are its current records); the entries are shared with
		// the other observers, so it copies what it changes.
		e.Peers = slices.Clone(e.Peers)
		for i, t := range e.Peers {
			f.index.remove(f.memberAt(t.VPNIP))
			if t.After != nil {
				f.peers[t.VPNIP] = *t.After
			}
			if t.AfterServices != nil {
				f.services[t.VPNIP] = *t.AfterServices
			} else {
				delete(f.services, t.VPNIP)
			}
			f.index.put(f.memberAt(t.VPNIP))
			e.Peers[i].After, e.Peers[i].AfterServices = nil, nil
		}
		if e.Kind == registry.KindUsers || e.Kind == registry.KindInit {
			f.users, e.Users = e.Users, nil
		}
		e.Writes = nil // followers read them from the store
		if len(f.log) == 0 {
			f.first = e.Revision
		}
		f.log = append(f.log, e)
		f.rev = e.Revision
	}
	f.trim()
	close(f.changed)
	f.changed = make(chan struct{})
}

// trim drops the oldest entries beyond the capacity.
func (f *Feed) trim() {
	if n := len(f.log) - f.capacity; n > 0 {
		f.log = append(f.log[:0:0], f.log[n:]...)
		f.first = f.log[0].Revision
	}
	if len(f.log) == 0 {
		f.first = f.rev + 1
	}
}

// memberAt is the current view member at ip, or nil.
func (f *Feed) memberAt(ip netip.Addr) *member {
	p, ok := f.peers[ip]
	if !ok {
		return nil
	}
	return memberOf(p, f.services[ip])
}

// Revision returns the feed's revision.
func (f *Feed) Revision() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.rev
}

// Next waits until the cluster revision passes after, or wait elapses,
// and returns what the node at ip must apply to go from after to the
// current revision: a full snapshot when after is 0, ahead of the feed or
// older than its log; Unchanged at after when wait elapsed first (a
// keepalive); Removed when the node was removed.
func (f *Feed) Next(ctx context.Context, ip netip.Addr, after uint64, wait time.Duration) (update.Update, error) {
	var timeout <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		timeout = t.C
	}
	for {
		f.mu.RLock()
		if after != f.rev || f.removed(ip) {
			u, err := f.answer(ip, after)
			f.mu.RUnlock()
			return u, err
		}
		ch := f.changed
		f.mu.RUnlock()
		select {
		case <-ch:
		case <-timeout:
			return update.Update{Revision: after, Kind: update.Unchanged}, nil
		case <-ctx.Done():
			return update.Update{}, ctx.Err()
		}
	}
}

func (f *Feed) removed(ip netip.Addr) bool {
	p, ok := f.peers[ip]
	return ok && p.State == records.StateRemoved
}

// Answer returns at once what Next would: the update from after to the
// current revision (Unchanged when after is current).
func (f *Feed) Answer(ip netip.Addr, after uint64) (update.Update, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.answer(ip, after)
}

// answer computes the update of ip from after. f.mu is held.
func (f *Feed) answer(ip netip.Addr, after uint64) (update.Update, error) {
	self, ok := f.peers[ip]
	switch {
	case !ok:
		return update.Update{}, fmt.Errorf("%w %s", ErrUnknownNode, ip)
	case self.State == records.StateRemoved:
		return update.Update{Revision: f.rev, Kind: update.Removed}, nil
	case after == f.rev:
		return update.Update{Revision: f.rev, Kind: update.Unchanged}, nil
	case after == 0 || after > f.rev || after+1 < f.first:
		return f.full(self), nil
	}
	return f.delta(self, after), nil
}

// full is the snapshot of self.
func (f *Feed) full(self records.Peer) update.Update {
	coordinator := self.Role == records.RoleCoordinator
	u := update.Update{Revision: f.rev, Kind: update.Full, View: update.ViewUpdate{Kind: update.ViewFull}}
	for _, p := range f.peers {
		if facing(p, coordinator) {
			u.Peers = append(u.Peers, p)
		}
	}
	sortPeers(u.Peers)
	if m := f.memberAt(self.VPNIP); m != nil {
		u.View.Full = f.fullView(m)
	}
	u.HasSSHUsers, u.SSHUsers = true, slices.Clone(f.users)
	return u
}

// delta is the update of self from after, whose entries the log holds.
func (f *Feed) delta(self records.Peer, after uint64) update.Update {
	coordinator := self.Role == records.RoleCoordinator
	u := update.Update{Revision: f.rev, Kind: update.Delta}
	me := f.memberAt(self.VPNIP)
	// The records of every peer touched since after, as they were then.
	type then struct {
		peer     *records.Peer
		services *records.Services
	}
	touched := map[netip.Addr]then{}
	var order []netip.Addr
	for _, e := range f.log[after+1-f.first:] {
		if e.Kind == registry.KindUsers || e.Kind == registry.KindInit {
			u.HasSSHUsers, u.SSHUsers = true, slices.Clone(f.users)
		}
		for _, t := range e.Peers {
			if _, seen := touched[t.VPNIP]; !seen {
				touched[t.VPNIP] = then{t.Before, t.BeforeServices}
				order = append(order, t.VPNIP)
			}
		}
	}
	fullView := false
	refresh := map[string]bool{}
	for _, ip := range order {
		was := touched[ip]
		cur := f.peers[ip]
		wasFacing := was.peer != nil && facing(*was.peer, coordinator)
		switch isFacing := facing(cur, coordinator); {
		case isFacing && (!wasFacing || !sameFacing(*was.peer, cur)):
			u.Peers = append(u.Peers, cur)
		case !isFacing && wasFacing:
			u.RemovedPeers = append(u.RemovedPeers, ip)
		}
		var before *member
		if was.peer != nil {
			var svcs records.Services
			if was.services != nil {
				svcs = *was.services
			}
			before = memberOf(*was.peer, svcs)
		}
		now := f.memberAt(ip)
		if before.equal(now) {
			continue
		}
		if ip == self.VPNIP {
			fullView = true
			continue
		}
		for _, m := range []*member{before, now} {
			if m != nil && me != nil && f.related(me, m) {
				refresh[m.node.Name] = true
			}
		}
	}
	sortPeers(u.Peers)
	sortAddrs(u.RemovedPeers)
	switch {
	case fullView && me != nil:
		u.View = update.ViewUpdate{Kind: update.ViewFull, Full: f.fullView(me)}
	case fullView:
		u.View = update.ViewUpdate{Kind: update.ViewFull}
	case len(refresh) > 0 && me != nil:
		u.View.Kind = update.ViewDelta
		for _, name := range sortedKeys(refresh) {
			u.View.Slices = append(u.View.Slices, f.slice(me, f.index.members[name], name))
		}
	}
	if u.Empty() {
		u.Kind = update.Unchanged
	}
	return u
}

// facing reports whether p is a WireGuard peer of the nodes (active) or,
// for the coordinator, also a node being activated whose key is known.
func facing(p records.Peer, coordinator bool) bool {
	return p.State == records.StateActive ||
		(coordinator && p.State == records.StatePending && len(p.WGPubKey) > 0)
}

// sameFacing reports whether the fields nodes receive are equal: what
// their WireGuard uses, and what they need to watch a coordinator.
func sameFacing(a, b records.Peer) bool {
	return a.Name == b.Name && a.Role == b.Role && a.State == b.State && a.WGEndpoint == b.WGEndpoint &&
		string(a.WGPubKey) == string(b.WGPubKey) &&
		(a.Role != records.RoleCoordinator || string(a.TLSPin) == string(b.TLSPin) && string(a.SigningPubKey) == string(b.SigningPubKey))
}

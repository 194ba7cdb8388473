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
	log      []entry // the entries after first-1, in order
	first    uint64  // the revision of log[0], or rev+1 when empty
	peers    map[netip.Addr]records.Peer
	services map[netip.Addr]records.Services
	members  map[netip.Addr]*member // the view member of each peer that has one
	users    []records.SSHUser
	index    index

	// Watchers wait to be woken by a change that concerns them: every
	// node's (or coordinator's) at once for a change of their peers,
	// those the change of a view member concerns one by one.
	waitMu      sync.Mutex
	nodesWoken  chan struct{} // closed and replaced for a change of every node's peers
	coordsWoken chan struct{} // the same for the coordinators
	waiters     map[netip.Addr]map[*waiter]struct{}

	spanMu    sync.Mutex
	spans     map[uint64]*span  // by the revision they start from
	fullPeers [2][]records.Peer // facingPeers for nodes, for coordinators
	spansRev  uint64            // the revision spans and fullPeers are of
	// spansDrop forgets the spans SpanLife after they were started: a
	// cluster that went quiet after a mass join held the last round's
	// spans, each up to every peer, for as long as it stayed quiet
	// (fabric-scale, 5,000 idle nodes: 40 MB of the 364 MB heap).
	spansDrop *time.Timer
}

// entry is a change-log entry as the feed keeps it: without the records
// after the change (they are the feed's current records, or a later
// entry's before), with the view member of each touched peer before and
// after the change, computed once for every watcher, and whom it
// concerns (see concerns).
type entry struct {
	registry.Entry
	before, after []*member // by index of Peers
	// nodes and coordinators: the change concerns every node (or
	// coordinator): their WireGuard peers or the SSH users changed.
	nodes, coordinators bool
}

// waiter is a watcher waiting for a change that concerns it.
type waiter struct{ ch chan struct{} }

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
		members: map[netip.Addr]*member{}, index: newIndex(),
		nodesWoken: make(chan struct{}), coordsWoken: make(chan struct{}), waiters: map[netip.Addr]map[*waiter]struct{}{},
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
	f.members = map[netip.Addr]*member{}
	f.log = nil
	f.rev, f.first = st.Revision, st.LogFirst
	for _, p := range st.Peers {
		f.peers[p.VPNIP] = p
	}
	for ip, s := range st.Services {
		f.services[ip] = s
	}
	f.users = st.Users
	for ip, p := range f.peers {
		if m := memberOf(p, f.services[ip]); m != nil {
			f.members[ip] = m
			f.index.put(m)
		}
	}
	for _, e := range st.Log {
		if e.Revision >= f.first && e.Revision <= f.rev {
			ke := entry{Entry: e, before: make([]*member, len(e.Peers)), after: make([]*member, len(e.Peers))}
			for i, t := range e.Peers {
				ke.before[i] = memberOfRecords(t.Before, t.BeforeServices)
				ke.after[i] = memberOfRecords(t.After, t.AfterServices)
			}
			ke.setAudience()
			f.log = append(f.log, ke)
		}
	}
	if len(f.log) == 0 || f.log[0].Revision != f.first {
		// The store's log does not reach back to its first revision
		// (written before it kept one): answer from here on.
		f.log, f.first = nil, f.rev+1
	}
	f.trim()
}

// observe applies committed entries, in order, and wakes the watchers
// they concern.
func (f *Feed) observe(entries []registry.Entry) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var wake wakeSet
	for _, e := range entries {
		if e.Kind == registry.KindReset {
			// The registry reloaded its state: so does the feed, and
			// every node gets a full snapshot.
			st, err := f.src.State()
			if err == nil {
				f.load(st)
				f.log, f.first = nil, f.rev+1
			}
			wake.nodes, wake.coordinators = true, true
			continue
		}
		if e.Revision <= f.rev {
			continue
		}
		// The feed keeps the entry without the records after the change
		// (they are its current records); the entries are shared with
		// the other observers, so it copies what it changes.
		ke := entry{Entry: e, before: make([]*member, len(e.Peers)), after: make([]*member, len(e.Peers))}
		ke.Peers = slices.Clone(e.Peers)
		ke.setAudience()
		for i, t := range e.Peers {
			ke.before[i] = f.members[t.VPNIP]
			f.index.remove(ke.before[i])
			if t.After != nil {
				f.peers[t.VPNIP] = *t.After
			}
			if t.AfterServices != nil {
				f.services[t.VPNIP] = *t.AfterServices
			} else {
				delete(f.services, t.VPNIP)
			}
			if m := f.memberAt(t.VPNIP); m != nil {
				f.members[t.VPNIP] = m
				f.index.put(m)
				ke.after[i] = m
			} else {
				delete(f.members, t.VPNIP)
			}
			ke.Peers[i].After, ke.Peers[i].AfterServices = nil, nil
		}
		if e.Kind == registry.KindUsers || e.Kind == registry.KindInit {
			f.users, ke.Users = e.Users, nil
		}
		ke.Writes = nil // followers read them from the store
		wake.add(f, &ke)
		if len(f.log) == 0 {
			f.first = e.Revision
		}
		f.log = append(f.log, ke)
		f.rev = e.Revision
	}
	f.trim()
	f.wake(wake)
}

// trim drops the oldest entries beyond the capacity, once a quarter more
// piled up (copying the log at every entry would cost its length each
// time).
func (f *Feed) trim() {
	if n := len(f.log) - f.capacity; n > f.capacity/4 {
		f.log = append(f.log[:0:0], f.log[n:]...)
		f.first = f.log[0].Revision
	}
	if len(f.log) == 0 {
		f.first = f.rev + 1
	}
}

// memberAt computes the view member at ip from its records, or nil (the
// cached one is f.members[ip]).
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
// older than its log; Removed when the node was removed. A change that
// does not concern the node does not wake it: when wait elapses first (a
// keepalive), the answer is Unchanged at the current revision if nothing
// concerned the node.
func (f *Feed) Next(ctx context.Context, ip netip.Addr, after uint64, wait time.Duration) (update.Update, error) {
	if err := f.Wait(ctx, ip, after, wait); err != nil {
		return update.Update{}, err
	}
	return f.Answer(ip, after)
}

// Wait returns when the node at ip, answered up to after, has something
// to be answered (a change that concerns it, or its removal), or when
// wait elapses (a keepalive is due; 0: no bound), or with ctx's error.
// What to send is then Answer's: Next is Wait then Answer.
func (f *Feed) Wait(ctx context.Context, ip netip.Addr, after uint64, wait time.Duration) error {
	var timeout <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		timeout = t.C
	}
	w := &waiter{}
	for {
		f.mu.RLock()
		if after != f.rev || f.removed(ip) {
			f.mu.RUnlock()
			return nil
		}
		woken := f.wait(ip, w)
		f.mu.RUnlock()
		select {
		case <-woken:
		case <-w.ch:
		case <-timeout:
			// A keepalive: Answer is at the revision up to which the
			// node misses nothing (changes that did not concern it did
			// not wake it), or has what concerned it if that landed
			// meanwhile.
			f.unwait(ip, w)
			return nil
		case <-ctx.Done():
			f.unwait(ip, w)
			return ctx.Err()
		}
		f.unwait(ip, w)
	}
}

// wait registers w as a watcher of ip and returns the channel of the
// changes that concern all watchers of its role. f.mu is read-held, so no
// change lands before the watcher is registered.
func (f *Feed) wait(ip netip.Addr, w *waiter) <-chan struct{} {
	f.waitMu.Lock()
	defer f.waitMu.Unlock()
	w.ch = make(chan struct{})
	ws := f.waiters[ip]
	if ws == nil {
		ws = map[*waiter]struct{}{}
		f.waiters[ip] = ws
	}
	ws[w] = struct{}{}
	if f.peers[ip].Role == records.RoleCoordinator {
		return f.coordsWoken
	}
	return f.nodesWoken
}

func (f *Feed) unwait(ip netip.Addr, w *waiter) {
	f.waitMu.Lock()
	defer f.waitMu.Unlock()
	ws := f.waiters[ip]
	delete(ws, w)
	if len(ws) == 0 {
		delete(f.waiters, ip)
	}
}

// wakeSet is whom committed entries concern.
type wakeSet struct {
	nodes, coordinators bool
	ips                 map[netip.Addr]bool
}

// add adds whom e concerns: every node or coordinator (see
// entry.setAudience), and for each view member it changed, the peer
// itself and every peer whose view shares a rule with the member before
// or after the change. f.mu is held, the index is the one after e.
func (ws *wakeSet) add(f *Feed, e *entry) {
	ws.nodes = ws.nodes || e.nodes
	ws.coordinators = ws.coordinators || e.coordinators
	for i, t := range e.Peers {
		before, after := e.before[i], e.after[i]
		if before == after || before.equal(after) {
			continue
		}
		if ws.ips == nil {
			ws.ips = map[netip.Addr]bool{}
		}
		ws.ips[t.VPNIP] = true
		for _, m := range []*member{before, after} {
			f.relatedTo(m, func(o *member) { ws.ips[o.node.VPNIP] = true })
		}
	}
}

// wake wakes the watchers ws names. f.mu is held.
func (f *Feed) wake(ws wakeSet) {
	f.waitMu.Lock()
	defer f.waitMu.Unlock()
	if ws.nodes {
		close(f.nodesWoken)
		f.nodesWoken = make(chan struct{})
	}
	if ws.coordinators {
		close(f.coordsWoken)
		f.coordsWoken = make(chan struct{})
	}
	for ip := range ws.ips {
		for w := range f.waiters[ip] {
			close(w.ch)
		}
		delete(f.waiters, ip)
	}
}

// Current returns the revision up to which the node at ip, having been
// answered up to after, misses nothing: the feed's revision if no later
// change concerned it, else the revision before the first that did.
func (f *Feed) Current(ip netip.Addr, after uint64) uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if after >= f.rev {
		return f.rev
	}
	if after+1 < f.first {
		return after
	}
	self, ok := f.peers[ip]
	if !ok {
		return after
	}
	if rev, ok := f.firstConcerning(self, after); ok {
		return rev - 1
	}
	return f.rev
}

// Lateness returns how long ago the first change after revision after
// that concerns the node at ip was committed (0 when none did, or the log
// no longer holds it): how late its answer from after is.
func (f *Feed) Lateness(ip netip.Addr, after uint64) time.Duration {
	f.mu.RLock()
	defer f.mu.RUnlock()
	self, ok := f.peers[ip]
	if !ok || after >= f.rev || after+1 < f.first {
		return 0
	}
	rev, ok := f.firstConcerning(self, after)
	if !ok {
		return 0
	}
	return time.Since(f.log[rev-f.first].At)
}

// firstConcerning returns the revision of the first entry after after
// that concerns self, whose entries the log holds. f.mu is read-held.
func (f *Feed) firstConcerning(self records.Peer, after uint64) (uint64, bool) {
	coordinator, me := self.Role == records.RoleCoordinator, f.members[self.VPNIP]
	for i := range f.log[after+1-f.first:] {
		e := &f.log[int(after+1-f.first)+i]
		if f.concerns(e, self.VPNIP, coordinator, me) {
			return e.Revision, true
		}
	}
	return 0, false
}

// concerns reports whether e may change the answer of the watcher at ip
// (of role coordinator, whose view member is me): it changed every
// node's (or coordinator's) peers, or a view member that is ip's own or
// shares a rule with me.
func (f *Feed) concerns(e *entry, ip netip.Addr, coordinator bool, me *member) bool {
	if (coordinator && e.coordinators) || (!coordinator && e.nodes) {
		return true
	}
	for i, t := range e.Peers {
		before, after := e.before[i], e.after[i]
		if before == after || before.equal(after) {
			continue
		}
		if t.VPNIP == ip {
			return true
		}
		if me != nil && ((before != nil && f.related(me, before)) || (after != nil && f.related(me, after))) {
			return true
		}
	}
	return false
}

// setAudience records whether e concerns every node or coordinator: the
// WireGuard peers they receive changed, or the SSH users.
func (e *entry) setAudience() {
	if e.Kind == registry.KindUsers || e.Kind == registry.KindInit {
		e.nodes, e.coordinators = true, true
	}
	for _, t := range e.Peers {
		var after records.Peer
		if t.After != nil {
			after = *t.After
		}
		for _, coordinator := range []bool{false, true} {
			wasFacing := t.Before != nil && facing(*t.Before, coordinator)
			isFacing := t.After != nil && facing(after, coordinator)
			if wasFacing != isFacing || (isFacing && !sameFacing(*t.Before, after)) {
				if coordinator {
					e.coordinators = true
				} else {
					e.nodes = true
				}
			}
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
	if _, concerned := f.firstConcerning(self, after); !concerned {
		// What no change concerned (a watcher passed over by wakes)
		// costs a look at each entry, not a span of its own.
		return update.Update{Revision: f.rev, Kind: update.Unchanged}, nil
	}
	return f.delta(self, after), nil
}

// memberOfRecords is the view member of a peer's records before or after a
// change (nil records: none).
func memberOfRecords(p *records.Peer, s *records.Services) *member {
	if p == nil {
		return nil
	}
	var svcs records.Services
	if s != nil {
		svcs = *s
	}
	return memberOf(*p, svcs)
}

// full is the snapshot of self.
func (f *Feed) full(self records.Peer) update.Update {
	coordinator := self.Role == records.RoleCoordinator
	u := update.Update{Revision: f.rev, Kind: update.Full, View: update.ViewUpdate{Kind: update.ViewFull}}
	u.Peers = f.facingPeers(coordinator)
	if m := f.members[self.VPNIP]; m != nil {
		u.View.Full = f.fullView(m)
	}
	u.HasSSHUsers, u.SSHUsers = true, slices.Clone(f.users)
	return u
}

// facingPeers returns the WireGuard peers of every node (coordinator:
// of a coordinator) at the feed's revision, by VPN IP, computed once per
// revision for every watcher that needs a full snapshot; the slice is
// shared and never modified. f.mu is read-held.
func (f *Feed) facingPeers(coordinator bool) []records.Peer {
	f.spanMu.Lock()
	defer f.spanMu.Unlock()
	f.resetSpansLocked()
	i := 0
	if coordinator {
		i = 1
	}
	if f.fullPeers[i] == nil {
		ps := make([]records.Peer, 0, len(f.peers))
		for _, p := range f.peers {
			if facing(p, coordinator) {
				ps = append(ps, p)
			}
		}
		sortPeers(ps)
		f.fullPeers[i] = ps
	}
	if len(f.fullPeers[i]) == 0 {
		return nil
	}
	return f.fullPeers[i]
}

// resetSpansLocked forgets the spans and snapshots of an older revision.
// f.spanMu is held.
func (f *Feed) resetSpansLocked() {
	if f.spansRev != f.rev || f.spans == nil {
		f.spans, f.fullPeers, f.spansRev = map[uint64]*span{}, [2][]records.Peer{}, f.rev
		if f.spansDrop == nil {
			f.spansDrop = time.AfterFunc(SpanLife, f.dropSpans)
		}
	}
}

// SpanLife is how long the feed keeps the spans and snapshot peers it
// shares between the watchers of a round (see span).
const SpanLife = 2 * time.Second

// dropSpans forgets the spans and snapshot peers.
func (f *Feed) dropSpans() {
	f.spanMu.Lock()
	defer f.spanMu.Unlock()
	f.spans, f.fullPeers, f.spansDrop = nil, [2][]records.Peer{}, nil
}

// span is what changed from revision after to the feed's revision, as
// every watcher that applied after sees it. Watchers woken by the same
// change share one (see Feed.span): the work of going through the log is
// done once per round, not once per watcher. Its slices are shared and
// never modified.
type span struct {
	nodes, coordinators peerChange
	users               bool // the SSH users changed
	members             []memberChange
}

// peerChange is the change of the WireGuard peers of a node (or of a
// coordinator, which also has the nodes being activated).
type peerChange struct {
	peers   []records.Peer // added or changed, by VPN IP
	removed []netip.Addr   // sorted
}

// memberChange is a peer whose view member changed.
type memberChange struct {
	ip          netip.Addr
	before, now *member // nil: none
}

// span returns the span from after, whose entries the log holds, computing
// it if no watcher did at this revision. f.mu is read-held.
func (f *Feed) span(after uint64) *span {
	f.spanMu.Lock()
	defer f.spanMu.Unlock()
	f.resetSpansLocked()
	if sp := f.spans[after]; sp != nil {
		return sp
	}
	sp := f.newSpan(after)
	// Watchers are mostly at a few revisions; bound the cache anyway.
	if len(f.spans) < 64 {
		f.spans[after] = sp
	}
	return sp
}

func (f *Feed) newSpan(after uint64) *span {
	sp := &span{}
	// The records of every peer touched since after, as they were then.
	type then struct {
		peer   *records.Peer
		member *member
	}
	touched := map[netip.Addr]then{}
	var order []netip.Addr
	for _, e := range f.log[after+1-f.first:] {
		if e.Kind == registry.KindUsers || e.Kind == registry.KindInit {
			sp.users = true
		}
		for i, t := range e.Peers {
			if _, seen := touched[t.VPNIP]; !seen {
				touched[t.VPNIP] = then{t.Before, e.before[i]}
				order = append(order, t.VPNIP)
			}
		}
	}
	for _, ip := range order {
		was := touched[ip]
		cur := f.peers[ip]
		for _, coordinator := range []bool{false, true} {
			pc := &sp.nodes
			if coordinator {
				pc = &sp.coordinators
			}
			wasFacing := was.peer != nil && facing(*was.peer, coordinator)
			switch isFacing := facing(cur, coordinator); {
			case isFacing && (!wasFacing || !sameFacing(*was.peer, cur)):
				pc.peers = append(pc.peers, cur)
			case !isFacing && wasFacing:
				pc.removed = append(pc.removed, ip)
			}
		}
		if now := f.members[ip]; was.member != now && !was.member.equal(now) {
			sp.members = append(sp.members, memberChange{ip: ip, before: was.member, now: now})
		}
	}
	for _, pc := range []*peerChange{&sp.nodes, &sp.coordinators} {
		sortPeers(pc.peers)
		sortAddrs(pc.removed)
	}
	return sp
}

// delta is the update of self from after, whose entries the log holds.
func (f *Feed) delta(self records.Peer, after uint64) update.Update {
	u := update.Update{Revision: f.rev, Kind: update.Delta}
	sp := f.span(after)
	pc := sp.nodes
	if self.Role == records.RoleCoordinator {
		pc = sp.coordinators
	}
	u.Peers, u.RemovedPeers = pc.peers, pc.removed
	if sp.users {
		u.HasSSHUsers, u.SSHUsers = true, slices.Clone(f.users)
	}
	me := f.members[self.VPNIP]
	fullView := false
	var refresh []string // names of the slices to send
	for _, mc := range sp.members {
		if mc.ip == self.VPNIP {
			fullView = true
			continue
		}
		for _, m := range []*member{mc.before, mc.now} {
			if m != nil && me != nil && f.related(me, m) {
				refresh = append(refresh, m.node.Name)
			}
		}
	}
	slices.Sort(refresh)
	refresh = slices.Compact(refresh)
	switch {
	case fullView && me != nil:
		u.View = update.ViewUpdate{Kind: update.ViewFull, Full: f.fullView(me)}
	case fullView:
		u.View = update.ViewUpdate{Kind: update.ViewFull}
	case len(refresh) > 0 && me != nil:
		u.View.Kind = update.ViewDelta
		for _, name := range refresh {
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

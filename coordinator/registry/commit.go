package registry

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/store"
)

// maxBatch bounds the changes committed in one store transaction.
const maxBatch = 256

// errNoChange, returned by a change function, commits nothing and is not
// an error for the caller.
var errNoChange = errors.New("no change")

// op is one change waiting to be committed.
type op struct {
	kind EntryKind
	fn   func(m *mutation) error
	done chan error
}

// mutation collects one change. Its function reads the state before the
// change through m's lookups and buffers its writes; they are applied only
// if the function returns nil, so a failed change leaves nothing behind.
type mutation struct {
	s       *state // the state before this change; not to be modified
	rev     uint64
	at      time.Time
	kind    EntryKind
	detail  string
	cluster *records.Cluster
	// initCluster is set by the change that records the cluster (Init).
	initCluster        bool
	nextIP, prevNextIP uint64
	peers              map[netip.Addr]records.Peer
	order              []netip.Addr                     // peers touched, in order
	touched            map[netip.Addr]bool              // peers touched but not put
	services           map[netip.Addr]*records.Services // nil: deleted
	liveness           map[netip.Addr]*Liveness         // nil: deleted
	users              *[]records.SSHUser               // nil: unchanged
	prevUsers          []records.SSHUser                // the users before the change
	extras             []func(store.Tx) error
}

func newMutation(s *state, kind EntryKind) *mutation {
	return &mutation{
		s: s, rev: s.rev + 1, at: time.Now().UTC(), kind: kind, cluster: s.cluster, nextIP: s.nextIP, prevNextIP: s.nextIP,
		peers: map[netip.Addr]records.Peer{}, touched: map[netip.Addr]bool{},
		services: map[netip.Addr]*records.Services{}, liveness: map[netip.Addr]*Liveness{},
	}
}

// peer returns the record of ip as this change leaves it so far.
func (m *mutation) peer(ip netip.Addr) (records.Peer, bool) {
	if p, ok := m.peers[ip]; ok {
		return p, true
	}
	p, ok := m.s.peers[ip]
	return p, ok
}

// put stamps p with the change's revision and buffers it.
func (m *mutation) put(p records.Peer) records.Peer {
	p.Revision = m.rev
	if _, ok := m.peers[p.VPNIP]; !ok {
		m.order = append(m.order, p.VPNIP)
	}
	m.peers[p.VPNIP] = p
	delete(m.touched, p.VPNIP)
	return p
}

// touch lists the known peer ip as touched by the change without changing
// its record.
func (m *mutation) touch(ip netip.Addr) {
	if _, ok := m.peers[ip]; ok {
		return
	}
	if p, known := m.s.peers[ip]; known {
		m.order = append(m.order, ip)
		m.peers[ip] = p
		m.touched[ip] = true
	}
}

// setServices buffers the service records of ip (nil deletes them).
func (m *mutation) setServices(ip netip.Addr, s *records.Services) {
	if s != nil {
		c := *s
		c.Revision = m.rev
		s = &c
	}
	m.services[ip] = s
	m.touch(ip)
}

// allocate hands out the next never-used VPN IP.
func (m *mutation) allocate() (netip.Addr, error) {
	addr, ok := addrAt(m.cluster.VPNCIDR, m.nextIP)
	if !ok {
		return netip.Addr{}, fmt.Errorf("%w: %s has %d usable addresses and all have been allocated (addresses are never reused)",
			ErrCIDRFull, m.cluster.VPNCIDR, usable(m.cluster.VPNCIDR))
	}
	m.nextIP++
	return addr, nil
}

// entry is the change-log entry of the change.
func (m *mutation) entry() (Entry, error) {
	writes, err := m.writes()
	if err != nil {
		return Entry{}, err
	}
	e := Entry{Revision: m.rev, At: m.at, Kind: m.kind, Detail: m.detail, Writes: writes}
	if m.users != nil {
		e.Users = slices.Clone(*m.users)
	}
	for _, ip := range m.order {
		t := Touched{VPNIP: ip, Name: m.peers[ip].Name}
		if before, ok := m.s.peers[ip]; ok {
			t.Before = &before
		}
		if sv, ok := m.s.services[ip]; ok {
			t.BeforeServices = &sv
		}
		after := m.peers[ip]
		t.After = &after
		if sv, ok := m.services[ip]; ok {
			t.AfterServices = sv
		} else if sv, ok := m.s.services[ip]; ok {
			t.AfterServices = &sv
		}
		e.Peers = append(e.Peers, t)
	}
	return e, nil
}

// apply makes the change in s.
func (m *mutation) apply(s *state) {
	if m.initCluster {
		c := *m.cluster
		s.cluster = &c
	}
	s.rev, s.nextIP = m.rev, m.nextIP
	for _, ip := range m.order {
		s.putPeer(m.peers[ip])
	}
	for ip, sv := range m.services {
		if sv == nil {
			delete(s.services, ip)
		} else {
			s.services[ip] = *sv
		}
	}
	for ip, l := range m.liveness {
		if l == nil {
			delete(s.liveness, ip)
		} else {
			s.liveness[ip] = *l
		}
	}
	if m.users != nil {
		s.users, s.usersRev = slices.Clone(*m.users), m.rev
	}
}

// writes lists the keys the change writes (not the log entry nor the
// revision). It runs before apply makes the change in m.s.
func (m *mutation) writes() ([]Write, error) {
	var out []Write
	add := func(key string, v any) error {
		w, err := put(key, v)
		out = append(out, w)
		return err
	}
	if m.initCluster {
		if err := add(keyCluster, m.cluster); err != nil {
			return nil, err
		}
	}
	if m.nextIP != m.prevNextIP {
		if err := add(keyNextIP, m.nextIP); err != nil {
			return nil, err
		}
	}
	for _, ip := range m.order {
		if m.touched[ip] {
			continue
		}
		if err := add(prefixPeers+ip.String(), m.peers[ip]); err != nil {
			return nil, err
		}
	}
	for _, ip := range sortedAddrs(m.services) {
		if sv := m.services[ip]; sv == nil {
			out = append(out, Write{Key: prefixSvcs + ip.String(), Deleted: true})
		} else if err := add(prefixSvcs+ip.String(), sv); err != nil {
			return nil, err
		}
	}
	for _, ip := range sortedAddrs(m.liveness) {
		if l := m.liveness[ip]; l == nil {
			out = append(out, Write{Key: prefixLive + ip.String(), Deleted: true})
		} else if err := add(prefixLive+ip.String(), l); err != nil {
			return nil, err
		}
	}
	if m.users != nil {
		ws, err := m.userWrites()
		if err != nil {
			return nil, err
		}
		out = append(out, ws...)
	}
	return out, nil
}

// write stores the change and its log entry in tx.
func (m *mutation) write(tx store.Tx, e Entry) error {
	for _, w := range e.Writes {
		var err error
		if w.Deleted {
			err = tx.Delete(w.Key)
		} else {
			err = tx.Put(w.Key, w.Value)
		}
		if err != nil {
			return err
		}
	}
	for _, extra := range m.extras {
		if err := extra(tx); err != nil {
			return err
		}
	}
	if err := putEntry(tx, e); err != nil {
		return err
	}
	return store.PutJSON(tx, keyRevision, m.rev)
}

func sortedAddrs[V any](m map[netip.Addr]V) []netip.Addr {
	out := make([]netip.Addr, 0, len(m))
	for ip := range m {
		out = append(out, ip)
	}
	slices.SortFunc(out, func(a, b netip.Addr) int { return a.Compare(b) })
	return out
}

// update commits one change made by fn and returns fn's error (nil when fn
// changed nothing). Changes arriving while another commit runs are
// committed together by the goroutine already committing: one store
// transaction, one revision and one log entry per change.
func (r *Registry) update(kind EntryKind, fn func(m *mutation) error) error {
	o := &op{kind: kind, fn: fn, done: make(chan error, 1)}
	r.qmu.Lock()
	r.pending = append(r.pending, o)
	if r.committing {
		r.qmu.Unlock()
		return <-o.done
	}
	r.committing = true
	r.qmu.Unlock()
	for {
		r.qmu.Lock()
		n := min(len(r.pending), maxBatch)
		batch := r.pending[:n:n]
		r.pending = r.pending[n:]
		if n == 0 {
			r.committing = false
			r.qmu.Unlock()
			break
		}
		r.qmu.Unlock()
		r.commit(batch)
	}
	return <-o.done
}

// done is a change of a batch that its function accepted.
type done struct {
	o     *op
	m     *mutation
	entry Entry
}

// errBehind aborts a commit whose registry is behind the store: another
// coordinator committed since. The registry catches up and tries again.
var errBehind = errors.New("the store holds revisions this registry has not applied")

// maxAttempts bounds the retries of a batch that keeps losing to other
// coordinators' commits.
const maxAttempts = 20

// commit runs a batch of changes against the writers' state and commits
// those that succeeded in one transaction. The transaction commits only if
// the store's revision is still the one the changes were checked against;
// otherwise the registry catches up with what others committed and runs
// the batch again. A batch too large for one transaction of the store is
// split in two.
func (r *Registry) commit(batch []*op) {
	var err error
	for attempt := 1; ; attempt++ {
		var ok []done
		var refused []error
		ok, refused, err = r.tryCommit(batch)
		if errors.Is(err, store.ErrTooLarge) && len(batch) > 1 {
			// More than the store takes in one transaction (etcd's
			// limits): commit each half on its own.
			r.commit(batch[:len(batch)/2])
			r.commit(batch[len(batch)/2:])
			return
		}
		if !errors.Is(err, errBehind) || attempt == maxAttempts {
			for i, o := range batch {
				if refused[i] != nil || !slices.ContainsFunc(ok, func(d done) bool { return d.o == o }) {
					o.done <- refused[i]
				}
			}
			for _, d := range ok {
				d.o.done <- err
			}
			return
		}
		if cerr := r.CatchUp(); cerr != nil {
			err = cerr
		}
	}
}

// tryCommit makes the batch's changes, each against the state the one
// before it left, and commits the accepted ones. refused[i] is the error of
// batch[i]'s own function (nil when accepted or when it changed nothing).
func (r *Registry) tryCommit(batch []*op) (ok []done, refused []error, err error) {
	r.mu.RLock()
	if r.work.rev != r.committed.rev {
		r.work = r.committed.clone() // changes of other coordinators were applied
	}
	base := r.committed.rev
	r.mu.RUnlock()
	refused = make([]error, len(batch))
	for i, o := range batch {
		m := newMutation(r.work, o.kind)
		if err := o.fn(m); err != nil {
			if !errors.Is(err, errNoChange) {
				refused[i] = err
			}
			continue
		}
		e, err := m.entry()
		if err != nil {
			refused[i] = err
			continue
		}
		m.apply(r.work)
		ok = append(ok, done{o, m, e})
	}
	if len(ok) == 0 {
		return nil, refused, nil
	}
	var first uint64
	err = r.store.Update(func(tx store.Tx) error {
		var stored uint64
		if err := store.GetJSON(tx, keyRevision, &stored); err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if stored != base {
			return errBehind
		}
		for _, d := range ok {
			if err := d.m.write(tx, d.entry); err != nil {
				return err
			}
		}
		var err error
		first, err = compact(tx, base, r.work.rev, r.logCapacity)
		return err
	})
	if err != nil {
		// Nothing was committed: the writers' state goes back to the
		// committed one.
		r.mu.RLock()
		r.work = r.committed.clone()
		r.mu.RUnlock()
		return ok, refused, err
	}
	entries := make([]Entry, len(ok))
	r.pubMu.Lock()
	defer r.pubMu.Unlock()
	r.mu.Lock()
	for i, d := range ok {
		d.m.apply(r.committed)
		entries[i] = d.entry
	}
	r.logFirst = first
	r.publishLocked(entries)
	return ok, refused, nil
}

// publishLocked wakes the waiters and passes entries to the observers; it
// unlocks r.mu.
func (r *Registry) publishLocked(entries []Entry) {
	close(r.changed)
	r.changed = make(chan struct{})
	observers := r.observers
	r.mu.Unlock()
	for _, fn := range observers {
		fn(entries)
	}
}

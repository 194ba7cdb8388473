package registry

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/store"
)

// The change log: every committed change is one entry, keyed by its
// revision, written in the same transaction as the change:
//
//	registry/log/<revision, 20 digits>  the entry (JSON)
//	registry/log/first                  the oldest revision still kept
//
// Entries hold the records of the peers they touched as they were before
// the change, so that a reader holding an older revision can tell what it
// must drop. The newest Options.LogCapacity entries are kept.
const (
	prefixLog   = "registry/log/"
	keyLogFirst = "registry/log/first"
)

// EntryKind says what a change was.
type EntryKind string

// Kinds of change-log entries.
const (
	KindInit         EntryKind = "init"         // the cluster, its coordinator and admins
	KindReserved     EntryKind = "reserved"     // a node's activation started (pending)
	KindActivated    EntryKind = "activated"    // a node became active
	KindFailed       EntryKind = "failed"       // a node's activation failed
	KindRegistered   EntryKind = "registered"   // a node's reeve completed the registration handshake
	KindUnregistered EntryKind = "unregistered" // a registration attempt failed
	KindServices     EntryKind = "services"     // a node's service endpoints or clients changed
	KindEndpoint     EntryKind = "endpoint"     // a peer's WireGuard endpoint changed
	KindRemoved      EntryKind = "removed"      // a peer was removed
	KindOnline       EntryKind = "online"       // a peer came online
	KindOffline      EntryKind = "offline"      // a peer went offline
	KindUsers        EntryKind = "users"        // the SSH users changed
)

// Entry is one committed change.
type Entry struct {
	Revision uint64    `json:"revision"`
	At       time.Time `json:"at"`
	Kind     EntryKind `json:"kind"`
	// Peers are the peers the change touched.
	Peers []Touched `json:"peers,omitempty"`
	// Detail says more for an operator (a failure's reason, say).
	Detail string `json:"detail,omitempty"`
	// Writes are the keys the change wrote: another coordinator following
	// the log makes the change in its memory from them.
	Writes []Write `json:"writes,omitempty"`
	// Users, in the entries given to observers, are the SSH users after a
	// change of them (not stored: they follow from the writes).
	Users []records.SSHUser `json:"-"`
}

// Touched is a peer a change touched: its records before the change (nil
// when it had none) and, in the entries given to observers, after it.
type Touched struct {
	VPNIP netip.Addr `json:"vpnIP"`
	// Name is the peer's name after the change.
	Name           string            `json:"name,omitempty"`
	Before         *records.Peer     `json:"before,omitempty"`
	BeforeServices *records.Services `json:"beforeServices,omitempty"`
	// After and AfterServices are not stored: they are the records as of
	// the entry's revision, known to observers when it is committed.
	After         *records.Peer     `json:"-"`
	AfterServices *records.Services `json:"-"`
}

func logKey(rev uint64) string { return fmt.Sprintf("%s%020d", prefixLog, rev) }

func putEntry(tx store.Tx, e Entry) error {
	return store.PutJSON(tx, logKey(e.Revision), e)
}

// loadLogFirst reads the oldest revision the log holds. A store written
// before the log existed holds none: its first is past its revision.
func loadLogFirst(tx store.Tx) (uint64, error) {
	var first uint64
	err := store.GetJSON(tx, keyLogFirst, &first)
	if errors.Is(err, store.ErrNotFound) {
		var rev uint64
		if err := store.GetJSON(tx, keyRevision, &rev); err != nil && !errors.Is(err, store.ErrNotFound) {
			return 0, err
		}
		return rev + 1, nil
	}
	return first, err
}

// compact deletes the entries older than the newest capacity ones, in the
// transaction that committed revisions base+1..rev, and returns the new
// first revision. It reads the first revision the store holds in tx, not
// a registry's copy: coordinators sharing the store compact in turn, each
// in the transaction of its commit.
func compact(tx store.Tx, base, rev uint64, capacity int) (uint64, error) {
	var first uint64
	err := store.GetJSON(tx, keyLogFirst, &first)
	switch {
	case errors.Is(err, store.ErrNotFound):
		first = base + 1 // a store written before the log existed, or a new one
	case err != nil:
		return 0, err
	}
	if first == 0 {
		first = 1
	}
	keep := first
	if rev >= uint64(capacity) {
		keep = max(first, rev-uint64(capacity)+1)
	}
	for r := first; r < keep; r++ {
		if err := tx.Delete(logKey(r)); err != nil {
			return 0, err
		}
	}
	if err := store.PutJSON(tx, keyLogFirst, keep); err != nil {
		return 0, err
	}
	return keep, nil
}

// LogFirst returns the oldest revision the change log still holds; a
// reader that applied a revision before LogFirst-1 needs a full snapshot.
func (r *Registry) LogFirst() uint64 {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.logFirst
}

// ReadLog calls fn with every entry after revision since, in order, as
// stored (without After records), and returns the revision read up to.
// It fails with ErrCompacted when entries after since were compacted.
func (r *Registry) ReadLog(since uint64, fn func(Entry) error) (uint64, error) {
	_, last, err := r.readLog(since, fn)
	return last, err
}

// readLog is ReadLog that also returns the first revision the log holds.
func (r *Registry) readLog(since uint64, fn func(Entry) error) (first, last uint64, err error) {
	err = r.store.View(func(tx store.Tx) error {
		var err error
		if first, err = loadLogFirst(tx); err != nil {
			return err
		}
		if err := store.GetJSON(tx, keyRevision, &last); err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if since+1 < first && since < last {
			return fmt.Errorf("%w: the log starts at revision %d", ErrCompacted, first)
		}
		// One read per entry after since: the cost is what is new, not
		// the length of the log.
		for rev := max(since+1, first); rev <= last; rev++ {
			var e Entry
			if err := store.GetJSON(tx, logKey(rev), &e); err != nil {
				return fmt.Errorf("reading revision %d of the change log: %w", rev, err)
			}
			if err := fn(e); err != nil {
				return err
			}
		}
		return nil
	})
	return first, last, err
}

// ErrCompacted says that the change log no longer holds the entries asked
// for.
var ErrCompacted = errors.New("change log compacted")

// State is the registry's state at one revision, for an observer that
// starts from it: every record (removed ones included), every node's
// service records, and the change log the store holds.
type State struct {
	Revision uint64
	Peers    []records.Peer
	Services map[netip.Addr]records.Services
	// Users are the SSH users, sorted by name.
	Users []records.SSHUser
	// Log holds the entries from LogFirst up to Revision, in order, with
	// their After records as observers get them (see withAfter).
	Log      []Entry
	LogFirst uint64
}

// Subscribe registers fn like Observe and returns the state fn's first
// call follows on from: no commit is missed or seen twice.
func (r *Registry) Subscribe(fn func([]Entry)) (State, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st, err := r.stateLocked()
	if err != nil {
		return State{}, err
	}
	r.observers = append(r.observers, fn)
	return st, nil
}

// State returns the registry's state; an observer given a KindReset entry
// rebuilds from it (it is the state as of that entry).
func (r *Registry) State() (State, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.stateLocked()
}

func (r *Registry) stateLocked() (State, error) {
	s := r.committed
	st := State{Revision: s.rev, LogFirst: r.logFirst, Services: make(map[netip.Addr]records.Services, len(s.services)),
		Users: slices.Clone(s.users)}
	for _, p := range s.peers {
		st.Peers = append(st.Peers, p)
	}
	for ip, sv := range s.services {
		st.Services[ip] = sv
	}
	err := r.store.View(func(tx store.Tx) error {
		return tx.Scan(prefixLog, func(key string, value []byte) error {
			rev, err := strconv.ParseUint(key[len(prefixLog):], 10, 64)
			if err != nil || rev < st.LogFirst || rev > st.Revision {
				return nil // registry/log/first, or not yet committed here
			}
			var e Entry
			if err := store.DecodeJSON(key, value, &e); err != nil {
				return err
			}
			st.Log = append(st.Log, e)
			return nil
		})
	})
	if err != nil {
		return State{}, fmt.Errorf("reading the change log: %w", err)
	}
	withAfter(st.Log, s)
	return st, nil
}

// withAfter sets the After records of entries read from the store, which
// holds only the Before ones: a peer's records after an entry are its
// Before in the next entry that touched it, else its records in s (the
// state as of the last entry). Without them, an entry that made a peer
// active looks like no change of any node's peers.
func withAfter(log []Entry, s *state) {
	later := map[netip.Addr]Touched{} // the next entry's Touched of each peer
	for i := len(log) - 1; i >= 0; i-- {
		for j := range log[i].Peers {
			t := &log[i].Peers[j]
			if next, ok := later[t.VPNIP]; ok {
				t.After, t.AfterServices = next.Before, next.BeforeServices
			} else {
				if p, ok := s.peers[t.VPNIP]; ok {
					t.After = &p
				}
				if sv, ok := s.services[t.VPNIP]; ok {
					t.AfterServices = &sv
				}
			}
			later[t.VPNIP] = *t
		}
	}
}

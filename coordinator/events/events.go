// Package events turns the registry's change log into events for an
// operator (fabric events), and fans live events out to followers: every
// committed change, and the revisions peers report they applied, which are
// not in the log.
package events

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/fabricmesh/fabric/coordinator/registry"
)

// Event is one change of the cluster, or a peer's report of the revision
// it applied (kind Applied).
type Event struct {
	Revision uint64
	At       time.Time
	Kind     string
	Node     string
	VPNIP    netip.Addr
	Detail   string
}

// Kinds of events.
const (
	ClusterCreated     = "cluster-created"
	Activating         = "activating"
	Activated          = "activated"
	Failed             = "failed"
	Registered         = "registered"
	RegistrationFailed = "registration-failed"
	Services           = "services"
	Endpoint           = "endpoint"
	Removed            = "removed"
	Online             = "online"
	Offline            = "offline"
	Users              = "users"
	Applied            = "applied"
)

var kinds = map[registry.EntryKind]string{
	registry.KindInit: ClusterCreated, registry.KindReserved: Activating, registry.KindActivated: Activated,
	registry.KindFailed: Failed, registry.KindRegistered: Registered, registry.KindUnregistered: RegistrationFailed,
	registry.KindServices: Services, registry.KindEndpoint: Endpoint, registry.KindRemoved: Removed,
	registry.KindOnline: Online, registry.KindOffline: Offline, registry.KindUsers: Users,
}

// FromEntry describes a change-log entry: one event per peer it touched,
// but one for the creation of the cluster (the coordinator's).
func FromEntry(e registry.Entry) []Event {
	kind, ok := kinds[e.Kind]
	if !ok {
		kind = string(e.Kind)
	}
	var out []Event
	for _, t := range e.Peers {
		name := t.Name
		if name == "" && t.Before != nil {
			name = t.Before.Name
		}
		out = append(out, Event{Revision: e.Revision, At: e.At, Kind: kind, Node: name, VPNIP: t.VPNIP, Detail: e.Detail})
		if e.Kind == registry.KindInit {
			break
		}
	}
	if len(out) == 0 {
		out = append(out, Event{Revision: e.Revision, At: e.At, Kind: kind, Detail: e.Detail})
	}
	return out
}

// Hub fans live events out. It is safe for concurrent use.
type Hub struct {
	mu   sync.Mutex
	subs map[chan Event]struct{}
}

// NewHub returns a hub without followers.
func NewHub() *Hub { return &Hub{subs: map[chan Event]struct{}{}} }

// Publish sends evs to every follower. A follower whose buffer is full is
// dropped (its channel closed): it lost events and must resume from the
// last revision it saw.
func (h *Hub) Publish(evs ...Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.subs {
		for _, e := range evs {
			select {
			case ch <- e:
			default:
				delete(h.subs, ch)
				close(ch)
			}
			if _, still := h.subs[ch]; !still {
				break
			}
		}
	}
}

// Entries publishes the events of committed entries (a registry observer).
func (h *Hub) Entries(entries []registry.Entry) {
	var evs []Event
	for _, e := range entries {
		evs = append(evs, FromEntry(e)...)
	}
	h.Publish(evs...)
}

// Follow subscribes to live events with a buffer of n; stop unsubscribes.
// The channel is closed when the follower fell behind.
func (h *Hub) Follow(n int) (events <-chan Event, stop func()) {
	ch := make(chan Event, n)
	h.mu.Lock()
	h.subs[ch] = struct{}{}
	h.mu.Unlock()
	return ch, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		if _, ok := h.subs[ch]; ok {
			delete(h.subs, ch)
			close(ch)
		}
	}
}

// Log is the registry's change log.
type Log interface {
	ReadLog(since uint64, fn func(registry.Entry) error) (uint64, error)
	// LogFirst is the oldest revision the log still holds.
	LogFirst() uint64
}

// ErrBehind says a follower fell behind the live events.
var ErrBehind = errors.New("fell behind the live events")

// Stream calls fn with the events of every entry of log after since (0:
// from the oldest entry the log holds), then, with follow, with every live
// event until ctx ends: the changes as they are committed, and the
// revisions peers report they applied. It fails with registry.ErrCompacted
// when the log no longer reaches back to since, and with ErrBehind when fn
// is too slow for the live events.
func (h *Hub) Stream(ctx context.Context, log Log, since uint64, follow bool, fn func(Event) error) error {
	var live <-chan Event
	if follow {
		var stop func()
		live, stop = h.Follow(1 << 14)
		defer stop()
	}
	past, err := readPast(log, since)
	if err != nil {
		return err
	}
	last := since
	for _, e := range past {
		for _, ev := range FromEntry(e) {
			if err := fn(ev); err != nil {
				return err
			}
		}
		last = e.Revision
	}
	if !follow {
		return nil
	}
	replayed := last
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-live:
			if !ok {
				return fmt.Errorf("%w after revision %d", ErrBehind, last)
			}
			if ev.Kind != Applied {
				if ev.Revision <= replayed {
					continue // already read from the log
				}
				last = ev.Revision
			}
			if err := fn(ev); err != nil {
				return err
			}
		}
	}
}

// readPast reads the entries of log after since; since 0 reads from the
// oldest entry the log holds, even as it compacts meanwhile.
func readPast(log Log, since uint64) ([]registry.Entry, error) {
	for attempt := 0; ; attempt++ {
		from := since
		if since == 0 {
			from = max(log.LogFirst(), 1) - 1
		}
		var past []registry.Entry
		_, err := log.ReadLog(from, func(e registry.Entry) error {
			past = append(past, e)
			return nil
		})
		if since == 0 && errors.Is(err, registry.ErrCompacted) && attempt < 3 {
			continue // compacted between LogFirst and ReadLog
		}
		return past, err
	}
}

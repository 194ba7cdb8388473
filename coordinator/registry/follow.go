package registry

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/fabricmesh/fabric/internal/store"
)

// KindReset is no change of the cluster: given to observers when the
// registry had to reload its whole state (it fell behind the store's log
// by more than the log holds); they must rebuild theirs (State).
const KindReset EntryKind = "reset"

// CatchUp applies the changes that other coordinators sharing the store
// committed since this registry's revision, in order, and passes them to
// the observers like its own. A registry behind the log's horizon reloads
// its state and tells the observers so (KindReset).
func (r *Registry) CatchUp() error {
	r.pubMu.Lock()
	defer r.pubMu.Unlock()
	var entries []Entry
	first, _, err := r.readLog(r.Revision(), func(e Entry) error {
		entries = append(entries, e)
		return nil
	})
	if errors.Is(err, ErrCompacted) {
		return r.reloadLocked()
	}
	if err != nil {
		return fmt.Errorf("catching up with the store: %w", err)
	}
	r.mu.Lock()
	r.logFirst = max(r.logFirst, first) // the others compact too
	r.mu.Unlock()
	return r.applyLocked(entries)
}

// applyLocked applies entries committed elsewhere. r.pubMu is held.
func (r *Registry) applyLocked(entries []Entry) error {
	r.mu.Lock()
	var applied []Entry
	for _, e := range entries {
		if e.Revision <= r.committed.rev {
			continue
		}
		if e.Revision != r.committed.rev+1 {
			r.mu.Unlock()
			return fmt.Errorf("the change log jumps from revision %d to %d", r.committed.rev, e.Revision)
		}
		if err := r.committed.applyWrites(e.Revision, e.Writes); err != nil {
			r.mu.Unlock()
			return fmt.Errorf("applying revision %d of the change log: %w", e.Revision, err)
		}
		for i, t := range e.Peers {
			p := r.committed.peers[t.VPNIP]
			e.Peers[i].After = &p
			if sv, ok := r.committed.services[t.VPNIP]; ok {
				e.Peers[i].AfterServices = &sv
			}
		}
		if e.Kind == KindUsers || e.Kind == KindInit {
			e.Users = slices.Clone(r.committed.users)
		}
		applied = append(applied, e)
	}
	if len(applied) == 0 {
		r.mu.Unlock()
		return nil
	}
	r.publishLocked(applied)
	return nil
}

// reloadLocked replaces the state with the store's. r.pubMu is held.
func (r *Registry) reloadLocked() error {
	s := newState()
	var first uint64
	err := r.store.View(func(tx store.Tx) error {
		if err := s.loadAll(tx); err != nil {
			return err
		}
		var err error
		first, err = loadLogFirst(tx)
		return err
	})
	if err != nil {
		return fmt.Errorf("reloading the registry: %w", err)
	}
	r.mu.Lock()
	r.committed, r.logFirst = s, first
	r.publishLocked([]Entry{{Revision: s.rev, Kind: KindReset}})
	return nil
}

// Follow keeps the registry caught up with the changes other coordinators
// commit to a shared store, until ctx ends: it watches the change log from
// its revision (the store's WatchPrefix) and applies each entry as it
// commits; on a store that cannot watch it catches up every interval.
// Errors (the store unreachable, a watch that fell behind) go to onErr
// and the registry catches up again after interval.
func (r *Registry) Follow(ctx context.Context, interval time.Duration, onErr func(error)) {
	if onErr == nil {
		onErr = func(error) {}
	}
	w, watches := r.store.(store.Watcher)
	for ctx.Err() == nil {
		if err := r.CatchUp(); err != nil {
			onErr(err)
		} else if watches {
			if err := r.followWatch(ctx, w); err != nil && ctx.Err() == nil {
				onErr(err)
			}
		}
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
}

// followWatch applies the log entries the store's watch sends until it
// ends.
func (r *Registry) followWatch(ctx context.Context, w store.Watcher) error {
	watch, err := w.WatchPrefix(ctx, prefixLog, logKey(r.Revision()+1))
	if err != nil {
		return fmt.Errorf("watching the change log: %w", err)
	}
	for kv := range watch.C() {
		if _, err := strconv.ParseUint(kv.Key[len(prefixLog):], 10, 64); err != nil {
			continue // registry/log/first
		}
		var e Entry
		if err := store.DecodeJSON(kv.Key, kv.Value, &e); err != nil {
			return err
		}
		r.pubMu.Lock()
		err := r.applyLocked([]Entry{e})
		r.pubMu.Unlock()
		if err != nil {
			return err // a gap: catch up from the store
		}
	}
	if err := watch.Err(); err != nil {
		return fmt.Errorf("watching the change log: %w", err)
	}
	return nil
}

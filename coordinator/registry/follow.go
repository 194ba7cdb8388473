package registry

import (
	"context"
	"errors"
	"fmt"
	"slices"
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
	_, err := r.ReadLog(r.Revision(), func(e Entry) error {
		entries = append(entries, e)
		return nil
	})
	if errors.Is(err, ErrCompacted) {
		return r.reloadLocked()
	}
	if err != nil {
		return fmt.Errorf("catching up with the store: %w", err)
	}
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
// commit to a shared store, until ctx ends: it catches up every interval
// (a store that can watch its keys will wake it at once; see CatchUp).
func (r *Registry) Follow(ctx context.Context, interval time.Duration, onErr func(error)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := r.CatchUp(); err != nil && onErr != nil {
			onErr(err)
		}
	}
}

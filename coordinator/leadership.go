package coordinator

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/fabricmesh/fabric/internal/store"
)

// leadershipRetry is the wait before campaigning again after a failure.
const leadershipRetry = time.Second

// Leadership keeps a coordinator campaigning, in the shared store's
// election Name, for a job one coordinator of the cluster does at a time
// (liveness expiry). A job done under it must still be safe when two
// coordinators do it at once for a moment (see store.Elector): the
// leadership saves the others the work, the registry's transactions keep
// it correct.
type Leadership struct {
	Elector store.Elector
	// Name is the election's; Value says who campaigns (the
	// coordinator's name).
	Name, Value string
	Logger      *slog.Logger

	leading atomic.Bool
}

// Leading reports whether this coordinator leads now.
func (l *Leadership) Leading() bool { return l.leading.Load() }

// Run campaigns until ctx ends: it leads until it loses the leadership,
// then campaigns again.
func (l *Leadership) Run(ctx context.Context) {
	log := l.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("election", l.Name)
	for ctx.Err() == nil {
		lead, resign, err := l.Elector.Campaign(ctx, l.Name, l.Value)
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("campaigning for the leadership; retrying", "err", err)
				t := time.NewTimer(leadershipRetry)
				select {
				case <-ctx.Done():
				case <-t.C:
				}
				t.Stop()
			}
			continue
		}
		l.leading.Store(true)
		log.Info("leading")
		<-lead.Done()
		l.leading.Store(false)
		resign()
		if ctx.Err() == nil {
			log.Warn("lost the leadership; campaigning again")
		}
	}
}

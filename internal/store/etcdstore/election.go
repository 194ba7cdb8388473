package etcdstore

import (
	"context"
	"fmt"

	"github.com/fabricmesh/fabric/internal/store"
	"go.etcd.io/etcd/client/v3/concurrency"
)

var _ store.Elector = (*Store)(nil)

// electionPrefix is where the elections' keys live, under the store's
// prefix but outside its keys (which never start with a NUL byte).
const electionPrefix = "\x00elections/"

// Campaign implements store.Elector with etcd's concurrency.Election on a
// session of its own, whose lease lives Options.ElectionTTL after the
// last keepalive etcd received: a leader that dies or is cut off from
// etcd loses the leadership within that time, and a client that cannot
// keep its session alive learns that it lost it. resign revokes the
// session's lease, so that another client leads at once.
func (s *Store) Campaign(ctx context.Context, name, value string) (context.Context, func(), error) {
	if s.closed.Load() {
		return nil, nil, store.ErrStoreClosed
	}
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(s.ctx, cancel) // Close ends the session
	sess, err := concurrency.NewSession(s.client, concurrency.WithTTL(s.electionTTL), concurrency.WithContext(ctx))
	if err != nil {
		stop()
		cancel()
		return nil, nil, s.failure("starting an etcd session", err)
	}
	end := func() {
		sess.Orphan()
		rctx, rcancel := context.WithTimeout(context.Background(), s.timeout)
		defer rcancel()
		if _, err := s.client.Revoke(rctx, sess.Lease()); err != nil && !s.closed.Load() {
			s.log.Debug("revoking the election's lease; it expires on its own", "election", name, "err", err)
		}
		stop()
		cancel()
	}
	e := concurrency.NewElection(sess, s.prefix+electionPrefix+name)
	if err := e.Campaign(ctx, value); err != nil {
		end()
		return nil, nil, s.failure(fmt.Sprintf("campaigning in etcd election %s", name), err)
	}
	lead, lost := context.WithCancel(ctx)
	go func() {
		select {
		case <-sess.Done():
		case <-lead.Done():
		}
		lost()
	}()
	return lead, func() { lost(); end() }, nil
}

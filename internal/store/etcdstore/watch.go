package etcdstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/fabricmesh/fabric/internal/store"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// WatchPrefix implements store.Watcher: the keys it starts from are read
// at one revision, and an etcd watch from the next revision follows them.
func (s *Store) WatchPrefix(ctx context.Context, prefix, fromKey string) (*store.Watch, error) {
	if s.closed.Load() {
		return nil, store.ErrStoreClosed
	}
	from, end := s.prefix+max(prefix, fromKey), clientv3.GetPrefixRangeEnd(s.prefix+prefix)
	initial, rev, err := s.readRange(from, end)
	if err != nil {
		return nil, s.failure(fmt.Sprintf("watching %s in etcd", prefix), err)
	}
	w := store.NewWatch(ctx, initial, 0)
	if from >= end {
		return w, nil // no key can be at or after fromKey and under prefix
	}
	// A member that loses its leader ends the watch rather than going
	// silent; the reader starts again, likely on another member.
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	events := s.client.Watch(wctx, from, clientv3.WithRange(end), clientv3.WithRev(rev+1))
	go func() {
		defer cancel()
		for {
			select {
			case <-w.Done():
				return
			case resp, ok := <-events:
				if err := resp.Err(); !ok || err != nil || resp.Canceled {
					if ctx.Err() != nil {
						// The caller ended the watch: etcd's channel may
						// close before w sees ctx end; Err is ctx's.
						w.Fail(ctx.Err())
						return
					}
					if err == nil {
						err = errors.New("the etcd watch ended")
					}
					w.Fail(s.failure(fmt.Sprintf("watching %s in etcd", prefix), err))
					return
				}
				var kvs []store.KV
				for _, ev := range resp.Events {
					if ev.Type == mvccpb.PUT {
						kvs = append(kvs, store.KV{Key: string(ev.Kv.Key[len(s.prefix):]), Value: ev.Kv.Value})
					}
				}
				if len(kvs) > 0 && !w.Push(kvs...) {
					return
				}
			}
		}
	}()
	return w, nil
}

// readRange reads every key in [from, end) at one revision and returns
// them (without the store's prefix) with the revision.
func (s *Store) readRange(from, end string) ([]store.KV, int64, error) {
	ctx, cancel := s.opContext()
	defer cancel()
	var kvs []store.KV
	var rev int64
	err := s.rangePages(ctx, from, end, 0, func(resp *clientv3.GetResponse) error {
		rev = resp.Header.Revision
		for _, kv := range resp.Kvs {
			kvs = append(kvs, store.KV{Key: string(kv.Key[len(s.prefix):]), Value: kv.Value})
		}
		return nil
	})
	return kvs, rev, err
}

// rangePages reads the keys in [from, end) a page at a time, at revision
// rev (0: the latest, then that of the first page), and calls page with
// each answer until it fails.
func (s *Store) rangePages(ctx context.Context, from, end string, rev int64, page func(*clientv3.GetResponse) error) error {
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(scanPage)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := s.client.Get(ctx, from, opts...)
		if err != nil {
			return errRead{err}
		}
		rev = resp.Header.Revision
		if err := page(resp); err != nil {
			return err
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// errRead marks an error of etcd (not of a Scan's function) in rangePages.
type errRead struct{ err error }

func (e errRead) Error() string { return e.err.Error() }
func (e errRead) Unwrap() error { return e.err }

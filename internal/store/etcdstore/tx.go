package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/fabricmesh/fabric/internal/store"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// etcdTx is one run of a View's or an Update's function. Its reads are at
// one etcd revision (rev, set by the first); an Update's reads are
// recorded for the commit's comparisons and its writes buffered.
type etcdTx struct {
	s        *Store
	ctx      context.Context
	writable bool
	closed   bool
	rev      int64 // 0 until the first read
	err      error // the first read that failed

	gets    map[string]getResult // keys read by Get, at rev
	scanned map[string]int64     // mod revisions of the keys scans saw (Update only)
	ranges  []string             // prefixes scanned (Update only)
	pending map[string]pendingWrite
}

type getResult struct {
	value   []byte
	modRev  int64 // 0: absent
	present bool
}

type pendingWrite struct {
	value   []byte
	deleted bool
}

func newTx(s *Store, ctx context.Context, writable bool) *etcdTx {
	tx := &etcdTx{s: s, ctx: ctx, writable: writable, gets: map[string]getResult{}}
	if writable {
		tx.scanned, tx.pending = map[string]int64{}, map[string]pendingWrite{}
	}
	return tx
}

// run runs fn and closes the transaction, even if fn panics.
func (tx *etcdTx) run(fn func(store.Tx) error) error {
	defer func() { tx.closed = true }()
	return fn(tx)
}

func (tx *etcdTx) check(key string, write bool) error {
	switch {
	case tx.closed:
		return store.ErrTxClosed
	case write && !tx.writable:
		return fmt.Errorf("key %s: %w", key, store.ErrReadOnly)
	}
	return store.CheckKey(key)
}

// readOpts fixes the revision of every read after the first.
func (tx *etcdTx) readOpts(opts ...clientv3.OpOption) []clientv3.OpOption {
	if tx.rev != 0 {
		opts = append(opts, clientv3.WithRev(tx.rev))
	}
	return opts
}

func (tx *etcdTx) read(rev int64) {
	if tx.rev == 0 {
		tx.rev = rev
	}
}

func (tx *etcdTx) fail(what string, err error) error {
	if tx.err == nil {
		tx.err = err
	}
	return fmt.Errorf("%s in etcd: %w", what, err)
}

func (tx *etcdTx) Get(key string) ([]byte, error) {
	if err := tx.check(key, false); err != nil {
		return nil, err
	}
	if w, ok := tx.pending[key]; ok {
		if w.deleted {
			return nil, store.NotFound(key)
		}
		return store.Clone(w.value), nil
	}
	r, ok := tx.gets[key]
	if !ok {
		if tx.err != nil {
			return nil, fmt.Errorf("reading %s: %w", key, tx.err)
		}
		resp, err := tx.s.client.Get(tx.ctx, tx.s.prefix+key, tx.readOpts()...)
		if err != nil {
			return nil, tx.fail("reading "+key, err)
		}
		tx.read(resp.Header.Revision)
		if len(resp.Kvs) > 0 {
			r = getResult{value: resp.Kvs[0].Value, modRev: resp.Kvs[0].ModRevision, present: true}
		}
		tx.gets[key] = r
	}
	if !r.present {
		return nil, store.NotFound(key)
	}
	return store.Clone(r.value), nil
}

func (tx *etcdTx) Put(key string, value []byte) error {
	if err := tx.check(key, true); err != nil {
		return err
	}
	tx.pending[key] = pendingWrite{value: store.Clone(value)}
	return nil
}

func (tx *etcdTx) Delete(key string) error {
	if err := tx.check(key, true); err != nil {
		return err
	}
	tx.pending[key] = pendingWrite{deleted: true}
	return nil
}

// Scan reads the prefix from etcd a page at a time, at the transaction's
// revision, and merges the transaction's own writes into it.
func (tx *etcdTx) Scan(prefix string, fn func(key string, value []byte) error) error {
	if tx.closed {
		return store.ErrTxClosed
	}
	if tx.err != nil {
		return fmt.Errorf("scanning %s: %w", prefix, tx.err)
	}
	// The keys only this transaction wrote are visited between the
	// committed ones, in order.
	var mine []string
	for k := range tx.pending {
		if strings.HasPrefix(k, prefix) {
			mine = append(mine, k)
		}
	}
	slices.Sort(mine)
	visitMine := func(before string, last bool) error {
		for len(mine) > 0 && (last || mine[0] <= before) {
			k := mine[0]
			mine = mine[1:]
			if k == before {
				break // committed too: visited as such
			}
			if w, ok := tx.pending[k]; ok && !w.deleted {
				if err := fn(k, store.Clone(w.value)); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if tx.writable {
		tx.ranges = append(tx.ranges, prefix)
	}
	from, end := tx.s.prefix+prefix, clientv3.GetPrefixRangeEnd(tx.s.prefix+prefix)
	err := tx.s.rangePages(tx.ctx, from, end, tx.rev, func(resp *clientv3.GetResponse) error {
		tx.read(resp.Header.Revision)
		for _, kv := range resp.Kvs {
			key := string(kv.Key[len(tx.s.prefix):])
			if tx.writable {
				tx.scanned[key] = kv.ModRevision
			}
			if err := visitMine(key, false); err != nil {
				return err
			}
			value := kv.Value
			if w, ok := tx.pending[key]; ok {
				if w.deleted {
					continue
				}
				value = store.Clone(w.value)
			}
			if err := fn(key, value); err != nil {
				return err
			}
		}
		return nil
	})
	var readErr errRead
	if errors.As(err, &readErr) {
		return tx.fail("scanning "+prefix, readErr.err)
	}
	if err != nil {
		return err
	}
	return visitMine("", true)
}

// commit writes the buffered writes in one etcd transaction that holds
// only if nothing the transaction read has changed: every key read has
// the mod revision it had (0 for a key read as absent), and no key under
// a scanned prefix was written after the transaction's revision. It
// returns false, having written nothing, when a comparison failed.
func (tx *etcdTx) commit() (bool, error) {
	if len(tx.pending) == 0 {
		return true, nil // read-only: its reads were one consistent snapshot
	}
	var cmps []clientv3.Cmp
	for key, r := range tx.gets {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(tx.s.prefix+key), "=", r.modRev))
	}
	for key, modRev := range tx.scanned {
		if _, ok := tx.gets[key]; !ok {
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(tx.s.prefix+key), "=", modRev))
		}
	}
	slices.Sort(tx.ranges)
	for _, prefix := range slices.Compact(tx.ranges) {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(tx.s.prefix+prefix), "<", tx.rev+1).WithPrefix())
	}
	keys := make([]string, 0, len(tx.pending))
	for k := range tx.pending {
		keys = append(keys, k)
	}
	// In key order, so that a watch sees the keys of one commit in order.
	slices.Sort(keys)
	ops := make([]clientv3.Op, len(keys))
	for i, k := range keys {
		if w := tx.pending[k]; w.deleted {
			ops[i] = clientv3.OpDelete(tx.s.prefix + k)
		} else {
			ops[i] = clientv3.OpPut(tx.s.prefix+k, string(w.value))
		}
	}
	resp, err := tx.s.client.Txn(tx.ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return false, fmt.Errorf("a transaction of %d comparisons and %d writes: %w", len(cmps), len(ops), err)
	}
	return resp.Succeeded, nil
}

package store

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// Mem is an in-memory Store for unit tests. It has Bolt's transaction
// semantics: a View sees the snapshot committed when it started, Updates are
// serialized, and an Update's writes become visible only when it commits.
type Mem struct {
	writer  sync.Mutex                        // serializes Updates
	data    atomic.Pointer[map[string][]byte] // committed snapshot, never modified
	closed  atomic.Bool
	watches LocalWatches
}

var _ WatchStore = (*Mem)(nil)

// NewMem returns an empty in-memory store.
func NewMem() *Mem {
	m := &Mem{}
	m.data.Store(&map[string][]byte{})
	return m
}

// View implements Store.
func (m *Mem) View(fn func(Tx) error) error {
	if m.closed.Load() {
		return ErrStoreClosed
	}
	tx := &memTx{base: *m.data.Load()}
	defer func() { tx.closed = true }()
	return fn(tx)
}

// Update implements Store.
func (m *Mem) Update(fn func(Tx) error) error {
	m.writer.Lock()
	defer m.writer.Unlock()
	if m.closed.Load() {
		return ErrStoreClosed
	}
	tx := &memTx{base: *m.data.Load(), writable: true, pending: map[string]pendingWrite{}}
	defer func() { tx.closed = true }()
	if err := fn(tx); err != nil {
		return err
	}
	m.data.Store(tx.commit())
	if m.watches.Any() {
		puts := map[string][]byte{}
		for k, w := range tx.pending {
			if !w.deleted {
				puts[k] = w.value
			}
		}
		m.watches.Publish(puts)
	}
	return nil
}

// WatchPrefix implements Watcher.
func (m *Mem) WatchPrefix(ctx context.Context, prefix, fromKey string) (*Watch, error) {
	m.writer.Lock()
	defer m.writer.Unlock()
	if m.closed.Load() {
		return nil, ErrStoreClosed
	}
	data := *m.data.Load()
	var initial []KV
	for k, v := range data {
		if InWatch(prefix, fromKey, k) {
			initial = append(initial, KV{Key: k, Value: Clone(v)})
		}
	}
	slices.SortFunc(initial, func(a, b KV) int { return strings.Compare(a.Key, b.Key) })
	return m.watches.Add(ctx, prefix, fromKey, initial)
}

// Close implements Store. Later transactions fail and watches end.
func (m *Mem) Close() error {
	m.closed.Store(true)
	m.watches.Close()
	return nil
}

type pendingWrite struct {
	value   []byte
	deleted bool
}

// memTx reads base overlaid with its own pending writes.
type memTx struct {
	base     map[string][]byte
	pending  map[string]pendingWrite
	writable bool
	closed   bool
}

func (tx *memTx) check(key string, write bool) error {
	switch {
	case tx.closed:
		return ErrTxClosed
	case write && !tx.writable:
		return fmt.Errorf("key %s: %w", key, ErrReadOnly)
	}
	return CheckKey(key)
}

// lookup returns the value of key as this transaction sees it (not a copy).
func (tx *memTx) lookup(key string) ([]byte, bool) {
	if w, ok := tx.pending[key]; ok {
		return w.value, !w.deleted
	}
	v, ok := tx.base[key]
	return v, ok
}

func (tx *memTx) Get(key string) ([]byte, error) {
	if err := tx.check(key, false); err != nil {
		return nil, err
	}
	v, ok := tx.lookup(key)
	if !ok {
		return nil, NotFound(key)
	}
	return Clone(v), nil
}

func (tx *memTx) Put(key string, value []byte) error {
	if err := tx.check(key, true); err != nil {
		return err
	}
	tx.pending[key] = pendingWrite{value: Clone(value)}
	return nil
}

func (tx *memTx) Delete(key string) error {
	if err := tx.check(key, true); err != nil {
		return err
	}
	tx.pending[key] = pendingWrite{deleted: true}
	return nil
}

func (tx *memTx) Scan(prefix string, fn func(key string, value []byte) error) error {
	if tx.closed {
		return ErrTxClosed
	}
	for _, key := range tx.keys(prefix) {
		v, ok := tx.lookup(key)
		if !ok {
			continue // deleted by fn earlier in this scan
		}
		// A copy, so fn cannot change the store through it.
		if err := fn(key, Clone(v)); err != nil {
			return err
		}
	}
	return nil
}

// keys returns the sorted keys with prefix, from base and pending writes
// (including deleted ones, which Scan skips).
func (tx *memTx) keys(prefix string) []string {
	var keys []string
	for k := range tx.base {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	for k := range tx.pending {
		if _, inBase := tx.base[k]; !inBase && strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}

// commit returns a new snapshot: base with the pending writes applied.
func (tx *memTx) commit() *map[string][]byte {
	data := make(map[string][]byte, len(tx.base)+len(tx.pending))
	for k, v := range tx.base {
		data[k] = v
	}
	for k, w := range tx.pending {
		if w.deleted {
			delete(data, k)
		} else {
			data[k] = w.value
		}
	}
	return &data
}

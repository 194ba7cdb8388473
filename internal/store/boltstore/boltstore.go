package boltstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/fabricmesh/fabric/internal/store"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// DefaultOpenTimeout is how long Open waits for the file lock when
// Options.OpenTimeout is zero.
const DefaultOpenTimeout = 2 * time.Second

// bucketName is the one bucket holding every key.
var bucketName = []byte("fabric")

// ErrLocked is matched (errors.Is) by the error Open returns when another
// process holds the store file open.
var ErrLocked = errors.New("state store is locked by another process")

// Options configures Open.
type Options struct {
	// OpenTimeout bounds the wait for the file lock held by another
	// process (for example a second fabricd on the same state directory).
	// Zero means DefaultOpenTimeout.
	OpenTimeout time.Duration
}

// Bolt is a Store in a bbolt file.
type Bolt struct {
	db *bolt.DB
	// writer serializes Updates with the start of watches, so that a
	// watch's first keys and the commits it is fed follow each other.
	writer  sync.Mutex
	watches store.LocalWatches
}

var _ store.WatchStore = (*Bolt)(nil)

// Open opens or creates the bbolt file at path (mode 0600 when created).
// Its directory must exist. If another process has the file open, Open
// gives up after opts.OpenTimeout with an error matching ErrLocked.
func Open(path string, opts Options) (*Bolt, error) {
	timeout := opts.OpenTimeout
	if timeout <= 0 {
		timeout = DefaultOpenTimeout
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, &lockedError{path: path, waited: timeout}
	}
	if err != nil {
		return nil, fmt.Errorf("opening state store %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketName)
		return err
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("opening state store %s: creating bucket: %w", path, err)
	}
	return &Bolt{db: db}, nil
}

// Path returns the path of the store file.
func (b *Bolt) Path() string { return b.db.Path() }

// View implements Store.
func (b *Bolt) View(fn func(store.Tx) error) error {
	return b.db.View(func(btx *bolt.Tx) error {
		return runTx(&boltTx{bucket: btx.Bucket(bucketName)}, fn)
	})
}

// Update implements Store.
func (b *Bolt) Update(fn func(store.Tx) error) error {
	b.writer.Lock()
	defer b.writer.Unlock()
	var puts map[string][]byte
	if b.watches.Any() {
		puts = map[string][]byte{}
	}
	err := b.db.Update(func(btx *bolt.Tx) error {
		return runTx(&boltTx{bucket: btx.Bucket(bucketName), writable: true, puts: puts}, fn)
	})
	if err == nil {
		b.watches.Publish(puts)
	}
	return err
}

// WatchPrefix implements store.Watcher.
func (b *Bolt) WatchPrefix(ctx context.Context, prefix, fromKey string) (*store.Watch, error) {
	b.writer.Lock()
	defer b.writer.Unlock()
	var initial []store.KV
	err := b.db.View(func(btx *bolt.Tx) error {
		c := btx.Bucket(bucketName).Cursor()
		for k, v := c.Seek([]byte(max(prefix, fromKey))); k != nil && bytes.HasPrefix(k, []byte(prefix)); k, v = c.Next() {
			initial = append(initial, store.KV{Key: string(k), Value: store.Clone(v)})
		}
		return nil
	})
	if errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
		return nil, store.ErrStoreClosed
	}
	if err != nil {
		return nil, fmt.Errorf("watching %s in %s: %w", prefix, b.db.Path(), err)
	}
	return b.watches.Add(ctx, prefix, fromKey, initial)
}

// Close implements Store. Watches end with store.ErrStoreClosed.
func (b *Bolt) Close() error {
	b.watches.Close()
	if err := b.db.Close(); err != nil {
		return fmt.Errorf("closing state store %s: %w", b.db.Path(), err)
	}
	return nil
}

// runTx runs fn and marks tx closed afterwards, even if fn panics, so a
// transaction that escapes fn fails cleanly instead of touching unmapped
// memory.
func runTx(tx *boltTx, fn func(store.Tx) error) error {
	defer func() { tx.closed = true }()
	return fn(tx)
}

type lockedError struct {
	path   string
	waited time.Duration
}

func (e *lockedError) Error() string {
	return fmt.Sprintf("state store %s is locked by another process (gave up after %s)", e.path, e.waited)
}

func (e *lockedError) Is(target error) bool { return target == ErrLocked }

// boltTx adapts a bbolt transaction's bucket to Tx.
type boltTx struct {
	bucket   *bolt.Bucket
	writable bool
	closed   bool
	puts     map[string][]byte // if not nil, collects the keys put, for watches
}

func (tx *boltTx) check(key string, write bool) error {
	switch {
	case tx.closed:
		return store.ErrTxClosed
	case write && !tx.writable:
		return fmt.Errorf("key %s: %w", key, store.ErrReadOnly)
	}
	return store.CheckKey(key)
}

func (tx *boltTx) Get(key string) ([]byte, error) {
	if err := tx.check(key, false); err != nil {
		return nil, err
	}
	// A cursor tells a missing key from an empty value, which
	// Bucket.Get does not.
	k, v := tx.bucket.Cursor().Seek([]byte(key))
	if k == nil || string(k) != key {
		return nil, store.NotFound(key)
	}
	return store.Clone(v), nil
}

func (tx *boltTx) Put(key string, value []byte) error {
	if err := tx.check(key, true); err != nil {
		return err
	}
	// bbolt keeps a reference to value until commit; the caller may reuse it.
	value = store.Clone(value)
	if err := tx.bucket.Put([]byte(key), value); err != nil {
		return fmt.Errorf("putting %s: %w", key, err)
	}
	if tx.puts != nil {
		tx.puts[key] = value
	}
	return nil
}

func (tx *boltTx) Delete(key string) error {
	if err := tx.check(key, true); err != nil {
		return err
	}
	if err := tx.bucket.Delete([]byte(key)); err != nil {
		return fmt.Errorf("deleting %s: %w", key, err)
	}
	delete(tx.puts, key)
	return nil
}

func (tx *boltTx) Scan(prefix string, fn func(key string, value []byte) error) error {
	if tx.closed {
		return store.ErrTxClosed
	}
	p := []byte(prefix)
	c := tx.bucket.Cursor()
	for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); {
		key := string(k)
		if err := fn(key, v); err != nil {
			return err
		}
		// fn may have written to the bucket, which invalidates the
		// cursor; find the next key afresh.
		k, v = c.Seek([]byte(key))
		if k != nil && string(k) == key {
			k, v = c.Next()
		}
	}
	return nil
}

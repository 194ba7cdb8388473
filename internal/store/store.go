package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
)

var (
	// ErrNotFound is wrapped (with the key) by Tx.Get for a missing key.
	ErrNotFound = errors.New("not found")
	// ErrReadOnly is returned by Put and Delete inside View.
	ErrReadOnly = errors.New("write in a read-only transaction")
	// ErrEmptyKey is returned for an empty key.
	ErrEmptyKey = errors.New("empty key")

	// ErrTooLarge is matched by the error of an Update the store refused,
	// committing nothing, because it writes or compares more keys or
	// bytes than one transaction may (etcd's --max-txn-ops and
	// --max-request-bytes). Smaller transactions may succeed.
	ErrTooLarge = errors.New("transaction too large for the store")

	ErrTxClosed    = errors.New("transaction used after its function returned")
	ErrStoreClosed = errors.New("store is closed")

	// ErrWatchBehind ends a Watch whose reader fell more than
	// WatchQueueLimit keys behind the commits it follows. The reader
	// starts a new watch from the key after the last one it received.
	ErrWatchBehind = errors.New("watcher fell behind the store's commits")
)

// Tx is a transaction. It is valid only while the function given to View or
// Update runs, and only in that function's goroutine.
type Tx interface {
	// Get returns a copy of the value of key, or an error wrapping
	// ErrNotFound if there is none.
	Get(key string) ([]byte, error)
	// Put sets key to value. The store keeps its own copy of value.
	Put(key string, value []byte) error
	// Delete removes key. Deleting a missing key is not an error.
	Delete(key string) error
	// Scan calls fn for every key with the given prefix, in byte order of
	// the keys, and stops at fn's first error, which it returns. The value
	// passed to fn is valid only during that call of fn: copy it to keep
	// it. fn may Put or Delete in the same transaction (for example delete
	// the keys it visits); whether keys it adds after the current one are
	// visited is unspecified.
	Scan(prefix string, fn func(key string, value []byte) error) error
}

// Store is a transactional key/value store.
type Store interface {
	// View runs fn in a read-only transaction that sees a consistent
	// snapshot. Views may run concurrently with each other and with an
	// Update.
	View(fn func(Tx) error) error
	// Update runs fn in a read-write transaction. Updates are
	// serializable: their outcome is that of running them one at a time.
	// The writes are committed only if fn returns nil; if fn returns an
	// error or panics, every write of the transaction is discarded (a
	// panic is then re-raised). Update returns fn's error unchanged, or
	// the store's error if the store failed (the transaction is then not
	// committed, or, for a commit whose answer was lost, its outcome is
	// unknown; the error says which).
	//
	// fn may run more than once. A store whose transactions are
	// optimistic (etcdstore) runs it again in a fresh transaction when
	// another writer committed a change to what it read, so fn must
	// compute its writes only from what it reads in tx (and from values
	// that do not change between its runs) and do nothing else that must
	// happen once. boltstore and Mem serialize Updates and run fn
	// exactly once.
	Update(fn func(Tx) error) error
	// Close releases the store. Transactions must not be running.
	Close() error
}

// KV is a committed key and its value.
type KV struct {
	Key   string
	Value []byte
}

// Watcher is a store whose commits can be followed. Every Store of this
// module implements it; a consumer that needs it declares so (WatchStore).
type Watcher interface {
	// WatchPrefix follows the keys under prefix at or after fromKey:
	// first those already committed, in key order, then every key put by
	// a later commit as it commits (the keys of one commit in key order,
	// commits in commit order), with no gap and none twice between the
	// two. A key put again is sent again; deletions are not sent. The
	// watch ends when ctx ends, when its reader falls WatchQueueLimit
	// keys behind (ErrWatchBehind), or when the store fails or closes:
	// Watch.C is then closed and Watch.Err says why.
	WatchPrefix(ctx context.Context, prefix, fromKey string) (*Watch, error)
}

// WatchStore is a Store whose commits can be followed.
type WatchStore interface {
	Store
	Watcher
}

// Elector is a store whose clients can elect one of them for a job that
// one client at a time does (etcdstore: etcd's concurrency.Election). A
// store without it has one client, which does the job itself.
type Elector interface {
	// Campaign blocks until this client leads the election name (value
	// says who it is), or until ctx ends. The context it returns ends
	// when the leadership is lost (this client could not keep it alive,
	// the store closed) or ctx ends; resign gives the leadership up at
	// once and must be called in the end. Leadership is a fact of the
	// store's clock: for a moment after one client lost it another may
	// lead too, so a leader's writes must still be safe when they race.
	Campaign(ctx context.Context, name, value string) (lead context.Context, resign func(), err error)
}

// GetJSON reads key and decodes its JSON value into v.
func GetJSON(tx Tx, key string, v any) error {
	b, err := tx.Get(key)
	if err != nil {
		return err
	}
	return DecodeJSON(key, b, v)
}

// DecodeJSON decodes the JSON value of key (as read by Get or Scan) into v.
func DecodeJSON(key string, value []byte, v any) error {
	if err := json.Unmarshal(value, v); err != nil {
		return fmt.Errorf("decoding %s: %w", key, err)
	}
	return nil
}

// PutJSON encodes v as JSON and stores it at key.
func PutJSON(tx Tx, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encoding %s: %w", key, err)
	}
	return tx.Put(key, b)
}

// CheckKey rejects an empty key; implementations call it on every access.
func CheckKey(key string) error {
	if key == "" {
		return ErrEmptyKey
	}
	return nil
}

// NotFound is the error Get returns for a missing key.
func NotFound(key string) error {
	return fmt.Errorf("key %s: %w", key, ErrNotFound)
}

// Clone copies b; the result is never nil, so an empty value reads back as
// an empty (not nil) slice in every implementation.
func Clone(b []byte) []byte {
	return append([]byte{}, b...)
}

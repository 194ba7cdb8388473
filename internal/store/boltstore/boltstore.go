package boltstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"sync"
	"sync/atomic"
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

// Errors of Open and of transactions, matched with errors.Is.
var (
	// ErrLocked: another process holds the store file open.
	ErrLocked = errors.New("state store is locked by another process")
	// ErrLooseMode: the file (or something else than a regular file is
	// at the path) may be read by group or others; it holds private keys.
	ErrLooseMode = errors.New("state store is accessible by group or others")
	// ErrEmpty: the file exists but is empty. bbolt would make it a new,
	// empty store, which would silently make a peer that had a role a
	// fresh one.
	ErrEmpty = errors.New("state store file is empty")
	// ErrDamaged: the file is damaged: a page is not what it should be.
	// bbolt finds it when it opens the file, when Open checks every page,
	// or (by panicking, which the store recovers) in a transaction; from
	// then on every transaction fails with it.
	ErrDamaged = errors.New("state store is damaged")
)

// Options configures Open.
type Options struct {
	// OpenTimeout bounds the wait for the file lock held by another
	// process (for example a second fabricd on the same state directory).
	// Zero means DefaultOpenTimeout.
	OpenTimeout time.Duration
}

// Bolt is a Store in a bbolt file.
type Bolt struct {
	db      *bolt.DB
	damaged atomic.Pointer[error] // set once a transaction met a damaged page
	// writer serializes Updates with the start of watches, so that a
	// watch's first keys and the commits it is fed follow each other.
	writer  sync.Mutex
	watches store.LocalWatches
}

var _ store.WatchStore = (*Bolt)(nil)

// Open opens or creates the bbolt file at path (mode 0600 when created).
// Its directory must exist. It refuses a file that group or others may
// access (ErrLooseMode) and an empty one (ErrEmpty), and checks every page
// of the file (ErrDamaged). If another process has the file open, Open
// gives up after opts.OpenTimeout with an error matching ErrLocked.
func Open(path string, opts Options) (*Bolt, error) {
	if err := checkFile(path); err != nil {
		return nil, err
	}
	timeout := opts.OpenTimeout
	if timeout <= 0 {
		timeout = DefaultOpenTimeout
	}
	db, err := openBolt(path, timeout)
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, &lockedError{path: path, waited: timeout}
	}
	if err != nil {
		return nil, fmt.Errorf("opening state store %s: %w", path, err)
	}
	b := &Bolt{db: db}
	if err := b.check(); err != nil {
		_ = db.Close()
		return nil, err
	}
	err = b.db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketName)
		return err
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("opening state store %s: creating bucket: %w", path, err)
	}
	return b, nil
}

// checkFile refuses an existing path that is not a private, non-empty
// regular file.
func checkFile(path string) error {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("opening state store: %w", err)
	case !fi.Mode().IsRegular():
		return fmt.Errorf("%w: %s is not a regular file (%s)", ErrLooseMode, path, fi.Mode().Type())
	case fi.Mode().Perm()&0o077 != 0:
		return fmt.Errorf("%w: %s has mode %04o; it holds private keys and must not be accessible by group or others (chmod 600 %s)",
			ErrLooseMode, path, fi.Mode().Perm(), path)
	case fi.Size() == 0:
		return fmt.Errorf("%w: %s has 0 bytes: whatever it held is lost", ErrEmpty, path)
	}
	return nil
}

// openBolt is bolt.Open, with a damaged file's panic (bbolt panics on a
// damaged freelist page) turned into an error.
func openBolt(path string, timeout time.Duration) (db *bolt.DB, err error) {
	defer func() {
		if r := recover(); r != nil {
			db, err = nil, fmt.Errorf("%w: %v", ErrDamaged, r)
		}
	}()
	return bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout})
}

// check reads every page of the file (bbolt's consistency check), so that
// a damaged file is refused when it is opened rather than when a later
// transaction meets the damage.
func (b *Bolt) check() (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("opening state store %s: %w: %v", b.db.Path(), ErrDamaged, r)
		}
	}()
	var problems []string
	err = b.db.View(func(tx *bolt.Tx) error {
		for e := range tx.Check() {
			if len(problems) < 3 {
				problems = append(problems, e.Error())
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("opening state store %s: %w", b.db.Path(), err)
	}
	if len(problems) > 0 {
		return fmt.Errorf("opening state store %s: %w: %s", b.db.Path(), ErrDamaged, strings.Join(problems, "; "))
	}
	return nil
}

// Path returns the path of the store file.
func (b *Bolt) Path() string { return b.db.Path() }

// View implements Store.
func (b *Bolt) View(fn func(store.Tx) error) error {
	return b.run(&boltTx{}, fn)
}

// Update implements Store.
func (b *Bolt) Update(fn func(store.Tx) error) error {
	b.writer.Lock()
	defer b.writer.Unlock()
	tx := &boltTx{writable: true}
	if b.watches.Any() {
		tx.puts = map[string][]byte{}
	}
	err := b.run(tx, fn)
	if err == nil {
		b.watches.Publish(tx.puts)
	}
	return err
}

// run runs fn in a bbolt transaction, through tx (its bucket set here). A
// panic of bbolt (a damaged page) is recovered into an error matching
// ErrDamaged, which every later transaction returns at once; a panic of fn
// itself goes on, after bbolt has rolled the transaction back.
func (b *Bolt) run(tx *boltTx, fn func(store.Tx) error) (err error) {
	if dmg := b.damaged.Load(); dmg != nil {
		return *dmg
	}
	var fnPanic *callerPanic
	defer func() {
		if fnPanic != nil {
			panic(fnPanic.value)
		}
	}()
	defer b.recoverDamage(&err)
	txFn := func(btx *bolt.Tx) error {
		if tx.bucket = btx.Bucket(bucketName); tx.bucket == nil {
			return fmt.Errorf("%w: it has no bucket %q", ErrDamaged, bucketName)
		}
		return runTx(tx, fn, &fnPanic)
	}
	if tx.writable {
		return b.db.Update(txFn)
	}
	return b.db.View(txFn)
}

// recoverDamage turns a panic of bbolt into the store's damage error.
func (b *Bolt) recoverDamage(err *error) {
	switch r := recover(); {
	case r != nil:
		b.setDamaged(fmt.Errorf("%w: %v", ErrDamaged, r))
	case errors.Is(*err, ErrDamaged):
		b.setDamaged(*err)
	default:
		return
	}
	*err = *b.damaged.Load()
}

func (b *Bolt) setDamaged(err error) {
	err = fmt.Errorf("state store %s: %w", b.db.Path(), err)
	b.damaged.CompareAndSwap(nil, &err)
}

// callerPanic carries a panic of a transaction's fn past bbolt (which
// rolls back), to be raised again once the transaction is over.
type callerPanic struct{ value any }

// errCallerPanic ends a transaction whose fn panicked.
var errCallerPanic = errors.New("the transaction's function panicked")

// WatchPrefix implements store.Watcher.
func (b *Bolt) WatchPrefix(ctx context.Context, prefix, fromKey string) (*store.Watch, error) {
	b.writer.Lock()
	defer b.writer.Unlock()
	var initial []store.KV
	err := b.run(&boltTx{}, func(stx store.Tx) error {
		tx := stx.(*boltTx)
		return tx.bbolt(func() {
			c := tx.bucket.Cursor()
			for k, v := c.Seek([]byte(max(prefix, fromKey))); k != nil && bytes.HasPrefix(k, []byte(prefix)); k, v = c.Next() {
				initial = append(initial, store.KV{Key: string(k), Value: store.Clone(v)})
			}
		})
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
// memory. A panic of fn is kept in *p and ends the transaction with an
// error; one of bbolt inside tx's methods is the damage it met.
func runTx(tx *boltTx, fn func(store.Tx) error, p **callerPanic) (err error) {
	defer func() {
		tx.closed = true
		if r := recover(); r != nil {
			*p, err = &callerPanic{value: r}, errCallerPanic
		}
		if tx.damage != nil {
			err = tx.damage
		}
	}()
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
	damage   error             // a panic of bbolt in one of the methods: the transaction fails with it
}

// bbolt runs op, a call into bbolt, and turns its panic (a damaged page)
// into an error that also fails the transaction.
func (tx *boltTx) bbolt(op func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", ErrDamaged, r)
			if tx.damage == nil {
				tx.damage = err
			}
		}
	}()
	op()
	return nil
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
	var k, v []byte
	if err := tx.bbolt(func() { k, v = tx.bucket.Cursor().Seek([]byte(key)) }); err != nil {
		return nil, err
	}
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
	var err error
	if derr := tx.bbolt(func() { err = tx.bucket.Put([]byte(key), value) }); derr != nil {
		return derr
	}
	if err != nil {
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
	var err error
	if derr := tx.bbolt(func() { err = tx.bucket.Delete([]byte(key)) }); derr != nil {
		return derr
	}
	if err != nil {
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
	var k, v []byte
	if err := tx.bbolt(func() { k, v = c.Seek(p) }); err != nil {
		return err
	}
	for k != nil && bytes.HasPrefix(k, p) {
		key := string(k)
		if err := fn(key, v); err != nil {
			return err
		}
		// fn may have written to the bucket, which invalidates the
		// cursor; find the next key afresh.
		err := tx.bbolt(func() {
			k, v = c.Seek([]byte(key))
			if k != nil && string(k) == key {
				k, v = c.Next()
			}
		})
		if err != nil {
			return err
		}
	}
	return nil
}

package store

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
)

// WatchQueueLimit is how many committed keys a Watch holds for a reader
// that does not keep up, beyond those it started from, before it ends
// with ErrWatchBehind.
const WatchQueueLimit = 8192

// Watch is a running WatchPrefix: C delivers the keys, Err says why C was
// closed. Stores feed it with Push and end it with Fail; it sends the keys
// it started from first, then those pushed, in order.
type Watch struct {
	c      chan KV
	failed chan struct{} // closed by Fail
	done   chan struct{} // closed after c

	mu    sync.Mutex
	queue []KV
	// unsent counts the keys pushed and not yet sent: the queue and the
	// batch run took from it. The limit bounds it, not the queue alone,
	// or a reader stuck behind a batch run took would never be told.
	unsent int
	wake   chan struct{} // a send says the queue grew
	err    error
	limit  int
}

// NewWatch starts a Watch that sends initial, then every key pushed, until
// ctx ends or Fail is called. A reader more than limit pushed keys behind
// ends it with ErrWatchBehind (limit <= 0: WatchQueueLimit).
func NewWatch(ctx context.Context, initial []KV, limit int) *Watch {
	if limit <= 0 {
		limit = WatchQueueLimit
	}
	w := &Watch{
		c:      make(chan KV, 16),
		failed: make(chan struct{}),
		done:   make(chan struct{}),
		wake:   make(chan struct{}, 1),
		limit:  limit,
	}
	go w.run(ctx, initial)
	return w
}

// C returns the channel of keys. It is closed when the watch ends.
func (w *Watch) C() <-chan KV { return w.c }

// Done is closed when the watch has ended (after C is closed).
func (w *Watch) Done() <-chan struct{} { return w.done }

// Err says why the watch ended: the context's error, ErrWatchBehind, or
// the store's error (ErrStoreClosed after Close). It is nil while the
// watch runs, and set before C is closed.
func (w *Watch) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// Push queues kvs, which the watch now owns, behind the keys not yet
// sent. It returns false once the watch has ended, and ends it with
// ErrWatchBehind when the keys not yet sent would outgrow the limit.
func (w *Watch) Push(kvs ...KV) bool {
	w.mu.Lock()
	select {
	case <-w.failed:
		w.mu.Unlock()
		return false
	default:
	}
	if w.unsent+len(kvs) > w.limit {
		w.mu.Unlock()
		w.Fail(fmt.Errorf("%w: more than %d keys not read", ErrWatchBehind, w.limit))
		return false
	}
	w.queue = append(w.queue, kvs...)
	w.unsent += len(kvs)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	return true
}

// Fail ends the watch with err; keys not yet sent are dropped. Only the
// first Fail (or the end of the context) counts.
func (w *Watch) Fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	select {
	case <-w.failed:
	default:
		w.err = err
		close(w.failed)
	}
}

func (w *Watch) run(ctx context.Context, initial []KV) {
	defer close(w.done)
	defer close(w.c)
	for _, kv := range initial {
		if !w.send(ctx, kv) {
			return
		}
	}
	for {
		w.mu.Lock()
		batch := w.queue
		w.queue = nil
		w.mu.Unlock()
		for _, kv := range batch {
			if !w.send(ctx, kv) {
				return
			}
			w.mu.Lock()
			w.unsent--
			w.mu.Unlock()
		}
		if len(batch) > 0 {
			continue
		}
		select {
		case <-w.wake:
		case <-w.failed:
			return
		case <-ctx.Done():
			w.Fail(ctx.Err())
			return
		}
	}
}

func (w *Watch) send(ctx context.Context, kv KV) bool {
	select {
	case w.c <- kv:
		return true
	case <-w.failed:
		return false
	case <-ctx.Done():
		w.Fail(ctx.Err())
		return false
	}
}

// InWatch reports whether key is one that WatchPrefix(prefix, fromKey)
// follows.
func InWatch(prefix, fromKey, key string) bool {
	return strings.HasPrefix(key, prefix) && key >= fromKey
}

// LocalWatches are the watches of an in-process store, fed by its commits.
// The store calls Add and Publish while it holds its writer lock, so that
// no commit falls between the keys a watch starts from and the first keys
// it is pushed.
type LocalWatches struct {
	mu      sync.Mutex
	watches map[*localWatch]struct{}
	closed  bool
}

type localWatch struct {
	prefix, fromKey string
	w               *Watch
}

// Any reports whether a watch is running: a store need not collect the
// keys a commit puts when none is.
func (l *LocalWatches) Any() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.watches) > 0
}

// Add starts a watch of prefix from fromKey that first sends initial (the
// committed keys it follows, in key order).
func (l *LocalWatches) Add(ctx context.Context, prefix, fromKey string, initial []KV) (*Watch, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, ErrStoreClosed
	}
	if l.watches == nil {
		l.watches = map[*localWatch]struct{}{}
	}
	lw := &localWatch{prefix: prefix, fromKey: fromKey, w: NewWatch(ctx, initial, 0)}
	l.watches[lw] = struct{}{}
	go func() {
		<-lw.w.Done()
		l.mu.Lock()
		delete(l.watches, lw)
		l.mu.Unlock()
	}()
	return lw.w, nil
}

// Publish pushes the keys one commit put (key to value) to the watches
// that follow them, in key order.
func (l *LocalWatches) Publish(puts map[string][]byte) {
	if len(puts) == 0 {
		return
	}
	keys := make([]string, 0, len(puts))
	for k := range puts {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	l.mu.Lock()
	defer l.mu.Unlock()
	for lw := range l.watches {
		var kvs []KV
		for _, k := range keys {
			if InWatch(lw.prefix, lw.fromKey, k) {
				kvs = append(kvs, KV{Key: k, Value: Clone(puts[k])})
			}
		}
		if len(kvs) > 0 {
			lw.w.Push(kvs...)
		}
	}
}

// Close ends every watch with ErrStoreClosed; Add fails from then on.
func (l *LocalWatches) Close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	for lw := range l.watches {
		lw.w.Fail(ErrStoreClosed)
	}
}

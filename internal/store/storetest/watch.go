package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/fabricmesh/fabric/internal/store"
	"github.com/google/go-cmp/cmp"
)

// watchTimeout bounds every wait for a watch in the suite.
const watchTimeout = 20 * time.Second

func watcher(tb testing.TB, s store.Store) store.Watcher {
	tb.Helper()
	w, ok := s.(store.Watcher)
	if !ok {
		tb.Fatalf("%T does not implement store.Watcher", s)
	}
	return w
}

// startWatch starts a watch that ends at the end of the test.
func startWatch(tb testing.TB, s store.Store, prefix, fromKey string) (*store.Watch, context.CancelFunc) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(cancel)
	w, err := watcher(tb, s).WatchPrefix(ctx, prefix, fromKey)
	if err != nil {
		tb.Fatalf("WatchPrefix(%q, %q): %v", prefix, fromKey, err)
	}
	return w, cancel
}

// next returns the watch's next key.
func next(tb testing.TB, w *store.Watch) store.KV {
	tb.Helper()
	select {
	case kv, ok := <-w.C():
		if !ok {
			tb.Fatalf("watch ended: %v", w.Err())
		}
		return kv
	case <-time.After(watchTimeout):
		tb.Fatalf("no key from the watch within %s", watchTimeout)
		return store.KV{}
	}
}

// nextKVs reads n keys as "key=value" strings.
func nextKVs(tb testing.TB, w *store.Watch, n int) []string {
	tb.Helper()
	var got []string
	for range n {
		kv := next(tb, w)
		got = append(got, kv.Key+"="+string(kv.Value))
	}
	return got
}

// ended waits for the watch to end and returns the keys it still sent.
func ended(tb testing.TB, w *store.Watch) []string {
	tb.Helper()
	var rest []string
	timeout := time.After(watchTimeout)
	for {
		select {
		case kv, ok := <-w.C():
			if !ok {
				return rest
			}
			rest = append(rest, kv.Key)
		case <-timeout:
			tb.Fatalf("watch still running %s after it should have ended", watchTimeout)
		}
	}
}

func testWatchFromKey(t *testing.T, open Opener) {
	s := open(t)
	put(t, s, map[string]string{"p/a": "1", "p/b": "2", "p/c": "3", "q/x": "9", "pa": "outside", "p": "outside"})
	w, cancel := startWatch(t, s, "p/", "p/b")
	if diff := cmp.Diff([]string{"p/b=2", "p/c=3"}, nextKVs(t, w, 2)); diff != "" {
		t.Errorf("keys committed before the watch (-want +got):\n%s", diff)
	}
	put(t, s, map[string]string{"p/e": "5", "p/d": "4", "q/y": "no", "p/a": "before fromKey"})
	if err := s.Update(func(tx store.Tx) error {
		if err := tx.Put("p/f", []byte("rolled back")); err != nil {
			return err
		}
		return errBoom
	}); !errors.Is(err, errBoom) {
		t.Fatalf("failing Update: %v", err)
	}
	if err := s.Update(func(tx store.Tx) error { return tx.Delete("p/b") }); err != nil {
		t.Fatalf("Update: %v", err)
	}
	put(t, s, map[string]string{"p/b": "again"})
	if diff := cmp.Diff([]string{"p/d=4", "p/e=5", "p/b=again"}, nextKVs(t, w, 3)); diff != "" {
		t.Errorf("keys committed while watching (-want +got):\n%s", diff)
	}
	cancel()
	if rest := ended(t, w); len(rest) > 0 {
		t.Errorf("the watch sent %q after the last commit", rest)
	}
	if err := w.Err(); !errors.Is(err, context.Canceled) {
		t.Errorf("Err() = %v after the context ended, want context.Canceled", err)
	}
}

func testWatchEmptyStore(t *testing.T, open Opener) {
	s := open(t)
	w, _ := startWatch(t, s, "log/", "")
	put(t, s, map[string]string{"log/2": "b", "log/1": "a", "other": "x"})
	put(t, s, map[string]string{"log/0": "z"})
	if diff := cmp.Diff([]string{"log/1=a", "log/2=b", "log/0=z"}, nextKVs(t, w, 3)); diff != "" {
		t.Errorf("keys (-want +got):\n%s", diff)
	}
	if err := w.Err(); err != nil {
		t.Errorf("Err() = %v while the watch runs", err)
	}
}

// logKey is the key of a change-log entry, as the registry writes them.
func logKey(rev int) string { return fmt.Sprintf("log/%020d", rev) }

// appendEntry commits the next entry of a change log: it reads the log's
// revision, bumps it and puts the entry, in one transaction.
func appendEntry(tx store.Tx) error {
	var rev int
	if err := store.GetJSON(tx, "rev", &rev); err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	rev++
	if err := tx.Put(logKey(rev), []byte(fmt.Sprint(rev))); err != nil {
		return err
	}
	return store.PutJSON(tx, "rev", rev)
}

// testWatchManyWrites follows a change log that several writers append
// to, from an entry in the middle: every entry arrives once, in order.
func testWatchManyWrites(t *testing.T, open Opener) {
	const before, writers, each, from = 10, 4, 50, 6
	s := open(t)
	for range before {
		if err := s.Update(appendEntry); err != nil {
			t.Fatalf("Update: %v", err)
		}
	}
	w, _ := startWatch(t, s, "log/", logKey(from))
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for range writers {
		wg.Go(func() {
			for range each {
				if err := s.Update(appendEntry); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	var got, want []string
	for rev := from; rev <= before+writers*each; rev++ {
		want = append(want, fmt.Sprintf("%s=%d", logKey(rev), rev))
	}
	got = nextKVs(t, w, len(want))
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("Update: %v", err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("log entries watched (-want +got):\n%s", diff)
	}
}

// testWatchBehind leaves a watch unread while more keys than it may queue
// are committed: it ends with ErrWatchBehind.
func testWatchBehind(t *testing.T, open Opener) {
	const perUpdate = 100
	s := open(t)
	w, _ := startWatch(t, s, "b/", "")
	for i := 0; i < store.WatchQueueLimit+5*perUpdate; i += perUpdate {
		err := s.Update(func(tx store.Tx) error {
			for j := range perUpdate {
				if err := tx.Put(fmt.Sprintf("b/%06d", i+j), []byte("x")); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatalf("Update: %v", err)
		}
	}
	select {
	case <-w.Done():
	case <-time.After(watchTimeout):
		t.Fatalf("an unread watch still runs %s after %d keys were committed", watchTimeout, store.WatchQueueLimit+5*perUpdate)
	}
	if rest := ended(t, w); len(rest) > store.WatchQueueLimit {
		t.Errorf("the watch still sent %d keys", len(rest))
	}
	if err := w.Err(); !errors.Is(err, store.ErrWatchBehind) {
		t.Errorf("Err() = %v, want store.ErrWatchBehind", err)
	}
}

func testWatchStoreClosed(t *testing.T, open Opener) {
	s := open(t)
	put(t, s, map[string]string{"k/1": "1"})
	w, _ := startWatch(t, s, "k/", "")
	if diff := cmp.Diff([]string{"k/1=1"}, nextKVs(t, w, 1)); diff != "" {
		t.Errorf("keys (-want +got):\n%s", diff)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	ended(t, w)
	if err := w.Err(); !errors.Is(err, store.ErrStoreClosed) {
		t.Errorf("Err() = %v after Close, want store.ErrStoreClosed", err)
	}
	if _, err := watcher(t, s).WatchPrefix(context.Background(), "k/", ""); !errors.Is(err, store.ErrStoreClosed) {
		t.Errorf("WatchPrefix after Close: error %v, want store.ErrStoreClosed", err)
	}
}

package storetest

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"

	"github.com/fabricmesh/fabric/internal/store"
	"github.com/google/go-cmp/cmp"
)

// The transaction semantics: isolation, rollback, serialization.

func testReadOwnWrites(t *testing.T, open Opener) {
	s := open(t)
	put(t, s, map[string]string{"p/old": "1", "p/gone": "2"})
	err := s.Update(func(tx store.Tx) error {
		if err := tx.Put("p/new", []byte("3")); err != nil {
			return err
		}
		if err := tx.Put("p/old", []byte("changed")); err != nil {
			return err
		}
		if err := tx.Delete("p/gone"); err != nil {
			return err
		}
		if got, err := tx.Get("p/new"); err != nil || string(got) != "3" {
			t.Errorf("Get(p/new) = %q, %v; want \"3\", nil", got, err)
		}
		if got, err := tx.Get("p/old"); err != nil || string(got) != "changed" {
			t.Errorf("Get(p/old) = %q, %v; want \"changed\", nil", got, err)
		}
		if _, err := tx.Get("p/gone"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Get(p/gone) error %v, want store.ErrNotFound", err)
		}
		if diff := cmp.Diff([]string{"p/new", "p/old"}, scanKeys(t, tx, "p/")); diff != "" {
			t.Errorf("Scan keys (-want +got):\n%s", diff)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
}

// failingUpdate changes every kind of thing, then fails with fail.
func failingUpdate(fail func() error) func(tx store.Tx) error {
	return func(tx store.Tx) error {
		if err := tx.Put("new", []byte("x")); err != nil {
			return err
		}
		if err := tx.Put("kept", []byte("changed")); err != nil {
			return err
		}
		if err := tx.Delete("doomed"); err != nil {
			return err
		}
		return fail()
	}
}

func testRollbackOnError(t *testing.T, open Opener) {
	s := open(t)
	initial := map[string]string{"kept": "1", "doomed": "2"}
	put(t, s, initial)
	err := s.Update(failingUpdate(func() error { return fmt.Errorf("wrapped: %w", errBoom) }))
	if !errors.Is(err, errBoom) {
		t.Fatalf("Update error %v, want %v", err, errBoom)
	}
	if diff := cmp.Diff(initial, Dump(t, s)); diff != "" {
		t.Errorf("store content after rollback (-want +got):\n%s", diff)
	}
}

func testRollbackOnPanic(t *testing.T, open Opener) {
	s := open(t)
	initial := map[string]string{"kept": "1", "doomed": "2"}
	put(t, s, initial)
	recovered := func() (r any) {
		defer func() { r = recover() }()
		_ = s.Update(failingUpdate(func() error { panic(errBoom) }))
		return nil
	}()
	if recovered != errBoom {
		t.Fatalf("recovered %v, want the panic value %v", recovered, errBoom)
	}
	if diff := cmp.Diff(initial, Dump(t, s)); diff != "" {
		t.Errorf("store content after rollback (-want +got):\n%s", diff)
	}
	// The store is still usable: the panic released the writer.
	put(t, s, map[string]string{"after": "ok"})
	if diff := cmp.Diff("ok", Dump(t, s)["after"]); diff != "" {
		t.Errorf("value written after the panic (-want +got):\n%s", diff)
	}
}

func testViewRefusesWrites(t *testing.T, open Opener) {
	s := open(t)
	initial := map[string]string{"a": "1"}
	put(t, s, initial)
	ops := []struct {
		name string
		op   func(tx store.Tx) error
	}{
		{name: "Put", op: func(tx store.Tx) error { return tx.Put("a", []byte("2")) }},
		{name: "Put new", op: func(tx store.Tx) error { return tx.Put("b", []byte("2")) }},
		{name: "Delete", op: func(tx store.Tx) error { return tx.Delete("a") }},
	}
	for _, tt := range ops {
		t.Run(tt.name, func(t *testing.T) {
			if err := s.View(tt.op); !errors.Is(err, store.ErrReadOnly) {
				t.Errorf("error %v, want store.ErrReadOnly", err)
			}
			if diff := cmp.Diff(initial, Dump(t, s)); diff != "" {
				t.Errorf("store content (-want +got):\n%s", diff)
			}
		})
	}
}

func testViewIsolation(t *testing.T, open Opener) {
	s := open(t)
	put(t, s, map[string]string{"a": "before"})
	written := make(chan struct{})
	release := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- s.Update(func(tx store.Tx) error {
			err := tx.Put("a", []byte("after"))
			close(written)
			<-release
			return err
		})
	}()
	<-written
	if diff := cmp.Diff(map[string]string{"a": "before"}, Dump(t, s)); diff != "" {
		t.Errorf("View during an uncommitted Update (-want +got):\n%s", diff)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("Update: %v", err)
	}
	if diff := cmp.Diff(map[string]string{"a": "after"}, Dump(t, s)); diff != "" {
		t.Errorf("View after commit (-want +got):\n%s", diff)
	}
}

func testConcurrentUpdates(t *testing.T, open Opener) {
	const writers, increments = 8, 25
	s := open(t)
	put(t, s, map[string]string{"x": "0", "y": "0"})
	var wg sync.WaitGroup
	errs := make(chan error, writers+1)
	for range writers {
		wg.Go(func() {
			for range increments {
				if err := s.Update(increment); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	stop := make(chan struct{})
	var readers sync.WaitGroup
	readers.Go(func() { errs <- checkInvariant(s, stop) })
	wg.Wait()
	close(stop)
	readers.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	want := fmt.Sprint(writers * increments)
	if diff := cmp.Diff(map[string]string{"x": want, "y": want}, Dump(t, s)); diff != "" {
		t.Errorf("counters (-want +got):\n%s", diff)
	}
}

// increment adds one to the counters x and y (a read-modify-write that loses
// counts unless Updates are serialized).
func increment(tx store.Tx) error {
	for _, k := range []string{"x", "y"} {
		var n int
		if err := store.GetJSON(tx, k, &n); err != nil {
			return err
		}
		runtime.Gosched() // invite another Update to interleave here
		if err := store.PutJSON(tx, k, n+1); err != nil {
			return err
		}
	}
	return nil
}

// checkInvariant reads until stop that x == y in every View.
func checkInvariant(s store.Store, stop <-chan struct{}) error {
	for {
		select {
		case <-stop:
			return nil
		default:
		}
		err := s.View(func(tx store.Tx) error {
			var x, y int
			if err := errors.Join(store.GetJSON(tx, "x", &x), store.GetJSON(tx, "y", &y)); err != nil {
				return err
			}
			if x != y {
				return fmt.Errorf("view saw x=%d y=%d, a half-committed update", x, y)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
}

func testTxUnusableAfterReturn(t *testing.T, open Opener) {
	s := open(t)
	put(t, s, map[string]string{"a": "1"})
	for _, run := range []struct {
		name string
		run  func(fn func(store.Tx) error) error
	}{{"View", s.View}, {"Update", s.Update}} {
		t.Run(run.name, func(t *testing.T) {
			var escaped store.Tx
			if err := run.run(func(tx store.Tx) error { escaped = tx; return nil }); err != nil {
				t.Fatal(err)
			}
			if _, err := escaped.Get("a"); err == nil {
				t.Error("Get on a finished transaction succeeded")
			}
			if err := escaped.Put("a", []byte("2")); err == nil {
				t.Error("Put on a finished transaction succeeded")
			}
			if err := escaped.Scan("", func(string, []byte) error { return nil }); err == nil {
				t.Error("Scan on a finished transaction succeeded")
			}
		})
	}
	if diff := cmp.Diff(map[string]string{"a": "1"}, Dump(t, s)); diff != "" {
		t.Errorf("store content (-want +got):\n%s", diff)
	}
}

// testRollbackHalfway fails a transaction after it rewrote much of the
// store (a scan that deletes, new keys, reads of its own writes): nothing
// of it is committed or seen by a watch.
func testRollbackHalfway(t *testing.T, open Opener) {
	for _, tt := range []struct {
		name string
		fail func() error
	}{
		{"error", func() error { return errBoom }},
		{"panic", func() error { panic(errBoom) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t)
			initial := map[string]string{}
			for i := range 20 {
				initial[fmt.Sprintf("h/%02d", i)] = fmt.Sprint(i)
			}
			put(t, s, initial)
			w, _ := startWatch(t, s, "h/", "h/19")
			if diff := cmp.Diff([]string{"h/19=19"}, nextKVs(t, w, 1)); diff != "" {
				t.Errorf("watched keys (-want +got):\n%s", diff)
			}
			func() {
				defer func() {
					if r := recover(); r != nil && r != errBoom {
						t.Errorf("recovered %v, want the panic value %v", r, errBoom)
					}
				}()
				err := s.Update(func(tx store.Tx) error {
					n := 0
					err := tx.Scan("h/", func(k string, _ []byte) error {
						n++
						if n%2 == 0 {
							return tx.Delete(k)
						}
						return tx.Put(k, []byte("rewritten"))
					})
					if err != nil {
						return err
					}
					for i := 20; i < 50; i++ {
						if err := tx.Put(fmt.Sprintf("h/%02d", i), []byte("new")); err != nil {
							return err
						}
					}
					if got := len(scanKeys(t, tx, "h/")); got != 40 {
						t.Errorf("the transaction sees %d keys of its own, want 40", got)
					}
					return tt.fail()
				})
				if !errors.Is(err, errBoom) {
					t.Errorf("Update error %v, want %v", err, errBoom)
				}
			}()
			if diff := cmp.Diff(initial, Dump(t, s)); diff != "" {
				t.Errorf("store content after rollback (-want +got):\n%s", diff)
			}
			put(t, s, map[string]string{"h/zz": "after"})
			if diff := cmp.Diff([]string{"h/zz=after"}, nextKVs(t, w, 1)); diff != "" {
				t.Errorf("watched keys after the rollback (-want +got):\n%s", diff)
			}
		})
	}
}

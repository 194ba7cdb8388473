package storetest

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/fabricmesh/fabric/internal/store"
	"github.com/google/go-cmp/cmp"
)

// Opener returns a fresh, empty store. It should close the store in
// tb.Cleanup; the suite may also close it earlier (Close twice must be
// harmless).
type Opener func(tb testing.TB) store.Store

// Run runs the conformance suite against the stores that open returns.
// The stores must implement store.Watcher.
func Run(t *testing.T, open Opener) {
	t.Run("GetPutDelete", func(t *testing.T) { testGetPutDelete(t, open) })
	t.Run("EmptyKey", func(t *testing.T) { testEmptyKey(t, open) })
	t.Run("Copies", func(t *testing.T) { testCopies(t, open) })
	t.Run("Scan", func(t *testing.T) { testScan(t, open) })
	t.Run("ScanStopsAtError", func(t *testing.T) { testScanStopsAtError(t, open) })
	t.Run("ScanDeletesWhileScanning", func(t *testing.T) { testScanDeletesWhileScanning(t, open) })
	t.Run("ReadOwnWrites", func(t *testing.T) { testReadOwnWrites(t, open) })
	t.Run("RollbackOnError", func(t *testing.T) { testRollbackOnError(t, open) })
	t.Run("RollbackOnPanic", func(t *testing.T) { testRollbackOnPanic(t, open) })
	t.Run("RollbackHalfway", func(t *testing.T) { testRollbackHalfway(t, open) })
	t.Run("ViewRefusesWrites", func(t *testing.T) { testViewRefusesWrites(t, open) })
	t.Run("ViewIsolation", func(t *testing.T) { testViewIsolation(t, open) })
	t.Run("ConcurrentUpdates", func(t *testing.T) { testConcurrentUpdates(t, open) })
	t.Run("TxUnusableAfterReturn", func(t *testing.T) { testTxUnusableAfterReturn(t, open) })
	t.Run("JSON", func(t *testing.T) { testJSON(t, open) })
	t.Run("Closed", func(t *testing.T) { testClosed(t, open) })
	t.Run("WatchFromKey", func(t *testing.T) { testWatchFromKey(t, open) })
	t.Run("WatchEmptyStore", func(t *testing.T) { testWatchEmptyStore(t, open) })
	t.Run("WatchManyWrites", func(t *testing.T) { testWatchManyWrites(t, open) })
	t.Run("WatchBehind", func(t *testing.T) { testWatchBehind(t, open) })
	t.Run("WatchStoreClosed", func(t *testing.T) { testWatchStoreClosed(t, open) })
}

var errBoom = errors.New("boom")

// put commits kv in one Update.
func put(tb testing.TB, s store.Store, kv map[string]string) {
	tb.Helper()
	err := s.Update(func(tx store.Tx) error {
		for k, v := range kv {
			if err := tx.Put(k, []byte(v)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		tb.Fatalf("Update: %v", err)
	}
}

// Dump returns every committed key and value of s.
func Dump(tb testing.TB, s store.Store) map[string]string {
	tb.Helper()
	got := map[string]string{}
	err := s.View(func(tx store.Tx) error {
		return tx.Scan("", func(k string, v []byte) error {
			got[k] = string(v)
			return nil
		})
	})
	if err != nil {
		tb.Fatalf("View: %v", err)
	}
	return got
}

// scanKeys returns the keys Scan visits, in order.
func scanKeys(tb testing.TB, tx store.Tx, prefix string) []string {
	tb.Helper()
	var keys []string
	err := tx.Scan(prefix, func(k string, _ []byte) error {
		keys = append(keys, k)
		return nil
	})
	if err != nil {
		tb.Fatalf("Scan(%q): %v", prefix, err)
	}
	return keys
}

func testGetPutDelete(t *testing.T, open Opener) {
	tests := []struct {
		name    string
		initial map[string]string
		update  func(tx store.Tx) error
		want    map[string]string
	}{
		{
			name:   "put new key",
			update: func(tx store.Tx) error { return tx.Put("registry/nodes/203.0.113.5", []byte("n1")) },
			want:   map[string]string{"registry/nodes/203.0.113.5": "n1"},
		},
		{
			name:    "overwrite",
			initial: map[string]string{"a": "old"},
			update:  func(tx store.Tx) error { return tx.Put("a", []byte("new")) },
			want:    map[string]string{"a": "new"},
		},
		{
			name:    "empty value is a value",
			initial: map[string]string{"a": "old"},
			update:  func(tx store.Tx) error { return tx.Put("a", nil) },
			want:    map[string]string{"a": ""},
		},
		{
			name:   "binary value",
			update: func(tx store.Tx) error { return tx.Put("b", []byte{0, 0xff, '\n'}) },
			want:   map[string]string{"b": "\x00\xff\n"},
		},
		{
			name:    "delete",
			initial: map[string]string{"a": "1", "b": "2"},
			update:  func(tx store.Tx) error { return tx.Delete("a") },
			want:    map[string]string{"b": "2"},
		},
		{
			name:    "delete missing key is not an error",
			initial: map[string]string{"b": "2"},
			update:  func(tx store.Tx) error { return tx.Delete("a") },
			want:    map[string]string{"b": "2"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t)
			put(t, s, tt.initial)
			if err := s.Update(tt.update); err != nil {
				t.Fatalf("Update: %v", err)
			}
			if diff := cmp.Diff(tt.want, Dump(t, s)); diff != "" {
				t.Errorf("store content (-want +got):\n%s", diff)
			}
			err := s.View(func(tx store.Tx) error {
				for k, want := range tt.want {
					got, err := tx.Get(k)
					if err != nil {
						return err
					}
					if diff := cmp.Diff([]byte(want), got); diff != "" {
						t.Errorf("Get(%q) (-want +got):\n%s", k, diff)
					}
				}
				return nil
			})
			if err != nil {
				t.Fatalf("View: %v", err)
			}
		})
	}

	t.Run("get missing key", func(t *testing.T) {
		s := open(t)
		put(t, s, map[string]string{"registry/nodes/a": "x"})
		err := s.View(func(tx store.Tx) error {
			_, err := tx.Get("registry/nodes")
			return err
		})
		if !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("Get of a missing key: error %v, want store.ErrNotFound", err)
		}
		if !strings.Contains(err.Error(), "registry/nodes") {
			t.Errorf("error %q does not name the key", err)
		}
	})
}

func testEmptyKey(t *testing.T, open Opener) {
	ops := map[string]func(tx store.Tx) error{
		"Get":    func(tx store.Tx) error { _, err := tx.Get(""); return err },
		"Put":    func(tx store.Tx) error { return tx.Put("", []byte("x")) },
		"Delete": func(tx store.Tx) error { return tx.Delete("") },
	}
	for name, op := range ops {
		t.Run(name, func(t *testing.T) {
			s := open(t)
			if err := s.Update(op); !errors.Is(err, store.ErrEmptyKey) {
				t.Errorf("error %v, want store.ErrEmptyKey", err)
			}
		})
	}
}

func testCopies(t *testing.T, open Opener) {
	s := open(t)
	value := []byte("original")
	err := s.Update(func(tx store.Tx) error {
		if err := tx.Put("k", value); err != nil {
			return err
		}
		copy(value, "CHANGED!") // the caller reuses its buffer
		return nil
	})
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	err = s.View(func(tx store.Tx) error {
		got, err := tx.Get("k")
		if err != nil {
			return err
		}
		copy(got, "CHANGED!") // the caller scribbles on what Get returned
		return nil
	})
	if err != nil {
		t.Fatalf("View: %v", err)
	}
	if diff := cmp.Diff(map[string]string{"k": "original"}, Dump(t, s)); diff != "" {
		t.Errorf("store content (-want +got):\n%s", diff)
	}
}

func testScan(t *testing.T, open Opener) {
	s := open(t)
	// Put in an order unlike byte order, in several transactions.
	put(t, s, map[string]string{"registry/nodes/203.0.113.5": "5", "registry/nodesx": "x"})
	put(t, s, map[string]string{"registry/nodes/203.0.113.10": "10", "registry/node": "n"})
	put(t, s, map[string]string{"registry/nodes/203.0.113.2": "2", "steward/rev": "7", "Registry/upper": "u"})
	tests := []struct {
		prefix string
		want   []string
	}{
		{prefix: "registry/nodes/", want: []string{
			"registry/nodes/203.0.113.10", "registry/nodes/203.0.113.2", "registry/nodes/203.0.113.5",
		}},
		{prefix: "registry/nodes", want: []string{
			"registry/nodes/203.0.113.10", "registry/nodes/203.0.113.2", "registry/nodes/203.0.113.5", "registry/nodesx",
		}},
		{prefix: "", want: []string{
			"Registry/upper", "registry/node", "registry/nodes/203.0.113.10", "registry/nodes/203.0.113.2",
			"registry/nodes/203.0.113.5", "registry/nodesx", "steward/rev",
		}},
		{prefix: "steward/rev", want: []string{"steward/rev"}},
		{prefix: "registry/nodes/203.0.113.5/", want: nil},
		{prefix: "zzz", want: nil},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("prefix=%q", tt.prefix), func(t *testing.T) {
			err := s.View(func(tx store.Tx) error {
				if diff := cmp.Diff(tt.want, scanKeys(t, tx, tt.prefix)); diff != "" {
					t.Errorf("Scan(%q) keys (-want +got):\n%s", tt.prefix, diff)
				}
				return nil
			})
			if err != nil {
				t.Fatalf("View: %v", err)
			}
		})
	}
	t.Run("values", func(t *testing.T) {
		got := map[string]string{}
		err := s.View(func(tx store.Tx) error {
			return tx.Scan("registry/nodes/", func(k string, v []byte) error {
				got[k] = string(v)
				return nil
			})
		})
		if err != nil {
			t.Fatalf("View: %v", err)
		}
		want := map[string]string{
			"registry/nodes/203.0.113.10": "10", "registry/nodes/203.0.113.2": "2", "registry/nodes/203.0.113.5": "5",
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("scanned values (-want +got):\n%s", diff)
		}
	})
}

func testScanStopsAtError(t *testing.T, open Opener) {
	s := open(t)
	put(t, s, map[string]string{"a": "1", "b": "2", "c": "3"})
	var visited []string
	err := s.View(func(tx store.Tx) error {
		return tx.Scan("", func(k string, _ []byte) error {
			visited = append(visited, k)
			if k == "b" {
				return errBoom
			}
			return nil
		})
	})
	if !errors.Is(err, errBoom) {
		t.Errorf("error %v, want %v", err, errBoom)
	}
	if diff := cmp.Diff([]string{"a", "b"}, visited); diff != "" {
		t.Errorf("visited keys (-want +got):\n%s", diff)
	}
}

func testScanDeletesWhileScanning(t *testing.T, open Opener) {
	s := open(t)
	put(t, s, map[string]string{"t/a": "1", "t/b": "2", "t/c": "3", "t/d": "4", "u/a": "5"})
	var visited []string
	err := s.Update(func(tx store.Tx) error {
		return tx.Scan("t/", func(k string, _ []byte) error {
			visited = append(visited, k)
			if k == "t/b" {
				if err := tx.Delete("t/c"); err != nil { // a key not yet visited
					return err
				}
			}
			if err := tx.Put(k, []byte("rewritten")); err != nil { // the current key
				return err
			}
			return tx.Delete(k)
		})
	})
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	if diff := cmp.Diff([]string{"t/a", "t/b", "t/d"}, visited); diff != "" {
		t.Errorf("visited keys (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]string{"u/a": "5"}, Dump(t, s)); diff != "" {
		t.Errorf("store content (-want +got):\n%s", diff)
	}
}

func testJSON(t *testing.T, open Opener) {
	type node struct {
		VPNIP string
		Tags  []string
	}
	s := open(t)
	want := node{VPNIP: "203.0.113.5", Tags: []string{"pastiche"}}
	if err := s.Update(func(tx store.Tx) error { return store.PutJSON(tx, "registry/nodes/n1", want) }); err != nil {
		t.Fatalf("PutJSON: %v", err)
	}
	put(t, s, map[string]string{"bad": "{not json"})
	err := s.View(func(tx store.Tx) error {
		var got node
		if err := store.GetJSON(tx, "registry/nodes/n1", &got); err != nil {
			return err
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("GetJSON (-want +got):\n%s", diff)
		}
		if err := store.GetJSON(tx, "missing", &got); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetJSON(missing) error %v, want store.ErrNotFound", err)
		}
		if err := store.GetJSON(tx, "bad", &got); err == nil || !strings.Contains(err.Error(), "bad") {
			t.Errorf("GetJSON(bad) error %v, want a decoding error naming the key", err)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("View: %v", err)
	}
	err = s.Update(func(tx store.Tx) error { return store.PutJSON(tx, "f", func() {}) })
	if err == nil {
		t.Error("PutJSON of a func succeeded, want an encoding error")
	}
}

func testClosed(t *testing.T, open Opener) {
	s := open(t)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.View(func(store.Tx) error { return nil }); err == nil {
		t.Error("View after Close succeeded")
	}
	if err := s.Update(func(store.Tx) error { return nil }); err == nil {
		t.Error("Update after Close succeeded")
	}
}

package boltstore_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fabricmesh/fabric/internal/store"
	"github.com/fabricmesh/fabric/internal/store/boltstore"
	"github.com/fabricmesh/fabric/internal/store/storetest"
	"github.com/google/go-cmp/cmp"
)

func openBolt(tb testing.TB, path string) *boltstore.Bolt {
	tb.Helper()
	s, err := boltstore.Open(path, boltstore.Options{})
	if err != nil {
		tb.Fatalf("OpenBolt: %v", err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

func TestBoltConformance(t *testing.T) {
	storetest.Run(t, func(tb testing.TB) store.Store {
		return openBolt(tb, filepath.Join(tb.TempDir(), "state.db"))
	})
}

func TestBoltSurvivesReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s := openBolt(t, path)
	err := s.Update(func(tx store.Tx) error {
		return errors.Join(
			tx.Put("registry/nodes/203.0.113.5", []byte("n1")),
			tx.Put("registry/nodes/203.0.113.6", []byte("n2")),
			tx.Put("steward/rev", []byte("7")),
		)
	})
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s = openBolt(t, path)
	if got := s.Path(); got != path {
		t.Errorf("Path() = %q, want %q", got, path)
	}
	got := map[string]string{}
	err = s.View(func(tx store.Tx) error {
		return tx.Scan("", func(k string, v []byte) error {
			got[k] = string(v)
			return nil
		})
	})
	if err != nil {
		t.Fatalf("View: %v", err)
	}
	want := map[string]string{
		"registry/nodes/203.0.113.5": "n1",
		"registry/nodes/203.0.113.6": "n2",
		"steward/rev":                "7",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("content after reopen (-want +got):\n%s", diff)
	}
}

func TestBoltSecondOpenIsLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	openBolt(t, path)
	// bbolt's flock is per open file, so a second open in this process
	// conflicts just as a second fabricd would.
	s, err := boltstore.Open(path, boltstore.Options{OpenTimeout: 100 * time.Millisecond})
	if err == nil {
		_ = s.Close()
		t.Fatal("second OpenBolt succeeded, want a locked error")
	}
	if !errors.Is(err, boltstore.ErrLocked) {
		t.Errorf("error %v, want boltstore.ErrLocked", err)
	}
	wantText := "state store " + path + " is locked by another process"
	if !strings.Contains(err.Error(), wantText) {
		t.Errorf("error %q does not contain %q", err, wantText)
	}
}

func TestBoltFileMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	openBolt(t, path)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("mode = %v, want 0600", got)
	}
}

func TestBoltOpenErrors(t *testing.T) {
	dir := t.TempDir()
	notBolt := filepath.Join(dir, "garbage.db")
	if err := os.WriteFile(notBolt, []byte(strings.Repeat("not a bolt file ", 1000)), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		path string
	}{
		{name: "missing directory", path: filepath.Join(dir, "nope", "state.db")},
		{name: "not a bbolt file", path: notBolt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := boltstore.Open(tt.path, boltstore.Options{})
			if err == nil {
				_ = s.Close()
				t.Fatal("OpenBolt succeeded, want error")
			}
			if !strings.Contains(err.Error(), tt.path) {
				t.Errorf("error %q does not name the path", err)
			}
			if errors.Is(err, boltstore.ErrLocked) {
				t.Errorf("error %v matches ErrLocked", err)
			}
		})
	}
}

package storetest

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/fabricmesh/fabric/internal/store"
	"github.com/google/go-cmp/cmp"
)

// ClientsOpener returns n clients of one fresh, empty store: separate
// connections (as of several coordinators) to the same data. It should
// close them in tb.Cleanup.
type ClientsOpener func(tb testing.TB, n int) []store.Store

// RunClients runs the tests of several clients of one store: commits of
// one are seen by the others, and concurrent Updates through different
// clients are serializable. It is for stores that other processes share
// (etcd); an in-process store has one client.
func RunClients(t *testing.T, open ClientsOpener) {
	t.Run("SeeEachOther", func(t *testing.T) { testClientsSeeEachOther(t, open) })
	t.Run("ConcurrentIncrements", func(t *testing.T) { testClientsConcurrentIncrements(t, open) })
	t.Run("ConflictRerunsUpdate", func(t *testing.T) { testClientsConflictRerunsUpdate(t, open) })
}

func testClientsSeeEachOther(t *testing.T, open ClientsOpener) {
	c := open(t, 2)
	w, _ := startWatch(t, c[1], "k/", "")
	put(t, c[0], map[string]string{"k/1": "from 0"})
	if diff := cmp.Diff(map[string]string{"k/1": "from 0"}, Dump(t, c[1])); diff != "" {
		t.Errorf("client 1's view of client 0's commit (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"k/1=from 0"}, nextKVs(t, w, 1)); diff != "" {
		t.Errorf("client 1's watch (-want +got):\n%s", diff)
	}
}

// testClientsConcurrentIncrements runs the counters of ConcurrentUpdates
// from several goroutines on each of two clients: no increment is lost
// and no View sees half of one.
func testClientsConcurrentIncrements(t *testing.T, open ClientsOpener) {
	const clients, writers, increments = 2, 3, 20
	c := open(t, clients)
	put(t, c[0], map[string]string{"x": "0", "y": "0"})
	var wg sync.WaitGroup
	errs := make(chan error, clients*writers+clients)
	for _, s := range c {
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
	}
	stop := make(chan struct{})
	var readers sync.WaitGroup
	for _, s := range c {
		readers.Go(func() { errs <- checkInvariant(s, stop) })
	}
	wg.Wait()
	close(stop)
	readers.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	want := fmt.Sprint(clients * writers * increments)
	for i, s := range c {
		if diff := cmp.Diff(map[string]string{"x": want, "y": want}, Dump(t, s)); diff != "" {
			t.Errorf("counters seen by client %d (-want +got):\n%s", i, diff)
		}
	}
}

// testClientsConflictRerunsUpdate commits, through another client, a
// change to what an Update read (a key, a key it read as absent, a key
// under a prefix it scanned, a key deleted from it) while the Update's
// function runs: the function runs again and computes from the new data.
func testClientsConflictRerunsUpdate(t *testing.T, open ClientsOpener) {
	tests := []struct {
		name  string
		read  func(tx store.Tx) (string, error) // what the Update computes from
		other map[string]string                 // the other client's commit ("" deletes)
		want  string                            // what the second run read
	}{
		{"key read", func(tx store.Tx) (string, error) {
			v, err := tx.Get("a")
			return string(v), err
		}, map[string]string{"a": "changed"}, "changed"},
		{"key read as absent", func(tx store.Tx) (string, error) {
			_, err := tx.Get("absent")
			return fmt.Sprint(err == nil), nil
		}, map[string]string{"absent": "now"}, "true"},
		{"key added under a scanned prefix", scanned, map[string]string{"s/3": "3"}, "s/1 s/2 s/3"},
		{"key deleted under a scanned prefix", scanned, map[string]string{"s/1": ""}, "s/2"},
		{"key changed under a scanned prefix", scanned, map[string]string{"s/2": "changed"}, "s/1 s/2=changed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := open(t, 2)
			put(t, c[0], map[string]string{"a": "1", "s/1": "1", "s/2": "2"})
			var runs []string
			err := c[0].Update(func(tx store.Tx) error {
				got, err := tt.read(tx)
				if err != nil {
					return err
				}
				runs = append(runs, got)
				if len(runs) == 1 {
					if err := c[1].Update(func(tx store.Tx) error {
						for k, v := range tt.other {
							if v == "" {
								if err := tx.Delete(k); err != nil {
									return err
								}
							} else if err := tx.Put(k, []byte(v)); err != nil {
								return err
							}
						}
						return nil
					}); err != nil {
						return fmt.Errorf("the other client's Update: %w", err)
					}
				}
				return tx.Put("result", []byte(got))
			})
			if err != nil {
				t.Fatalf("Update: %v", err)
			}
			if len(runs) != 2 || runs[1] != tt.want {
				t.Errorf("the Update's function read %q in its runs, want a second run that reads %q", runs, tt.want)
			}
			if got := Dump(t, c[1])["result"]; got != tt.want {
				t.Errorf("committed result %q, want %q (from the second run)", got, tt.want)
			}
		})
	}
}

// scanned lists the keys under s/ (with the value when it is not the
// key's own number).
func scanned(tx store.Tx) (string, error) {
	var out []string
	err := tx.Scan("s/", func(k string, v []byte) error {
		if k[len("s/"):] == string(v) {
			out = append(out, k)
		} else {
			out = append(out, k+"="+string(v))
		}
		return nil
	})
	return strings.Join(out, " "), err
}

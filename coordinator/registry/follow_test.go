package registry_test

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fabricmesh/fabric/coordinator/registry"
	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/store"
	"github.com/fabricmesh/fabric/internal/store/storetest"
	"github.com/google/go-cmp/cmp"
)

// TestTwoWritersOneStore: two registries on one store (two coordinators)
// reserving nodes at once never give an address twice; each catches up
// with the other's changes, in order, and both end in the same state,
// which is also what a registry opened afresh on the store reads.
func TestTwoWritersOneStore(t *testing.T) {
	st := store.NewMem()
	a := initRegistry(t, st, "203.0.113.0/24", 1)
	b, err := registry.Open(st)
	if err != nil {
		t.Fatal(err)
	}
	var seenB []uint64
	var mu sync.Mutex
	b.Observe(func(es []registry.Entry) {
		mu.Lock()
		defer mu.Unlock()
		for _, e := range es {
			seenB = append(seenB, e.Revision)
		}
	})
	const n = 60
	var wg sync.WaitGroup
	ips := make([]netip.Addr, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := a
			if i%2 == 1 {
				r = b
			}
			var p records.Peer
			p, errs[i] = r.Reserve(fmt.Sprintf("192.0.2.%d:7443", 10+i), fmt.Sprintf("node%d", i), nil, nil, false)
			ips[i] = p.VPNIP
		}()
	}
	wg.Wait()
	seen := map[netip.Addr]int{}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Reserve %d: %v", i, err)
		}
		if j, dup := seen[ips[i]]; dup {
			t.Errorf("nodes %d and %d both got %s", j, i, ips[i])
		}
		seen[ips[i]] = i
	}
	for _, r := range []*registry.Registry{a, b} {
		if err := r.CatchUp(); err != nil {
			t.Fatal(err)
		}
	}
	fresh, err := registry.Open(st)
	if err != nil {
		t.Fatal(err)
	}
	want := stateOf(fresh)
	if want.Revision != uint64(1+n) {
		t.Errorf("revision %d after %d reservations, want %d", want.Revision, n, 1+n)
	}
	for name, r := range map[string]*registry.Registry{"a": a, "b": b} {
		if diff := cmp.Diff(want, stateOf(r), cmpNetip); diff != "" {
			t.Errorf("registry %s differs from the store (-store +%s):\n%s", name, name, diff)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for i, rev := range seenB {
		if rev != uint64(2+i) {
			t.Fatalf("b's observer saw revisions %v, want 2..%d once each, in order", seenB, 1+n)
		}
	}
	if len(seenB) != n {
		t.Errorf("b's observer saw %d revisions, want %d", len(seenB), n)
	}
}

// TestFollow: a registry following a shared store applies the other's
// commits as they land, without being asked to catch up.
func TestFollow(t *testing.T) {
	st := store.NewMem()
	a := initRegistry(t, st, "203.0.113.0/24", 1)
	b, err := registry.Open(st)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.Follow(ctx, 10*time.Millisecond, func(err error) { t.Errorf("Follow: %v", err) })
	}()
	defer func() { cancel(); <-done }()
	for i := range 20 {
		if _, err := a.Reserve(fmt.Sprintf("192.0.2.%d:7443", 10+i), fmt.Sprintf("node%d", i), nil, nil, false); err != nil {
			t.Fatal(err)
		}
	}
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if _, err := b.Wait(wctx, a.Revision()-1); err != nil {
		t.Fatalf("b did not follow to revision %d: at %d", a.Revision(), b.Revision())
	}
	for b.Revision() < a.Revision() {
		if _, err := b.Wait(wctx, b.Revision()); err != nil {
			t.Fatalf("b did not follow to revision %d: at %d", a.Revision(), b.Revision())
		}
	}
	if diff := cmp.Diff(stateOf(a), stateOf(b), cmpNetip); diff != "" {
		t.Errorf("the follower differs (-a +b):\n%s", diff)
	}
}

// TestSharedCompaction: coordinators sharing a store compact its change
// log in turn, each from what the store holds: it keeps the newest
// LogCapacity entries whoever committed last.
func TestSharedCompaction(t *testing.T) {
	st := store.NewMem()
	opts := registry.Options{LogCapacity: 4}
	a, err := registry.Open(st, opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Init(records.Cluster{ID: "c1", VPNCIDR: mustParseCIDR(t, "203.0.113.0/24")}, coordinatorPeer(), nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	counted := &deleteCounter{Store: st}
	b, err := registry.Open(counted, opts)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 12 {
		r := []*registry.Registry{a, b}[i%2]
		if _, err := r.Fail(nodeEndpoint(byte(i)), "x"); err != nil { // revisions 2..13
			t.Fatal(err)
		}
	}
	var logRevs []string
	for k := range storetest.Dump(t, st) {
		if strings.HasPrefix(k, "registry/log/0") {
			logRevs = append(logRevs, strings.TrimLeft(strings.TrimPrefix(k, "registry/log/"), "0"))
		}
	}
	slices.Sort(logRevs)
	if diff := cmp.Diff([]string{"10", "11", "12", "13"}, logRevs); diff != "" {
		t.Errorf("log entries in the store (-want +got):\n%s", diff)
	}
	for name, r := range map[string]*registry.Registry{"a": a, "b": b} {
		if err := r.CatchUp(); err != nil {
			t.Fatal(err)
		}
		if got := r.LogFirst(); got != 10 {
			t.Errorf("%s: LogFirst = %d, want 10", name, got)
		}
	}

	// b follows a long run of a's commits, then commits: it deletes the
	// one entry that falls out, not every revision since the first it
	// once knew.
	for i := range 30 {
		if _, err := a.Fail(nodeEndpoint(byte(20+i)), "x"); err != nil {
			t.Fatal(err)
		}
		if i%3 == 2 {
			if err := b.CatchUp(); err != nil {
				t.Fatal(err)
			}
		}
	}
	counted.deletes.Store(0)
	if _, err := b.Fail(nodeEndpoint(60), "x"); err != nil {
		t.Fatal(err)
	}
	if got := counted.deletes.Load(); got != 1 {
		t.Errorf("b's commit deleted %d keys, want 1 (the entry that fell out of the log)", got)
	}
}

// deleteCounter counts the deletes of the transactions it commits.
type deleteCounter struct {
	store.Store
	deletes atomic.Int64
}

func (s *deleteCounter) Update(fn func(store.Tx) error) error {
	var n int64
	err := s.Store.Update(func(tx store.Tx) error {
		n = 0
		return fn(&deleteCountingTx{Tx: tx, n: &n})
	})
	if err == nil {
		s.deletes.Add(n)
	}
	return err
}

type deleteCountingTx struct {
	store.Tx
	n *int64
}

func (tx *deleteCountingTx) Delete(key string) error {
	*tx.n++
	return tx.Tx.Delete(key)
}

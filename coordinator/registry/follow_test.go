package registry_test

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/fabricmesh/fabric/coordinator/registry"
	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/store"
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

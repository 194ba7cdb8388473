package registry_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/fabricmesh/fabric/coordinator/registry"
	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/store"
	"github.com/fabricmesh/fabric/internal/store/storetest"
	"github.com/google/go-cmp/cmp"
)

func TestInit(t *testing.T) {
	for _, sk := range storeKinds() {
		t.Run(sk.name, func(t *testing.T) {
			st := sk.open(t)
			r, err := registry.Open(st)
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := r.Cluster(); ok {
				t.Fatal("a registry on an empty store is initialized")
			}
			if _, err := r.Reserve(nodeEndpoint(0), nodeName(0), nil, false); !errors.Is(err, registry.ErrNotInitialized) {
				t.Errorf("Reserve before Init = %v, want ErrNotInitialized", err)
			}
			extraRan := false
			got, err := r.Init(records.Cluster{ID: "c1", VPNCIDR: mustParseCIDR(t, "203.0.113.0/24")}, coordinatorPeer(),
				[]records.Peer{admin(0)}, nil, func(tx store.Tx) error {
					extraRan = true
					return tx.Put("caller/key", []byte("v"))
				})
			if err != nil {
				t.Fatalf("Init: %v", err)
			}
			co, ad := coordinatorPeer(), admin(0)
			co.Role, co.VPNIP, co.State, co.Revision = records.RoleCoordinator, netip.MustParseAddr("203.0.113.1"), records.StateActive, 1
			ad.Role, ad.VPNIP, ad.State, ad.Revision = records.RoleAdmin, netip.MustParseAddr("203.0.113.2"), records.StateActive, 1
			if diff := cmp.Diff([]records.Peer{co, ad}, got, cmpNetip); diff != "" {
				t.Errorf("Init records (-want +got):\n%s", diff)
			}
			want := regState{
				Cluster:     records.Cluster{ID: "c1", VPNCIDR: mustParseCIDR(t, "203.0.113.0/24"), CoordinatorVPNIP: co.VPNIP},
				Initialized: true, Revision: 1, Peers: []records.Peer{co, ad}, SSHUsersRev: 1,
			}
			if diff := cmp.Diff(want, stateOf(r), cmpNetip); diff != "" {
				t.Errorf("registry after Init (-want +got):\n%s", diff)
			}
			if !extraRan || storetest.Dump(t, st)["caller/key"] != "v" {
				t.Error("Init did not commit the caller's extra write")
			}
			_, err = r.Init(records.Cluster{ID: "c2", VPNCIDR: mustParseCIDR(t, "198.51.100.0/24")}, coordinatorPeer(), nil, nil, nil)
			if err == nil {
				t.Fatal("a second Init succeeded")
			}
			if diff := cmp.Diff(want, stateOf(r), cmpNetip); diff != "" {
				t.Errorf("a second Init changed the registry (-want +got):\n%s", diff)
			}
		})
	}
}

// TestInitConcurrent: of several Inits racing, exactly one wins and the
// others change nothing.
func TestInitConcurrent(t *testing.T) {
	for range 20 {
		st := store.NewMem()
		r, err := registry.Open(st)
		if err != nil {
			t.Fatal(err)
		}
		const n = 4
		var wg sync.WaitGroup
		errs := make([]error, n)
		start := make(chan struct{})
		for i := range n {
			wg.Go(func() {
				<-start
				cidr := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i), 0, 0}), 16)
				_, errs[i] = r.Init(records.Cluster{ID: string(rune('a' + i)), VPNCIDR: cidr}, coordinatorPeer(),
					[]records.Peer{admin(0)}, nil, nil)
			})
		}
		close(start)
		wg.Wait()
		var won []int
		for i, err := range errs {
			if err == nil {
				won = append(won, i)
			}
		}
		if len(won) != 1 {
			t.Fatalf("%d of %d concurrent Inits succeeded (%v), want exactly 1", len(won), n, errs)
		}
		if got := r.Revision(); got != 1 {
			t.Fatalf("revision after concurrent Inits = %d, want 1", got)
		}
		c, _ := r.Cluster()
		if want := string(rune('a' + won[0])); c.ID != want {
			t.Fatalf("cluster id = %q, want the winner's %q", c.ID, want)
		}
	}
}

// TestIPsNeverReused: a failed node keeps its address, gets it back when it
// is retried, and no other endpoint ever gets it.
func TestIPsNeverReused(t *testing.T) {
	for _, sk := range storeKinds() {
		t.Run(sk.name, func(t *testing.T) {
			r := initRegistry(t, sk.open(t), "203.0.113.0/24", 1)
			a, err := r.Reserve(nodeEndpoint(0), nodeName(0), nil, false)
			if err != nil {
				t.Fatal(err)
			}
			if a.VPNIP != netip.MustParseAddr("203.0.113.3") || a.State != records.StatePending || a.Role != records.RoleNode {
				t.Fatalf("first node reserved %+v, want pending node 203.0.113.3", a)
			}
			failed, err := r.Fail(nodeEndpoint(0), "connection refused")
			if err != nil {
				t.Fatal(err)
			}
			if failed.VPNIP != a.VPNIP || failed.State != records.StateFailed || failed.LastError != "connection refused" {
				t.Errorf("Fail = %+v, want failed at %s with the reason", failed, a.VPNIP)
			}
			// Unknown endpoint failing before it was reserved still gets an
			// address, kept for its retry.
			b, err := r.Fail(nodeEndpoint(1), "no route to host")
			if err != nil {
				t.Fatal(err)
			}
			if b.VPNIP != netip.MustParseAddr("203.0.113.4") {
				t.Errorf("Fail of a new endpoint got %s, want 203.0.113.4", b.VPNIP)
			}
			c, err := r.Reserve(nodeEndpoint(2), nodeName(2), nil, false)
			if err != nil {
				t.Fatal(err)
			}
			if c.VPNIP != netip.MustParseAddr("203.0.113.5") {
				t.Errorf("a new endpoint got %s, want the never-used 203.0.113.5", c.VPNIP)
			}
			for _, retry := range []struct {
				i    byte
				want netip.Addr
			}{{0, a.VPNIP}, {1, b.VPNIP}} {
				p, err := r.Reserve(nodeEndpoint(retry.i), nodeName(retry.i), nil, false)
				if err != nil {
					t.Fatalf("retry of %s: %v", nodeEndpoint(retry.i), err)
				}
				if p.VPNIP != retry.want || p.State != records.StatePending || p.LastError != "" {
					t.Errorf("retry of %s = %+v, want pending at %s with no error", nodeEndpoint(retry.i), p, retry.want)
				}
				if _, err := r.Activate(p.VPNIP, activated(retry.i)); err != nil {
					t.Fatalf("activating retried %s: %v", nodeEndpoint(retry.i), err)
				}
			}
			_, peers := r.Peers()
			if len(peers) != 5 {
				t.Errorf("registry has %d records, want 5 (coordinator, admin, 3 nodes)", len(peers))
			}
		})
	}
}

func TestReserveActiveEndpoint(t *testing.T) {
	r := initRegistry(t, store.NewMem(), "203.0.113.0/24", 1)
	active := activateNode(t, r, 0)
	rev := r.Revision()
	got, err := r.Reserve(nodeEndpoint(0), nodeName(0), nil, false)
	if !errors.Is(err, registry.ErrAlreadyActive) {
		t.Fatalf("Reserve of an active node = %v, want ErrAlreadyActive", err)
	}
	if diff := cmp.Diff(active, got, cmpNetip); diff != "" {
		t.Errorf("Reserve of an active node should return its record (-want +got):\n%s", diff)
	}
	if _, err := r.Fail(nodeEndpoint(0), "x"); !errors.Is(err, registry.ErrAlreadyActive) {
		t.Errorf("Fail of an active node = %v, want ErrAlreadyActive", err)
	}
	// The coordinator is active at its public endpoint too.
	if _, err := r.Reserve(coordinatorPeer().PublicEndpoint, "x", nil, false); !errors.Is(err, registry.ErrAlreadyActive) {
		t.Errorf("Reserve of the coordinator's endpoint = %v, want ErrAlreadyActive", err)
	}
	if got := r.Revision(); got != rev {
		t.Errorf("refused calls moved the revision from %d to %d", rev, got)
	}
}

func TestReserveReplacesANodeThatLostItsState(t *testing.T) {
	r := initRegistry(t, store.NewMem(), "203.0.113.0/24", 1)
	active := activateNode(t, r, 0)
	registered, err := r.SetRegistration(active.VPNIP, make([]byte, 32), "")
	if err != nil {
		t.Fatal(err)
	}
	if !registered.Registered || registered.RegisteredAt.IsZero() {
		t.Fatalf("registered record %+v, want Registered with RegisteredAt", registered)
	}
	newKey := make([]byte, 32)
	newKey[0] = 0xee
	got, err := r.Reserve(nodeEndpoint(0), nodeName(0), newKey, true)
	if err != nil {
		t.Fatalf("Reserve(replaceActive) = %v", err)
	}
	if got.VPNIP != active.VPNIP || got.State != records.StatePending || got.Registered || got.ReevePubKey != nil || !got.RegisteredAt.IsZero() || string(got.WGPubKey) != string(newKey) {
		t.Errorf("re-reserved record %+v, want pending, unregistered, same VPN IP %s, new key", got, active.VPNIP)
	}
	// The coordinator is never replaced.
	if _, err := r.Reserve(coordinatorPeer().PublicEndpoint, "x", nil, true); !errors.Is(err, registry.ErrConflict) {
		t.Errorf("Reserve(replaceActive) of the coordinator's endpoint = %v, want ErrConflict", err)
	}
}

func TestNameConflicts(t *testing.T) {
	tests := []struct {
		name     string
		setup    func(t *testing.T, r *registry.Registry)
		reserve  string
		conflict bool
	}{
		{"coordinator's name", nil, "coord", true},
		{"admin's name", nil, "admin0", true},
		{"active node's name", func(t *testing.T, r *registry.Registry) { activateNode(t, r, 1) }, nodeName(1), true},
		{"pending node's name", func(t *testing.T, r *registry.Registry) {
			if _, err := r.Reserve(nodeEndpoint(1), "taken", nil, false); err != nil {
				t.Fatal(err)
			}
		}, "taken", true},
		{"failed node's name is free", func(t *testing.T, r *registry.Registry) {
			if _, err := r.Reserve(nodeEndpoint(1), "free", nil, false); err != nil {
				t.Fatal(err)
			}
			if _, err := r.Fail(nodeEndpoint(1), "x"); err != nil {
				t.Fatal(err)
			}
		}, "free", false},
		{"own name on retry", func(t *testing.T, r *registry.Registry) {
			if _, err := r.Reserve(nodeEndpoint(0), "mine", nil, false); err != nil {
				t.Fatal(err)
			}
		}, "mine", false},
		{"unused name", nil, "fresh", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := store.NewMem()
			r := initRegistry(t, st, "203.0.113.0/24", 1)
			if tt.setup != nil {
				tt.setup(t, r)
			}
			before, beforeStore := stateOf(r), storetest.Dump(t, st)
			p, err := r.Reserve(nodeEndpoint(0), tt.reserve, nil, false)
			if !tt.conflict {
				if err != nil {
					t.Fatalf("Reserve(%q): %v", tt.reserve, err)
				}
				if p.Name != tt.reserve || p.State != records.StatePending {
					t.Errorf("Reserve(%q) = %+v, want pending under that name", tt.reserve, p)
				}
				return
			}
			if !errors.Is(err, registry.ErrConflict) {
				t.Fatalf("Reserve(%q) = %+v, %v; want ErrConflict", tt.reserve, p, err)
			}
			if !strings.Contains(err.Error(), `name "`+tt.reserve+`" is already used`) {
				t.Errorf("conflict error %q should say which name is taken", err)
			}
			if diff := cmp.Diff(before, stateOf(r), cmpNetip); diff != "" {
				t.Errorf("refused Reserve changed the registry (-before +after):\n%s", diff)
			}
			if diff := cmp.Diff(beforeStore, storetest.Dump(t, st)); diff != "" {
				t.Errorf("refused Reserve changed the store (-before +after):\n%s", diff)
			}
		})
	}
}

// TestActivateDuplicateKeys: keys held by another active peer (a copied
// state directory) are refused; keys of a failed peer are not in use.
func TestActivateDuplicateKeys(t *testing.T) {
	withKeys := func(wg, sign []byte) records.Activated {
		a := activated(5)
		a.WGPubKey, a.SigningPubKey = wg, sign
		return a
	}
	tests := []struct {
		name     string
		a        records.Activated
		conflict bool
	}{
		{"wireguard key of an active node", withKeys(activated(1).WGPubKey, key(0x99)), true},
		{"signing key of an active node", withKeys(key(0x99), activated(1).SigningPubKey), true},
		{"coordinator's wireguard key", withKeys(coordinatorPeer().WGPubKey, key(0x99)), true},
		{"admin's signing key", withKeys(key(0x99), admin(0).SigningPubKey), true},
		{"fresh keys", withKeys(key(0x99), key(0x98)), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := store.NewMem()
			r := initRegistry(t, st, "203.0.113.0/24", 1)
			activateNode(t, r, 1)
			pending, err := r.Reserve(nodeEndpoint(5), nodeName(5), nil, false)
			if err != nil {
				t.Fatal(err)
			}
			before, beforeStore := stateOf(r), storetest.Dump(t, st)
			got, err := r.Activate(pending.VPNIP, tt.a)
			if !tt.conflict {
				if err != nil {
					t.Fatalf("Activate: %v", err)
				}
				if got.State != records.StateActive || got.VPNIP != pending.VPNIP {
					t.Errorf("Activate = %+v, want active at %s", got, pending.VPNIP)
				}
				return
			}
			if !errors.Is(err, registry.ErrConflict) || !strings.Contains(err.Error(), "same keys") {
				t.Fatalf("Activate with %s = %v, want ErrConflict about the same keys", tt.name, err)
			}
			if diff := cmp.Diff(before, stateOf(r), cmpNetip); diff != "" {
				t.Errorf("refused Activate changed the registry (-before +after):\n%s", diff)
			}
			if diff := cmp.Diff(beforeStore, storetest.Dump(t, st)); diff != "" {
				t.Errorf("refused Activate changed the store (-before +after):\n%s", diff)
			}
		})
	}
}

func TestActivateUnknownPeer(t *testing.T) {
	r := initRegistry(t, store.NewMem(), "203.0.113.0/24", 1)
	if _, err := r.Activate(netip.MustParseAddr("203.0.113.77"), activated(0)); !errors.Is(err, registry.ErrUnknownPeer) {
		t.Errorf("Activate of an unallocated IP = %v, want ErrUnknownPeer", err)
	}
}

// TestRevisionStamps: every change bumps the revision by one and stamps the
// changed record with it; lookups by key follow the records.
func TestRevisionStamps(t *testing.T) {
	r := initRegistry(t, store.NewMem(), "203.0.113.0/24", 1)
	steps := []struct {
		name string
		do   func() (records.Peer, error)
	}{
		{"Reserve", func() (records.Peer, error) { return r.Reserve(nodeEndpoint(0), nodeName(0), nil, false) }},
		{"Fail", func() (records.Peer, error) { return r.Fail(nodeEndpoint(0), "x") }},
		{"Reserve again", func() (records.Peer, error) { return r.Reserve(nodeEndpoint(0), nodeName(0), nil, false) }},
		{"Activate", func() (records.Peer, error) { return r.Activate(netip.MustParseAddr("203.0.113.3"), activated(0)) }},
		{"Fail new", func() (records.Peer, error) { return r.Fail(nodeEndpoint(1), "y") }},
	}
	for i, s := range steps {
		p, err := s.do()
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		want := uint64(i + 2) // Init was revision 1
		if got := r.Revision(); got != want {
			t.Errorf("after %s revision = %d, want %d", s.name, got, want)
		}
		if p.Revision != want {
			t.Errorf("%s returned a record stamped %d, want %d", s.name, p.Revision, want)
		}
		_, peers := r.Peers()
		for _, q := range peers {
			if q.VPNIP == p.VPNIP && q.Revision != want {
				t.Errorf("after %s the stored record is stamped %d, want %d", s.name, q.Revision, want)
			}
		}
	}
	got, ok := r.LookupSigningKey(activated(0).SigningPubKey)
	if !ok || got.VPNIP != netip.MustParseAddr("203.0.113.3") {
		t.Errorf("LookupSigningKey of the active node = %+v, %v", got, ok)
	}
	if _, ok := r.LookupSigningKey(key(0x55)); ok {
		t.Error("LookupSigningKey found an unknown key")
	}
}

func TestChanges(t *testing.T) {
	r := initRegistry(t, store.NewMem(), "203.0.113.0/24", 1) // rev 1: coordinator, admin
	activateNode(t, r, 0)                                     // rev 2, 3: node0
	if _, err := r.Fail(nodeEndpoint(1), "x"); err != nil {   // rev 4: node1
		t.Fatal(err)
	}
	if _, err := r.Reserve(nodeEndpoint(2), nodeName(2), nil, false); err != nil { // rev 5: node2
		t.Fatal(err)
	}
	_, all := r.Peers()
	ips := func(ps []records.Peer) []string {
		var out []string
		for _, p := range ps {
			out = append(out, p.VPNIP.String())
		}
		return out
	}
	allIPs := ips(all)
	tests := []struct {
		since    uint64
		wantFull bool
		want     []string
	}{
		{0, true, allIPs},
		{1, false, []string{"203.0.113.3", "203.0.113.4", "203.0.113.5"}},
		{2, false, []string{"203.0.113.3", "203.0.113.4", "203.0.113.5"}},
		{3, false, []string{"203.0.113.4", "203.0.113.5"}},
		{4, false, []string{"203.0.113.5"}},
		{5, false, nil},
		{6, true, allIPs},
		{1000, true, allIPs},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("since=%d", tt.since), func(t *testing.T) {
			rev, full, changed := r.Changes(tt.since)
			if rev != 5 || full != tt.wantFull {
				t.Errorf("Changes(%d) rev, full = %d, %v; want 5, %v", tt.since, rev, full, tt.wantFull)
			}
			if diff := cmp.Diff(tt.want, ips(changed)); diff != "" {
				t.Errorf("Changes(%d) (-want +got):\n%s", tt.since, diff)
			}
			for _, p := range changed {
				if !full && p.Revision <= tt.since {
					t.Errorf("Changes(%d) returned %s stamped %d", tt.since, p.VPNIP, p.Revision)
				}
			}
		})
	}
}

func TestWait(t *testing.T) {
	r := initRegistry(t, store.NewMem(), "203.0.113.0/24", 1)
	ctx := t.Context()

	t.Run("already newer", func(t *testing.T) {
		rev, err := r.Wait(ctx, 0)
		if err != nil || rev != 1 {
			t.Errorf("Wait(0) = %d, %v; want 1, nil at once", rev, err)
		}
	})
	t.Run("wakes on change", func(t *testing.T) {
		waiting := r.Revision()
		reserved := make(chan error, 1)
		go func() {
			_, err := r.Reserve(nodeEndpoint(0), nodeName(0), nil, false)
			reserved <- err
		}()
		rev, err := r.Wait(ctx, waiting)
		if err := <-reserved; err != nil {
			t.Fatal(err)
		}
		if err != nil || rev != waiting+1 {
			t.Errorf("Wait(%d) = %d, %v; want %d, nil", waiting, rev, err, waiting+1)
		}
	})
	t.Run("honours ctx", func(t *testing.T) {
		ctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			_, err := r.Wait(ctx, r.Revision())
			done <- err
		}()
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Wait after cancel = %v, want context.Canceled", err)
		}
	})
}

func TestApplied(t *testing.T) {
	r := initRegistry(t, store.NewMem(), "203.0.113.0/24", 0)
	ip := netip.MustParseAddr("203.0.113.3")
	if got := r.Applied(ip); got != (registry.Applied{}) {
		t.Errorf("Applied before any report = %+v", got)
	}
	r.ReportApplied(ip, 7, 1000)
	if got, want := r.Applied(ip), (registry.Applied{Revision: 7, At: 1000}); got != want {
		t.Errorf("Applied = %+v, want %+v", got, want)
	}
}

package registry_test

import (
	"context"
	"errors"
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
			if _, err := r.Reserve(nodeEndpoint(0), nodeName(0), nil, nil, false); !errors.Is(err, registry.ErrNotInitialized) {
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
			a, err := r.Reserve(nodeEndpoint(0), nodeName(0), nil, nil, false)
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
			c, err := r.Reserve(nodeEndpoint(2), nodeName(2), nil, nil, false)
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
				p, err := r.Reserve(nodeEndpoint(retry.i), nodeName(retry.i), nil, nil, false)
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
	got, err := r.Reserve(nodeEndpoint(0), nodeName(0), nil, nil, false)
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
	if _, err := r.Reserve(coordinatorPeer().PublicEndpoint, "x", nil, nil, false); !errors.Is(err, registry.ErrAlreadyActive) {
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
	got, err := r.Reserve(nodeEndpoint(0), nodeName(0), newKey, nil, true)
	if err != nil {
		t.Fatalf("Reserve(replaceActive) = %v", err)
	}
	if got.VPNIP != active.VPNIP || got.State != records.StatePending || got.Registered || got.ReevePubKey != nil || !got.RegisteredAt.IsZero() || string(got.WGPubKey) != string(newKey) {
		t.Errorf("re-reserved record %+v, want pending, unregistered, same VPN IP %s, new key", got, active.VPNIP)
	}
	// The coordinator is never replaced.
	if _, err := r.Reserve(coordinatorPeer().PublicEndpoint, "x", nil, nil, true); !errors.Is(err, registry.ErrConflict) {
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
			if _, err := r.Reserve(nodeEndpoint(1), "taken", nil, nil, false); err != nil {
				t.Fatal(err)
			}
		}, "taken", true},
		{"failed node's name is free", func(t *testing.T, r *registry.Registry) {
			if _, err := r.Reserve(nodeEndpoint(1), "free", nil, nil, false); err != nil {
				t.Fatal(err)
			}
			if _, err := r.Fail(nodeEndpoint(1), "x"); err != nil {
				t.Fatal(err)
			}
		}, "free", false},
		{"own name on retry", func(t *testing.T, r *registry.Registry) {
			if _, err := r.Reserve(nodeEndpoint(0), "mine", nil, nil, false); err != nil {
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
			p, err := r.Reserve(nodeEndpoint(0), tt.reserve, nil, nil, false)
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
			pending, err := r.Reserve(nodeEndpoint(5), nodeName(5), nil, nil, false)
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
			if !errors.Is(err, registry.ErrConflict) || !strings.Contains(err.Error(), "same ") {
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
		{"Reserve", func() (records.Peer, error) { return r.Reserve(nodeEndpoint(0), nodeName(0), nil, nil, false) }},
		{"Fail", func() (records.Peer, error) { return r.Fail(nodeEndpoint(0), "x") }},
		{"Reserve again", func() (records.Peer, error) { return r.Reserve(nodeEndpoint(0), nodeName(0), nil, nil, false) }},
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

// TestChangeLog: every committed change is one entry at its revision,
// holding the records it touched as they were before it.
func TestChangeLog(t *testing.T) {
	r := initRegistry(t, store.NewMem(), "203.0.113.0/24", 1)         // rev 1: coordinator, admin
	activateNode(t, r, 0)                                             // rev 2, 3: node0
	if _, err := r.Fail(nodeEndpoint(1), "unreachable"); err != nil { // rev 4: node1
		t.Fatal(err)
	}
	if _, err := r.Reserve(nodeEndpoint(2), nodeName(2), nil, nil, false); err != nil { // rev 5: node2
		t.Fatal(err)
	}
	type row struct {
		Rev    uint64
		Kind   registry.EntryKind
		IPs    []string
		Before []records.State
		Detail string
	}
	read := func(since uint64) []row {
		t.Helper()
		var out []row
		last, err := r.ReadLog(since, func(e registry.Entry) error {
			rw := row{Rev: e.Revision, Kind: e.Kind, Detail: e.Detail}
			for _, p := range e.Peers {
				rw.IPs = append(rw.IPs, p.VPNIP.String())
				st := records.State("")
				if p.Before != nil {
					st = p.Before.State
				}
				rw.Before = append(rw.Before, st)
			}
			out = append(out, rw)
			return nil
		})
		if err != nil || last != 5 {
			t.Fatalf("ReadLog(%d) = %d, %v; want 5, nil", since, last, err)
		}
		return out
	}
	want := []row{
		{1, registry.KindInit, []string{"203.0.113.1", "203.0.113.2"}, []records.State{"", ""}, "cluster c1, VPN 203.0.113.0/24"},
		{2, registry.KindReserved, []string{"203.0.113.3"}, []records.State{""}, "at " + nodeEndpoint(0)},
		{3, registry.KindActivated, []string{"203.0.113.3"}, []records.State{records.StatePending}, "horde " + activated(0).Horde + ", WireGuard at " + activated(0).WGEndpoint},
		{4, registry.KindFailed, []string{"203.0.113.4"}, []records.State{""}, "unreachable"},
		{5, registry.KindReserved, []string{"203.0.113.5"}, []records.State{""}, "at " + nodeEndpoint(2)},
	}
	if diff := cmp.Diff(want, read(0)); diff != "" {
		t.Errorf("ReadLog(0) (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want[3:], read(3)); diff != "" {
		t.Errorf("ReadLog(3) (-want +got):\n%s", diff)
	}
	if got := read(5); len(got) != 0 {
		t.Errorf("ReadLog(5) = %v, want nothing", got)
	}
}

// TestLogCompaction: the store keeps the newest LogCapacity entries, a
// read from before them fails with ErrCompacted, and a restart keeps them.
func TestLogCompaction(t *testing.T) {
	st := store.NewMem()
	r, err := registry.Open(st, registry.Options{LogCapacity: 3})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Init(records.Cluster{ID: "c1", VPNCIDR: mustParseCIDR(t, "203.0.113.0/24")}, coordinatorPeer(), nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if _, err := r.Fail(nodeEndpoint(byte(i)), "x"); err != nil { // revs 2..6
			t.Fatal(err)
		}
	}
	if got := r.LogFirst(); got != 4 {
		t.Errorf("LogFirst = %d, want 4 (revisions 4, 5, 6 kept)", got)
	}
	if _, err := r.ReadLog(1, func(registry.Entry) error { return nil }); !errors.Is(err, registry.ErrCompacted) {
		t.Errorf("ReadLog(1) = %v, want ErrCompacted", err)
	}
	var revs []uint64
	if _, err := r.ReadLog(3, func(e registry.Entry) error { revs = append(revs, e.Revision); return nil }); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]uint64{4, 5, 6}, revs); diff != "" {
		t.Errorf("ReadLog(3) revisions (-want +got):\n%s", diff)
	}
	logKeys := 0
	for k := range storetest.Dump(t, st) {
		if strings.HasPrefix(k, "registry/log/0") {
			logKeys++
		}
	}
	if logKeys != 3 {
		t.Errorf("the store holds %d log entries, want 3", logKeys)
	}
	r2, err := registry.Open(st, registry.Options{LogCapacity: 3})
	if err != nil {
		t.Fatal(err)
	}
	if got := r2.LogFirst(); got != 4 {
		t.Errorf("after a restart LogFirst = %d, want 4", got)
	}
}

// TestGroupCommit: changes made at once are committed together, each with
// its own revision and entry; a refused one among them leaves nothing.
func TestGroupCommit(t *testing.T) {
	st := store.NewMem()
	r := initRegistry(t, st, "203.0.113.0/24", 0)
	const n = 40
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := nodeName(byte(i))
			if i%10 == 9 {
				name = nodeName(0) // taken by node 0 (or refused itself)
			}
			_, errs[i] = r.Reserve(nodeEndpoint(byte(i)), name, nil, nil, false)
		}()
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		if err == nil {
			ok++
		} else if !errors.Is(err, registry.ErrConflict) {
			t.Errorf("Reserve: %v", err)
		}
	}
	if got, want := r.Revision(), uint64(1+ok); got != want {
		t.Errorf("revision %d after %d accepted changes, want %d", got, ok, want)
	}
	seen := map[uint64]bool{}
	if _, err := r.ReadLog(1, func(e registry.Entry) error {
		if seen[e.Revision] || e.Kind != registry.KindReserved || len(e.Peers) != 1 {
			t.Errorf("entry %+v", e)
		}
		seen[e.Revision] = true
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(seen) != ok {
		t.Errorf("%d entries for %d accepted changes", len(seen), ok)
	}
	_, peers := r.Peers()
	ips := map[netip.Addr]bool{}
	for _, p := range peers {
		if ips[p.VPNIP] {
			t.Errorf("VPN IP %s given twice", p.VPNIP)
		}
		ips[p.VPNIP] = true
	}
	if len(peers) != 1+ok { // the coordinator and the accepted nodes
		t.Errorf("%d records after %d accepted reservations, want %d", len(peers), ok, 1+ok)
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
			_, err := r.Reserve(nodeEndpoint(0), nodeName(0), nil, nil, false)
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

// TestRemove: a removed node leaves a tombstone in one revision; its VPN
// IP is never given again, its keys are refused, and removing it again or
// removing the coordinator is refused.
func TestRemove(t *testing.T) {
	r := initRegistry(t, store.NewMem(), "203.0.113.0/24", 1)
	node := activateNode(t, r, 0)
	reeveKey, clientKey := key(0x71), key(0x72)
	if _, err := r.SetRegistration(node.VPNIP, reeveKey, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := r.SetServices(node.VPNIP, records.Services{Clients: []records.ServiceClient{{Service: "pastiche", PubKey: clientKey}}}); err != nil {
		t.Fatal(err)
	}
	rev := r.Revision()
	was, err := r.Remove(node.VPNIP)
	if err != nil {
		t.Fatal(err)
	}
	if was.State != records.StateActive || r.Revision() != rev+1 {
		t.Errorf("Remove returned %s at revision %d, want the active record at %d", was.State, r.Revision(), rev+1)
	}
	tomb, ok := r.Peer(node.VPNIP)
	if !ok || tomb.State != records.StateRemoved || len(tomb.RevokedKeys) != 2 {
		t.Errorf("tombstone = %+v", tomb)
	}
	if _, ok := r.Services()[node.VPNIP]; ok {
		t.Error("the removed node's services are still recorded")
	}
	_, peers := r.Peers()
	for _, p := range peers {
		if p.VPNIP == node.VPNIP {
			t.Error("Peers lists the removed node")
		}
	}
	if p, ok := r.LookupSigningKey(node.SigningPubKey); !ok || p.State != records.StateRemoved {
		t.Errorf("LookupSigningKey of the removed key = %+v, %v; want the tombstone", p, ok)
	}
	t.Run("its endpoint gets a new IP", func(t *testing.T) {
		p, err := r.Reserve(nodeEndpoint(0), nodeName(0), key(0x90), nil, false)
		if err != nil {
			t.Fatal(err)
		}
		if p.VPNIP == node.VPNIP {
			t.Errorf("the removed node's VPN IP %s was given again", p.VPNIP)
		}
	})
	t.Run("its keys are refused", func(t *testing.T) {
		a := activated(0)
		if _, err := r.Reserve(nodeEndpoint(5), "other", a.WGPubKey, nil, false); !errors.Is(err, registry.ErrConflict) {
			t.Errorf("Reserve with the removed WireGuard key = %v, want ErrConflict", err)
		}
		p, err := r.Reserve(nodeEndpoint(6), "other2", key(0x91), nil, false)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.Activate(p.VPNIP, records.Activated{Name: "other2", WGPubKey: key(0x91), SigningPubKey: a.SigningPubKey}); !errors.Is(err, registry.ErrConflict) {
			t.Errorf("Activate with the removed signing key = %v, want ErrConflict", err)
		}
		other := activateNode(t, r, 7)
		if _, err := r.SetRegistration(other.VPNIP, reeveKey, ""); !errors.Is(err, registry.ErrConflict) {
			t.Errorf("registering the removed reeve key = %v, want ErrConflict", err)
		}
		if _, err := r.SetRegistration(other.VPNIP, key(0x92), ""); err != nil {
			t.Fatal(err)
		}
		_, err = r.SetServices(other.VPNIP, records.Services{Clients: []records.ServiceClient{{Service: "pastiche", PubKey: clientKey}}})
		if !errors.Is(err, registry.ErrConflict) {
			t.Errorf("a service client with the removed key = %v, want ErrConflict", err)
		}
	})
	t.Run("twice", func(t *testing.T) {
		if _, err := r.Remove(node.VPNIP); !errors.Is(err, registry.ErrRemoved) {
			t.Errorf("second Remove = %v, want ErrRemoved", err)
		}
	})
	t.Run("the coordinator", func(t *testing.T) {
		if _, err := r.Remove(netip.MustParseAddr("203.0.113.1")); !errors.Is(err, registry.ErrConflict) {
			t.Errorf("removing the coordinator = %v, want ErrConflict", err)
		}
	})
	t.Run("a failed row", func(t *testing.T) {
		failed, err := r.Fail("192.0.2.99:7443", "typo")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.Remove(failed.VPNIP); err != nil {
			t.Errorf("removing a failed row: %v", err)
		}
		if _, ok := r.PeerByEndpoint("192.0.2.99:7443"); ok {
			t.Error("the removed row's endpoint is still known")
		}
	})
}

package registry_test

import (
	"errors"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fabricmesh/fabric/coordinator/registry"
	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/sshusers/sshuserstest"
	"github.com/fabricmesh/fabric/internal/store"
	"github.com/fabricmesh/fabric/internal/store/storetest"
	"github.com/google/go-cmp/cmp"
)

// TestRestart: a registry reopened from its bbolt file has the same
// cluster, revision and records, and goes on allocating where it stopped.
func TestRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	st := openBolt(t, path)
	r := initRegistry(t, st, "203.0.113.0/24", 1)
	activateNode(t, r, 0)                                             // .3
	if _, err := r.Fail(nodeEndpoint(1), "unreachable"); err != nil { // .4
		t.Fatal(err)
	}
	if _, err := r.Reserve(nodeEndpoint(2), nodeName(2), nil, nil, false); err != nil { // .5, pending
		t.Fatal(err)
	}
	before := stateOf(r)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	st = openBolt(t, path)
	r, err := registry.Open(st)
	if err != nil {
		t.Fatalf("reopening: %v", err)
	}
	if diff := cmp.Diff(before, stateOf(r), cmpNetip); diff != "" {
		t.Fatalf("reopened registry differs (-before +after):\n%s", diff)
	}
	var changed []netip.Addr
	rev, err := r.ReadLog(before.Revision-1, func(e registry.Entry) error {
		for _, p := range e.Peers {
			changed = append(changed, p.VPNIP)
		}
		return nil
	})
	if err != nil || rev != before.Revision || len(changed) != 1 || changed[0] != netip.MustParseAddr("203.0.113.5") {
		t.Errorf("ReadLog(%d) after restart = %d, %v, %v; want only the last change", before.Revision-1, rev, changed, err)
	}
	tests := []struct {
		endpoint string
		name     string
		wantIP   string
		wantErr  error
	}{
		{nodeEndpoint(3), nodeName(3), "203.0.113.6", nil},            // next never-used address
		{nodeEndpoint(1), nodeName(1), "203.0.113.4", nil},            // failed node keeps its address
		{nodeEndpoint(2), nodeName(2), "203.0.113.5", nil},            // pending node keeps its address
		{nodeEndpoint(0), nodeName(0), "", registry.ErrAlreadyActive}, // active node stays active
		{nodeEndpoint(4), nodeName(0), "", registry.ErrConflict},      // its name stays taken
	}
	for _, tt := range tests {
		p, err := r.Reserve(tt.endpoint, tt.name, nil, nil, false)
		if tt.wantErr != nil {
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("Reserve(%s, %s) after restart = %v, want %v", tt.endpoint, tt.name, err, tt.wantErr)
			}
			continue
		}
		if err != nil || p.VPNIP.String() != tt.wantIP {
			t.Errorf("Reserve(%s) after restart = %s, %v; want %s", tt.endpoint, p.VPNIP, err, tt.wantIP)
		}
	}
	if got, want := r.Revision(), before.Revision+3; got != want {
		t.Errorf("revision after 3 changes = %d, want %d", got, want)
	}
	if p, ok := r.LookupSigningKey(activated(0).SigningPubKey); !ok || p.Name != nodeName(0) {
		t.Errorf("LookupSigningKey of node0 after restart = %+v, %v", p, ok)
	}
}

// TestFailedTransaction: whichever write of a change fails, the change is
// not half-made: the registry's memory and the store are as before, and the
// same change succeeds once the store works again.
func TestFailedTransaction(t *testing.T) {
	type op struct {
		name string
		// setup runs on a working registry before op.
		setup func(t *testing.T, r *registry.Registry)
		do    func(r *registry.Registry) error
	}
	ops := []op{
		{name: "Init", do: func(r *registry.Registry) error {
			_, err := r.Init(records.Cluster{ID: "c1", VPNCIDR: mustParseCIDR(t, "203.0.113.0/24")}, coordinatorPeer(),
				[]records.Peer{admin(0), admin(1)}, testUsers(), func(tx store.Tx) error { return tx.Put("caller/key", []byte("v")) })
			return err
		}},
		{name: "UpdateSSHUsers add", setup: initWithUsers, do: func(r *registry.Registry) error {
			_, _, _, err := r.UpdateSSHUsers(func(cur []records.SSHUser) ([]records.SSHUser, error) {
				return append(cur, records.SSHUser{Name: "carol", Keys: []string{sshuserstest.Key(9, "")}}), nil
			})
			return err
		}},
		{name: "UpdateSSHUsers remove", setup: initWithUsers, do: func(r *registry.Registry) error {
			_, _, _, err := r.UpdateSSHUsers(func(cur []records.SSHUser) ([]records.SSHUser, error) { return cur[1:], nil })
			return err
		}},
		{name: "Reserve new", setup: initOnly, do: func(r *registry.Registry) error {
			_, err := r.Reserve(nodeEndpoint(0), nodeName(0), nil, nil, false)
			return err
		}},
		{name: "Reserve failed", setup: failNode0, do: func(r *registry.Registry) error {
			_, err := r.Reserve(nodeEndpoint(0), nodeName(0), nil, nil, false)
			return err
		}},
		{name: "Fail new", setup: initOnly, do: func(r *registry.Registry) error {
			_, err := r.Fail(nodeEndpoint(0), "x")
			return err
		}},
		{name: "Activate", setup: reserveNode0, do: func(r *registry.Registry) error {
			_, err := r.Activate(netip.MustParseAddr("203.0.113.3"), activated(0))
			return err
		}},
	}
	for _, o := range ops {
		for _, sk := range storeKinds() {
			t.Run(o.name+"/"+sk.name, func(t *testing.T) {
				st := &failingStore{Store: sk.open(t)}
				r, err := registry.Open(st)
				if err != nil {
					t.Fatal(err)
				}
				if o.setup != nil {
					o.setup(t, r)
				}
				before, beforeStore := stateOf(r), storetest.Dump(t, st)
				for n := 1; ; n++ {
					if n > 20 {
						t.Fatalf("%s still fails with the put #%d armed to fail", o.name, n)
					}
					st.failNthPut(n)
					err := o.do(r)
					if err == nil {
						if n == 1 {
							t.Fatalf("%s wrote nothing", o.name)
						}
						break // fewer than n puts: the change is complete
					}
					if !errors.Is(err, errInjected) {
						t.Fatalf("%s with put #%d failing = %v, want the injected error", o.name, n, err)
					}
					if diff := cmp.Diff(before, stateOf(r), cmpNetip); diff != "" {
						t.Fatalf("%s with put #%d failing changed the registry (-before +after):\n%s", o.name, n, diff)
					}
					if diff := cmp.Diff(beforeStore, storetest.Dump(t, st)); diff != "" {
						t.Fatalf("%s with put #%d failing changed the store (-before +after):\n%s", o.name, n, diff)
					}
					// Reopening finds the same registry as well.
					reopened, err := registry.Open(st)
					if err != nil {
						t.Fatal(err)
					}
					if diff := cmp.Diff(before, stateOf(reopened), cmpNetip); diff != "" {
						t.Fatalf("%s with put #%d failing: reopened registry differs (-before +after):\n%s", o.name, n, diff)
					}
				}
				after := stateOf(r)
				if after.Revision != before.Revision+1 {
					t.Errorf("%s that finally succeeded moved the revision from %d to %d, want +1", o.name, before.Revision, after.Revision)
				}
				reopened, err := registry.Open(st)
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(after, stateOf(reopened), cmpNetip); diff != "" {
					t.Errorf("%s: memory and store disagree (-memory +reopened):\n%s", o.name, diff)
				}
			})
		}
	}
}

func initOnly(t *testing.T, r *registry.Registry) {
	t.Helper()
	if _, err := r.Init(records.Cluster{ID: "c1", VPNCIDR: mustParseCIDR(t, "203.0.113.0/24")}, coordinatorPeer(),
		[]records.Peer{admin(0)}, nil, nil); err != nil {
		t.Fatal(err)
	}
}

func initWithUsers(t *testing.T, r *registry.Registry) {
	t.Helper()
	if _, err := r.Init(records.Cluster{ID: "c1", VPNCIDR: mustParseCIDR(t, "203.0.113.0/24")}, coordinatorPeer(),
		[]records.Peer{admin(0)}, testUsers(), nil); err != nil {
		t.Fatal(err)
	}
}

func reserveNode0(t *testing.T, r *registry.Registry) {
	t.Helper()
	initOnly(t, r)
	if _, err := r.Reserve(nodeEndpoint(0), nodeName(0), nil, nil, false); err != nil {
		t.Fatal(err)
	}
}

func failNode0(t *testing.T, r *registry.Registry) {
	t.Helper()
	reserveNode0(t, r)
	if _, err := r.Fail(nodeEndpoint(0), "x"); err != nil {
		t.Fatal(err)
	}
}

// TestOpenCorrupt: records that cannot be read stop Open with the key that
// is broken.
func TestOpenCorrupt(t *testing.T) {
	for _, tt := range []struct{ key, value, want string }{
		{"registry/cluster", "]", "decoding registry/cluster"},
		{"registry/peers/203.0.113.3", "{", "decoding registry/peers/203.0.113.3"},
	} {
		t.Run(tt.key, func(t *testing.T) {
			st := store.NewMem()
			if tt.key != "registry/cluster" {
				initRegistry(t, st, "203.0.113.0/24", 0)
			}
			if err := st.Update(func(tx store.Tx) error { return tx.Put(tt.key, []byte(tt.value)) }); err != nil {
				t.Fatal(err)
			}
			if _, err := registry.Open(st); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Open = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

// TestStateLogAfterRestart: the log entries a reopened registry's State
// gives carry the After records its observers got when they were
// committed, although the store keeps only the Before ones (a feed built
// after a coordinator restart reads whom each entry concerns from them).
func TestStateLogAfterRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	st := openBolt(t, path)
	r := initRegistry(t, st, "203.0.113.0/24", 1)
	var observed []registry.Entry
	if _, err := r.Subscribe(func(es []registry.Entry) { observed = append(observed, es...) }); err != nil {
		t.Fatal(err)
	}
	n0, n1 := activateNode(t, r, 0), activateNode(t, r, 1)
	if _, err := r.SetRegistration(n0.VPNIP, key(0x77), ""); err != nil {
		t.Fatal(err)
	}
	if _, err := r.SetServices(n0.VPNIP, records.Services{Endpoints: []records.ServiceEndpoint{{Service: "pastiche", Port: 7450}}}); err != nil {
		t.Fatal(err)
	}
	if err := r.SetWGEndpoint(n1.VPNIP, netip.AddrPortFrom(nodeIP(1), 51999).String()); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Reserve(nodeEndpoint(2), nodeName(2), nil, nil, false); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	r, err := registry.Open(openBolt(t, path))
	if err != nil {
		t.Fatalf("reopening: %v", err)
	}
	state, err := r.State()
	if err != nil {
		t.Fatal(err)
	}
	type after struct {
		Rev      uint64
		IP       netip.Addr
		Peer     *records.Peer
		Services *records.Services
	}
	afters := func(es []registry.Entry, from uint64) []after {
		var out []after
		for _, e := range es {
			if e.Revision < from {
				continue
			}
			for _, p := range e.Peers {
				out = append(out, after{e.Revision, p.VPNIP, p.After, p.AfterServices})
			}
		}
		return out
	}
	want := afters(observed, observed[0].Revision)
	if len(want) == 0 {
		t.Fatal("the observer got no entry touching a peer")
	}
	if diff := cmp.Diff(want, afters(state.Log, observed[0].Revision), cmpNetip); diff != "" {
		t.Errorf("After records of the reopened log (-as observed +as read back):\n%s", diff)
	}
}

package vpnapi_test

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/fabricmesh/fabric/core"
	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/sshusers/sshuserstest"
	"github.com/fabricmesh/fabric/internal/view"
	"github.com/fabricmesh/fabric/vpnapi"
	"github.com/fabricmesh/fabric/vpnapi/vpnapipb"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// n1's views: v1, then v2, in which pastiche@n2 has a new key, the
// endpoint pastiche@n2 is gone and pastiche@n3 is new.
var (
	pastiche2Key, pastiche2NewKey = pub(newKey()), pub(newKey())
	v1                            = view.View{
		Whitelist: []view.WhitelistEntry{{Endpoint: "pastiche@n1", Client: "pastiche@n2", PubKey: pastiche2Key}},
		Endpoints: []view.EndpointEntry{{Client: "pastiche@n1", Service: "pastiche", Endpoint: "pastiche@n2", Address: "203.0.113.4:7450"}},
		Catalog:   []view.CatalogEntry{{Client: "pastiche@n1", Service: "pastiche"}},
	}
	v2 = view.View{
		Whitelist: []view.WhitelistEntry{{Endpoint: "pastiche@n1", Client: "pastiche@n2", PubKey: pastiche2NewKey}},
		Endpoints: []view.EndpointEntry{{Client: "pastiche@n1", Service: "pastiche", Endpoint: "pastiche@n3", Address: "203.0.113.5:7450"}},
		Catalog:   []view.CatalogEntry{{Client: "pastiche@n1", Service: "pastiche"}},
	}
	// v1to2 is the change from v1 to v2, written out.
	v1to2 = core.ViewUpdate{
		Upserts: view.View{
			Whitelist: []view.WhitelistEntry{{Endpoint: "pastiche@n1", Client: "pastiche@n2", PubKey: pastiche2NewKey}},
			Endpoints: []view.EndpointEntry{{Client: "pastiche@n1", Service: "pastiche", Endpoint: "pastiche@n3", Address: "203.0.113.5:7450"}},
		},
		Removed: []string{"endpoint pastiche@n1 pastiche@n2"},
	}
)

func TestViewChangeWrittenOut(t *testing.T) {
	if diff := cmp.Diff(v2, v1.Apply(v1to2.Upserts, v1to2.Removed), cmpOpts); diff != "" {
		t.Errorf("v1 with v1to2 applied is not v2 (-want +got):\n%s", diff)
	}
}

// watchFixture is a cluster with the vpnapi served and n1 connected.
type watchFixture struct {
	*cluster
	views *fakeViews
	srv   server
	n1    core.UpdateClient
}

func newWatchFixture(tb testing.TB, hold time.Duration, withViews bool) *watchFixture {
	tb.Helper()
	c := newCluster(tb)
	f := &watchFixture{cluster: c, views: &fakeViews{reg: c.reg, views: map[netip.Addr]view.View{}}}
	f.views.set(c.nodeIPs["n1"], v1)
	cfg := vpnapi.Config{Registry: c.reg, HoldTime: hold}
	if withViews {
		cfg.Views = f.views
	}
	f.srv = c.serve(tb, cfg)
	f.n1 = f.srv.dial(tb, c.nodeKeys["n1"])
	return f
}

var testUsers = []records.SSHUser{
	{Name: "alice", Keys: []string{sshuserstest.Key(1, "alice@laptop")}},
	{Name: "bob", Keys: []string{sshuserstest.Key(2, "")}},
	{Name: "carol", Keys: []string{sshuserstest.Key(3, "carol")}},
}

// setSSHUsers replaces the registry's SSH users.
func (f *watchFixture) setSSHUsers(tb testing.TB, users []records.SSHUser) {
	tb.Helper()
	if _, _, _, err := f.reg.UpdateSSHUsers(func([]records.SSHUser) ([]records.SSHUser, error) { return users, nil }); err != nil {
		tb.Fatal(err)
	}
}

// watch is one call of n1's.
func (f *watchFixture) watch(tb testing.TB, applied uint64) core.Update {
	tb.Helper()
	upd, err := f.n1.WatchUpdates(testContext(tb), applied)
	if err != nil {
		tb.Fatalf("WatchUpdates(%d): %v", applied, err)
	}
	return upd
}

// peersOf returns the named nodes' records as a node receives them.
func (f *watchFixture) peersOf(tb testing.TB, names ...string) []records.Peer {
	tb.Helper()
	var out []records.Peer
	for _, name := range names {
		p, ok := f.reg.Peer(f.nodeIPs[name])
		if !ok {
			tb.Fatalf("no record of %s", name)
		}
		out = append(out, onWire(p))
	}
	return out
}

func (f *watchFixture) setRegistered(tb testing.TB, name string) {
	tb.Helper()
	if _, err := f.reg.SetRegistration(f.nodeIPs[name], pub(newKey()), ""); err != nil {
		tb.Fatal(err)
	}
}

// TestWatchUpdates runs n1's long poll after various histories: each case
// makes calls and changes (prepare, which returns the revision n1 then
// reports) and checks the answer to the next call.
func TestWatchUpdates(t *testing.T) {
	tests := []struct {
		name     string
		noViews  bool
		prepare  func(t *testing.T, f *watchFixture) (applied uint64)
		want     func(t *testing.T, f *watchFixture) core.Update
		wantSame bool // the answer is "nothing new" at the applied revision
	}{
		{
			name:    "first call: everything",
			prepare: func(*testing.T, *watchFixture) uint64 { return 0 },
			want: func(t *testing.T, f *watchFixture) core.Update {
				return core.Update{Revision: f.reg.Revision(), Full: true, Peers: f.allPeers(), View: &core.ViewUpdate{Full: true, Upserts: v1}, SSHUsers: &core.SSHUserSet{}}
			},
		},
		{
			name: "after a change: the changed peers and the view's change",
			prepare: func(t *testing.T, f *watchFixture) uint64 {
				applied := f.watch(t, 0).Revision
				f.views.set(f.nodeIPs["n1"], v2)
				f.addNode(t, "n3", "b")
				return applied
			},
			want: func(t *testing.T, f *watchFixture) core.Update {
				return core.Update{Revision: f.reg.Revision(), Peers: f.peersOf(t, "n3"), View: &v1to2}
			},
		},
		{
			name: "peer change only",
			prepare: func(t *testing.T, f *watchFixture) uint64 {
				applied := f.watch(t, 0).Revision
				f.setRegistered(t, "n2")
				return applied
			},
			want: func(t *testing.T, f *watchFixture) core.Update {
				return core.Update{Revision: f.reg.Revision(), Peers: f.peersOf(t, "n2")}
			},
		},
		{
			name: "view change only",
			prepare: func(t *testing.T, f *watchFixture) uint64 {
				f.setRegistered(t, "n2")
				applied := f.watch(t, 0).Revision
				f.views.set(f.nodeIPs["n1"], v2)
				if _, err := f.reg.SetServices(f.nodeIPs["n2"], records.Services{Clients: []records.ServiceClient{{Service: "pastiche", PubKey: pastiche2NewKey}}}); err != nil {
					t.Fatal(err)
				}
				return applied
			},
			want: func(t *testing.T, f *watchFixture) core.Update {
				return core.Update{Revision: f.reg.Revision(), View: &v1to2}
			},
		},
		{
			name: "no change: the hold time passes",
			prepare: func(t *testing.T, f *watchFixture) uint64 {
				return f.watch(t, 0).Revision
			},
			wantSame: true,
		},
		{
			name: "node ahead of the coordinator: everything",
			prepare: func(t *testing.T, f *watchFixture) uint64 {
				return f.watch(t, 0).Revision + 100
			},
			want: func(t *testing.T, f *watchFixture) core.Update {
				return core.Update{Revision: f.reg.Revision(), Full: true, Peers: f.allPeers(), View: &core.ViewUpdate{Full: true, Upserts: v1}, SSHUsers: &core.SSHUserSet{}}
			},
		},
		{
			name: "node that did not apply the last answer: changes since its revision, whole view",
			prepare: func(t *testing.T, f *watchFixture) uint64 {
				applied := f.watch(t, 0).Revision
				f.views.set(f.nodeIPs["n1"], v2)
				f.addNode(t, "n3", "b")
				f.watch(t, applied) // lost
				f.addNode(t, "n4", "b")
				return applied
			},
			want: func(t *testing.T, f *watchFixture) core.Update {
				return core.Update{Revision: f.reg.Revision(), Peers: f.peersOf(t, "n3", "n4"), View: &core.ViewUpdate{Full: true, Upserts: v2}}
			},
		},
		{
			name: "coordinator restarted: whole view at the node's revision",
			prepare: func(t *testing.T, f *watchFixture) uint64 {
				return f.reg.Revision() // from before the restart; this server never answered n1
			},
			want: func(t *testing.T, f *watchFixture) core.Update {
				return core.Update{Revision: f.reg.Revision(), View: &core.ViewUpdate{Full: true, Upserts: v1}}
			},
		},
		{
			name: "node without a view",
			prepare: func(t *testing.T, f *watchFixture) uint64 {
				f.views.mu.Lock()
				delete(f.views.views, f.nodeIPs["n1"])
				f.views.mu.Unlock()
				return 0
			},
			want: func(t *testing.T, f *watchFixture) core.Update {
				return core.Update{Revision: f.reg.Revision(), Full: true, Peers: f.allPeers(), SSHUsers: &core.SSHUserSet{}}
			},
		},
		{
			name: "SSH users changed: the whole set",
			prepare: func(t *testing.T, f *watchFixture) uint64 {
				applied := f.watch(t, 0).Revision
				f.setSSHUsers(t, testUsers[:2])
				applied = f.watch(t, applied).Revision
				f.setSSHUsers(t, testUsers[1:])
				return applied
			},
			want: func(t *testing.T, f *watchFixture) core.Update {
				_, users := f.reg.SSHUsers()
				return core.Update{Revision: f.reg.Revision(), SSHUsers: &core.SSHUserSet{Users: users}}
			},
		},
		{
			name: "every SSH user removed: the empty set",
			prepare: func(t *testing.T, f *watchFixture) uint64 {
				f.setSSHUsers(t, testUsers)
				applied := f.watch(t, 0).Revision
				f.setSSHUsers(t, nil)
				return applied
			},
			want: func(t *testing.T, f *watchFixture) core.Update {
				return core.Update{Revision: f.reg.Revision(), SSHUsers: &core.SSHUserSet{}}
			},
		},
		{
			name:    "no views served: peers only",
			noViews: true,
			prepare: func(t *testing.T, f *watchFixture) uint64 {
				applied := f.watch(t, 0).Revision
				f.addNode(t, "n3", "b")
				return applied
			},
			want: func(t *testing.T, f *watchFixture) core.Update {
				return core.Update{Revision: f.reg.Revision(), Peers: f.peersOf(t, "n3")}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newWatchFixture(t, 50*time.Millisecond, !tt.noViews)
			applied := tt.prepare(t, f)
			got := f.watch(t, applied)
			want := core.Update{Revision: applied}
			if !tt.wantSame {
				want = tt.want(t, f)
			}
			if diff := cmp.Diff(want, got, cmpOpts); diff != "" {
				t.Errorf("answer to WatchUpdates(%d) (-want +got):\n%s", applied, diff)
			}
			if rep := f.reg.Applied(f.nodeIPs["n1"]); rep.Revision != applied || rep.At == 0 {
				t.Errorf("the registry has n1 at %+v, want revision %d reported", rep, applied)
			}
		})
	}
}

// waitHeld waits until n1's call reporting applied has reached the server
// (which records the report before holding the call).
func (f *watchFixture) waitHeld(ctx context.Context, tb testing.TB, applied uint64) {
	tb.Helper()
	for f.reg.Applied(f.nodeIPs["n1"]).Revision != applied {
		select {
		case <-ctx.Done():
			tb.Fatal("the call never reached the server")
		case <-time.After(time.Millisecond):
		}
	}
}

// TestWatchUpdatesWakes: a held call returns as soon as the registry
// changes, with the change.
func TestWatchUpdatesWakes(t *testing.T) {
	f := newWatchFixture(t, time.Hour, true)
	ctx := testContext(t)
	applied := f.watch(t, 0).Revision
	type answer struct {
		upd core.Update
		err error
	}
	answers := make(chan answer, 1)
	go func() {
		upd, err := f.n1.WatchUpdates(ctx, applied)
		answers <- answer{upd, err}
	}()
	f.waitHeld(ctx, t, applied)
	f.setRegistered(t, "n2")
	a := <-answers
	if a.err != nil {
		t.Fatal(a.err)
	}
	want := core.Update{Revision: f.reg.Revision(), Peers: f.peersOf(t, "n2")}
	if diff := cmp.Diff(want, a.upd, cmpOpts); diff != "" {
		t.Errorf("answer (-want +got):\n%s", diff)
	}
}

// TestWatchUpdatesCallerEnds: a held call whose caller gives up ends with
// the caller's context error.
func TestWatchUpdatesCallerEnds(t *testing.T) {
	f := newWatchFixture(t, time.Hour, true)
	applied := f.watch(t, 0).Revision
	ctx, cancel := context.WithCancel(testContext(t))
	done := make(chan error, 1)
	go func() {
		_, err := f.n1.WatchUpdates(ctx, applied)
		done <- err
	}()
	f.waitHeld(ctx, t, applied)
	cancel()
	if err := <-done; status.Code(err) != codes.Canceled {
		t.Errorf("WatchUpdates after cancel: %v, want Canceled", err)
	}
}

// TestCallersRefused: only active nodes and the coordinator may call, over
// an authenticated connection.
func TestCallersRefused(t *testing.T) {
	c := newCluster(t)
	reg := &fakeRegistrar{}
	srv := c.serve(t, vpnapi.Config{Registry: c.reg, Registrar: reg, HoldTime: time.Millisecond})
	ctx := testContext(t)
	for name, key := range map[string][]byte{"admin": c.adminKey, "unknown": newKey()} {
		t.Run(name, func(t *testing.T) {
			cl := srv.dial(t, key)
			if _, err := cl.WatchUpdates(ctx, 0); status.Code(err) != codes.PermissionDenied {
				t.Errorf("WatchUpdates: %v, want PermissionDenied", err)
			}
			err := (&vpnapi.Dialer{SigningPrivKey: key}).Register(ctx, srv.info(), pub(newKey()))
			if status.Code(err) != codes.PermissionDenied {
				t.Errorf("Register: %v, want PermissionDenied", err)
			}
		})
	}
	if calls := reg.called(); len(calls) != 0 {
		t.Errorf("the registrar was asked for %v", calls)
	}
	t.Run("wrong pin", func(t *testing.T) {
		info := srv.info()
		info.TLSPin = make([]byte, 32)
		cl, err := (&vpnapi.Dialer{SigningPrivKey: c.nodeKeys["n1"]}).DialCoordinator(ctx, info)
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		if _, err := cl.WatchUpdates(ctx, 0); status.Code(err) != codes.PermissionDenied {
			t.Errorf("WatchUpdates: %v, want PermissionDenied", err)
		}
	})
	t.Run("no connection authentication", func(t *testing.T) {
		s := vpnapi.NewServer(vpnapi.Config{Registry: c.reg, Registrar: reg})
		if _, err := s.WatchUpdates(ctx, &vpnapipb.WatchUpdatesRequest{}); status.Code(err) != codes.PermissionDenied {
			t.Errorf("WatchUpdates: %v, want PermissionDenied", err)
		}
		if _, err := s.Register(ctx, &vpnapipb.RegisterRequest{}); status.Code(err) != codes.PermissionDenied {
			t.Errorf("Register: %v, want PermissionDenied", err)
		}
	})
}

// TestRegister: the handshake is run for the calling node's address (from
// its connection) with the key it offers, and a failure reaches the node.
func TestRegister(t *testing.T) {
	c := newCluster(t)
	ctx := testContext(t)
	key := pub(newKey())
	tests := []struct {
		name      string
		caller    string // node, or "coord"
		noReg     bool
		regErr    error
		wantCode  codes.Code
		wantMsg   string
		wantCalls int
	}{
		{name: "n1", caller: "n1", wantCalls: 1},
		{name: "n2", caller: "n2", wantCalls: 1},
		{name: "coordinator", caller: "coord", wantCalls: 1},
		{name: "handshake failed", caller: "n1", regErr: errors.New("registration failed: the reeve at 203.0.113.3:7445 did not sign the nonce"),
			wantCode: codes.PermissionDenied, wantMsg: "did not sign the nonce", wantCalls: 1},
		{name: "not served", caller: "n1", noReg: true, wantCode: codes.Unavailable, wantMsg: "registration is not served here"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := &fakeRegistrar{err: tt.regErr}
			cfg := vpnapi.Config{Registry: c.reg, Registrar: reg}
			if tt.noReg {
				cfg.Registrar = nil
			}
			srv := c.serve(t, cfg)
			signing, ip := c.nodeKeys[tt.caller], c.nodeIPs[tt.caller]
			if tt.caller == "coord" {
				signing, ip = c.coordKey, c.coordIP
			}
			err := (&vpnapi.Dialer{SigningPrivKey: signing}).Register(ctx, srv.info(), key)
			if status.Code(err) != tt.wantCode || (err != nil && !strings.Contains(err.Error(), tt.wantMsg)) {
				t.Errorf("Register: %v, want code %v with %q", err, tt.wantCode, tt.wantMsg)
			}
			var want []registrarCall
			for range tt.wantCalls {
				want = append(want, registrarCall{IP: ip, Key: key})
			}
			if diff := cmp.Diff(want, reg.called(), cmpOpts); diff != "" {
				t.Errorf("handshakes asked for (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLookupSigningKey(t *testing.T) {
	c := newCluster(t)
	pending, err := c.reg.Reserve("192.0.2.99:7443", "n9", randomBytes(32), false)
	if err != nil {
		t.Fatal(err)
	}
	lookup := vpnapi.LookupSigningKey(c.reg)
	tests := []struct {
		name string
		key  []byte
		want string // identity; "" for refused
	}{
		{name: "n1", key: pub(c.nodeKeys["n1"]), want: c.nodeIPs["n1"].String()},
		{name: "n2", key: pub(c.nodeKeys["n2"]), want: c.nodeIPs["n2"].String()},
		{name: "coordinator", key: pub(c.coordKey), want: c.coordIP.String()},
		{name: "admin", key: pub(c.adminKey)},
		{name: "unknown", key: pub(newKey())},
		{name: "pending node's wireguard key", key: pending.WGPubKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := lookup(tt.key)
			if (err == nil) != (tt.want != "") || got != tt.want {
				t.Errorf("LookupSigningKey = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestProtoRoundTrip(t *testing.T) {
	c := newCluster(t)
	if _, err := c.reg.SetRegistration(c.nodeIPs["n1"], pub(newKey()), ""); err != nil {
		t.Fatal(err)
	}
	_, peers := c.reg.Peers()
	for _, p := range peers {
		got, err := vpnapi.PeerFromProto(vpnapi.PeerToProto(p))
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(onWire(p), got, cmpOpts); diff != "" {
			t.Errorf("peer %s through the wire (-want +got):\n%s", p.Name, diff)
		}
	}
	if _, err := vpnapi.PeerFromProto(&vpnapipb.Peer{Name: "n1", VpnIp: "n1"}); err == nil || !strings.Contains(err.Error(), `peer "n1": vpn ip`) {
		t.Errorf("PeerFromProto with a bad VPN IP: %v", err)
	}
	for _, u := range []core.ViewUpdate{{Full: true, Upserts: v1}, v1to2, {Full: true}} {
		upserts, removed, full := vpnapi.ViewFromProto(vpnapi.ViewToProto(u.Upserts, u.Removed, u.Full))
		if diff := cmp.Diff(u, core.ViewUpdate{Full: full, Upserts: upserts, Removed: removed}, cmpOpts); diff != "" {
			t.Errorf("view through the wire (-want +got):\n%s", diff)
		}
	}
}

package reeve

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fabricmesh/fabric/internal/serviceid"
	"github.com/fabricmesh/fabric/internal/store"
	"github.com/fabricmesh/fabric/internal/update"
	"github.com/fabricmesh/fabric/internal/view"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// testView is a view of n1 as the steward would compute it: n1 serves
// pastiche (to the pastiches of n2 and n3), ledger (to billing@n2) and its
// reeve (to the registry, and to audit@n2 under some rule); its clients
// pastiche, billing and reeve may use pastiche, ledger and the steward.
func testView() view.View {
	v := view.View{
		Whitelist: []view.WhitelistEntry{
			{Endpoint: testLedgerID, Client: testBilling2ID, PubKey: pub(testBilling2Key)},
			{Endpoint: testPasticheID, Client: testPastiche2ID, PubKey: pub(testPastiche2Key)},
			{Endpoint: testPasticheID, Client: testPastiche3ID, PubKey: pub(testPastiche3Key)},
			{Endpoint: testReeveID, Client: testAuditID, PubKey: pub(testAuditKey)},
			{Endpoint: testReeveID, Client: testRegistryID, PubKey: pub(testCoordKey)},
		},
		Endpoints: []view.EndpointEntry{
			{Client: testBillingID, Service: "ledger", Endpoint: testLedger2ID, Address: "203.0.113.3:9000"},
			{Client: testPasticheID, Service: serviceid.Pastiche, Endpoint: serviceid.ID(serviceid.Pastiche, "n2"), Address: "203.0.113.3:7450"},
			{Client: testPasticheID, Service: serviceid.Pastiche, Endpoint: serviceid.ID(serviceid.Pastiche, "n3"), Address: "203.0.113.4:7450"},
			{Client: testReeveID, Service: serviceid.Steward, Endpoint: testStewardID, Address: testStewardAddr.String()},
		},
		Catalog: []view.CatalogEntry{
			{Client: testBillingID, Service: "ledger"},
			{Client: testPasticheID, Service: serviceid.Pastiche},
			{Client: testReeveID, Service: serviceid.Steward},
		},
	}
	v.Sort()
	return v
}

// equateEmpty: a checkpointed view reads back with nil for empty lists.
var equateEmpty = cmpopts.EquateEmpty()

// peerState is what a reeve shows of its checkpointed state.
type peerState struct {
	Registered bool
	IDs        map[string]string // service -> client ID
	PubKeys    map[string]string // service -> public key (hex)
	Signatures map[string]string // service -> signature of "probe" (hex): same key
	View       view.View
	ViewRev    uint64
}

func stateOf(tb testing.TB, r *Reeve, services ...string) peerState {
	tb.Helper()
	s := peerState{Registered: r.Registered(), IDs: map[string]string{}, PubKeys: map[string]string{}, Signatures: map[string]string{}}
	for _, service := range services {
		key, ok := r.PubKey(service)
		if !ok {
			continue
		}
		id := r.ID(service)
		sig, err := r.Sign(context.Background(), id, []byte("probe"))
		if err != nil {
			tb.Fatalf("Sign(%s): %v", id, err)
		}
		s.IDs[service], s.PubKeys[service], s.Signatures[service] = id, fmt.Sprintf("%x", key), fmt.Sprintf("%x", sig)
	}
	s.View, s.ViewRev = r.View()
	return s
}

// TestRestartKeepsState runs a reeve that registers its peer, its clients
// and endpoints, and receives its view (whole, then a change), and then a
// second reeve on the same state file: it has the same keys, endpoints,
// registration and view, and does not register again.
func TestRestartKeepsState(t *testing.T) {
	ctx := testContext(t)
	path := filepath.Join(t.TempDir(), "state.db")
	vpn := newTestVPN()
	stw := startFakeSteward(t, vpn)

	st1 := openBolt(t, path)
	cfg := testConfig(t, st1, vpn)
	offered := make(chan []byte, 1)
	cfg.Register = func(_ context.Context, pubKey []byte) error {
		offered <- pubKey
		return nil
	}
	r1 := mustNew(t, cfg)
	reeveKey, _ := r1.PubKey(serviceid.Reeve)
	stw.trust(reeveKey)
	for _, service := range []string{serviceid.Pastiche, "billing"} {
		if _, err := r1.RegisterClient(ctx, service); err != nil {
			t.Fatal(err)
		}
	}
	for service, port := range map[string]uint16{serviceid.Pastiche: serviceid.PastichePort, "ledger": 9000} {
		if _, _, err := r1.RegisterEndpoint(ctx, service, port); err != nil {
			t.Fatal(err)
		}
	}
	stop1 := start(t, r1)
	if got := <-offered; !ed25519.PublicKey(got).Equal(reeveKey) {
		t.Errorf("Register was offered key %x, want the reeve's %x", got, reeveKey)
	}
	wantSvcs := services{
		Endpoints: map[string]uint32{serviceid.Pastiche: serviceid.PastichePort, "ledger": 9000},
		Clients:   map[string]string{},
	}
	for _, service := range []string{serviceid.Pastiche, "billing"} {
		key, _ := r1.PubKey(service)
		wantSvcs.Clients[service] = fmt.Sprintf("%x", key)
	}
	stw.waitFor(ctx, t, wantSvcs, func(want, got services) string { return cmp.Diff(want, got) })

	// The whole view at revision 7, then a change at 9 that drops
	// pastiche@n3 and adds an endpoint.
	full := testView()
	if err := r1.ApplyView(ctx, 7, update.ViewUpdate{Kind: update.ViewFull, Full: full}); err != nil {
		t.Fatal(err)
	}
	added := view.EndpointEntry{Client: testBillingID, Service: "ledger", Endpoint: serviceid.ID("ledger", "n3"), Address: "203.0.113.4:9000"}
	removed := []string{
		view.WhitelistEntry{Endpoint: testPasticheID, Client: testPastiche3ID}.Key(),
		view.EndpointEntry{Client: testPasticheID, Endpoint: serviceid.ID(serviceid.Pastiche, "n3")}.Key(),
	}
	wantView := full.Apply(view.View{Endpoints: []view.EndpointEntry{added}}, removed)
	n3 := view.Slice{Node: "n3"}
	for _, e := range wantView.Whitelist {
		if view.NodeOf(e.Client) == "n3" {
			n3.Whitelist = append(n3.Whitelist, e)
		}
	}
	for _, e := range wantView.Endpoints {
		if view.NodeOf(e.Endpoint) == "n3" {
			n3.Endpoints = append(n3.Endpoints, e)
		}
	}
	delta := update.ViewUpdate{Kind: update.ViewDelta, Slices: []view.Slice{n3}}
	if err := r1.ApplyView(ctx, 9, delta); err != nil {
		t.Fatal(err)
	}

	all := []string{serviceid.Reeve, serviceid.Pastiche, "billing"}
	before := stateOf(t, r1, all...)
	if diff := cmp.Diff(peerState{
		Registered: true, IDs: before.IDs, PubKeys: before.PubKeys, Signatures: before.Signatures,
		View: wantView, ViewRev: 9,
	}, before, equateEmpty); diff != "" {
		t.Fatalf("state before the restart (-want +got):\n%s", diff)
	}
	stop1()
	if err := st1.Close(); err != nil {
		t.Fatal(err)
	}

	// The restarted reeve must not register again; its steward sync
	// sends the same services.
	cfg2 := testConfig(t, openBolt(t, path), vpn)
	cfg2.Register = func(context.Context, []byte) error {
		t.Error("the restarted reeve registered again")
		return errors.New("no second registration")
	}
	r2 := mustNew(t, cfg2)
	if diff := cmp.Diff(before, stateOf(t, r2, all...), equateEmpty); diff != "" {
		t.Errorf("state after the restart (-before +after):\n%s", diff)
	}
	start(t, r2)
	stw.waitFor(ctx, t, wantSvcs, func(want, got services) string { return cmp.Diff(want, got) })
	eps, err := r2.EndpointsUp(ctx, testBillingID, "ledger")
	if err != nil {
		t.Fatal(err)
	}
	wantEps := []Endpoint{
		{ID: testLedger2ID, Service: "ledger", Address: "203.0.113.3:9000"},
		{ID: serviceid.ID("ledger", "n3"), Service: "ledger", Address: "203.0.113.4:9000"},
	}
	if diff := cmp.Diff(wantEps, eps); diff != "" {
		t.Errorf("EndpointsUp after the restart (-want +got):\n%s", diff)
	}
}

// TestLoadCheckpoint starts reeves on state files holding missing, stale or
// corrupt pieces: each gives a clear error or a clean state, never a reeve
// that trusts what it cannot use.
func TestLoadCheckpoint(t *testing.T) {
	reeveSeed := make([]byte, ed25519.SeedSize)
	reeveSeed[0] = 1
	reeveKey := ed25519.NewKeyFromSeed(reeveSeed)
	otherKey := newKey()
	put := func(key string, v any) func(store.Tx) error {
		return func(tx store.Tx) error { return store.PutJSON(tx, key, v) }
	}
	raw := func(key, v string) func(store.Tx) error {
		return func(tx store.Tx) error { return tx.Put(key, []byte(v)) }
	}
	withReeveKey := put(prefixClients+serviceid.Reeve, storedClient{Seed: reeveSeed})
	registered := func(cluster string, key ed25519.PrivateKey) func(store.Tx) error {
		return put(keyRegistered, storedRegistration{ClusterID: cluster, PubKey: pub(key)})
	}
	tests := []struct {
		name    string
		stored  []func(store.Tx) error
		wantErr string // substring of New's error
		want    peerState
		newKey  bool // the reeve has a new key (not reeveKey)
	}{
		{
			name:   "empty",
			want:   peerState{},
			newKey: true,
		},
		{
			name:   "registered",
			stored: []func(store.Tx) error{withReeveKey, registered(testCluster, reeveKey)},
			want:   peerState{Registered: true},
		},
		{
			name:   "registered in another cluster",
			stored: []func(store.Tx) error{withReeveKey, registered("c0", reeveKey)},
			want:   peerState{},
		},
		{
			name:   "registered with another key",
			stored: []func(store.Tx) error{withReeveKey, registered(testCluster, otherKey)},
			want:   peerState{},
		},
		{
			name:   "registered, reeve key lost",
			stored: []func(store.Tx) error{registered(testCluster, reeveKey)},
			want:   peerState{},
			newKey: true,
		},
		{
			name:   "view without registration",
			stored: []func(store.Tx) error{withReeveKey, put(keyViewRevision, 4), put(keyViewLocal, testView())},
			want:   peerState{View: testView(), ViewRev: 4},
		},
		{
			name:   "view of the first layout",
			stored: []func(store.Tx) error{withReeveKey, put(keyViewV1, storedView{Revision: 4, View: testView()})},
			want:   peerState{View: testView(), ViewRev: 4},
		},
		{
			name:    "corrupt client",
			stored:  []func(store.Tx) error{raw(prefixClients+serviceid.Pastiche, "{")},
			wantErr: "decoding reeve/clients/pastiche",
		},
		{
			name:    "short seed",
			stored:  []func(store.Tx) error{put(prefixClients+serviceid.Pastiche, storedClient{Seed: reeveSeed[:5]})},
			wantErr: "reeve/clients/pastiche: key seed has 5 bytes",
		},
		{
			name:    "client with a bad name",
			stored:  []func(store.Tx) error{put(prefixClients+"Bad", storedClient{Seed: reeveSeed})},
			wantErr: `reeve/clients/Bad: service name "Bad"`,
		},
		{
			name:    "corrupt endpoint",
			stored:  []func(store.Tx) error{raw(prefixEndpoints+"ledger", "port")},
			wantErr: "decoding reeve/endpoints/ledger",
		},
		{
			name:    "endpoint on port 0",
			stored:  []func(store.Tx) error{put(prefixEndpoints+"ledger", storedEndpoint{})},
			wantErr: "reeve/endpoints/ledger: not an endpoint a service can register",
		},
		{
			name:    "reserved endpoint",
			stored:  []func(store.Tx) error{put(prefixEndpoints+serviceid.Steward, storedEndpoint{Port: 1})},
			wantErr: "reeve/endpoints/steward: not an endpoint a service can register",
		},
		{
			name:    "corrupt registration",
			stored:  []func(store.Tx) error{withReeveKey, raw(keyRegistered, "[]")},
			wantErr: "decoding reeve/registered",
		},
		{
			name:    "corrupt view",
			stored:  []func(store.Tx) error{withReeveKey, raw(keyViewV1, `{"revision":"x"}`)},
			wantErr: "decoding reeve/view",
		},
		{
			name:    "corrupt slice",
			stored:  []func(store.Tx) error{withReeveKey, put(keyViewRevision, 4), put(keyViewLocal, view.View{}), raw(prefixSlices+"n3", "{")},
			wantErr: "decoding reeve/view/slices/n3",
		},
		{
			name: "slice under another node's key",
			stored: []func(store.Tx) error{withReeveKey, put(keyViewRevision, 4), put(keyViewLocal, view.View{}),
				put(prefixSlices+"n3", view.Slice{Node: "n4"})},
			wantErr: `reeve/view/slices/n3: holds the slice of node "n4"`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newStore(t)
			for _, fn := range tt.stored {
				if err := st.Update(fn); err != nil {
					t.Fatal(err)
				}
			}
			r, err := New(testConfig(t, st, newTestVPN()))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("New: error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			got := stateOf(t, r)
			if diff := cmp.Diff(tt.want, peerState{Registered: got.Registered, View: got.View, ViewRev: got.ViewRev}, equateEmpty); diff != "" {
				t.Errorf("state (-want +got):\n%s", diff)
			}
			key, ok := r.PubKey(serviceid.Reeve)
			if !ok {
				t.Fatal("the reeve has no key")
			}
			if gotNew := !key.Equal(pub(reeveKey)); gotNew != tt.newKey {
				t.Errorf("the reeve has a new key: %v, want %v", gotNew, tt.newKey)
			}
			// A new key is checkpointed at once.
			var c storedClient
			if err := st.View(func(tx store.Tx) error { return store.GetJSON(tx, prefixClients+serviceid.Reeve, &c) }); err != nil {
				t.Fatal(err)
			}
			if !pub(ed25519.NewKeyFromSeed(c.Seed)).Equal(key) {
				t.Error("the stored reeve key is not the reeve's key")
			}
		})
	}
}

// TestRegistrationCheckpointed: the registration is stored with the
// cluster and the key it proved, and a reeve restarted without it
// registers again.
func TestRegistrationCheckpointed(t *testing.T) {
	ctx := testContext(t)
	st := newStore(t)
	vpn := newTestVPN()
	stw := startFakeSteward(t, vpn)
	cfg := testConfig(t, st, vpn)
	offered := make(chan []byte, 10)
	failures := 2
	cfg.Register = func(_ context.Context, pubKey []byte) error {
		offered <- pubKey
		if failures > 0 {
			failures--
			return errors.New("coordinator unreachable")
		}
		return nil
	}
	r := mustNew(t, cfg)
	key, _ := r.PubKey(serviceid.Reeve)
	stw.trust(key)
	if r.Registered() {
		t.Fatal("a new reeve is registered")
	}
	stop := start(t, r)
	stw.waitFor(ctx, t, services{Endpoints: map[string]uint32{}, Clients: map[string]string{}},
		func(want, got services) string { return cmp.Diff(want, got) })
	stop()
	if !r.Registered() {
		t.Error("not registered after the registration succeeded")
	}
	if got := len(offered); got != 3 {
		t.Errorf("Register called %d times, want 3 (two failures, one success)", got)
	}
	var reg storedRegistration
	if err := st.View(func(tx store.Tx) error { return store.GetJSON(tx, keyRegistered, &reg) }); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(storedRegistration{ClusterID: testCluster, PubKey: key}, reg); diff != "" {
		t.Errorf("stored registration (-want +got):\n%s", diff)
	}
}

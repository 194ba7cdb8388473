package core

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fabricmesh/fabric/coordinator/registry"
	"github.com/fabricmesh/fabric/core/coretest"
	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/store"
	"github.com/fabricmesh/fabric/internal/store/boltstore"
	"github.com/google/go-cmp/cmp"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

const (
	testVPNAPIPort = 7444
	testWGPort     = 51820
)

var testVPNCIDR = netip.MustParsePrefix("203.0.113.0/24")

var _ NetworkManager = (*coretest.FakeNetworkManager)(nil)

// eventually polls cond until it returns nil and fails the test with the
// last error if that takes unreasonably long.
func eventually(t testing.TB, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: %v", what, err)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// testLogger sends a core's log to t.Logf.
func testLogger(t testing.TB, name string) *slog.Logger {
	return slog.New(slog.NewTextHandler(logWriter{t: t, prefix: name}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type logWriter struct {
	t      testing.TB
	prefix string
}

func (w logWriter) Write(b []byte) (int, error) {
	w.t.Logf("%s: %s", w.prefix, strings.TrimSuffix(string(b), "\n"))
	return len(b), nil
}

// signingPrivKeys holds the test peers' signing keys, by public key.
var signingPrivKeys sync.Map

// signingPrivKey is the private key of a test peer's signing key.
func signingPrivKey(pub []byte) ed25519.PrivateKey {
	k, _ := signingPrivKeys.Load(string(pub))
	return k.(ed25519.PrivateKey)
}

// newSelf makes the identity of a test peer at 192.0.2.<host>:7443.
func newSelf(t testing.TB, name string, host byte) Self {
	t.Helper()
	priv, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	signPub, signPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signingPrivKeys.Store(string(signPub), signPriv)
	return Self{
		Name: name, Horde: "h1",
		PublicEndpoint: netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, host}), 7443),
		WGPort:         testWGPort, VPNPrivKey: priv, SigningPubKey: signPub,
		TLSPin: []byte("pin of " + name),
	}
}

// testPeer is one fabric peer of a test: its core and its fakes.
type testPeer struct {
	self     Self
	store    store.Store
	reg      *registry.Registry
	net      *coretest.FakeNetworkManager
	services *fakeServices
	core     *Core
	startErr error

	stopOnce sync.Once
	cancel   context.CancelFunc
}

// stop ends the peer's loops and waits for them, like a daemon exiting.
func (p *testPeer) stop() {
	p.stopOnce.Do(func() {
		p.cancel()
		p.core.Wait()
	})
}

func (p *testPeer) endpoint() string { return p.self.PublicEndpoint.String() }

// harness is a coordinator and its nodes on a fake net.
type harness struct {
	t         *testing.T
	net       *fakeNet
	activator *fakeActivator
	// tweak adjusts every peer's Config.
	tweak func(*Config)
	// shared, if set, holds every peer's registry (coordinators sharing a
	// store, like etcd); each peer keeps its own state in its own store.
	shared store.Store

	coord *testPeer
	nodes []*testPeer
}

// newHarness makes a coordinator and n nodes, all started and accepting
// init, on in-memory stores.
func newHarness(t *testing.T, n int, tweak func(*Config)) *harness {
	h := &harness{t: t, net: newFakeNet(), activator: newFakeActivator(), tweak: tweak}
	h.coord = h.start(newSelf(t, "coord", 1), store.NewMem())
	h.activator.signingKey = signingPrivKey(h.coord.self.SigningPubKey)
	for range n {
		h.addNode(store.NewMem())
	}
	return h
}

// addNode makes and starts one more node on st.
func (h *harness) addNode(st store.Store) *testPeer {
	i := len(h.nodes)
	p := h.start(newSelf(h.t, fmt.Sprintf("node%d", i), byte(10+i)), st)
	h.nodes = append(h.nodes, p)
	h.activator.setNode(p.endpoint(), p.core)
	return p
}

// start makes a peer's core on st and starts it; the test's cleanup stops
// it. A failing Start is recorded in startErr. Each of before runs on the
// new peer between New and Start.
func (h *harness) start(self Self, st store.Store, before ...func(*testPeer)) *testPeer {
	t := h.t
	t.Helper()
	regStore := st
	if h.shared != nil {
		regStore = h.shared
	}
	reg, err := registry.Open(regStore)
	if err != nil {
		t.Fatalf("opening the registry of %s: %v", self.Name, err)
	}
	p := &testPeer{self: self, store: st, reg: reg, net: coretest.NewFakeNetworkManager(),
		services: &fakeServices{net: h.net, vpnapiPort: testVPNAPIPort, reg: reg}}
	cfg := Config{
		Self: self, Store: st, Registry: reg, Network: p.net, Activator: h.activator, Dialer: &fakeDialer{net: h.net, signingPubKey: self.SigningPubKey}, Services: p.services,
		VPNAPIPort: testVPNAPIPort, MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond,
		Applied:        h.net.report,
		SharedRegistry: h.shared != nil,
		Logger:         testLogger(t, self.Name),
	}
	if h.shared != nil {
		cfg.StoreID = "shared mem store"
	}
	if h.tweak != nil {
		h.tweak(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New(%s): %v", self.Name, err)
	}
	p.core = c
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	t.Cleanup(p.stop)
	for _, fn := range before {
		fn(p)
	}
	p.startErr = c.Start(ctx)
	return p
}

// restart stops p and starts a new core with the same identity on st (a
// reopened store) and a new network manager, as after a reboot.
func (h *harness) restart(p *testPeer, st store.Store, before ...func(*testPeer)) *testPeer {
	h.t.Helper()
	p.stop()
	q := h.start(p.self, st, before...)
	if p == h.coord {
		h.coord = q
	}
	for i, n := range h.nodes {
		if n == p {
			h.nodes[i] = q
			h.activator.setNode(q.endpoint(), q.core)
		}
	}
	return q
}

func (h *harness) nodeEndpoints(nodes ...*testPeer) []string {
	var out []string
	for _, n := range nodes {
		out = append(out, n.endpoint())
	}
	return out
}

func newMemStore() store.Store { return store.NewMem() }

// eventLog collects the events of an activation.
type eventLog struct {
	mu     sync.Mutex
	events []Event
}

func (l *eventLog) emit(e Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, e)
}

// nodeResults returns the node outcomes by endpoint.
func (l *eventLog) nodeResults() map[string]NodeResult {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]NodeResult{}
	for _, e := range l.events {
		if e.Node != nil {
			out[e.Node.NodePublicEndpoint] = *e.Node
		}
	}
	return out
}

func (l *eventLog) count(keep func(Event) bool) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, e := range l.events {
		if keep(e) {
			n++
		}
	}
	return n
}

// activationRequest is a valid request for the nodes.
func activationRequest(t testing.TB, nodes []string) CoordinatorActivation {
	t.Helper()
	adminVPN, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	adminSign, adminSignPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signingPrivKeys.Store(string(adminSign), adminSignPriv)
	pub := adminVPN.PublicKey()
	return CoordinatorActivation{
		VPNCIDR: testVPNCIDR, NodePublicEndpoints: nodes,
		AdminName: "alice", AdminSigningPubKey: adminSign, AdminVPNPubKey: pub[:],
	}
}

// withProof is req with the admin's proof for the coordinator whose TLS
// pin is pin.
func withProof(req CoordinatorActivation, pin []byte) CoordinatorActivation {
	req.AdminProof = ed25519.Sign(signingPrivKey(req.AdminSigningPubKey), ActivationProofMessage(pin, req.AdminVPNPubKey))
	return req
}

// activate activates the coordinator with the given nodes.
func (h *harness) activate(nodes ...*testPeer) (ActivationResult, *eventLog, error) {
	h.t.Helper()
	log := &eventLog{}
	res, err := h.coord.core.ActivateAsCoordinator(h.t.Context(), activationRequest(h.t, h.nodeEndpoints(nodes...)), log.emit)
	return res, log, err
}

// mustActivate activates the coordinator with every node and waits for
// the mesh.
func (h *harness) mustActivate() {
	h.t.Helper()
	res, _, err := h.activate(h.nodes...)
	if err != nil {
		h.t.Fatalf("ActivateAsCoordinator: %v", err)
	}
	if res.Failed != 0 {
		h.t.Fatalf("ActivateAsCoordinator: %d node(s) failed", res.Failed)
	}
	h.waitSettled()
}

func (h *harness) registry() *registry.Registry {
	h.t.Helper()
	if _, ok := h.coord.core.Registry(); !ok {
		h.t.Fatalf("the coordinator is %s, not the coordinator", h.coord.core.Status().State)
	}
	return h.coord.reg
}

// peerByEndpoint is the registry's record of the node at endpoint.
func (h *harness) peerByEndpoint(endpoint string) (records.Peer, bool) {
	_, peers := h.registry().Peers()
	for _, p := range peers {
		if p.PublicEndpoint == endpoint {
			return p, true
		}
	}
	return records.Peer{}, false
}

// waitSettled waits for the mesh and for every active node to have
// persisted the current revision.
func (h *harness) waitSettled() {
	h.t.Helper()
	h.waitMesh()
	eventually(h.t, "every node to apply the current revision", func() error {
		rev := h.registry().Revision()
		for _, n := range h.nodes {
			if rec, ok := h.peerByEndpoint(n.endpoint()); !ok || rec.State != records.StateActive {
				continue
			}
			if got, err := n.core.AppliedRevision(); err != nil || got != rev {
				return fmt.Errorf("%s applied revision %d (%v), want %d", n.self.Name, got, err, rev)
			}
		}
		return nil
	})
}

// waitMesh waits until every active peer's device holds exactly the other
// active peers of the registry, and every active node is a node at its VPN
// IP.
func (h *harness) waitMesh() {
	h.t.Helper()
	eventually(h.t, "the mesh to converge", h.meshErr)
}

func (h *harness) meshErr() error {
	reg, ok := h.coord.core.Registry()
	if !ok {
		return errors.New("the coordinator has no registry")
	}
	_, peers := reg.Peers()
	var active []netip.Prefix
	for _, r := range peers {
		if r.State == records.StateActive {
			active = append(active, netip.PrefixFrom(r.VPNIP, r.VPNIP.BitLen()))
		}
	}
	for _, p := range append([]*testPeer{h.coord}, h.nodes...) {
		st := p.core.Status()
		rec, known := h.peerByEndpoint(p.endpoint())
		if known && rec.State == records.StateActive && (st.State != roleState(rec.Role) || st.VPNIP != rec.VPNIP) {
			return fmt.Errorf("%s is %s at %s; the registry has it active at %s", st.Name, st.State, st.VPNIP, rec.VPNIP)
		}
		if !known || rec.State != records.StateActive {
			continue // not part of the mesh (yet)
		}
		want := slices.DeleteFunc(slices.Clone(active), func(a netip.Prefix) bool { return a.Addr() == st.VPNIP })
		if diff := cmp.Diff(want, p.net.Device().Peers, cmpNetip); diff != "" {
			return fmt.Errorf("%s (%s) peers (-want +got):\n%s", st.Name, st.VPNIP, diff)
		}
	}
	return nil
}

// roleState is the core state of a peer with the registry role.
func roleState(r records.Role) State {
	if r == records.RoleCoordinator {
		return StateCoordinator
	}
	return StateNode
}

// cmpNetip lets cmp compare and print netip values as text.
var cmpNetip = cmp.Options{
	cmp.Transformer("Addr", func(a netip.Addr) string { return a.String() }),
	cmp.Transformer("Prefix", func(p netip.Prefix) string { return p.String() }),
}

// openBolt opens a bbolt store at path; cleanup closes it.
func openBolt(t testing.TB, path string) *boltstore.Bolt {
	t.Helper()
	b, err := boltstore.Open(path, boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func boltPath(t testing.TB, name string) string {
	return filepath.Join(t.TempDir(), name+".db")
}

// storedIntents lists the endpoints of the intents p's store holds.
func storedIntents(t testing.TB, p *testPeer) []string {
	t.Helper()
	var out []string
	err := p.store.View(func(tx store.Tx) error {
		return tx.Scan(prefixIntents, func(key string, _ []byte) error {
			out = append(out, strings.TrimPrefix(key, prefixIntents))
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// intentsIf is endpoints when cond holds, else none.
func intentsIf(cond bool, endpoints ...string) []string {
	if !cond {
		return nil
	}
	return endpoints
}

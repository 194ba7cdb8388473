package vpnapi_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/fabricmesh/fabric/coordinator/feed"
	"github.com/fabricmesh/fabric/coordinator/registry"
	"github.com/fabricmesh/fabric/core"
	"github.com/fabricmesh/fabric/internal/authconn"
	"github.com/fabricmesh/fabric/internal/grpctest"
	"github.com/fabricmesh/fabric/internal/leakcheck"
	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/rules"
	"github.com/fabricmesh/fabric/internal/store/boltstore"
	"github.com/fabricmesh/fabric/vpnapi"
	"github.com/fabricmesh/fabric/vpnapi/vpnapipb"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/grpc"
)

// TestMain fails the run if a test left a goroutine of fabric or gRPC
// running.
func TestMain(m *testing.M) {
	leakcheck.Main(m, 5*time.Second, "fabricmesh/fabric/", "google.golang.org/grpc")
}

func newKey() ed25519.PrivateKey {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	return priv
}

func pub(k ed25519.PrivateKey) ed25519.PublicKey { return k.Public().(ed25519.PublicKey) }

func randomBytes(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return b
}

// testContext bounds a test's waits, so a broken server fails the test
// instead of hanging it.
func testContext(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	tb.Cleanup(cancel)
	return ctx
}

// cmpOpts compare peers and views as a node receives them: addresses as
// text, empty lists as absent.
var cmpOpts = cmp.Options{
	cmp.Transformer("Addr", func(a netip.Addr) string { return a.String() }),
	cmpopts.EquateEmpty(),
}

// fakeLiveness records what the server tells it.
type fakeLiveness struct {
	mu       sync.Mutex
	watching map[netip.Addr]int
	reports  []report
	sent     []sent
	passed   []sent // Content unused
}

type report struct {
	IP      netip.Addr
	Applied uint64
	Age     time.Duration
}

type sent struct {
	IP      netip.Addr
	Rev     uint64
	Content bool
}

var _ vpnapi.Liveness = (*fakeLiveness)(nil)

func newFakeLiveness() *fakeLiveness { return &fakeLiveness{watching: map[netip.Addr]int{}} }

func (l *fakeLiveness) Watching(ip netip.Addr) func() {
	l.mu.Lock()
	l.watching[ip]++
	l.mu.Unlock()
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.watching[ip]--
	}
}

func (l *fakeLiveness) Report(ip netip.Addr, applied uint64, age time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reports = append(l.reports, report{ip, applied, age})
}

func (l *fakeLiveness) Sent(ip netip.Addr, rev uint64, content bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sent = append(l.sent, sent{ip, rev, content})
}

func (l *fakeLiveness) Passed(ip netip.Addr, rev uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.passed = append(l.passed, sent{IP: ip, Rev: rev})
}

func (l *fakeLiveness) state() (map[netip.Addr]int, []report, []sent) {
	l.mu.Lock()
	defer l.mu.Unlock()
	w := map[netip.Addr]int{}
	for ip, n := range l.watching {
		w[ip] = n
	}
	return w, append([]report(nil), l.reports...), append([]sent(nil), l.sent...)
}

// fakeRegistrar records the handshakes it is asked for and fails them with
// err.
type fakeRegistrar struct {
	mu    sync.Mutex
	err   error
	calls []registrarCall
}

type registrarCall struct {
	IP  netip.Addr
	Key []byte
}

var _ vpnapi.Registrar = (*fakeRegistrar)(nil)

func (r *fakeRegistrar) Register(_ context.Context, ip netip.Addr, key []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, registrarCall{IP: ip, Key: key})
	return r.err
}

func (r *fakeRegistrar) called() []registrarCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]registrarCall(nil), r.calls...)
}

// cluster is a registry with a coordinator, an admin and nodes n1 and n2.
type cluster struct {
	reg      *registry.Registry
	coordKey ed25519.PrivateKey
	coordIP  netip.Addr
	adminKey ed25519.PrivateKey
	adminIP  netip.Addr
	nodeKeys map[string]ed25519.PrivateKey
	nodeIPs  map[string]netip.Addr
	// accepted, if set, gets every connection serve's listener accepts.
	accepted chan net.Conn
}

func newCluster(tb testing.TB) *cluster {
	tb.Helper()
	st, err := boltstore.Open(filepath.Join(tb.TempDir(), "state.db"), boltstore.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = st.Close() })
	reg, err := registry.Open(st)
	if err != nil {
		tb.Fatal(err)
	}
	c := &cluster{reg: reg, coordKey: newKey(), adminKey: newKey(), nodeKeys: map[string]ed25519.PrivateKey{}, nodeIPs: map[string]netip.Addr{}}
	peers, err := reg.Init(records.Cluster{ID: "c1", VPNCIDR: netip.MustParsePrefix("203.0.113.0/24")},
		records.Peer{Name: "coord", WGEndpoint: "192.0.2.1:51820", WGPubKey: randomBytes(32), SigningPubKey: pub(c.coordKey)},
		[]records.Peer{{Name: "admin", WGPubKey: randomBytes(32), SigningPubKey: pub(c.adminKey)}}, nil, nil)
	if err != nil {
		tb.Fatal(err)
	}
	c.coordIP, c.adminIP = peers[0].VPNIP, peers[1].VPNIP
	c.addNode(tb, "n1", "a")
	c.addNode(tb, "n2", "a")
	return c
}

func (c *cluster) addNode(tb testing.TB, name, horde string) records.Peer {
	tb.Helper()
	i := len(c.nodeKeys) + 10
	p, err := c.reg.Reserve(fmt.Sprintf("192.0.2.%d:7443", i), name, nil, nil, false)
	if err != nil {
		tb.Fatal(err)
	}
	c.nodeKeys[name], c.nodeIPs[name] = newKey(), p.VPNIP
	p, err = c.reg.Activate(p.VPNIP, records.Activated{
		Name: name, Horde: horde, WGEndpoint: fmt.Sprintf("192.0.2.%d:51820", i),
		WGPubKey: randomBytes(32), SigningPubKey: pub(c.nodeKeys[name]),
	})
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

// config is a server's configuration on the cluster's registry, with a
// real feed under the default rules and a recording liveness.
func (c *cluster) config(tb testing.TB) (vpnapi.Config, *fakeLiveness) {
	tb.Helper()
	f, err := feed.New(c.reg, rules.DefaultRules(), feed.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	l := newFakeLiveness()
	return vpnapi.Config{Registry: c.reg, Feed: f, Liveness: l}, l
}

// server is a vpnapi server on loopback, authenticated as fabricd serves
// it.
type server struct {
	addr string
	pin  []byte
}

func (c *cluster) serve(tb testing.TB, cfg vpnapi.Config) server {
	tb.Helper()
	cert, err := authconn.NewSelfSignedCertificate(c.coordKey, "coord")
	if err != nil {
		tb.Fatal(err)
	}
	creds, err := authconn.NewServerCredentials(authconn.ServerConfig{Certificate: cert, LookupSigningKey: vpnapi.LookupSigningKey(cfg.Registry)})
	if err != nil {
		tb.Fatal(err)
	}
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	if c.accepted != nil {
		raw = capturing{Listener: raw, conns: c.accepted}
	}
	lis, err := vpnapi.Listener(raw)
	if err != nil {
		tb.Fatal(err)
	}
	srv := grpc.NewServer(append([]grpc.ServerOption{grpc.Creds(creds)}, vpnapi.ServerOptions()...)...)
	vpnapipb.RegisterVPNAPIServer(srv, vpnapi.NewServer(cfg))
	grpctest.Serve(tb, srv, lis)
	return server{addr: lis.Addr().String(), pin: authconn.CertPin(cert.Certificate[0])}
}

// capturing hands each connection it accepts to conns as well.
type capturing struct {
	net.Listener
	conns chan<- net.Conn
}

func (l capturing) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.conns <- c
	}
	return c, err
}

func (s server) info() core.CoordinatorInfo {
	return core.CoordinatorInfo{Name: "coord", VPNAPIEndpoint: s.addr, TLSPin: s.pin}
}

// watch opens a watch on s with key, as a node's core does.
func (s server) watch(tb testing.TB, key ed25519.PrivateKey, start core.WatchStart) core.Watch {
	tb.Helper()
	w, err := (&vpnapi.Dialer{SigningPrivKey: key}).Watch(context.Background(), s.info(), start)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { w.Close() })
	return w
}

// onWire is a peer record as a node receives it: the other fields
// (public endpoint, keys but the WireGuard one, horde, registration) stay
// on the coordinator.
func onWire(p records.Peer) records.Peer {
	out := records.Peer{Name: p.Name, Role: p.Role, VPNIP: p.VPNIP, WGEndpoint: p.WGEndpoint, WGPubKey: p.WGPubKey, State: p.State}
	if p.Role == records.RoleCoordinator {
		out.TLSPin, out.SigningPubKey = p.TLSPin, p.SigningPubKey
	}
	return out
}

// activePeers is every active record of the registry, as a node receives
// them.
func (c *cluster) activePeers() []records.Peer {
	_, peers := c.reg.Peers()
	var out []records.Peer
	for _, p := range peers {
		if p.State == records.StateActive {
			out = append(out, onWire(p))
		}
	}
	return out
}

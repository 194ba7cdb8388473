package reeve

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/fabricmesh/fabric/internal/grpctest"
	"github.com/fabricmesh/fabric/internal/httpsig"
	"github.com/fabricmesh/fabric/internal/leakcheck"
	"github.com/fabricmesh/fabric/internal/loopvpn"
	"github.com/fabricmesh/fabric/internal/serviceid"
	"github.com/fabricmesh/fabric/internal/signedrpc"
	"github.com/fabricmesh/fabric/internal/store"
	"github.com/fabricmesh/fabric/internal/store/boltstore"
	"github.com/fabricmesh/fabric/internal/testlog"
	"github.com/fabricmesh/fabric/vpnapi/vpnapipb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// TestMain fails the run if a test left a goroutine of fabric or gRPC
// running.
func TestMain(m *testing.M) {
	leakcheck.Main(m, 5*time.Second, "fabricmesh/fabric/", "google.golang.org/grpc")
}

// The test cluster: this peer n1, its coordinator and two other nodes.
const (
	testCluster     = "c1"
	testNode        = "n1"
	testCoordinator = "coord"
)

var (
	testVPNIP        = netip.MustParseAddr("203.0.113.2")
	testCoordVPNIP   = netip.MustParseAddr("203.0.113.1")
	testStewardAddr  = netip.AddrPortFrom(testCoordVPNIP, serviceid.StewardPort)
	testReeveAddr    = netip.AddrPortFrom(testVPNIP, serviceid.ReevePort)
	testRegistryID   = serviceid.ID(serviceid.Registry, testCoordinator)
	testReeveID      = serviceid.ID(serviceid.Reeve, testNode)
	testStewardID    = serviceid.ID(serviceid.Steward, testCoordinator)
	testPasticheID   = serviceid.ID(serviceid.Pastiche, testNode)
	testPastiche2ID  = serviceid.ID(serviceid.Pastiche, "n2")
	testPastiche3ID  = serviceid.ID(serviceid.Pastiche, "n3")
	testBillingID    = serviceid.ID("billing", testNode)
	testBilling2ID   = serviceid.ID("billing", "n2")
	testLedgerID     = serviceid.ID("ledger", testNode)
	testLedger2ID    = serviceid.ID("ledger", "n2")
	testAuditID      = serviceid.ID("audit", "n2")
	testPastiche2Key = newKey()
	testPastiche3Key = newKey()
	testBilling2Key  = newKey()
	testAuditKey     = newKey()
)

func newKey() ed25519.PrivateKey {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	return priv
}

func pub(k ed25519.PrivateKey) ed25519.PublicKey { return k.Public().(ed25519.PublicKey) }

// testVPN is the loopback VPN of the tests.
type testVPN = loopvpn.VPN

var _ VPN = (*testVPN)(nil)

func newTestVPN() *testVPN { return loopvpn.New() }

// openBolt opens the bbolt store at path and closes it at cleanup (closing
// a store the test closed itself is harmless).
func openBolt(tb testing.TB, path string) *boltstore.Bolt {
	tb.Helper()
	b, err := boltstore.Open(path, boltstore.Options{})
	if err != nil {
		tb.Fatalf("opening bolt store: %v", err)
	}
	tb.Cleanup(func() { _ = b.Close() })
	return b
}

// newStore opens a fresh bbolt store in a temporary directory.
func newStore(tb testing.TB) *boltstore.Bolt {
	tb.Helper()
	return openBolt(tb, filepath.Join(tb.TempDir(), "state.db"))
}

// testConfig is the configuration of n1's reeve on st. Its Register waits
// for ctx to end, so a started reeve stays unregistered unless a test says
// otherwise.
func testConfig(tb testing.TB, st store.Store, vpn *testVPN) Config {
	return Config{
		Store: st, Node: testNode, VPNIP: testVPNIP, ClusterID: testCluster,
		CoordinatorName: testCoordinator, CoordinatorSigningPubKey: pub(testCoordKey),
		StewardAddress: testStewardAddr.String(), VPN: vpn,
		Register: func(ctx context.Context, _ []byte) error {
			<-ctx.Done()
			return ctx.Err()
		},
		MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond,
		Logger: testlog.New(tb),
	}
}

var testCoordKey = newKey()

func mustNew(tb testing.TB, cfg Config) *Reeve {
	tb.Helper()
	r, err := New(cfg)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	return r
}

// start starts r until the returned stop, which also runs at cleanup, and
// waits for it.
func start(tb testing.TB, r *Reeve) (stop func()) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	if err := r.Start(ctx); err != nil {
		cancel()
		tb.Fatalf("Start: %v", err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			r.Wait()
		})
	}
	tb.Cleanup(stop)
	return stop
}

// testContext bounds a test's waits, so a broken reeve fails the test
// instead of hanging it.
func testContext(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	tb.Cleanup(cancel)
	return ctx
}

// services is what an UpdateServices request says, in comparable form.
type services struct {
	Endpoints map[string]uint32
	Clients   map[string]string // service -> public key (hex)
}

func servicesOf(req *vpnapipb.UpdateServicesRequest) services {
	s := services{Endpoints: map[string]uint32{}, Clients: map[string]string{}}
	for _, e := range req.GetEndpoints() {
		s.Endpoints[e.GetService()] = e.GetPort()
	}
	for _, c := range req.GetClients() {
		s.Clients[c.GetService()] = fmt.Sprintf("%x", c.GetPubKey())
	}
	return s
}

// fakeSteward is a steward endpoint on the test VPN that accepts the calls
// of n1's reeve (signed with the key its whitelist returns) and hands every
// request to the test.
type fakeSteward struct {
	vpnapipb.UnimplementedStewardServer
	mu       sync.Mutex
	reeveKey ed25519.PublicKey
	got      chan services
}

func startFakeSteward(tb testing.TB, vpn *testVPN) *fakeSteward {
	tb.Helper()
	s := &fakeSteward{got: make(chan services, 100)}
	lis, err := vpn.Listen(context.Background(), testStewardAddr)
	if err != nil {
		tb.Fatal(err)
	}
	srv := grpc.NewServer(signedrpc.ServerOptions(signedrpc.ServerConfig{
		Host: testStewardAddr.String(), Whitelist: s, Replay: httpsig.NewReplayCache(1024), Logger: testlog.New(tb),
	})...)
	vpnapipb.RegisterStewardServer(srv, s)
	grpctest.Serve(tb, srv, lis)
	return s
}

// trust sets the reeve key the steward accepts.
func (s *fakeSteward) trust(key ed25519.PublicKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reeveKey = key
}

func (s *fakeSteward) Lookup(keyID string) (ed25519.PublicKey, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if keyID != testReeveID || s.reeveKey == nil {
		return nil, fmt.Errorf("%w: %s", httpsig.ErrUnknownKey, keyID)
	}
	return s.reeveKey, nil
}

func (s *fakeSteward) UpdateServices(_ context.Context, req *vpnapipb.UpdateServicesRequest) (*vpnapipb.UpdateServicesResponse, error) {
	s.got <- servicesOf(req)
	return &vpnapipb.UpdateServicesResponse{Revision: 1}, nil
}

// waitFor waits until the steward receives want, and fails the test with
// the last request seen if ctx ends first.
func (s *fakeSteward) waitFor(ctx context.Context, tb testing.TB, want services, diff func(want, got services) string) {
	tb.Helper()
	var last string
	for {
		select {
		case got := <-s.got:
			if last = diff(want, got); last == "" {
				return
			}
		case <-ctx.Done():
			tb.Fatalf("the steward did not receive the expected services; last request (-want +got):\n%s", last)
		}
	}
}

// dialSigned dials addr on vpn with calls signed as keyID with priv.
func dialSigned(tb testing.TB, vpn *testVPN, addr netip.AddrPort, keyID string, priv ed25519.PrivateKey) *grpc.ClientConn {
	tb.Helper()
	opts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(vpn.Dial),
	}, signedrpc.DialOptions(keyID, signedrpc.KeySigner{KeyID: keyID, PrivKey: priv})...)
	conn, err := grpc.NewClient("passthrough:///"+addr.String(), opts...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	return conn
}

// sortedKeys returns m's keys, sorted.
func sortedKeys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

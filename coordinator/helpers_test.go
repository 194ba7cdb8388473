package coordinator_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/fabricmesh/fabric/coordinator"
	"github.com/fabricmesh/fabric/coordinator/registry"
	"github.com/fabricmesh/fabric/internal/grpctest"
	"github.com/fabricmesh/fabric/internal/httpsig"
	"github.com/fabricmesh/fabric/internal/leakcheck"
	"github.com/fabricmesh/fabric/internal/loopvpn"
	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/serviceid"
	"github.com/fabricmesh/fabric/internal/signedrpc"
	"github.com/fabricmesh/fabric/internal/store/boltstore"
	"github.com/fabricmesh/fabric/internal/testlog"
	"github.com/fabricmesh/fabric/node/reeve"
	"github.com/fabricmesh/fabric/vpnapi/vpnapipb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
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

// randomBytes returns n random bytes (WireGuard keys, which must differ).
func randomBytes(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return b
}

// testContext bounds a test's waits, so a broken peer fails the test
// instead of hanging it.
func testContext(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	tb.Cleanup(cancel)
	return ctx
}

const (
	testClusterID   = "c1"
	testCoordinator = "coord"
)

// testNode is a node of the test cluster.
type testNode struct {
	name, horde string
	vpnIP       netip.Addr
	signingKey  ed25519.PrivateKey
}

// cluster is a registry with a coordinator, an admin and active nodes, on a
// test VPN.
type cluster struct {
	reg      *registry.Registry
	vpn      *loopvpn.VPN
	coordKey ed25519.PrivateKey
	coordIP  netip.Addr
	adminIP  netip.Addr
	nodes    map[string]testNode
}

// newCluster initializes a registry in a bbolt file and activates a node
// for each name: horde entry of nodes.
func newCluster(tb testing.TB, nodes ...[2]string) *cluster {
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
	c := &cluster{reg: reg, vpn: loopvpn.New(), coordKey: newKey(), nodes: map[string]testNode{}}
	coord := records.Peer{
		Name: testCoordinator, PublicEndpoint: "192.0.2.1:7443", WGEndpoint: "192.0.2.1:51820",
		WGPubKey: randomBytes(32), SigningPubKey: pub(c.coordKey),
	}
	admin := records.Peer{Name: "admin", WGPubKey: randomBytes(32), SigningPubKey: pub(newKey())}
	peers, err := reg.Init(records.Cluster{ID: testClusterID, VPNCIDR: netip.MustParsePrefix("203.0.113.0/24")}, coord, []records.Peer{admin}, nil, nil)
	if err != nil {
		tb.Fatal(err)
	}
	c.coordIP, c.adminIP = peers[0].VPNIP, peers[1].VPNIP
	for i, n := range nodes {
		c.addNode(tb, n[0], n[1], i)
	}
	return c
}

// addNode reserves and activates a node.
func (c *cluster) addNode(tb testing.TB, name, horde string, i int) testNode {
	tb.Helper()
	endpoint := fmt.Sprintf("192.0.2.%d:7443", 10+i)
	p, err := c.reg.Reserve(endpoint, name, nil, nil, false)
	if err != nil {
		tb.Fatal(err)
	}
	n := testNode{name: name, horde: horde, vpnIP: p.VPNIP, signingKey: newKey()}
	_, err = c.reg.Activate(p.VPNIP, records.Activated{
		Name: name, Horde: horde, WGEndpoint: fmt.Sprintf("192.0.2.%d:51820", 10+i),
		WGPubKey: randomBytes(32), SigningPubKey: pub(n.signingKey),
	})
	if err != nil {
		tb.Fatal(err)
	}
	c.nodes[name] = n
	return n
}

// peer returns the registry's record of the named node.
func (c *cluster) peer(tb testing.TB, name string) records.Peer {
	tb.Helper()
	p, ok := c.reg.Peer(c.nodes[name].vpnIP)
	if !ok {
		tb.Fatalf("no record of %s", name)
	}
	return p
}

func (c *cluster) registrar(tb testing.TB) *coordinator.Registrar {
	return &coordinator.Registrar{
		Registry: c.reg, CoordinatorName: testCoordinator, SigningPrivKey: c.coordKey,
		DialContext: c.vpn.Dial, Logger: testlog.New(tb),
	}
}

// startReeve starts the reeve of the named node on the test VPN, trusting
// coordKey as the coordinator's. register is its Register (nil: wait).
func (c *cluster) startReeve(tb testing.TB, name string, coordKey ed25519.PublicKey, register func(context.Context, []byte) error) *reeve.Reeve {
	tb.Helper()
	n := c.nodes[name]
	st, err := boltstore.Open(filepath.Join(tb.TempDir(), "state.db"), boltstore.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	if register == nil {
		register = func(ctx context.Context, _ []byte) error {
			<-ctx.Done()
			return ctx.Err()
		}
	}
	r, err := reeve.New(reeve.Config{
		Store: st, Node: name, VPNIP: n.vpnIP, ClusterID: testClusterID,
		CoordinatorName: testCoordinator, CoordinatorSigningPubKey: coordKey,
		StewardAddress: netip.AddrPortFrom(c.coordIP, serviceid.StewardPort).String(),
		VPN:            c.vpn, Register: register,
		MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond,
		Logger: testlog.New(tb).With("peer", name),
	})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := r.Start(ctx); err != nil {
		cancel()
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		cancel()
		r.Wait()
		_ = st.Close()
	})
	return r
}

// reeveKey is the public key of r's reeve.
func reeveKey(r *reeve.Reeve) ed25519.PublicKey {
	k, _ := r.PubKey(serviceid.Reeve)
	return k
}

// serveSteward serves the steward endpoint as the coordinator does, on the
// test VPN at the coordinator's address, and returns that address.
func (c *cluster) serveSteward(tb testing.TB) netip.AddrPort {
	tb.Helper()
	addr := netip.AddrPortFrom(c.coordIP, serviceid.StewardPort)
	lis, err := c.vpn.Listen(context.Background(), addr)
	if err != nil {
		tb.Fatal(err)
	}
	srv := grpc.NewServer(signedrpc.ServerOptions(signedrpc.ServerConfig{
		Host:      addr.String(),
		Whitelist: coordinator.StewardWhitelist{Registry: c.reg},
		Replay:    httpsig.NewReplayCache(reeve.ReplayCapacity),
		Logger:    testlog.New(tb).With("component", "steward"),
	})...)
	vpnapipb.RegisterStewardServer(srv, &coordinator.StewardServer{Registry: c.reg})
	grpctest.Serve(tb, srv, lis)
	return addr
}

// stewardClient is a client of the steward signed as keyID with key.
func (c *cluster) stewardClient(tb testing.TB, addr netip.AddrPort, keyID string, key ed25519.PrivateKey) vpnapipb.StewardClient {
	tb.Helper()
	opts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(c.vpn.Dial),
	}, signedrpc.DialOptions(keyID, signedrpc.KeySigner{KeyID: keyID, PrivKey: key})...)
	conn, err := grpc.NewClient("passthrough:///"+addr.String(), opts...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	return vpnapipb.NewStewardClient(conn)
}

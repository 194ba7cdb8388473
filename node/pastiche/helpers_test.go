package pastiche

import (
	"context"
	"crypto/sha256"
	"io/fs"
	"maps"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/fabricmesh/fabric/coordinator/steward"
	"github.com/fabricmesh/fabric/internal/leakcheck"
	"github.com/fabricmesh/fabric/internal/loopvpn"
	"github.com/fabricmesh/fabric/internal/rules"
	"github.com/fabricmesh/fabric/internal/serviceid"
	"github.com/fabricmesh/fabric/internal/store"
	"github.com/fabricmesh/fabric/internal/testlog"
	"github.com/fabricmesh/fabric/internal/update"
	"github.com/fabricmesh/fabric/internal/view"
	"github.com/fabricmesh/fabric/node/pastiche/pastichepb"
	"github.com/fabricmesh/fabric/node/reeve"
	"google.golang.org/grpc"
)

// TestMain fails the run if a test left a goroutine of pastiche, reeve or
// gRPC running.
func TestMain(m *testing.M) {
	leakcheck.Main(m, 5*time.Second, "fabricmesh/fabric/", "google.golang.org/grpc")
}

var _ reeve.VPN = (*loopvpn.VPN)(nil)

// testPeer is one peer of a test cluster: its reeve and, on nodes, its
// pastiche.
type testPeer struct {
	name   string
	vpnIP  netip.Addr
	reeve  *reeve.Reeve
	dir    string
	svc    *Service
	cancel context.CancelFunc
}

// stop stops the peer's pastiche and waits for it. Stopping twice is fine.
func (p *testPeer) stop() {
	if p.svc != nil {
		p.cancel()
		p.svc.Wait()
	}
}

// testCluster is a coordinator "c" (only its reeve, with the fabric-admin
// client) and nodes running reeve and pastiche, on a loopback VPN.
type testCluster struct {
	vpn   *loopvpn.VPN
	peers map[string]*testPeer
	nodes []steward.Node
	relay Relay
}

const coordinator = "c"

// newTestCluster starts a node for each entry of hordes (node name ->
// horde) and applies to every peer the view the default rules give.
func newTestCluster(tb testing.TB, hordes map[string]string) *testCluster {
	tb.Helper()
	tc := &testCluster{vpn: loopvpn.New(), peers: map[string]*testPeer{}}
	names := append([]string{coordinator}, slices.Sorted(maps.Keys(hordes))...)
	for i, name := range names {
		p := tc.newPeer(tb, name, netip.AddrFrom4([4]byte{203, 0, 113, byte(i + 1)}))
		tc.nodes = append(tc.nodes, steward.Node{Name: name, Horde: hordes[name], VPNIP: p.vpnIP})
		if name != coordinator {
			tc.startPastiche(tb, p)
		}
	}
	adminID, err := tc.peers[coordinator].reeve.RegisterClient(context.Background(), serviceid.FabricAdmin)
	if err != nil {
		tb.Fatal(err)
	}
	tc.relay = Relay{Reeve: tc.peers[coordinator].reeve, ClientID: adminID}
	nodes, eps, cls := tc.records()
	views := steward.Views(rules.DefaultRules(), nodes, eps, cls)
	for name := range tc.peers {
		tc.applyView(tb, name, views[name])
	}
	return tc
}

func (tc *testCluster) newPeer(tb testing.TB, name string, vpnIP netip.Addr) *testPeer {
	tb.Helper()
	r, err := reeve.New(reeve.Config{
		Store: store.NewMem(), Node: name, VPNIP: vpnIP, ClusterID: "test", VPN: tc.vpn,
		Register: func(context.Context, []byte) error { return nil },
		Logger:   testlog.New(tb).With("peer", name),
	})
	if err != nil {
		tb.Fatal(err)
	}
	p := &testPeer{name: name, vpnIP: vpnIP, reeve: r, dir: filepath.Join(tb.TempDir(), "pastiche")}
	tc.peers[name] = p
	return p
}

func (tc *testCluster) startPastiche(tb testing.TB, p *testPeer) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	svc, err := Start(ctx, Config{Reeve: p.reeve, Dir: p.dir, Listen: tc.vpn.Listen, Logger: testlog.New(tb).With("peer", p.name)})
	if err != nil {
		cancel()
		tb.Fatal(err)
	}
	p.svc, p.cancel = svc, cancel
	tb.Cleanup(p.stop)
}

// records returns the cluster's records, as the steward would hold them.
func (tc *testCluster) records() ([]steward.Node, []steward.Endpoint, []steward.Client) {
	var endpoints []steward.Endpoint
	var clients []steward.Client
	for _, n := range tc.nodes {
		r := tc.peers[n.Name].reeve
		for _, service := range []string{serviceid.Pastiche, serviceid.FabricAdmin} {
			if pub, ok := r.PubKey(service); ok {
				clients = append(clients, steward.Client{Service: service, Node: n.Name, PubKey: pub})
			}
		}
		if tc.peers[n.Name].svc != nil {
			endpoints = append(endpoints, steward.Endpoint{Service: serviceid.Pastiche, Node: n.Name, Port: serviceid.PastichePort})
		}
	}
	return tc.nodes, endpoints, clients
}

func (tc *testCluster) applyView(tb testing.TB, name string, v view.View) {
	tb.Helper()
	if err := tc.peers[name].reeve.ApplyView(context.Background(), 1, update.ViewUpdate{Kind: update.ViewFull, Full: v}); err != nil {
		tb.Fatal(err)
	}
}

// stopAll stops every pastiche, so that every transfer has ended.
func (tc *testCluster) stopAll() {
	for _, p := range tc.peers {
		p.stop()
	}
}

// checkNothingStored fails if a pastiche of the cluster stored a file or
// left a temporary file behind.
func (tc *testCluster) checkNothingStored(tb testing.TB) {
	tb.Helper()
	for node, p := range tc.peers {
		if p.svc == nil {
			continue
		}
		if got := storedFiles(tb, p.dir); len(got) != 0 {
			tb.Errorf("%s stored %v, want nothing", node, got)
		}
	}
}

// dial connects to the pastiche of node as the local client clientID of
// peer from, with extra dial options after the reeve's.
func (tc *testCluster) dial(tb testing.TB, from, clientID, node string, extra ...grpc.DialOption) pastichepb.PasticheClient {
	tb.Helper()
	opts := append(tc.peers[from].reeve.DialOptions(clientID), extra...)
	return tc.dialWith(tb, node, opts...)
}

// dialWith connects to the pastiche of node with exactly opts.
func (tc *testCluster) dialWith(tb testing.TB, node string, opts ...grpc.DialOption) pastichepb.PasticheClient {
	tb.Helper()
	addr := netip.AddrPortFrom(tc.peers[node].vpnIP, serviceid.PastichePort)
	conn, err := grpc.NewClient("passthrough:///"+addr.String(), opts...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	return pastichepb.NewPasticheClient(conn)
}

// storedFiles lists the files in dir, with the SHA-256 of their content,
// and fails on anything that is not a regular file of mode fileMode.
func storedFiles(tb testing.TB, dir string) map[string][sha256.Size]byte {
	tb.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		tb.Fatal(err)
	}
	files := map[string][sha256.Size]byte{}
	for _, e := range entries {
		info, err := e.Info()
		if err != nil {
			tb.Fatal(err)
		}
		if !info.Mode().IsRegular() || info.Mode().Perm() != fileMode {
			tb.Errorf("%s: mode %v, want a regular file of mode %v", e.Name(), info.Mode(), fs.FileMode(fileMode))
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			tb.Fatal(err)
		}
		files[e.Name()] = sha256.Sum256(data)
	}
	return files
}

// testData returns n pseudo-random bytes, the same for the same seed.
func testData(n int, seed uint64) []byte {
	data := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, seed))
	for i := 0; i < n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			data[i+j] = byte(v >> (8 * j))
		}
	}
	return data
}

package inproc_test

import (
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fabricmesh/fabric/core"
	"github.com/fabricmesh/fabric/internal/authconn"
	"github.com/fabricmesh/fabric/internal/identity"
	"github.com/fabricmesh/fabric/pubapi/pubapipb"
	"github.com/fabricmesh/fabric/testbed/inproc"
	"google.golang.org/grpc"
)

// labCluster is the in-process cluster of the fuzz targets and of the
// bad-input catalogue: coord the coordinator, node1 in horde sharks, node2
// in jets, all registered and serving pastiche, and fresh, a peer never
// activated.
type labCluster struct {
	c                          *inproc.Cluster
	coord, node1, node2, fresh *inproc.Peer
	coordPin                   []byte
}

func newLabCluster(tb testing.TB) *labCluster {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c, err := inproc.New(tb.TempDir(), nil) // bad calls would flood any log
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cancel(); c.Close() })
	add := func(name, horde string) *inproc.Peer {
		p, err := c.AddPeer(ctx, name, horde)
		if err != nil {
			tb.Fatal(err)
		}
		return p
	}
	f := &labCluster{c: c, coord: add("coord", "sharks"), node1: add("node1", "sharks"), node2: add("node2", "jets")}
	f.fresh = add("fresh", "sharks")
	if out, err := c.Activate(ctx, f.coord, []*inproc.Peer{f.node1, f.node2}, "203.0.113.0/24"); err != nil {
		tb.Fatalf("%v\n%s", err, out)
	}
	if out, err := c.CLI(ctx, "watch", "--n", "3", "--services", "pastiche", "--timeout", "60s", "--admin-dir", c.AdminDir()); err != nil {
		tb.Fatalf("%v\n%s", err, out)
	}
	f.coordPin = f.identity(tb, f.coord).TLSCertPin
	return f
}

func (f *labCluster) identity(tb testing.TB, p *inproc.Peer) *identity.Identity {
	tb.Helper()
	id, err := identity.LoadOrCreate(filepath.Join(p.StateDir, "identity"), nil)
	if err != nil {
		tb.Fatal(err)
	}
	return id
}

// adminSigningKey reads the admin key of the cluster's bundle.
func (f *labCluster) adminSigningKey(tb testing.TB) ed25519.PrivateKey {
	tb.Helper()
	data, err := os.ReadFile(filepath.Join(f.c.AdminDir(), "admin.key"))
	if err != nil {
		tb.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		tb.Fatal("admin.key is not PEM")
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		tb.Fatal(err)
	}
	return key.(ed25519.PrivateKey)
}

// dial connects to target with authconn credentials cfg; dialer, if set,
// reaches target (the VPN's).
func dial(tb testing.TB, target string, cfg authconn.ClientConfig, opts ...grpc.DialOption) *grpc.ClientConn {
	tb.Helper()
	creds, err := authconn.NewClientCredentials(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	conn, err := grpc.NewClient("passthrough:///"+target, append(creds.DialOptions(), opts...)...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	return conn
}

// check fails t unless the coordinator is still the active coordinator
// and answers GetState.
func (f *labCluster) check(t *testing.T, admin *grpc.ClientConn) {
	t.Helper()
	if st := f.coord.Core().Status(); st.State != core.StateCoordinator {
		t.Fatalf("the coordinator is %s (%s)", st.State, st.Failure)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := pubapipb.NewPubAPIClient(admin).GetState(ctx, &pubapipb.GetStateRequest{}); err != nil {
		t.Fatalf("the coordinator's GetState: %v", err)
	}
}

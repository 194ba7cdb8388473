package inproc_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fabricmesh/fabric/core"
	"github.com/fabricmesh/fabric/internal/store/etcdstore"
	"github.com/fabricmesh/fabric/internal/testlog"
	"github.com/fabricmesh/fabric/node"
	"github.com/fabricmesh/fabric/testbed/etcdlab"
	"github.com/fabricmesh/fabric/testbed/inproc"
)

// TestGrowIntoHA: a single-coordinator cluster on bbolt refuses a second
// coordinator, saying how to move to etcd; fabricd migrate-store copies it
// to a real etcd; the coordinator restarted without --store refuses its
// moved records, and with it runs the cluster as before; a second
// coordinator joins with coordinators add, and once the first is gone it
// adds a node that every remaining peer meshes with.
func TestGrowIntoHA(t *testing.T) {
	etcd := etcdlab.StartLocal(t, 1, nil)
	ctx, cancel := context.WithCancel(context.Background())
	c, err := inproc.New(t.TempDir(), testlog.NewLevel(t, slog.LevelWarn))
	if err != nil {
		t.Fatal(err)
	}
	c.Keepalive = 2 * time.Second
	t.Cleanup(func() { cancel(); c.Close() })
	c1, err := c.AddPeer(ctx, "c1", "sharks")
	if err != nil {
		t.Fatal(err)
	}
	var nodes []*inproc.Peer
	for _, name := range []string{"n1", "n2", "n3"} {
		p, err := c.AddPeer(ctx, name, "sharks")
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, p)
	}
	cliOK(t, c, "activate", "--coordinator", c1.Endpoint.String(), "--nodes", inproc.Endpoints(nodes[:2]),
		"--bootstrap-key-file", c.KeyFile, "--vpn-cidr", "203.0.113.0/24", "--admin-dir", c.AdminDir())
	cliOK(t, c, "watch", "--n", "3", "--timeout", "20s", "--admin-dir", c.AdminDir())

	// On bbolt: refused, saying why and how to move.
	out, err := c.CLI(ctx, "coordinators", "add", nodes[2].Endpoint.String(), "--admin-dir", c.AdminDir())
	for _, want := range []string{
		"adding coordinator " + nodes[2].Endpoint.String() + ": refused: the cluster's store is this coordinator's own bbolt file",
		"several coordinators need the cluster's records in etcd",
		"fabricd migrate-store --from bolt:<state-dir>/fabric.db --to etcd://HOST:PORT",
		"start every coordinator with --store etcd://HOST:PORT",
	} {
		if err == nil || !strings.Contains(out, want) {
			t.Errorf("coordinators add on bbolt: %v, output lacks %q:\n%s", err, want, out)
		}
	}
	if st := nodes[2].Core().Status(); st.State != core.StateAcceptingInit {
		t.Errorf("the refused peer is %s", st.State)
	}

	// Offline copy to etcd.
	c1.Stop()
	address := etcd.URL("fabric/grown")
	var migrateOut bytes.Buffer
	if code := node.Main(ctx, []string{"migrate-store", "--from", "bolt:" + filepath.Join(c1.StateDir, "fabric.db"), "--to", address}, &migrateOut, &migrateOut); code != 0 {
		t.Fatalf("migrate-store: exit %d:\n%s", code, migrateOut.String())
	}
	t.Logf("migrate-store:\n%s", migrateOut.String())

	// Without --store the coordinator refuses the records it moved.
	if err := c1.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if st := c1.Core().Status(); st.State != core.StateFailed || !strings.Contains(st.Failure, "moved to another store: to "+address) {
		t.Errorf("c1 on its moved bbolt file: %s (%s), want failed, saying where the records went", st.State, st.Failure)
	}

	st, err := etcdstore.Open(etcdstore.Options{Endpoints: etcd.Endpoints(), Prefix: "/fabric/grown/"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	c.ClusterStore, c.ClusterStoreID = st, st.ID()
	c1.ShareClusterStore()
	if err := c1.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	cliOK(t, c, "watch", "--n", "3", "--timeout", "30s", "--admin-dir", c.AdminDir())

	c2, err := c.AddCoordinatorPeer(ctx, "c2", "sharks")
	if err != nil {
		t.Fatal(err)
	}
	if out := cliOK(t, c, "coordinators", "add", c2.Endpoint.String(), "--admin-dir", c.AdminDir()); !strings.Contains(out, "coordinator c2 is up at VPN IP") {
		t.Errorf("coordinators add said:\n%s", out)
	}
	cliOK(t, c, "watch", "--n", "4", "--timeout", "30s", "--admin-dir", c.AdminDir())
	checkDevices(t, c, []*inproc.Peer{c1, c2, nodes[0], nodes[1]})

	c1.Stop()
	cliOK(t, c, "add-nodes", "--nodes", nodes[2].Endpoint.String(), "--admin-dir", c.AdminDir())
	n3 := nodes[2].Core().Status().VPNIP
	deadline := time.Now().Add(30 * time.Second)
	for _, p := range []*inproc.Peer{c2, nodes[0], nodes[1]} {
		for !slices.Contains(p.Network.Device().Peers, netip.PrefixFrom(n3, 32)) {
			if time.Now().After(deadline) {
				t.Fatalf("%s has no peer for n3 (%s) after c1 went away: %v", p.Name, n3, p.Network.Device().Peers)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

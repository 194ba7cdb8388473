package inproc_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/fabricmesh/fabric/core"
	"github.com/fabricmesh/fabric/internal/clusterstatus"
	"github.com/fabricmesh/fabric/internal/testlog"
	"github.com/fabricmesh/fabric/internal/version"
	"github.com/fabricmesh/fabric/testbed/inproc"
	"github.com/google/go-cmp/cmp"
)

func newCluster(t *testing.T, n int) (*inproc.Cluster, []*inproc.Peer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c, err := inproc.New(t.TempDir(), testlog.NewLevel(t, slog.LevelWarn))
	if err != nil {
		t.Fatal(err)
	}
	c.Keepalive = 2 * time.Second
	t.Cleanup(func() { cancel(); c.Close() })
	var peers []*inproc.Peer
	for i := range n {
		p, err := c.AddPeer(ctx, fmt.Sprintf("p%d", i+1), "sharks")
		if err != nil {
			t.Fatal(err)
		}
		peers = append(peers, p)
	}
	return c, peers
}

func cliOK(t *testing.T, c *inproc.Cluster, args ...string) string {
	t.Helper()
	out, err := c.CLI(context.Background(), args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// checkDevices asserts every peer's fake WireGuard device is up with its
// VPN IP and holds exactly every other active peer (and the admin).
func checkDevices(t *testing.T, c *inproc.Cluster, peers []*inproc.Peer) {
	t.Helper()
	st, err := c.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var all []netip.Prefix
	for _, p := range append(st.Peers, st.Admins...) {
		all = append(all, netip.PrefixFrom(netip.MustParseAddr(p.VPNIP), 32))
	}
	slices.SortFunc(all, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	for _, p := range peers {
		dev := p.Network.Device()
		self := netip.PrefixFrom(dev.Address.Addr(), 32)
		want := slices.DeleteFunc(slices.Clone(all), func(x netip.Prefix) bool { return x == self })
		if !dev.Up {
			t.Errorf("%s: device down", p.Name)
		}
		if diff := cmp.Diff(want, dev.Peers, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
			t.Errorf("%s (%s): device peers (-want +got):\n%s", p.Name, dev.Address, diff)
		}
	}
}

func TestInProcessCluster(t *testing.T) {
	ctx := context.Background()
	c, peers := newCluster(t, 7)
	coordinator, nodes, later := peers[0], peers[1:5], peers[5:]

	out := cliOK(t, c, "activate", "--coordinator", coordinator.Endpoint.String(), "--nodes", inproc.Endpoints(nodes),
		"--bootstrap-key-file", c.KeyFile, "--vpn-cidr", "203.0.113.0/24", "--admin-dir", c.AdminDir())
	t.Log(out)
	cliOK(t, c, "watch", "--n", "5", "--timeout", "20s", "--admin-dir", c.AdminDir())
	checkDevices(t, c, peers[:5])
	if got := coordinator.Core().Status(); got.State != core.StateCoordinator || got.VPNIP != netip.MustParseAddr("203.0.113.1") {
		t.Errorf("coordinator status %+v", got)
	}
	if st, err := c.Status(ctx); err != nil || st.CoordinatorVersion != version.Get().String() {
		t.Errorf("fabric status: coordinator version %q, %v; want %q", st.CoordinatorVersion, err, version.Get())
	}

	t.Run("add-nodes", func(t *testing.T) {
		t.Log(cliOK(t, c, "add-nodes", "--nodes", inproc.Endpoints(later), "--admin-dir", c.AdminDir()))
		cliOK(t, c, "watch", "--n", "7", "--timeout", "20s", "--admin-dir", c.AdminDir())
		checkDevices(t, c, peers)
	})

	for _, p := range peers {
		t.Run("restart "+p.Name, func(t *testing.T) {
			before, err := c.Status(ctx)
			if err != nil {
				t.Fatal(err)
			}
			dev := p.Network.Device()
			if err := p.Restart(ctx); err != nil {
				t.Fatal(err)
			}
			cliOK(t, c, "watch", "--n", "7", "--timeout", "20s", "--admin-dir", c.AdminDir())
			after, err := c.Status(ctx)
			if err != nil {
				t.Fatal(err)
			}
			// The records are unchanged: a restart re-registers nothing and
			// moves no peer. (The revision may move: a peer down for
			// longer than the liveness grace goes offline and comes back.)
			if diff := cmp.Diff(records(before), records(after)); diff != "" {
				t.Errorf("restart changed the cluster's records (-before +after):\n%s", diff)
			}
			if got := p.Network.Device(); got.Address != dev.Address || got.PubKey != dev.PubKey {
				t.Errorf("device after restart %+v, before %+v", got, dev)
			}
			checkDevices(t, c, peers)
		})
	}
}

// records is what a restart must not change of the status's peers.
func records(st clusterstatus.Status) []string {
	var out []string
	for _, p := range st.Peers {
		out = append(out, fmt.Sprintf("%s %s %s %s %s registered %v at %s", p.Name, p.Role, p.State, p.VPNIP, p.WGPubKey, p.Registered, p.RegisteredAt))
	}
	return out
}

package fabric_test

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/fabricmesh/fabric/internal/clusterstatus"
	"github.com/fabricmesh/fabric/internal/crashpoint"
	"github.com/fabricmesh/fabric/testbed/demo"
	"github.com/fabricmesh/fabric/testbed/etcdlab"
	"github.com/fabricmesh/fabric/testbed/nshost"
)

// TestHA is make ha-demo with assertions, on namespace hosts: two
// coordinators sharing the cluster's records in a three-member etcd, six
// nodes. The coordinator the nodes watch is SIGKILLed; a node is added and
// another removed through the survivor while transfers go on; every node
// fails over, applies both changes and meshes, every transfer succeeds,
// and the killed coordinator catches up once restarted. Then, on the same
// cluster, a coordinator killed in the middle of an activation, and the
// loss of etcd members. (One cluster for all: each costs a minute to
// build.)
func TestHA(t *testing.T) {
	if err := nshost.Check(); err != nil {
		t.Skipf("multi-host test: %v", err)
	}
	etcdlab.RequireBinary(t)
	ctx := context.Background()
	lab, err := nshost.New(ctx, nshost.Config{WorkDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			dumpLogs(t, lab)
		}
		if err := lab.Close(); err != nil {
			t.Errorf("closing lab: %v", err)
		}
	})
	out := logWriter{t}
	h, err := demo.NewHA(ctx, lab, binDir, 6, out, func(format string, args ...any) { t.Logf("== "+format, args...) })
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Run(ctx); err != nil {
		t.Fatalf("the ha-demo flow: %v", err)
	}
	if !t.Run("CoordinatorKilledMidActivation", func(t *testing.T) { killMidActivation(t, h) }) {
		return
	}
	t.Run("EtcdMemberLoss", func(t *testing.T) { etcdMemberLoss(t, h) })
}

// killMidActivation: the first coordinator in the admin bundle is killed
// (by its crash point, with SIGKILL) when the third of five nodes it
// activates has answered. The CLI asks again and the survivor finishes the
// activation: every node ends active with the VPN IP it holds, none
// pending or failed, no IP twice; they mesh, and the killed coordinator
// catches up when restarted.
func killMidActivation(t *testing.T, h *demo.HA) {
	ctx := context.Background()
	first, survivor := h.Coordinators[0], h.Coordinators[1]
	o := h.PeerOptions(first)
	armed := o
	armed.Env = append(armed.Env, crashpoint.EnvCrash+"=core/coordinator/node-answered:3")
	h.SetPeerOptions(first, armed)
	if err := h.StopFabricd(ctx, first); err != nil {
		t.Fatal(err)
	}
	if err := h.StartFabricd(ctx, first); err != nil {
		t.Fatal(err)
	}
	h.SetPeerOptions(first, o)
	waitCoordinatorsCaughtUp(t, h)
	nodes, err := h.AddNodeHosts(ctx, 5)
	if err != nil {
		t.Fatal(err)
	}

	added, err := h.AddNodes(ctx, nodes)
	t.Logf("fabric add-nodes:\n%s", added)
	if err != nil {
		t.Fatalf("fabric add-nodes through the killed coordinator and the survivor: %v", err)
	}
	p := h.Daemon(first)
	select {
	case <-p.Exited():
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not crash at its crash point", first.Name())
	}
	if !strings.Contains(p.Log(), crashpoint.CrashLine+"core/coordinator/node-answered") {
		t.Fatalf("%s exited, but not at its crash point:\n%s", first.Name(), p.Log())
	}
	for _, want := range []string{"asking coordinator " + h.Endpoint(first), "asking coordinator " + h.Endpoint(survivor), "5 node(s) activated, 0 failed"} {
		if !strings.Contains(added, want) {
			t.Errorf("add-nodes output lacks %q", want)
		}
	}

	st, err := h.WaitStatus(ctx, time.Minute, func(st clusterstatus.Status) error {
		return nshost.NodesWatching(st, survivor.Name())
	})
	if err != nil {
		t.Fatal(err)
	}
	byIP := map[string]string{}
	for _, p := range st.Peers {
		if p.State != "active" {
			t.Errorf("%s is %s after the activation: %s", p.Name, p.State, p.LastError)
		}
		if other, dup := byIP[p.VPNIP]; dup {
			t.Errorf("%s and %s both hold %s", p.Name, other, p.VPNIP)
		}
		byIP[p.VPNIP] = p.Name
	}
	for _, n := range nodes {
		p, ok := nshost.PeerByName(st, n.Name())
		held, err := h.VPNAddr(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		if !ok || held != netip.MustParseAddr(p.VPNIP) {
			t.Errorf("%s holds VPN IP %s on fabric0, the registry %q", n.Name(), held, p.VPNIP)
		}
	}
	live := append([]*nshost.Host{survivor}, h.LiveNodes()...)
	waitMesh(t, h, live, first)

	if err := h.StartFabricd(ctx, first); err != nil {
		t.Fatal(err)
	}
	waitCoordinatorsCaughtUp(t, h)
	waitMesh(t, h, append(h.Coordinators, h.LiveNodes()...))
}

// etcdMemberLoss: with one of the three etcd members killed the cluster
// still changes (a node is added); with two killed a change fails saying
// etcd has no quorum, and the nodes keep their mesh; with the members back
// the change goes through and everything converges.
func etcdMemberLoss(t *testing.T, h *demo.HA) {
	ctx := context.Background()
	if err := h.Etcd.Kill(0); err != nil {
		t.Fatal(err)
	}
	one, err := h.AddNodeHosts(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := h.AddNodes(ctx, one); err != nil {
		t.Fatalf("add-nodes with one etcd member of three down: %v\n%s", err, out)
	}

	if err := h.Etcd.Kill(1); err != nil {
		t.Fatal(err)
	}
	target := h.LiveNodes()[0]
	out, err := h.CLI(ctx, "nodes", "remove", target.Name(), "--yes", "--admin-dir", h.AdminDir)
	t.Logf("fabric nodes remove without quorum:\n%s", out)
	if err == nil || !strings.Contains(out, "etcd has no quorum: 1 of 3 members reachable") {
		t.Fatalf("nodes remove with two etcd members of three down = %v, want an error saying etcd has no quorum:\n%s", err, out)
	}
	// The nodes keep their mesh: every one pings every other and the
	// coordinators.
	vpnIPs := map[*nshost.Host]string{}
	for _, x := range append(h.Coordinators, h.LiveNodes()...) {
		ip, err := h.VPNAddr(ctx, x)
		if err != nil || !ip.IsValid() {
			t.Fatalf("%s has no VPN IP: %v", x.Name(), err)
		}
		vpnIPs[x] = ip.String()
	}
	var ips []string
	for _, ip := range vpnIPs {
		ips = append(ips, ip)
	}
	for x := range vpnIPs {
		if err := nshost.PingAll(ctx, x, ips); err != nil {
			t.Errorf("without etcd's quorum, %s: %v", x.Name(), err)
		}
	}

	for _, i := range []int{0, 1} {
		if err := h.Etcd.Restart(ctx, i); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := h.Remove(ctx, target); err != nil {
		t.Fatalf("nodes remove once etcd is back: %v\n%s", err, out)
	}
	waitCoordinatorsCaughtUp(t, h)
	waitMesh(t, h, append(h.Coordinators, h.LiveNodes()...))
}

// waitCoordinatorsCaughtUp waits until every coordinator is online at the
// cluster's revision and every node watches one of them.
func waitCoordinatorsCaughtUp(t *testing.T, h *demo.HA) {
	t.Helper()
	var names []string
	for _, c := range h.Coordinators {
		names = append(names, c.Name())
	}
	_, err := h.WaitStatus(context.Background(), time.Minute, func(st clusterstatus.Status) error {
		for _, c := range h.Coordinators {
			if p, _ := nshost.PeerByName(st, c.Name()); !p.Online || p.AppliedRevision != st.Revision {
				return fmt.Errorf("%s online %v at revision %d of %d", c.Name(), p.Online, p.AppliedRevision, st.Revision)
			}
		}
		return nshost.NodesWatching(st, names...)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// waitMesh waits for the mesh among hosts (down hosts are not pinged) and
// logs how long it took.
func waitMesh(t *testing.T, h *demo.HA, hosts []*nshost.Host, down ...*nshost.Host) {
	t.Helper()
	took, err := h.WaitMesh(context.Background(), time.Minute, hosts, down...)
	if err != nil {
		t.Fatalf("mesh after %v: %v", took, err)
	}
	t.Logf("mesh of %d hosts checked after %v", len(hosts), took.Round(time.Millisecond))
}

// logWriter sends the demo's output to the test log.
type logWriter struct{ t *testing.T }

func (w logWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(b), "\n"))
	return len(b), nil
}

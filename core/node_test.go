package core

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/fabricmesh/fabric/core/coretest"
	"github.com/google/go-cmp/cmp"
)

// activationOf is the request the coordinator sent to the node at endpoint.
func activationOf(t testing.TB, h *harness, endpoint string) NodeActivation {
	t.Helper()
	for _, c := range h.activator.recorded() {
		if c.Method == "ActivateAsNode" && c.Endpoint == endpoint {
			return c.Req
		}
	}
	t.Fatalf("the coordinator never activated %s", endpoint)
	return NodeActivation{}
}

// TestActivateAsNodeAgain: a node answers the same activation again (its
// answer was lost) and refuses any other.
func TestActivateAsNodeAgain(t *testing.T) {
	h := newHarness(t, 1, nil)
	h.mustActivate()
	node := h.nodes[0]
	req := activationOf(t, h, node.endpoint())
	first, err := node.core.ActivateAsNode(t.Context(), req)
	if err != nil {
		t.Fatalf("repeating the activation: %v", err)
	}
	rec, _ := h.peerByEndpoint(node.endpoint())
	if first.Name != rec.Name || !slices.Equal(first.WGPubKey, rec.WGPubKey) || !slices.Equal(first.SigningPubKey, rec.SigningPubKey) ||
		first.WGEndpoint != rec.WGEndpoint || first.Horde != rec.Horde {
		t.Errorf("repeated activation answered %+v; the registry has %+v", first, rec)
	}
	before := snapshot(t, node)
	tests := []struct {
		name   string
		modify func(*NodeActivation)
		want   error
	}{
		{"same", func(*NodeActivation) {}, nil},
		{"another cluster", func(r *NodeActivation) { r.ClusterID = "0123456789abcdef" }, ErrWrongState},
		{"another address", func(r *NodeActivation) { r.NodeVPNIP = netip.MustParseAddr("203.0.113.99") }, ErrWrongState},
		{"another coordinator key", func(r *NodeActivation) { r.Coordinator.VPNPubKey[0] ^= 1 }, ErrWrongState},
		{"another coordinator certificate", func(r *NodeActivation) { r.Coordinator.TLSPin = []byte("other pin") }, ErrWrongState},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := req
			tt.modify(&r)
			got, err := node.core.ActivateAsNode(t.Context(), r)
			if !errors.Is(err, tt.want) {
				t.Fatalf("ActivateAsNode = %+v, %v; want %v", got, err, tt.want)
			}
			if err != nil && !strings.Contains(err.Error(), "already active as a node of cluster "+req.ClusterID) {
				t.Errorf("refusal %q should name the node's cluster", err)
			}
			if err == nil {
				if diff := cmp.Diff(first, got); diff != "" {
					t.Errorf("repeated activation answered differently (-first +got):\n%s", diff)
				}
			}
			if diff := cmp.Diff(before, snapshot(t, node), cmpNetip); diff != "" {
				t.Errorf("ActivateAsNode changed the node (-before +after):\n%s", diff)
			}
		})
	}
}

// TestInvalidNodeActivation: a malformed request is refused with
// ErrInvalidArgument and changes nothing.
func TestInvalidNodeActivation(t *testing.T) {
	h := newHarness(t, 1, nil)
	h.mustActivate()
	valid := activationOf(t, h, h.nodes[0].endpoint())
	valid.NodeVPNIP = netip.MustParseAddr("203.0.113.50")
	tests := []struct {
		name   string
		modify func(*NodeActivation)
		want   string
	}{
		{"no cluster id", func(r *NodeActivation) { r.ClusterID = "" }, "empty cluster id"},
		{"no vpn cidr", func(r *NodeActivation) { r.VPNCIDR = netip.Prefix{} }, "not inside vpn cidr"},
		{"node ip outside the cidr", func(r *NodeActivation) { r.NodeVPNIP = netip.MustParseAddr("198.51.100.3") }, "not inside vpn cidr"},
		{"coordinator ip outside the cidr", func(r *NodeActivation) { r.Coordinator.VPNIP = netip.MustParseAddr("198.51.100.1") }, "bad coordinator vpn ip"},
		{"coordinator ip is the node's", func(r *NodeActivation) { r.Coordinator.VPNIP = r.NodeVPNIP }, "bad coordinator vpn ip"},
		{"no tls pin", func(r *NodeActivation) { r.Coordinator.TLSPin = nil }, "tls pin or signing key"},
		{"short signing key", func(r *NodeActivation) { r.Coordinator.SigningPubKey = r.Coordinator.SigningPubKey[:16] }, "tls pin or signing key"},
		{"bad wireguard endpoint", func(r *NodeActivation) { r.Coordinator.WGEndpoint = "coord:51820" }, "coordinator wireguard endpoint"},
		{"bad vpnapi endpoint", func(r *NodeActivation) { r.Coordinator.VPNAPIEndpoint = "" }, "coordinator vpnapi endpoint"},
		{"other coordinator without a pin", func(r *NodeActivation) {
			o := r.Coordinator
			o.VPNIP, o.TLSPin = netip.MustParseAddr("203.0.113.60"), nil
			r.OtherCoordinators = []CoordinatorInfo{o}
		}, "other coordinator 1: coordinator tls pin"},
		{"other coordinator at the coordinator's ip", func(r *NodeActivation) {
			r.OtherCoordinators = []CoordinatorInfo{r.Coordinator}
		}, "other coordinator 1: bad coordinator vpn ip"},
		{"too many other coordinators", func(r *NodeActivation) {
			for i := range MaxCoordinators {
				o := r.Coordinator
				o.VPNIP = netip.AddrFrom4([4]byte{203, 0, 113, byte(100 + i)})
				r.OtherCoordinators = append(r.OtherCoordinators, o)
			}
		}, "other coordinators, at most"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			node := h.addNode(newMemStore())
			t.Cleanup(node.stop)
			r := valid
			tt.modify(&r)
			before := snapshot(t, node)
			_, err := node.core.ActivateAsNode(t.Context(), r)
			if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ActivateAsNode = %v, want ErrInvalidArgument saying %q", err, tt.want)
			}
			if diff := cmp.Diff(before, snapshot(t, node), cmpNetip); diff != "" {
				t.Errorf("invalid request changed the node (-before +after):\n%s", diff)
			}
		})
	}
}

// TestNodeActivationFailure: a node that cannot come up goes back to
// accepting-init with its interface down and nothing persisted.
func TestNodeActivationFailure(t *testing.T) {
	h := newHarness(t, 1, nil)
	h.mustActivate()
	valid := activationOf(t, h, h.nodes[0].endpoint())
	valid.NodeVPNIP = netip.MustParseAddr("203.0.113.50")
	tests := []struct {
		name    string
		breakIt func(p *testPeer, st *failingStore, err error)
		want    string
	}{
		{"network up fails", func(p *testPeer, _ *failingStore, err error) { p.net.FailUp(err) }, "bringing up the vpn interface"},
		{"adding the coordinator fails", func(p *testPeer, _ *failingStore, err error) { p.net.FailSetPeers(err) }, "adding the coordinator"},
		{"store fails", func(_ *testPeer, st *failingStore, err error) { st.failUpdates(err) }, "persisting node state"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := &failingStore{Store: newMemStore()}
			node := h.addNode(st)
			t.Cleanup(node.stop)
			tt.breakIt(node, st, errors.New("injected"))
			before := snapshot(t, node)
			_, err := node.core.ActivateAsNode(t.Context(), valid)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "injected") {
				t.Fatalf("ActivateAsNode = %v, want an error containing %q", err, tt.want)
			}
			after := snapshot(t, node)
			if after.Device.Up || len(after.Device.Peers) != 0 {
				t.Errorf("device after a failed activation = %+v, want down", after.Device)
			}
			after.Device = before.Device
			if diff := cmp.Diff(before, after, cmpNetip); diff != "" {
				t.Errorf("failed activation changed the node (-before +after):\n%s", diff)
			}
			tt.breakIt(node, st, nil)
			if _, err := node.core.ActivateAsNode(t.Context(), valid); err != nil {
				t.Fatalf("activation after healing: %v", err)
			}
			if st := node.core.Status(); st.State != StateNode || st.VPNIP != valid.NodeVPNIP {
				t.Errorf("Status after healing = %+v", st)
			}
		})
	}
}

// TestNodeLoopConverges: as nodes join, every node's device comes to hold
// exactly the other active peers, and the coordinator learns which revision
// each node applied.
func TestNodeLoopConverges(t *testing.T) {
	h := newHarness(t, 5, nil)
	first, later := h.nodes[:2], h.nodes[2:]
	if _, _, err := h.activate(first...); err != nil {
		t.Fatal(err)
	}
	h.waitMesh()
	for i, n := range later {
		t.Run(fmt.Sprintf("join %d", i), func(t *testing.T) {
			res, err := h.coord.core.ActivateAdditionalNodes(t.Context(), []string{n.endpoint()}, func(Event) {})
			if err != nil || res.Failed != 0 {
				t.Fatalf("ActivateAdditionalNodes = %+v, %v", res, err)
			}
			h.waitMesh()
		})
	}
	reg := h.registry()
	eventually(t, "every node to report the current revision", func() error {
		rev := reg.Revision()
		for _, n := range h.nodes {
			ip := n.core.Status().VPNIP
			applied, err := n.core.AppliedRevision()
			if err != nil {
				return err
			}
			if reported := h.net.lastReport(ip); applied != rev || reported != rev {
				return fmt.Errorf("%s applied %d and reported %d; revision is %d", n.self.Name, applied, reported, rev)
			}
		}
		if got := h.net.lastReport(h.coord.core.Status().VPNIP); got != rev {
			return fmt.Errorf("the coordinator applied %d; revision is %d", got, rev)
		}
		return nil
	})
	for _, n := range h.nodes {
		cfg, ok := n.core.NodeConfig()
		if !ok || cfg.VPNIP != n.core.Status().VPNIP || cfg.Coordinator.VPNIP != netip.MustParseAddr("203.0.113.1") {
			t.Errorf("%s NodeConfig = %+v, %v", n.self.Name, cfg, ok)
		}
	}
	if _, ok := h.coord.core.NodeConfig(); ok {
		t.Error("the coordinator has a NodeConfig")
	}
}

// TestNodeAnswersKeepalives: with nothing changing, a node answers each
// of its coordinator's keepalives with a report, its sign of life (the
// coordinator shows a watching node that stops reporting offline).
func TestNodeAnswersKeepalives(t *testing.T) {
	h := newHarness(t, 2, nil)
	if _, _, err := h.activate(h.nodes...); err != nil {
		t.Fatal(err)
	}
	h.waitMesh()
	for _, n := range h.nodes {
		ip := n.core.Status().VPNIP
		before, rev := h.net.reportCount(ip), h.registry().Revision()
		eventually(t, n.self.Name+" to answer 3 keepalives", func() error {
			if got := h.net.reportCount(ip) - before; got < 3 {
				return fmt.Errorf("%d reports since", got)
			}
			return nil
		})
		if got := h.registry().Revision(); got != rev {
			t.Fatalf("the revision moved from %d to %d: the reports may have answered changes", rev, got)
		}
	}
}

// TestNodeKeepsPeersWhileCoordinatorUnreachable: while a node cannot reach
// its coordinator it keeps its peers and retries, and converges once the
// coordinator answers again.
func TestNodeKeepsPeersWhileCoordinatorUnreachable(t *testing.T) {
	tests := []struct {
		name    string
		breakIt func(h *harness)
		heal    func(h *harness)
	}{
		{"watch fails", func(h *harness) { h.net.breakConns(nil, errConnRefused) }, func(h *harness) { h.net.breakConns(nil, nil) }},
		{"watch and dial fail", func(h *harness) { h.net.breakConns(errConnRefused, errConnRefused) }, func(h *harness) { h.net.breakConns(nil, nil) }},
		{"wireguard fails on the node", func(h *harness) {
			for _, n := range h.nodes[:2] {
				n.net.FailSetPeers(errors.New("device busy"))
			}
		}, func(h *harness) {
			for _, n := range h.nodes[:2] {
				n.net.FailSetPeers(nil)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, 2, nil)
			h.mustActivate()
			old := map[string]coretest.FakeDevice{}
			applied := map[string]uint64{}
			for _, n := range h.nodes {
				old[n.self.Name] = n.net.Device()
				applied[n.self.Name], _ = n.core.AppliedRevision()
			}
			tt.breakIt(h)
			extra := h.addNode(newMemStore())
			attempts := h.net.attempts()
			res, err := h.coord.core.ActivateAdditionalNodes(t.Context(), []string{extra.endpoint()}, func(Event) {})
			if err != nil || res.Failed != 0 {
				t.Fatalf("ActivateAdditionalNodes = %+v, %v", res, err)
			}
			eventually(t, "the nodes to retry", func() error {
				if got := h.net.attempts() - attempts; got < 20 {
					return fmt.Errorf("%d attempts so far", got)
				}
				return nil
			})
			for _, n := range h.nodes[:2] {
				if diff := cmp.Diff(old[n.self.Name], n.net.Device(), cmpNetip); diff != "" {
					t.Errorf("%s changed its device while the coordinator was unreachable (-before +after):\n%s", n.self.Name, diff)
				}
				if got, _ := n.core.AppliedRevision(); got != applied[n.self.Name] {
					t.Errorf("%s applied revision %d while it could not apply anything (had %d)", n.self.Name, got, applied[n.self.Name])
				}
			}
			tt.heal(h)
			h.waitMesh()
		})
	}
}

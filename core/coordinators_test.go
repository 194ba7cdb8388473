package core

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/store"
)

// TestAddCoordinator: with a shared registry, a second coordinator joins
// the cluster; the nodes learn it and, when the first coordinator is gone,
// follow the second, which activates more nodes that everyone meshes with.
func TestAddCoordinator(t *testing.T) {
	h, second := twoCoordinators(t, 3, 2)

	// The first coordinator goes away; the second activates a node.
	// The first coordinator goes away; the second activates a node.
	h.coord.stop()
	h.coord = second
	res, err := second.core.ActivateAdditionalNodes(t.Context(), []string{h.nodes[2].endpoint()}, func(Event) {})
	if err != nil || res.Failed != 0 {
		t.Fatalf("ActivateAdditionalNodes through the second coordinator = %+v, %v", res, err)
	}
	eventually(t, "the nodes to mesh with the new node through the second coordinator", func() error {
		ip := h.nodes[2].core.Status().VPNIP
		for _, n := range h.nodes[:2] {
			if !slices.Contains(n.net.Device().Peers, netip.PrefixFrom(ip, ip.BitLen())) {
				return fmt.Errorf("%s has no peer at %s", n.self.Name, ip)
			}
		}
		return nil
	})
}

// TestAddCoordinatorNeedsSharedStore: on the coordinator's own store a
// second coordinator is refused, with how to move to etcd.
func TestAddCoordinatorNeedsSharedStore(t *testing.T) {
	h := newHarness(t, 1, nil)
	h.mustActivate()
	_, err := h.coord.core.AddCoordinator(t.Context(), "192.0.2.99:7443")
	if !errors.Is(err, ErrNeedsSharedStore) {
		t.Fatalf("AddCoordinator on bbolt = %v, want ErrNeedsSharedStore", err)
	}
}

// twoCoordinators makes a cluster on a shared store with n nodes, the
// first activated of them with the cluster, and a second coordinator that
// joins it; it waits until those nodes know both coordinators.
func twoCoordinators(t *testing.T, n, activated int) (h *harness, second *testPeer) {
	t.Helper()
	h = &harness{t: t, net: newFakeNet(), activator: newFakeActivator(), shared: store.NewMem()}
	h.coord = h.start(newSelf(t, "coord", 1), store.NewMem())
	h.activator.signingKey = signingPrivKey(h.coord.self.SigningPubKey)
	for range n {
		h.addNode(store.NewMem())
	}
	if _, _, err := h.activate(h.nodes[:activated]...); err != nil {
		t.Fatal(err)
	}
	h.waitSettled()

	second = h.start(newSelf(t, "coord2", 2), store.NewMem())
	h.activator.setNode(second.endpoint(), second.core)
	p, err := h.coord.core.AddCoordinator(t.Context(), second.endpoint())
	if err != nil {
		t.Fatalf("AddCoordinator: %v", err)
	}
	if p.Role != records.RoleCoordinator || p.State != records.StateActive || len(p.TLSPin) == 0 {
		t.Fatalf("AddCoordinator = %+v, want an active coordinator with its pin", p)
	}
	eventually(t, "the second coordinator to start", func() error {
		if st := second.core.Status(); st.State != StateCoordinator || st.VPNIP != p.VPNIP {
			return fmt.Errorf("second coordinator is %s at %s", st.State, st.VPNIP)
		}
		return nil
	})
	eventually(t, "the nodes to know both coordinators", func() error {
		for _, n := range h.nodes[:activated] {
			if got := len(n.core.Coordinators()); got != 2 {
				return fmt.Errorf("%s knows %d coordinators", n.self.Name, got)
			}
		}
		return nil
	})
	return h, second
}

// TestActivationAcrossCoordinators: a node activated by a coordinator
// that then dies is not stranded. The activation names the other
// coordinators, so a node whose first update never came fails over to
// them; and a node the dead coordinator activated but never recorded
// active (it died in between) is activated again through the other with
// the VPN IP it holds, the node taking the repeated request as the same
// activation. Both end meshed through the survivor.
func TestActivationAcrossCoordinators(t *testing.T) {
	h, second := twoCoordinators(t, 4, 1)
	first := h.coord
	recorded, answered := h.nodes[1], h.nodes[2]

	// recorded: activated by the first coordinator, which names the
	// second in its request.
	res, err := first.core.ActivateAdditionalNodes(t.Context(), h.nodeEndpoints(recorded), func(Event) {})
	if err != nil || res.Failed != 0 {
		t.Fatalf("ActivateAdditionalNodes = %+v, %v", res, err)
	}
	secondIP := second.core.Status().VPNIP
	var named []netip.Addr
	for _, c := range h.activator.recorded() {
		if c.Method == "ActivateAsNode" && c.Endpoint == recorded.endpoint() {
			for _, o := range c.Req.OtherCoordinators {
				named = append(named, o.VPNIP)
			}
		}
	}
	if !slices.Equal(named, []netip.Addr{secondIP}) {
		t.Errorf("the activation of %s named the other coordinators %v, want [%s]", recorded.self.Name, named, secondIP)
	}

	// answered: the first coordinator reserved it and the node took the
	// activation, but the coordinator died before recording it active.
	me, err := first.core.coordinatorRecord()
	if err != nil {
		t.Fatal(err)
	}
	firstInfo, ok := first.core.coordinatorInfo(me)
	if !ok {
		t.Fatalf("no coordinator info from the first coordinator's record %+v", me)
	}
	st := answered.core.Status()
	reserved, err := first.reg.Reserve(answered.endpoint(), st.Name, st.VPNPubKey[:], st.SigningPubKey, true)
	if err != nil {
		t.Fatal(err)
	}
	cl, _ := first.reg.Cluster()
	if _, err := answered.core.ActivateAsNode(t.Context(), NodeActivation{
		ClusterID: cl.ID, VPNCIDR: cl.VPNCIDR, NodeVPNIP: reserved.VPNIP,
		Coordinator: firstInfo, OtherCoordinators: first.core.otherCoordinators(me.VPNIP),
	}); err != nil {
		t.Fatalf("ActivateAsNode from the first coordinator: %v", err)
	}
	first.stop()
	h.coord = second

	res, err = second.core.ActivateAdditionalNodes(t.Context(), h.nodeEndpoints(answered, h.nodes[3]), func(Event) {})
	if err != nil || res.Failed != 0 {
		t.Fatalf("ActivateAdditionalNodes through the second coordinator = %+v, %v", res, err)
	}
	if p, _ := second.reg.PeerByEndpoint(answered.endpoint()); p.VPNIP != reserved.VPNIP || p.State != records.StateActive {
		t.Errorf("after the retry the record of %s is %s at %s, want active at %s", answered.self.Name, p.State, p.VPNIP, reserved.VPNIP)
	}
	eventually(t, "every node to mesh with every other through the second coordinator", func() error {
		for _, n := range h.nodes {
			for _, o := range h.nodes {
				ip := o.core.Status().VPNIP
				if n != o && !slices.Contains(n.net.Device().Peers, netip.PrefixFrom(ip, 32)) {
					return fmt.Errorf("%s has no peer for %s (%s)", n.self.Name, o.self.Name, ip)
				}
			}
		}
		return nil
	})
}

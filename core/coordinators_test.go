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
	h := &harness{t: t, net: newFakeNet(), activator: newFakeActivator(), shared: store.NewMem()}
	h.coord = h.start(newSelf(t, "coord", 1), store.NewMem())
	h.activator.signingKey = signingPrivKey(h.coord.self.SigningPubKey)
	for range 3 {
		h.addNode(store.NewMem())
	}
	if _, _, err := h.activate(h.nodes[:2]...); err != nil {
		t.Fatal(err)
	}
	h.waitSettled()

	second := h.start(newSelf(t, "coord2", 2), store.NewMem())
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
		for _, n := range h.nodes[:2] {
			if got := len(n.core.Coordinators()); got != 2 {
				return fmt.Errorf("%s knows %d coordinators", n.self.Name, got)
			}
		}
		return nil
	})

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

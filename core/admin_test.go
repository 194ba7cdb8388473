package core

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/fabricmesh/fabric/core/coretest"
	"github.com/fabricmesh/fabric/internal/records"
	"github.com/google/go-cmp/cmp"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// adminRun is RunAdminVPN running in the background, with what it
// observed.
type adminRun struct {
	net  *coretest.FakeNetworkManager
	done chan error
	stop context.CancelFunc
	once sync.Once
	err  error

	mu    sync.Mutex
	state AdminVPNState
}

// end stops RunAdminVPN and returns what it returned.
func (r *adminRun) end() error {
	r.once.Do(func() {
		r.stop()
		r.err = <-r.done
	})
	return r.err
}

func (r *adminRun) last() AdminVPNState {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.state
}

// startAdminVPN runs the admin of h's cluster on the VPN, starting from
// the coordinator's record only, as the CLI would from the pubapi.
func startAdminVPN(t *testing.T, h *harness) (*adminRun, records.Peer) {
	t.Helper()
	_, peers := h.registry().Peers()
	var admin, coord records.Peer
	for _, p := range peers {
		switch p.Role {
		case records.RoleAdmin:
			admin = p
		case records.RoleCoordinator:
			coord = p
		}
	}
	co := activationOf(t, h, h.nodes[0].endpoint()).Coordinator
	privKey, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &adminRun{net: coretest.NewFakeNetworkManager(), done: make(chan error, 1), stop: cancel}
	cfg := AdminVPNConfig{
		VPNPrivKey: privKey, ListenPort: 51821, Address: netip.PrefixFrom(admin.VPNIP, testVPNCIDR.Bits()),
		Peers: []records.Peer{coord}, Coordinator: co, VPNAPIPort: testVPNAPIPort, WGEndpoint: "198.51.100.9:51821",
		Network: r.net, Dialer: &fakeDialer{net: h.net, signingPubKey: admin.SigningPubKey},
		MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond, Logger: testLogger(t, "admin"),
		Observe: func(st AdminVPNState) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.state = st
		},
	}
	go func() { r.done <- RunAdminVPN(ctx, cfg) }()
	t.Cleanup(func() {
		if err := r.end(); err != nil {
			t.Errorf("RunAdminVPN: %v", err)
		}
	})
	return r, admin
}

// adminMeshErr says how the admin's device differs from every other active
// peer of the registry, and whether the admin is behind its revision.
func adminMeshErr(h *harness, r *adminRun, admin records.Peer) error {
	rev, peers := h.registry().Peers()
	var want []netip.Prefix
	for _, p := range peers {
		if p.State == records.StateActive && p.VPNIP != admin.VPNIP {
			want = append(want, netip.PrefixFrom(p.VPNIP, 32))
		}
	}
	if diff := cmp.Diff(want, r.net.Device().Peers, cmpNetip); diff != "" {
		return fmt.Errorf("admin's peers (-want +got):\n%s", diff)
	}
	if st := r.last(); st.Revision != rev || st.Watching != "coord" {
		return fmt.Errorf("admin at revision %d watching %q, want %d watching coord", st.Revision, st.Watching, rev)
	}
	return nil
}

// TestAdminVPN: the admin's interface starts with the coordinator, gets
// the whole cluster from its watch, follows a node added and one removed,
// reports what it applied, resumes after the net broke, and says it roams
// when it stops.
func TestAdminVPN(t *testing.T) {
	h := newHarness(t, 2, nil)
	h.mustActivate()
	r, admin := startAdminVPN(t, h)
	eventually(t, "the admin to hold every peer", func() error { return adminMeshErr(h, r, admin) })
	if dev := r.net.Device(); !dev.Up || dev.ListenPort != 51821 || dev.Address != netip.PrefixFrom(admin.VPNIP, testVPNCIDR.Bits()) {
		t.Errorf("admin device %+v, want up on port 51821 at %s", dev, admin.VPNIP)
	}
	eventually(t, "the coordinator to hear the admin's revision", func() error {
		if got, want := h.net.lastReport(admin.VPNIP), h.registry().Revision(); got != want {
			return fmt.Errorf("admin reported %d, want %d", got, want)
		}
		return nil
	})
	if got, want := h.net.lastStart(admin.VPNIP), (WatchStart{WGEndpoint: "198.51.100.9:51821"}); got != want {
		t.Errorf("the admin's watch started with %+v, want %+v", got, want)
	}

	added := h.addNode(newMemStore())
	if res, err := h.coord.core.ActivateAdditionalNodes(t.Context(), h.nodeEndpoints(added), func(Event) {}); err != nil || res.Failed != 0 {
		t.Fatalf("ActivateAdditionalNodes: %+v, %v", res, err)
	}
	eventually(t, "the admin to hold the added node", func() error { return adminMeshErr(h, r, admin) })

	if _, err := h.coord.core.RemoveNode(t.Context(), h.nodes[0].self.Name); err != nil {
		t.Fatalf("RemoveNode: %v", err)
	}
	eventually(t, "the admin to drop the removed node", func() error { return adminMeshErr(h, r, admin) })
	if st := r.last(); !slices.ContainsFunc(st.Peers, func(p records.Peer) bool { return p.Name == added.self.Name }) {
		t.Errorf("observed peers %v lack the added node", st.Peers)
	}

	broken := errors.New("network unreachable")
	h.net.breakConns(broken, broken)
	eventually(t, "the admin to notice", func() error {
		if st := r.last(); st.Watching != "" || st.LastError == "" {
			return fmt.Errorf("admin state %+v, want no watch and an error", st)
		}
		return nil
	})
	h.net.breakConns(nil, nil)
	eventually(t, "the admin to watch again", func() error { return adminMeshErr(h, r, admin) })

	// Stopping, the admin tells the coordinator its endpoint goes away.
	if err := r.end(); err != nil {
		t.Fatalf("RunAdminVPN: %v", err)
	}
	if got, want := h.net.lastStart(admin.VPNIP), (WatchStart{Roaming: true}); got != want {
		t.Errorf("the admin's last watch started with %+v, want %+v", got, want)
	}
}

// TestAdminVPNUpFails: an interface that cannot come up ends RunAdminVPN
// with the reason.
func TestAdminVPNUpFails(t *testing.T) {
	n := coretest.NewFakeNetworkManager()
	n.FailUp(errors.New("operation not permitted"))
	err := RunAdminVPN(t.Context(), AdminVPNConfig{Address: netip.MustParsePrefix("203.0.113.2/24"), ListenPort: 51821, Network: n, Dialer: &fakeDialer{net: newFakeNet()}})
	if err == nil || err.Error() != "bringing up the vpn interface: operation not permitted" {
		t.Errorf("RunAdminVPN = %v, want the interface's error", err)
	}
}

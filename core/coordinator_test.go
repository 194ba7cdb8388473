package core

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fabricmesh/fabric/coordinator/registry"
	"github.com/fabricmesh/fabric/core/coretest"
	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/store/storetest"
	"github.com/google/go-cmp/cmp"
)

func TestActivateAsCoordinator(t *testing.T) {
	tests := []struct {
		name  string
		nodes int
		cidr  string
	}{
		{"alone", 0, "203.0.113.0/24"},
		{"one node", 1, "203.0.113.0/24"},
		{"three nodes", 3, "203.0.113.0/24"},
		{"ipv6 vpn", 2, "fd00:fab::/64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, tt.nodes, nil)
			if st := h.coord.core.Status().State; st != StateAcceptingInit {
				t.Fatalf("a new peer is %s, want %s", st, StateAcceptingInit)
			}
			req := activationRequest(t, h.nodeEndpoints(h.nodes...))
			req.VPNCIDR = netip.MustParsePrefix(tt.cidr)
			log := &eventLog{}
			res, err := h.coord.core.ActivateAsCoordinator(t.Context(), req, log.emit)
			if err != nil {
				t.Fatalf("ActivateAsCoordinator: %v", err)
			}
			if want := (ActivationResult{Activated: tt.nodes}); res != want {
				t.Errorf("result = %+v, want %+v", res, want)
			}
			coordIP := req.VPNCIDR.Addr().Next()
			adminIP := coordIP.Next()

			st := h.coord.core.Status()
			if st.State != StateCoordinator || st.VPNIP != coordIP || st.ClusterID == "" {
				t.Errorf("Status = %+v, want coordinator at %s with a cluster id", st, coordIP)
			}
			wantDev := coretest.FakeDevice{Up: true, PubKey: h.coord.self.VPNPrivKey.PublicKey(), ListenPort: testWGPort,
				Address: netip.PrefixFrom(coordIP, req.VPNCIDR.Bits())}
			gotDev := h.coord.net.Device()
			gotDev.Peers = nil // checked by waitMesh
			if diff := cmp.Diff(wantDev, gotDev, cmpNetip); diff != "" {
				t.Errorf("coordinator device (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff([]string{"StartCoordinator " + st.ClusterID}, h.coord.services.started()); diff != "" {
				t.Errorf("coordinator services (-want +got):\n%s", diff)
			}
			checkEvents(t, log, req, st.ClusterID, h.nodeEndpoints(h.nodes...))

			reg := h.registry()
			_, peers := reg.Peers()
			if len(peers) != 2+tt.nodes {
				t.Fatalf("registry has %d records, want coordinator, admin and %d nodes", len(peers), tt.nodes)
			}
			co, admin := peers[0], peers[1]
			if co.Role != records.RoleCoordinator || co.VPNIP != coordIP || co.PublicEndpoint != h.coord.endpoint() ||
				co.WGEndpoint != "192.0.2.1:51820" || !slices.Equal(co.SigningPubKey, h.coord.self.SigningPubKey) {
				t.Errorf("coordinator record = %+v", co)
			}
			if admin.Role != records.RoleAdmin || admin.VPNIP != adminIP || admin.Name != "alice" || admin.State != records.StateActive ||
				!slices.Equal(admin.SigningPubKey, req.AdminSigningPubKey) || !slices.Equal(admin.WGPubKey, req.AdminVPNPubKey) {
				t.Errorf("admin record = %+v", admin)
			}
			for _, n := range h.nodes {
				rec, ok := h.peerByEndpoint(n.endpoint())
				pub := n.self.VPNPrivKey.PublicKey()
				if !ok || rec.Role != records.RoleNode || rec.State != records.StateActive || rec.Name != n.self.Name ||
					!slices.Equal(rec.WGPubKey, pub[:]) || !slices.Equal(rec.SigningPubKey, n.self.SigningPubKey) ||
					rec.WGEndpoint != netip.AddrPortFrom(n.self.PublicEndpoint.Addr(), testWGPort).String() {
					t.Errorf("record of %s = %+v", n.endpoint(), rec)
				}
				if !req.VPNCIDR.Contains(rec.VPNIP) || rec.VPNIP.Compare(adminIP) <= 0 {
					t.Errorf("node %s got %s, want an address after the admin's in %s", n.self.Name, rec.VPNIP, req.VPNCIDR)
				}
				nst := n.core.Status()
				if nst.State != StateNode || nst.ClusterID != st.ClusterID || nst.VPNIP != rec.VPNIP {
					t.Errorf("node %s Status = %+v, want node of %s at %s", n.self.Name, nst, st.ClusterID, rec.VPNIP)
				}
				if diff := cmp.Diff([]string{"StartNode " + rec.VPNIP.String()}, n.services.started()); diff != "" {
					t.Errorf("node %s services (-want +got):\n%s", n.self.Name, diff)
				}
			}
			h.waitMesh()
		})
	}
}

// checkEvents checks the events of a successful coordinator activation:
// Started, a progress line, then one result per node.
func checkEvents(t *testing.T, log *eventLog, req CoordinatorActivation, clusterID string, nodes []string) {
	t.Helper()
	log.mu.Lock()
	events := slices.Clone(log.events)
	log.mu.Unlock()
	if len(events) < 2 || events[0].Started == nil {
		t.Fatalf("events = %+v, want Started first", events)
	}
	s := events[0].Started
	coordIP := req.VPNCIDR.Addr().Next()
	if s.Cluster.ID != clusterID || s.Cluster.VPNCIDR != req.VPNCIDR || s.Cluster.CoordinatorVPNIP != coordIP ||
		s.Admin.VPNIP != coordIP.Next() || s.Admin.Role != records.RoleAdmin {
		t.Errorf("Started = %+v", s)
	}
	if p := events[1].Progress; !strings.Contains(p, coordIP.String()) || !strings.Contains(p, "alice") {
		t.Errorf("second event %+v should say the coordinator and the admin are up", events[1])
	}
	var got []string
	for _, e := range events[2:] {
		if e.Node != nil {
			got = append(got, e.Node.NodePublicEndpoint)
			if e.Node.Err != nil || e.Node.Peer.State != records.StateActive {
				t.Errorf("node event %+v, want an active peer", e.Node)
			}
		}
	}
	slices.Sort(got)
	want := slices.Sorted(slices.Values(nodes))
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("one node result per node (-want +got):\n%s", diff)
	}
}

// TestActivationConcurrency: nodes are activated at once, at most
// ActivationConcurrency of them at a time. The activator lets no call
// through until that many are in flight together.
func TestActivationConcurrency(t *testing.T) {
	tests := []struct {
		name        string
		nodes       int
		concurrency int
		want        int
	}{
		{"all at once", 5, 0, 5},
		{"two at a time", 5, 2, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, tt.nodes, func(c *Config) { c.ActivationConcurrency = tt.concurrency })
			h.activator.setBarrier(tt.want, 2*time.Second)
			res, log, err := h.activate(h.nodes...)
			if err != nil {
				t.Fatal(err)
			}
			if res.Failed != 0 {
				for ep, r := range log.nodeResults() {
					if r.Err != nil {
						t.Errorf("%s: %v", ep, r.Err)
					}
				}
				t.Fatalf("%d node(s) failed: nodes were not activated %d at a time", res.Failed, tt.want)
			}
			if got := h.activator.maxConcurrent(); got != tt.want {
				t.Errorf("at most %d activations were in flight at once, want %d", got, tt.want)
			}
			h.waitMesh()
		})
	}
}

// TestNodeFailures: a node that cannot be activated does not stop the
// others; it is reported and recorded failed with an address it keeps, and
// ActivateAdditionalNodes retries it with that address.
func TestNodeFailures(t *testing.T) {
	tests := []struct {
		name      string
		behaviour behaviour
		prepare   func(t *testing.T, h *harness, bad *testPeer)
		heal      func(h *harness, bad *testPeer)
		wantErr   string
		// wantRetrying: the failure may pass, so the coordinator keeps
		// the node's intent and retries it on its own.
		wantRetrying bool
	}{
		{
			name: "unreachable", behaviour: behaveUnreachable, wantErr: "contacting node: connection refused", wantRetrying: true,
			heal: func(h *harness, bad *testPeer) { h.activator.setBehaviour(bad.endpoint(), behaveOK) },
		},
		{
			name: "failed", behaviour: behaveFailed, wantErr: "is failed",
			heal: func(h *harness, bad *testPeer) { h.activator.setBehaviour(bad.endpoint(), behaveOK) },
		},
		{
			name: "too slow", behaviour: behaveSlow, wantErr: "context deadline exceeded", wantRetrying: true,
			prepare: func(t *testing.T, h *harness, bad *testPeer) {},
			heal:    func(h *harness, bad *testPeer) { h.activator.setBehaviour(bad.endpoint(), behaveOK) },
		},
		{
			name: "network up fails on the node", wantErr: "bringing up the vpn interface: no tun",
			prepare: func(t *testing.T, h *harness, bad *testPeer) { bad.net.FailUp(errors.New("no tun")) },
			heal:    func(h *harness, bad *testPeer) { bad.net.FailUp(nil) },
		},
		{
			name: "node services fail", wantErr: "starting node services: no reeve",
			prepare: func(t *testing.T, h *harness, bad *testPeer) { bad.services.failWith(errors.New("no reeve")) },
			// A node whose services failed is failed itself; only a restart
			// brings it back (see TestRestartNode). Here it stays failed.
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The recovery loop is kept out of the way: the retry here is
			// the admin's (TestRecoveryLoop has the coordinator's own).
			h := newHarness(t, 3, func(c *Config) { c.NodeActivationTimeout, c.RecoveryMinBackoff = 500*time.Millisecond, time.Hour })
			bad := h.nodes[1]
			h.activator.setBehaviour(bad.endpoint(), tt.behaviour)
			if tt.prepare != nil {
				tt.prepare(t, h, bad)
			}
			res, log, err := h.activate(h.nodes...)
			if err != nil {
				t.Fatalf("ActivateAsCoordinator: %v", err)
			}
			if want := (ActivationResult{Activated: 2, Failed: 1}); res != want {
				t.Errorf("result = %+v, want %+v", res, want)
			}
			results := log.nodeResults()
			r, ok := results[bad.endpoint()]
			if !ok || r.Err == nil || !strings.Contains(r.Err.Error(), tt.wantErr) {
				t.Fatalf("result for %s = %+v, want an error containing %q", bad.endpoint(), r, tt.wantErr)
			}
			if r.Retrying != tt.wantRetrying {
				t.Errorf("result for %s: Retrying = %v, want %v", bad.endpoint(), r.Retrying, tt.wantRetrying)
			}
			if diff := cmp.Diff(intentsIf(tt.wantRetrying, bad.endpoint()), storedIntents(t, h.coord)); diff != "" {
				t.Errorf("intents left (-want +got):\n%s", diff)
			}
			if len(results) != 3 {
				t.Errorf("got %d node results, want 3", len(results))
			}
			rec, ok := h.peerByEndpoint(bad.endpoint())
			if !ok || rec.State != records.StateFailed || !strings.Contains(rec.LastError, tt.wantErr) || !rec.VPNIP.IsValid() {
				t.Fatalf("record of the failed node = %+v, want failed with an address and the error", rec)
			}
			if got := strings.HasSuffix(rec.LastError, "(the coordinator retries)"); got != tt.wantRetrying {
				t.Errorf("record's error %q says the coordinator retries: %v, want %v", rec.LastError, got, tt.wantRetrying)
			}
			if r.Peer.VPNIP != rec.VPNIP {
				t.Errorf("the failure event says %s, the registry %s", r.Peer.VPNIP, rec.VPNIP)
			}
			h.waitMesh() // the others are meshed without it
			if tt.heal == nil {
				if st := bad.core.Status().State; st != StateFailed {
					t.Errorf("node whose services failed is %s, want %s", st, StateFailed)
				}
				return
			}
			tt.heal(h, bad)
			if tt.behaviour == behaveSlow {
				// The slow node may still be half-way; it was told nothing.
				if st := bad.core.Status().State; st != StateAcceptingInit {
					t.Fatalf("slow node is %s, want %s", st, StateAcceptingInit)
				}
			}
			log = &eventLog{}
			res, err = h.coord.core.ActivateAdditionalNodes(t.Context(), h.nodeEndpoints(h.nodes...), log.emit)
			if err != nil {
				t.Fatalf("ActivateAdditionalNodes: %v", err)
			}
			if want := (ActivationResult{Activated: 3}); res != want {
				t.Errorf("retry result = %+v, want %+v (two already active, one retried)", res, want)
			}
			again, _ := h.peerByEndpoint(bad.endpoint())
			if again.State != records.StateActive || again.VPNIP != rec.VPNIP {
				t.Errorf("retried node = %+v, want active at its reserved %s", again, rec.VPNIP)
			}
			if _, peers := h.registry().Peers(); len(peers) != 5 {
				t.Errorf("registry has %d records after the retry, want 5 (no new address)", len(peers))
			}
			if got := storedIntents(t, h.coord); len(got) != 0 {
				t.Errorf("intents left after every node is active: %v", got)
			}
			h.waitMesh()
		})
	}
}

// TestLostAnswer: a node activates but its answer is lost; the coordinator
// asks again within the same activation, finds it a node of this cluster
// and completes it with the same VPN IP.
func TestLostAnswer(t *testing.T) {
	h := newHarness(t, 3, nil)
	bad := h.nodes[1]
	h.activator.setBehaviour(bad.endpoint(), behaveLoseAnswer)
	res, log, err := h.activate(h.nodes...)
	if err != nil || res != (ActivationResult{Activated: 3}) {
		t.Fatalf("ActivateAsCoordinator = %+v, %v; want 3 activated", res, err)
	}
	r := log.nodeResults()[bad.endpoint()]
	if r.Err != nil || r.Peer.VPNIP != bad.core.Status().VPNIP {
		t.Errorf("result for the node whose answer was lost = %+v; want active at the node's own VPN IP %s", r, bad.core.Status().VPNIP)
	}
	var activations []netip.Addr
	for _, c := range h.activator.recorded() {
		if c.Method == "ActivateAsNode" && c.Endpoint == bad.endpoint() {
			activations = append(activations, c.Req.NodeVPNIP)
		}
	}
	if len(activations) != 2 || activations[0] != activations[1] {
		t.Errorf("ActivateAsNode calls to the node: %v; want the same VPN IP twice", activations)
	}
	h.waitSettled()
}

// TestActivateCoordinatorTwice: an active peer refuses a second activation
// and changes nothing.
func TestActivateCoordinatorTwice(t *testing.T) {
	h := newHarness(t, 2, nil)
	h.mustActivate()
	tests := []struct {
		name string
		peer *testPeer
		want string
	}{
		{"coordinator", h.coord, "already active as the coordinator"},
		{"node", h.nodes[0], "already active as a node"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := snapshot(t, tt.peer)
			extra := h.addNode(newMemStore())
			log := &eventLog{}
			_, err := tt.peer.core.ActivateAsCoordinator(t.Context(), activationRequest(t, []string{extra.endpoint()}), log.emit)
			if !errors.Is(err, ErrWrongState) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("second activation = %v, want ErrWrongState saying %q", err, tt.want)
			}
			if diff := cmp.Diff(before, snapshot(t, tt.peer), cmpNetip); diff != "" {
				t.Errorf("refused activation changed the peer (-before +after):\n%s", diff)
			}
			if len(log.events) != 0 {
				t.Errorf("refused activation emitted %+v", log.events)
			}
			if st := extra.core.Status().State; st != StateAcceptingInit {
				t.Errorf("the refused activation's node is %s", st)
			}
		})
	}
}

// peerSnapshot is what a peer shows: its status, device, store and the
// services it started.
type peerSnapshot struct {
	Status   Status
	Device   coretest.FakeDevice
	Store    map[string]string
	Services []string
}

func snapshot(t testing.TB, p *testPeer) peerSnapshot {
	return peerSnapshot{Status: p.core.Status(), Device: p.net.Device(), Store: storetest.Dump(t, p.store), Services: p.services.started()}
}

func TestActivateAdditionalNodes(t *testing.T) {
	h := newHarness(t, 1, nil)
	t.Run("before activation", func(t *testing.T) {
		_, err := h.coord.core.ActivateAdditionalNodes(t.Context(), h.nodeEndpoints(h.nodes...), func(Event) {})
		if !errors.Is(err, ErrWrongState) {
			t.Errorf("ActivateAdditionalNodes on an accepting-init peer = %v, want ErrWrongState", err)
		}
	})
	h.mustActivate()
	t.Run("on a node", func(t *testing.T) {
		_, err := h.nodes[0].core.ActivateAdditionalNodes(t.Context(), []string{"192.0.2.99:7443"}, func(Event) {})
		if !errors.Is(err, ErrWrongState) {
			t.Errorf("ActivateAdditionalNodes on a node = %v, want ErrWrongState", err)
		}
	})
	invalid := []struct {
		name      string
		endpoints []string
	}{
		{"none", nil},
		{"duplicate", []string{"192.0.2.50:7443", "192.0.2.50:7443"}},
		{"coordinator", []string{"192.0.2.1:7443"}},
		{"inside the vpn", []string{"203.0.113.50:7443"}},
		{"garbage", []string{"x"}},
	}
	for _, tt := range invalid {
		t.Run("invalid/"+tt.name, func(t *testing.T) {
			rev := h.registry().Revision()
			_, err := h.coord.core.ActivateAdditionalNodes(t.Context(), tt.endpoints, func(Event) {})
			if !errors.Is(err, ErrInvalidArgument) {
				t.Errorf("ActivateAdditionalNodes(%q) = %v, want ErrInvalidArgument", tt.endpoints, err)
			}
			if got := h.registry().Revision(); got != rev {
				t.Errorf("invalid request moved the revision %d -> %d", rev, got)
			}
		})
	}
	t.Run("two more", func(t *testing.T) {
		a, b := h.addNode(newMemStore()), h.addNode(newMemStore())
		ctx, cancel := context.WithCancel(t.Context())
		cancel() // the admin went away: the activation completes anyway
		log := &eventLog{}
		res, err := h.coord.core.ActivateAdditionalNodes(ctx, h.nodeEndpoints(a, b), log.emit)
		if err != nil || res != (ActivationResult{Activated: 2}) {
			t.Fatalf("ActivateAdditionalNodes = %+v, %v; want 2 activated", res, err)
		}
		if n := log.count(func(e Event) bool { return e.Started != nil }); n != 0 {
			t.Errorf("ActivateAdditionalNodes emitted %d Started events", n)
		}
		var ips []string
		for _, n := range []*testPeer{a, b} {
			rec, _ := h.peerByEndpoint(n.endpoint())
			ips = append(ips, rec.VPNIP.String())
		}
		slices.Sort(ips)
		if diff := cmp.Diff([]string{"203.0.113.4", "203.0.113.5"}, ips); diff != "" {
			t.Errorf("new nodes' addresses (-want +got):\n%s", diff)
		}
		h.waitMesh()
	})
}

// TestConcurrentCoordinatorActivations: of two activations at once, one
// wins and the other is refused with ErrWrongState.
func TestConcurrentCoordinatorActivations(t *testing.T) {
	h := newHarness(t, 2, nil)
	errs := make(chan error, 2)
	for _, n := range h.nodes {
		req := activationRequest(t, []string{n.endpoint()})
		go func() {
			_, err := h.coord.core.ActivateAsCoordinator(t.Context(), req, func(Event) {})
			errs <- err
		}()
	}
	var won, refused int
	for range 2 {
		switch err := <-errs; {
		case err == nil:
			won++
		case errors.Is(err, ErrWrongState), errors.Is(err, ErrBusy):
			// ErrBusy while the other one runs (the CLI asks again and
			// gets ErrWrongState), ErrWrongState once it is done.
			refused++
		default:
			t.Errorf("activation failed with %v, want success, ErrBusy or ErrWrongState", err)
		}
	}
	if won != 1 || refused != 1 {
		t.Fatalf("%d activations won and %d were refused, want 1 and 1", won, refused)
	}
	if _, peers := h.registry().Peers(); len(peers) != 3 {
		t.Errorf("registry has %d records, want coordinator, admin and the winner's node", len(peers))
	}
	h.waitSettled()
}

// TestActivateFullCIDR: nodes beyond the VPN CIDR's capacity fail with
// ErrCIDRFull and leave no record; the others are meshed.
func TestActivateFullCIDR(t *testing.T) {
	h := newHarness(t, 5, nil)
	req := activationRequest(t, h.nodeEndpoints(h.nodes...))
	req.VPNCIDR = netip.MustParsePrefix("203.0.113.0/29") // coordinator, admin and 4 nodes
	log := &eventLog{}
	res, err := h.coord.core.ActivateAsCoordinator(t.Context(), req, log.emit)
	if err != nil {
		t.Fatal(err)
	}
	if want := (ActivationResult{Activated: 4, Failed: 1}); res != want {
		t.Fatalf("result = %+v, want %+v", res, want)
	}
	for ep, r := range log.nodeResults() {
		if r.Err == nil {
			continue
		}
		if !errors.Is(r.Err, registry.ErrCIDRFull) || !strings.Contains(r.Err.Error(), "203.0.113.0/29 has 6 usable addresses") {
			t.Errorf("%s failed with %v, want ErrCIDRFull", ep, r.Err)
		}
		if rec, ok := h.peerByEndpoint(ep); ok {
			t.Errorf("the node that found no address has a record: %+v", rec)
		}
	}
	if _, peers := h.registry().Peers(); len(peers) != 6 {
		t.Errorf("registry has %d records, want 6", len(peers))
	}
	h.waitSettled()
}

// TestRefusedActivationChangesNothing: a machine whose state directory was
// copied from an active node (same keys) is refused before it is asked to
// activate: it stays accepting-init with its interface down, and the
// original node keeps its place in the mesh.
func TestRefusedActivationChangesNothing(t *testing.T) {
	h := newHarness(t, 1, nil)
	h.mustActivate()
	original := h.nodes[0]
	clone := original.self
	clone.Name, clone.PublicEndpoint = "copy", netip.MustParseAddrPort("192.0.2.77:7443")
	copied := h.start(clone, newMemStore())
	h.activator.setNode(copied.endpoint(), copied.core)
	res, err := h.coord.core.ActivateAdditionalNodes(t.Context(), []string{copied.endpoint()}, func(Event) {})
	if err != nil || res.Failed != 1 {
		t.Fatalf("activating the copy = %+v, %v; want it refused", res, err)
	}
	if st := copied.core.Status(); st.State != StateAcceptingInit {
		t.Errorf("the refused copy is %s, want accepting-init", st.State)
	}
	if dev := copied.net.Device(); dev.Up {
		t.Errorf("the refused copy brought its interface up: %+v", dev)
	}
	for _, c := range h.activator.recorded() {
		if c.Endpoint == copied.endpoint() && c.Method == "ActivateAsNode" {
			t.Error("the coordinator asked the copy to activate")
		}
	}
	rec, _ := h.peerByEndpoint(copied.endpoint())
	if rec.State != records.StateFailed || !strings.Contains(rec.LastError, "same WireGuard key") {
		t.Errorf("the copy's record = %s %q, want failed for the same keys", rec.State, rec.LastError)
	}
	h.waitMesh()
	if got := original.core.Status(); got.State != StateNode {
		t.Errorf("the original node is %s", got.State)
	}
}

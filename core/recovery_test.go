package core

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/store"
	"github.com/fabricmesh/fabric/internal/store/storetest"
	"github.com/google/go-cmp/cmp"
)

// crashState puts a node of an active cluster in the state a coordinator
// crash leaves it in, writing the coordinator's store and calling the
// node as the crashed coordinator had.
type crashState func(t *testing.T, h *harness, n *testPeer)

// withIntent records the intent to activate n, as the cluster's commit or
// add-nodes does before any node is called.
func withIntent(t *testing.T, h *harness, n *testPeer) {
	t.Helper()
	if err := h.coord.store.Update(intentsTx([]string{n.endpoint()}, time.Now())); err != nil {
		t.Fatal(err)
	}
}

// reserve reserves n's VPN IP as the crashed coordinator had.
func reserve(t *testing.T, h *harness, n *testPeer) records.Peer {
	t.Helper()
	pub := n.self.VPNPrivKey.PublicKey()
	p, err := h.coord.reg.Reserve(n.endpoint(), n.self.Name, pub[:], n.self.SigningPubKey, true)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// activateRemotely makes n a node at reserved's VPN IP, as the crashed
// coordinator's ActivateAsNode had (its answer never recorded).
func activateRemotely(t *testing.T, h *harness, n *testPeer, reserved records.Peer) {
	t.Helper()
	cl := h.coord.core.mustCluster()
	co := h.coord.self
	_, err := n.core.ActivateAsNode(t.Context(), NodeActivation{
		ClusterID: cl.ID, VPNCIDR: cl.VPNCIDR, NodeVPNIP: reserved.VPNIP,
		Coordinator: CoordinatorInfo{
			Name: co.Name, VPNIP: cl.CoordinatorVPNIP, VPNPubKey: co.VPNPrivKey.PublicKey(), WGEndpoint: co.WGEndpoint().String(),
			VPNAPIEndpoint: hostPort(cl.CoordinatorVPNIP, testVPNAPIPort), TLSPin: co.TLSPin, SigningPubKey: co.SigningPubKey,
		},
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestRecoveryAfterCoordinatorCrash: a coordinator restarted after a crash
// at any step of a node's activation completes it on its own, with the VPN
// IP the node was given, and deletes the intent.
func TestRecoveryAfterCoordinatorCrash(t *testing.T) {
	tests := []struct {
		name  string
		crash crashState
		// wantCalls is how often the restarted coordinator calls
		// ActivateAsNode on the node.
		wantCalls int
	}{
		{"cluster committed, node not reserved", withIntent, 1},
		{"node reserved, not called", func(t *testing.T, h *harness, n *testPeer) {
			withIntent(t, h, n)
			reserve(t, h, n)
		}, 1},
		{"node activated, answer not recorded", func(t *testing.T, h *harness, n *testPeer) {
			withIntent(t, h, n)
			activateRemotely(t, h, n, reserve(t, h, n))
		}, 1},
		{"node recorded, intent not deleted", func(t *testing.T, h *harness, n *testPeer) {
			withIntent(t, h, n)
			p := reserve(t, h, n)
			activateRemotely(t, h, n, p)
			pub := n.self.VPNPrivKey.PublicKey()
			if _, err := h.coord.reg.Activate(p.VPNIP, records.Activated{Name: n.self.Name, Horde: n.self.Horde,
				WGEndpoint: n.self.WGEndpoint().String(), WGPubKey: pub[:], SigningPubKey: n.self.SigningPubKey}); err != nil {
				t.Fatal(err)
			}
		}, 0},
		{"pending without an intent (an older store)", func(t *testing.T, h *harness, n *testPeer) {
			reserve(t, h, n)
		}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, 0, nil)
			h.mustActivate()
			n := h.addNode(newMemStore())
			tt.crash(t, h, n)
			before, _ := h.peerByEndpoint(n.endpoint())
			nodeIP := n.core.Status().VPNIP
			h.coord.stop() // the crashed coordinator's loops end
			calls := len(h.activator.recorded())

			coord := h.restart(h.coord, h.coord.store)
			if coord.startErr != nil {
				t.Fatalf("restart: %v", coord.startErr)
			}
			eventually(t, "the node to be active", func() error {
				if p, ok := h.peerByEndpoint(n.endpoint()); !ok || p.State != records.StateActive {
					return fmt.Errorf("record %+v", p)
				}
				return nil
			})
			h.waitSettled()
			after, _ := h.peerByEndpoint(n.endpoint())
			for what, ip := range map[string]netip.Addr{"reserved before the crash": before.VPNIP, "the node's own": nodeIP} {
				if ip.IsValid() && after.VPNIP != ip {
					t.Errorf("node is active at %s, not at the VPN IP %s (%s)", after.VPNIP, what, ip)
				}
			}
			if got := n.core.Status(); got.State != StateNode || got.VPNIP != after.VPNIP {
				t.Errorf("node is %s at %s, want a node at %s", got.State, got.VPNIP, after.VPNIP)
			}
			got := 0
			for _, c := range h.activator.recorded()[calls:] {
				if c.Method == "ActivateAsNode" {
					got++
				}
			}
			if got != tt.wantCalls {
				t.Errorf("the restarted coordinator called ActivateAsNode %d times, want %d", got, tt.wantCalls)
			}
			eventually(t, "the intent to be deleted", func() error {
				if got := storedIntents(t, coord); len(got) != 0 {
					return fmt.Errorf("intents %v", got)
				}
				return nil
			})
		})
	}
}

// TestRecoveryLoop: a node that could not be reached stays failed with a
// reason that says the coordinator retries, and the coordinator activates
// it on its own once it answers; a node that refuses is not retried.
func TestRecoveryLoop(t *testing.T) {
	h := newHarness(t, 2, func(c *Config) { c.RecoveryMinBackoff, c.RecoveryMaxBackoff = 5*time.Millisecond, 20*time.Millisecond })
	away, refusing := h.nodes[0], h.nodes[1]
	h.activator.setBehaviour(away.endpoint(), behaveUnreachable)
	h.activator.setBehaviour(refusing.endpoint(), behaveFailed)
	res, log, err := h.activate(h.nodes...)
	if err != nil || res != (ActivationResult{Failed: 2}) {
		t.Fatalf("ActivateAsCoordinator = %+v, %v; want 2 failed", res, err)
	}
	results := log.nodeResults()
	if r := results[away.endpoint()]; !r.Retrying {
		t.Errorf("unreachable node's result %+v, want Retrying", r)
	}
	if r := results[refusing.endpoint()]; r.Retrying {
		t.Errorf("refusing node's result %+v, want no retry", r)
	}
	failed, _ := h.peerByEndpoint(away.endpoint())
	if !strings.HasSuffix(failed.LastError, "(the coordinator retries)") {
		t.Errorf("unreachable node's record says %q, want that the coordinator retries", failed.LastError)
	}

	// While it stays away, the retries write nothing.
	rev := h.registry().Revision()
	waitCalls(t, h, away.endpoint(), "GetNodeState", 5)
	if got := h.registry().Revision(); got != rev {
		t.Errorf("retrying an unreachable node moved the revision from %d to %d", rev, got)
	}

	h.activator.setBehaviour(away.endpoint(), behaveOK)
	eventually(t, "the coordinator to activate the node that came back", func() error {
		if p, _ := h.peerByEndpoint(away.endpoint()); p.State != records.StateActive || p.VPNIP != failed.VPNIP {
			return fmt.Errorf("record %+v, want active at %s", p, failed.VPNIP)
		}
		return nil
	})
	eventually(t, "the intents to be deleted", func() error {
		if got := storedIntents(t, h.coord); len(got) != 0 {
			return fmt.Errorf("intents %v", got)
		}
		return nil
	})
	h.activator.setBehaviour(refusing.endpoint(), behaveOK)
	time.Sleep(100 * time.Millisecond) // many retry periods
	if p, _ := h.peerByEndpoint(refusing.endpoint()); p.State != records.StateFailed {
		t.Errorf("a refused node was retried without an admin: %+v", p)
	}
	h.waitSettled()
}

// waitCalls waits until the activator has seen n more calls of method to
// endpoint.
func waitCalls(t *testing.T, h *harness, endpoint, method string, n int) {
	t.Helper()
	waitCallsSince(t, h, endpoint, method, countCalls(h, endpoint, method), n)
}

// waitCallsSince waits until the activator has seen n more calls of
// method to endpoint than from.
func waitCallsSince(t *testing.T, h *harness, endpoint, method string, from, n int) {
	t.Helper()
	eventually(t, fmt.Sprintf("%d more %s calls to %s", n, method, endpoint), func() error {
		if got := countCalls(h, endpoint, method) - from; got < n {
			return fmt.Errorf("%d so far", got)
		}
		return nil
	})
}

// countCalls is the number of calls of method to endpoint so far.
func countCalls(h *harness, endpoint, method string) int {
	got := 0
	for _, c := range h.activator.recorded() {
		if c.Method == method && c.Endpoint == endpoint {
			got++
		}
	}
	return got
}

// TestRemovedNodeIsNotRetried: removing a node that the coordinator
// retries ends its retries.
func TestRemovedNodeIsNotRetried(t *testing.T) {
	h := newHarness(t, 1, func(c *Config) { c.RecoveryMinBackoff, c.RecoveryMaxBackoff = 5*time.Millisecond, 20*time.Millisecond })
	away := h.nodes[0]
	h.activator.setBehaviour(away.endpoint(), behaveUnreachable)
	if res, _, err := h.activate(h.nodes...); err != nil || res.Failed != 1 {
		t.Fatalf("ActivateAsCoordinator = %+v, %v", res, err)
	}
	if _, err := h.coord.core.RemoveNode(t.Context(), away.endpoint()); err != nil {
		t.Fatal(err)
	}
	if got := storedIntents(t, h.coord); len(got) != 0 {
		t.Errorf("intents left after the removal: %v", got)
	}
	h.activator.setBehaviour(away.endpoint(), behaveOK)
	time.Sleep(100 * time.Millisecond)
	if st := away.core.Status().State; st != StateAcceptingInit {
		t.Errorf("the removed node was activated again: %s", st)
	}
}

// TestResumeActivation: the admin whose activation's answer was lost
// repeats it and gets the same cluster and every node's outcome; anyone
// else is refused and nothing changes.
func TestResumeActivation(t *testing.T) {
	h := newHarness(t, 2, nil)
	req := activationRequest(t, h.nodeEndpoints(h.nodes...))
	if _, err := h.coord.core.ActivateAsCoordinator(t.Context(), req, func(Event) {}); err != nil {
		t.Fatal(err)
	}
	h.waitSettled()
	pin := h.coord.self.TLSPin
	cl := h.coord.core.mustCluster()

	t.Run("same admin with its proof", func(t *testing.T) {
		rev := h.registry().Revision()
		log := &eventLog{}
		res, err := h.coord.core.ActivateAsCoordinator(t.Context(), withProof(req, pin), log.emit)
		if err != nil || res != (ActivationResult{Activated: 2}) {
			t.Fatalf("repeated activation = %+v, %v; want both nodes reported active", res, err)
		}
		var started *Started
		for _, e := range log.events {
			if e.Started != nil {
				started = e.Started
			}
		}
		if started == nil || !started.Resumed || started.Cluster.ID != cl.ID || started.Admin.Name != req.AdminName {
			t.Errorf("started event %+v, want the resumed cluster %s with admin %s", started, cl.ID, req.AdminName)
		}
		if got := h.registry().Revision(); got != rev {
			t.Errorf("resuming a finished activation moved the revision from %d to %d", rev, got)
		}
	})
	refusals := []struct {
		name  string
		req   func() CoordinatorActivation
		want  string
		wrong bool // ErrWrongState
	}{
		{"another admin", func() CoordinatorActivation {
			return withProof(activationRequest(t, nil), pin)
		}, "already active as the coordinator", true},
		{"the admin's public key without its proof", func() CoordinatorActivation { return req }, "does not prove it", true},
		{"a proof for another coordinator", func() CoordinatorActivation { return withProof(req, []byte("another pin")) }, "does not prove it", true},
		{"another VPN CIDR", func() CoordinatorActivation {
			r := withProof(req, pin)
			r.VPNCIDR = netip.MustParsePrefix("192.0.2.128/25")
			return r
		}, "another VPN CIDR", true},
		{"another rules file", func() CoordinatorActivation {
			r := withProof(req, pin)
			r.Rules = "rules: []\n"
			return r
		}, "another rules file", true},
	}
	for _, tt := range refusals {
		t.Run(tt.name, func(t *testing.T) {
			before := snapshot(t, h.coord)
			calls := len(h.activator.recorded())
			_, err := h.coord.core.ActivateAsCoordinator(t.Context(), tt.req(), func(Event) {})
			if !errors.Is(err, ErrWrongState) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("activation = %v, want ErrWrongState saying %q", err, tt.want)
			}
			if diff := cmp.Diff(before, snapshot(t, h.coord), cmpNetip); diff != "" {
				t.Errorf("a refused activation changed the coordinator (-before +after):\n%s", diff)
			}
			if got := h.activator.recorded()[calls:]; len(got) != 0 {
				t.Errorf("a refused activation called nodes: %+v", got)
			}
		})
	}
}

// TestOneActivationPerNode: a node asked for by two activations at once
// (add-nodes during an activation) is activated once; both report it.
func TestOneActivationPerNode(t *testing.T) {
	h := newHarness(t, 1, nil)
	n := h.nodes[0]
	h.activator.setBehaviour(n.endpoint(), behaveDelayed)
	first := make(chan ActivationResult)
	req := activationRequest(t, []string{n.endpoint()})
	calls := countCalls(h, n.endpoint(), "ActivateAsNode")
	go func() {
		res, _ := h.coord.core.ActivateAsCoordinator(context.Background(), req, func(Event) {})
		first <- res
	}()
	waitCallsSince(t, h, n.endpoint(), "ActivateAsNode", calls, 1)
	res, err := h.coord.core.ActivateAdditionalNodes(t.Context(), []string{n.endpoint()}, func(Event) {})
	if err != nil || res != (ActivationResult{Activated: 1}) {
		t.Errorf("add-nodes during the activation = %+v, %v; want the node activated", res, err)
	}
	if res := <-first; res != (ActivationResult{Activated: 1}) {
		t.Errorf("activation = %+v, want the node activated", res)
	}
	got := 0
	for _, c := range h.activator.recorded() {
		if c.Method == "ActivateAsNode" {
			got++
		}
	}
	if got != 1 {
		t.Errorf("ActivateAsNode was called %d times, want once", got)
	}
	h.waitSettled()
}

// TestIntentsCommittedWithTheCluster: the nodes of an activation are
// recorded in the cluster's own transaction, and add-nodes records its own
// before it calls a node; a store that cannot write changes nothing.
func TestIntentsCommittedWithTheCluster(t *testing.T) {
	h := newHarness(t, 2, func(c *Config) { c.NodeActivationTimeout, c.RecoveryMinBackoff = 200*time.Millisecond, time.Hour })
	st := &failingStore{Store: store.NewMem()}
	h.coord = h.restart(h.coord, st)
	h.activator.setBehaviour(h.nodes[0].endpoint(), behaveSlow)
	h.activator.setBehaviour(h.nodes[1].endpoint(), behaveSlow)
	recorded, done := make(chan []string, 1), make(chan struct{})
	req := activationRequest(t, h.nodeEndpoints(h.nodes...))
	go func() {
		defer close(done)
		_, _ = h.coord.core.ActivateAsCoordinator(context.Background(), req, func(e Event) {
			if e.Started != nil {
				recorded <- storedIntents(t, h.coord)
			}
		})
	}()
	defer func() { <-done }()
	if diff := cmp.Diff(h.nodeEndpoints(h.nodes...), <-recorded); diff != "" {
		t.Errorf("intents when the cluster was announced (-want +got):\n%s", diff)
	}

	extra := h.addNode(newMemStore())
	st.failUpdates(errors.New("no space left on device"))
	before := storetest.Dump(t, st)
	_, err := h.coord.core.ActivateAdditionalNodes(t.Context(), []string{extra.endpoint()}, func(Event) {})
	if err == nil || !strings.Contains(err.Error(), "recording the nodes to activate: no space left on device") {
		t.Fatalf("add-nodes on a full store = %v, want the store's error", err)
	}
	if diff := cmp.Diff(before, storetest.Dump(t, st)); diff != "" {
		t.Errorf("a failed add-nodes changed the store (-before +after):\n%s", diff)
	}
	if got := h.activator.recorded(); len(got) > 0 && got[len(got)-1].Endpoint == extra.endpoint() {
		t.Errorf("a failed add-nodes called the node: %+v", got[len(got)-1])
	}
	st.failUpdates(nil)
}

// TestRemoveNodeTellsTheMachine: RemoveNode tells an active node's machine
// to leave and says whether it was reached; a machine that left already
// (its watch told it first) counts as told; a failed row has no machine
// to tell.
func TestRemoveNodeTellsTheMachine(t *testing.T) {
	h := newHarness(t, 4, nil)
	reachable, unreachable, left, failed := h.nodes[0], h.nodes[1], h.nodes[2], h.nodes[3]
	h.activator.setBehaviour(failed.endpoint(), behaveUnreachable)
	if res, _, err := h.activate(h.nodes...); err != nil || res.Failed != 1 {
		t.Fatalf("ActivateAsCoordinator = %+v, %v", res, err)
	}
	h.activator.setBehaviour(unreachable.endpoint(), behaveUnreachable)
	cfg, ok := left.core.NodeConfig()
	if !ok {
		t.Fatalf("%s is %s, not a node", left.self.Name, left.core.Status().State)
	}
	req := LeaveRequest{ClusterID: cfg.ClusterID, NodeVPNIP: cfg.VPNIP}
	if err := left.core.LeaveCluster(t.Context(), req, ed25519.Sign(h.activator.signingKey, LeaveMessage(req))); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		node      *testPeer
		wantTold  bool
		wantError string // in TellErr
		wasState  records.State
	}{
		{"reachable", reachable, true, "", records.StateActive},
		{"unreachable", unreachable, false, "connection refused", records.StateActive},
		{"left already", left, true, "", records.StateActive},
		{"failed row", failed, false, "", records.StateFailed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := h.coord.core.RemoveNode(t.Context(), tt.node.endpoint())
			if err != nil {
				t.Fatal(err)
			}
			if r.Told != tt.wantTold || (r.TellErr == nil) != (tt.wantError == "") || (r.TellErr != nil && !strings.Contains(r.TellErr.Error(), tt.wantError)) {
				t.Errorf("RemoveNode = told %v, %v; want told %v, error %q", r.Told, r.TellErr, tt.wantTold, tt.wantError)
			}
			if r.Removed.State != tt.wasState || r.Removed.PublicEndpoint != tt.node.endpoint() {
				t.Errorf("removed record %+v, want the %s row of %s", r.Removed, tt.wasState, tt.node.endpoint())
			}
			if tt.wantTold {
				eventually(t, tt.name+" to wait for activation", func() error {
					if st := tt.node.core.Status().State; st != StateAcceptingInit {
						return fmt.Errorf("it is %s", st)
					}
					return nil
				})
			}
			if _, err := h.coord.core.RemoveNode(t.Context(), tt.node.endpoint()); err == nil {
				t.Error("a second removal of the same row succeeded")
			}
		})
	}
}

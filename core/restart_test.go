package core

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/fabricmesh/fabric/coordinator/registry"
	"github.com/fabricmesh/fabric/core/coretest"
	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/store"
	"github.com/google/go-cmp/cmp"
)

// waitAttempts waits until the nodes have tried to reach the coordinator n
// more times.
func waitAttempts(t testing.TB, h *harness, n int) {
	t.Helper()
	from := h.net.attempts()
	eventually(t, fmt.Sprintf("%d more attempts to reach the coordinator", n), func() error {
		if got := h.net.attempts() - from; got < n {
			return fmt.Errorf("%d attempts so far", got)
		}
		return nil
	})
}

// TestRestartCoordinator: a coordinator restarted from its bbolt file comes
// back with the same cluster, VPN IP, peers and next address; the nodes
// keep their mesh while it is down and follow it when it is back.
func TestRestartCoordinator(t *testing.T) {
	h := &harness{t: t, net: newFakeNet(), activator: newFakeActivator()}
	path := boltPath(t, "coord")
	st := openBolt(t, path)
	h.coord = h.start(newSelf(t, "coord", 1), st)
	for range 3 {
		h.addNode(newMemStore())
	}
	failing := h.nodes[2]
	h.activator.setBehaviour(failing.endpoint(), behaveUnreachable)
	res, _, err := h.activate(h.nodes...)
	if err != nil || res != (ActivationResult{Activated: 2, Failed: 1}) {
		t.Fatalf("ActivateAsCoordinator = %+v, %v; want 2 activated, 1 failed", res, err)
	}
	h.waitSettled()
	before := stateOf(h.registry())
	beforeStatus, beforeDevice := h.coord.core.Status(), h.coord.net.Device()
	nodeDevices := map[string]coretest.FakeDevice{}
	for _, n := range h.nodes[:2] {
		nodeDevices[n.self.Name] = n.net.Device()
	}

	h.coord.stop()
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	waitAttempts(t, h, 20)
	for _, n := range h.nodes[:2] {
		if diff := cmp.Diff(nodeDevices[n.self.Name], n.net.Device(), cmpNetip); diff != "" {
			t.Errorf("%s changed its device while the coordinator was down (-before +after):\n%s", n.self.Name, diff)
		}
	}

	st = openBolt(t, path)
	coord := h.restart(h.coord, st)
	if coord.startErr != nil {
		t.Fatalf("Start after restart: %v", coord.startErr)
	}
	if diff := cmp.Diff(beforeStatus, coord.core.Status(), cmpNetip); diff != "" {
		t.Errorf("Status after restart (-before +after):\n%s", diff)
	}
	if diff := cmp.Diff(before, stateOf(h.registry()), cmpNetip); diff != "" {
		t.Errorf("registry after restart (-before +after):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"StartCoordinator " + beforeStatus.ClusterID}, coord.services.started()); diff != "" {
		t.Errorf("services after restart (-want +got):\n%s", diff)
	}
	eventually(t, "the restarted coordinator's device", func() error {
		if diff := cmp.Diff(beforeDevice, coord.net.Device(), cmpNetip); diff != "" {
			return fmt.Errorf("(-before +after):\n%s", diff)
		}
		return nil
	})

	// The failed node keeps its address; a new one gets the next.
	failedRec, _ := h.peerByEndpoint(failing.endpoint())
	h.activator.setBehaviour(failing.endpoint(), behaveOK)
	extra := h.addNode(newMemStore())
	res, err = coord.core.ActivateAdditionalNodes(t.Context(), h.nodeEndpoints(failing, extra), func(Event) {})
	if err != nil || res != (ActivationResult{Activated: 2}) {
		t.Fatalf("ActivateAdditionalNodes after restart = %+v, %v", res, err)
	}
	got := map[string]string{}
	for _, n := range []*testPeer{failing, extra} {
		rec, _ := h.peerByEndpoint(n.endpoint())
		got[n.self.Name] = rec.VPNIP.String()
	}
	want := map[string]string{failing.self.Name: failedRec.VPNIP.String(), extra.self.Name: "203.0.113.6"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("addresses after restart (-want +got):\n%s", diff)
	}
	h.waitSettled()
}

type regState struct {
	Cluster  records.Cluster
	Revision uint64
	Peers    []records.Peer
}

func stateOf(r *registry.Registry) regState {
	c, _ := r.Cluster()
	rev, peers := r.Peers()
	return regState{Cluster: c, Revision: rev, Peers: peers}
}

// TestRestartNode: a node restarted from its bbolt file comes back with
// the same VPN IP and its last peers even while its coordinator is
// unreachable, retries, and converges once it can reach it.
func TestRestartNode(t *testing.T) {
	h := newHarness(t, 0, nil)
	path := boltPath(t, "node0")
	st := openBolt(t, path)
	node := h.addNode(st)
	h.addNode(newMemStore())
	h.mustActivate()
	beforeStatus, beforeDevice := node.core.Status(), node.net.Device()
	beforeCfg, _ := node.core.NodeConfig()
	beforeApplied, _ := node.core.AppliedRevision()

	node.stop()
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	h.net.breakConns(errConnRefused, errConnRefused)
	extra := h.addNode(newMemStore())
	if res, err := h.coord.core.ActivateAdditionalNodes(t.Context(), []string{extra.endpoint()}, func(Event) {}); err != nil || res.Failed != 0 {
		t.Fatalf("ActivateAdditionalNodes = %+v, %v", res, err)
	}

	st = openBolt(t, path)
	node = h.restart(node, st)
	if node.startErr != nil {
		t.Fatalf("Start after restart: %v", node.startErr)
	}
	// Restored synchronously by Start, before any contact with the
	// coordinator.
	if diff := cmp.Diff(beforeStatus, node.core.Status(), cmpNetip); diff != "" {
		t.Errorf("Status after restart (-before +after):\n%s", diff)
	}
	if diff := cmp.Diff(beforeDevice, node.net.Device(), cmpNetip); diff != "" {
		t.Errorf("device after restart (-before +after):\n%s", diff)
	}
	if cfg, _ := node.core.NodeConfig(); !cmp.Equal(beforeCfg, cfg, cmpNetip) {
		t.Errorf("NodeConfig after restart = %+v, want %+v", cfg, beforeCfg)
	}
	if diff := cmp.Diff([]string{"StartNode " + beforeStatus.VPNIP.String()}, node.services.started()); diff != "" {
		t.Errorf("services after restart (-want +got):\n%s", diff)
	}
	waitAttempts(t, h, 20)
	if diff := cmp.Diff(beforeDevice, node.net.Device(), cmpNetip); diff != "" {
		t.Errorf("device changed while the coordinator was unreachable (-before +after):\n%s", diff)
	}
	if got, _ := node.core.AppliedRevision(); got != beforeApplied {
		t.Errorf("applied revision %d while unreachable, want %d", got, beforeApplied)
	}
	h.net.breakConns(nil, nil)
	h.waitSettled()
}

// TestRestartFailed: a peer whose persisted role cannot be restored is
// failed, says why, and refuses activations.
func TestRestartFailed(t *testing.T) {
	put := func(kv ...string) func(t *testing.T) store.Store {
		return func(t *testing.T) store.Store {
			st := newMemStore()
			err := st.Update(func(tx store.Tx) error {
				for i := 0; i < len(kv); i += 2 {
					if err := tx.Put(kv[i], []byte(kv[i+1])); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			return st
		}
	}
	// activated returns the store of the coordinator or of a node of an
	// activated cluster, and makes its identity the restarted peer's.
	var self Self
	activated := func(coordinator bool) func(t *testing.T) store.Store {
		return func(t *testing.T) store.Store {
			h := newHarness(t, 1, nil)
			h.mustActivate()
			p := h.nodes[0]
			if coordinator {
				p = h.coord
			}
			p.stop()
			self = p.self
			return p.store
		}
	}
	failUp := func(p *testPeer) { p.net.FailUp(errors.New("no tun device")) }
	failPeers := func(p *testPeer) { p.net.FailSetPeers(errors.New("device busy")) }
	failServices := func(p *testPeer) { p.services.failWith(errors.New("port in use")) }
	tests := []struct {
		name   string
		store  func(t *testing.T) store.Store
		before func(*testPeer)
		want   string
	}{
		{"role not json", put(keyRole, "{"), nil, "reading persisted role"},
		{"unknown role", put(keyRole, `{"role":"bogus"}`), nil, `unknown persisted role "bogus"`},
		{"accepting-init role", put(keyRole, `{"role":"accepting-init"}`), nil, "unknown persisted role"},
		{"coordinator without registry", put(keyRole, `{"role":"coordinator"}`), nil, "registry is empty"},
		{"node without config", put(keyRole, `{"role":"node"}`), nil, "reading node state"},
		{"node config corrupt", put(keyRole, `{"role":"node"}`, keyNodeConfig, "x", keyNodeRevision, "1"), nil, "reading node state"},
		{"node peer corrupt", put(keyRole, `{"role":"node"}`, keyNodeConfig, `{}`, keyNodeRevision, "1", prefixNodePeers+"203.0.113.3", "["), nil, "reading node state"},
		{"coordinator with another identity", func(t *testing.T) store.Store {
			st := activated(true)(t)
			self = newSelf(t, "peer", 1)
			return st
		}, nil, "the registry has no record of this coordinator's signing key"},
		{"coordinator network fails", activated(true), failUp, "no tun device"},
		{"coordinator services fail", activated(true), failServices, "starting coordinator services: port in use"},
		{"node network fails", activated(false), failUp, "no tun device"},
		{"node peers fail", activated(false), failPeers, "restoring wireguard peers"},
		{"node services fail", activated(false), failServices, "starting node services: port in use"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &harness{t: t, net: newFakeNet(), activator: newFakeActivator()}
			var before []func(*testPeer)
			if tt.before != nil {
				before = append(before, tt.before)
			}
			self = newSelf(t, "peer", 1)
			peerStore := tt.store(t)
			p := h.start(self, peerStore, before...)
			if p.startErr == nil || !strings.Contains(p.startErr.Error(), tt.want) {
				t.Fatalf("Start = %v, want an error containing %q", p.startErr, tt.want)
			}
			st := p.core.Status()
			if st.State != StateFailed || !strings.Contains(st.Failure, tt.want) {
				t.Errorf("Status = %+v, want failed saying %q", st, tt.want)
			}
			if _, ok := p.core.Registry(); ok {
				t.Error("a failed peer serves its registry")
			}
			_, err := p.core.ActivateAsCoordinator(t.Context(), activationRequest(t, nil), func(Event) {})
			if !errors.Is(err, ErrWrongState) || !strings.Contains(err.Error(), "peer has failed: ") {
				t.Errorf("ActivateAsCoordinator on a failed peer = %v, want ErrWrongState with the reason", err)
			}
			_, err = p.core.ActivateAsNode(t.Context(), validNodeActivation())
			if !errors.Is(err, ErrWrongState) {
				t.Errorf("ActivateAsNode on a failed peer = %v, want ErrWrongState", err)
			}
		})
	}
}

// validNodeActivation is a well-formed node activation for a cluster no
// test peer coordinates.
func validNodeActivation() NodeActivation {
	return NodeActivation{
		ClusterID: "feedfacefeedface", VPNCIDR: testVPNCIDR, NodeVPNIP: netip.MustParseAddr("203.0.113.9"),
		Coordinator: CoordinatorInfo{
			Name: "elsewhere", VPNIP: netip.MustParseAddr("203.0.113.1"), WGEndpoint: "192.0.2.200:51820",
			VPNAPIEndpoint: "203.0.113.1:7444", TLSPin: []byte("pin"), SigningPubKey: make([]byte, 32),
		},
	}
}

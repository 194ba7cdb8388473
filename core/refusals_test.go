package core

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/fabricmesh/fabric/coordinator/registry"
	"github.com/fabricmesh/fabric/core/coretest"
	"github.com/fabricmesh/fabric/internal/sshusers/sshuserstest"
	"github.com/google/go-cmp/cmp"
)

// TestInvalidCoordinatorActivation: a malformed request is refused with
// ErrInvalidArgument before anything happens.
func TestInvalidCoordinatorActivation(t *testing.T) {
	coordEndpoint := "192.0.2.1:7443"
	tests := []struct {
		name   string
		modify func(*CoordinatorActivation)
		want   string
	}{
		{"no cidr", func(r *CoordinatorActivation) { r.VPNCIDR = netip.Prefix{} }, "vpn cidr"},
		{"host bits set", func(r *CoordinatorActivation) { r.VPNCIDR = netip.MustParsePrefix("203.0.113.9/24") }, "did you mean 203.0.113.0/24"},
		{"too small", func(r *CoordinatorActivation) { r.VPNCIDR = netip.MustParsePrefix("203.0.113.0/31") }, "too small"},
		{"no room for a node", func(r *CoordinatorActivation) { r.VPNCIDR = netip.MustParsePrefix("203.0.113.0/30") }, "too small to hold a node"},
		{"cidr holds the coordinator", func(r *CoordinatorActivation) { r.VPNCIDR = netip.MustParsePrefix("192.0.2.0/24") },
			"contains the coordinator's public IP 192.0.2.1"},
		{"duplicate endpoint", func(r *CoordinatorActivation) {
			r.NodePublicEndpoints = []string{"192.0.2.10:7443", "192.0.2.11:7443", "192.0.2.10:7443"}
		}, "192.0.2.10:7443 is listed twice"},
		{"too many endpoints", func(r *CoordinatorActivation) {
			r.NodePublicEndpoints = nil
			for i := range MaxNodesPerActivation + 1 {
				r.NodePublicEndpoints = append(r.NodePublicEndpoints, netip.AddrPortFrom(netip.MustParseAddr("198.51.100.1"), uint16(1000+i)).String())
			}
		}, "1025 node endpoints: at most 1024 per request (add the others with more fabric add-nodes)"},
		{"duplicate endpoint, mapped", func(r *CoordinatorActivation) {
			r.NodePublicEndpoints = []string{"192.0.2.10:7443", "[::ffff:192.0.2.10]:7443"}
		}, "listed twice"},
		{"coordinator as node", func(r *CoordinatorActivation) { r.NodePublicEndpoints = []string{"192.0.2.10:7443", coordEndpoint} },
			"is the coordinator itself"},
		{"node inside the vpn", func(r *CoordinatorActivation) { r.NodePublicEndpoints = []string{"203.0.113.7:7443"} },
			"inside the vpn cidr"},
		{"node without port", func(r *CoordinatorActivation) { r.NodePublicEndpoints = []string{"192.0.2.10"} }, "want IP:PORT"},
		{"node port 0", func(r *CoordinatorActivation) { r.NodePublicEndpoints = []string{"192.0.2.10:0"} }, "want IP:PORT"},
		{"node host name", func(r *CoordinatorActivation) { r.NodePublicEndpoints = []string{"node1:7443"} }, "want IP:PORT"},
		{"node unspecified", func(r *CoordinatorActivation) { r.NodePublicEndpoints = []string{"0.0.0.0:7443"} }, "want IP:PORT"},
		{"short admin signing key", func(r *CoordinatorActivation) { r.AdminSigningPubKey = r.AdminSigningPubKey[:31] }, "admin keys"},
		{"no admin vpn key", func(r *CoordinatorActivation) { r.AdminVPNPubKey = nil }, "admin keys"},
		{"no admin name", func(r *CoordinatorActivation) { r.AdminName = "" }, "admin name"},
		{"malformed ssh user key", func(r *CoordinatorActivation) {
			r.Users, r.UsersName = "users:\n- {name: alice, keys: ['ssh-ed25519 AAAA alice@laptop']}\n", "users.yaml"
		}, `users.yaml:2: user alice: key 1 ("alice@laptop"): not a public key`},
		{"reserved ssh user", func(r *CoordinatorActivation) {
			r.Users = "users:\n- {name: root, keys: ['" + sshuserstest.Key(1, "") + "']}\n"
		}, `users:2: user: user name "root" is reserved`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, 2, nil)
			req := activationRequest(t, h.nodeEndpoints(h.nodes...))
			tt.modify(&req)
			before := snapshot(t, h.coord)
			log := &eventLog{}
			_, err := h.coord.core.ActivateAsCoordinator(t.Context(), req, log.emit)
			if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ActivateAsCoordinator = %v, want ErrInvalidArgument saying %q", err, tt.want)
			}
			if diff := cmp.Diff(before, snapshot(t, h.coord), cmpNetip); diff != "" {
				t.Errorf("invalid request changed the coordinator (-before +after):\n%s", diff)
			}
			if calls := h.activator.recorded(); len(calls) != 0 || len(log.events) != 0 {
				t.Errorf("invalid request reached nodes %+v or emitted %+v", calls, log.events)
			}
			// The peer is still ready for a valid request.
			h.mustActivate()
		})
	}
}

// TestCoordinatorActivationFailure: when the coordinator cannot come up,
// it goes back to accepting-init with its interface down and nothing
// persisted, and a later activation succeeds.
func TestCoordinatorActivationFailure(t *testing.T) {
	tests := []struct {
		name    string
		breakIt func(p *testPeer, st *failingStore)
		heal    func(p *testPeer, st *failingStore)
		want    string
	}{
		{"network up fails",
			func(p *testPeer, _ *failingStore) { p.net.FailUp(errors.New("operation not permitted")) },
			func(p *testPeer, _ *failingStore) { p.net.FailUp(nil) },
			"bringing up the vpn interface: operation not permitted"},
		{"store fails",
			func(_ *testPeer, st *failingStore) { st.failUpdates(errors.New("disk full")) },
			func(_ *testPeer, st *failingStore) { st.failUpdates(nil) },
			"disk full"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &harness{t: t, net: newFakeNet(), activator: newFakeActivator()}
			st := &failingStore{Store: newMemStore()}
			h.coord = h.start(newSelf(t, "coord", 1), st)
			h.addNode(newMemStore())
			tt.breakIt(h.coord, st)
			before := snapshot(t, h.coord)
			res, log, err := h.activate(h.nodes...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ActivateAsCoordinator = %+v, %v; want an error containing %q", res, err, tt.want)
			}
			after := snapshot(t, h.coord)
			if after.Device.Up {
				t.Error("the interface is still up after a failed activation")
			}
			after.Device = before.Device
			if diff := cmp.Diff(before, after, cmpNetip); diff != "" {
				t.Errorf("failed activation changed the coordinator (-before +after):\n%s", diff)
			}
			if _, ok := h.coord.core.Registry(); ok {
				t.Error("the registry is served after a failed activation")
			}
			if calls := h.activator.recorded(); len(calls) != 0 || len(log.events) != 0 {
				t.Errorf("failed activation reached nodes %+v or emitted %+v", calls, log.events)
			}
			reopened, err := registry.Open(h.coord.store)
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := reopened.Cluster(); ok {
				t.Error("the failed activation left a cluster in the store")
			}
			tt.heal(h.coord, st)
			h.mustActivate()
		})
	}
}

// TestCoordinatorServicesFail: if the coordinator's services cannot start,
// the peer is failed (its role is persisted, a restart retries).
func TestCoordinatorServicesFail(t *testing.T) {
	h := newHarness(t, 1, nil)
	h.coord.services.failWith(errors.New("port in use"))
	_, _, err := h.activate(h.nodes...)
	if err == nil || !strings.Contains(err.Error(), "starting coordinator services: port in use") {
		t.Fatalf("ActivateAsCoordinator = %v, want the services error", err)
	}
	st := h.coord.core.Status()
	if st.State != StateFailed || !strings.Contains(st.Failure, "port in use") {
		t.Errorf("Status = %+v, want failed with the reason", st)
	}
	_, _, err = h.activate(h.nodes...)
	if !errors.Is(err, ErrWrongState) || !strings.Contains(err.Error(), "peer has failed") {
		t.Errorf("activating a failed peer = %v, want ErrWrongState", err)
	}
	if calls := h.activator.recorded(); len(calls) != 0 {
		t.Errorf("a failed coordinator contacted nodes: %+v", calls)
	}
}

func TestNewRejectsIncompleteConfig(t *testing.T) {
	h := newHarness(t, 0, nil)
	good := func() Config {
		return Config{Self: newSelf(t, "x", 5), Store: newMemStore(), Registry: h.coord.reg, Network: coretest.NewFakeNetworkManager(),
			Activator: h.activator, Dialer: &fakeDialer{net: h.net}, Services: h.coord.services}
	}
	tests := []struct {
		name   string
		modify func(*Config)
	}{
		{"no store", func(c *Config) { c.Store = nil }},
		{"no registry", func(c *Config) { c.Registry = nil }},
		{"no network", func(c *Config) { c.Network = nil }},
		{"no activator", func(c *Config) { c.Activator = nil }},
		{"no dialer", func(c *Config) { c.Dialer = nil }},
		{"no services", func(c *Config) { c.Services = nil }},
		{"no endpoint", func(c *Config) { c.Self.PublicEndpoint = netip.AddrPort{} }},
		{"no wg port", func(c *Config) { c.Self.WGPort = 0 }},
		{"wg port too big", func(c *Config) { c.Self.WGPort = 70000 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good()
			tt.modify(&cfg)
			if _, err := New(cfg); err == nil {
				t.Errorf("New accepted a config with %s", tt.name)
			}
		})
	}
	if _, err := New(good()); err != nil {
		t.Errorf("New(good config): %v", err)
	}
}

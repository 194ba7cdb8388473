package coordinator_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/fabricmesh/fabric/coordinator"
	"github.com/fabricmesh/fabric/internal/grpctest"
	"github.com/fabricmesh/fabric/internal/httpsig"
	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/serviceid"
	"github.com/fabricmesh/fabric/internal/signedrpc"
	"github.com/fabricmesh/fabric/internal/testlog"
	"github.com/fabricmesh/fabric/node/reeve/reevepb"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// fakeReeve answers the registry's callback as a forger would.
type fakeReeve struct {
	reevepb.UnimplementedReeveServer
	answer func(ctx context.Context, nonce []byte) ([]byte, error)
}

func (f fakeReeve) Challenge(ctx context.Context, req *reevepb.ChallengeRequest) (*reevepb.ChallengeResponse, error) {
	sig, err := f.answer(ctx, req.GetNonce())
	if err != nil {
		return nil, err
	}
	return &reevepb.ChallengeResponse{Signature: sig}, nil
}

// registryWhitelist accepts the registry's signed callbacks.
type registryWhitelist struct{ key ed25519.PublicKey }

func (w registryWhitelist) Lookup(keyID string) (ed25519.PublicKey, error) {
	if keyID != serviceid.ID(serviceid.Registry, testCoordinator) {
		return nil, fmt.Errorf("%w: %s", httpsig.ErrUnknownKey, keyID)
	}
	return w.key, nil
}

// serveFakeReeve serves a fake reeve endpoint at the named node's address.
func (c *cluster) serveFakeReeve(tb testing.TB, name string, answer func(ctx context.Context, nonce []byte) ([]byte, error)) {
	tb.Helper()
	addr := netip.AddrPortFrom(c.nodes[name].vpnIP, serviceid.ReevePort)
	lis, err := c.vpn.Listen(context.Background(), addr)
	if err != nil {
		tb.Fatal(err)
	}
	srv := grpc.NewServer(signedrpc.ServerOptions(signedrpc.ServerConfig{
		Host: addr.String(), Whitelist: registryWhitelist{pub(c.coordKey)}, Replay: httpsig.NewReplayCache(64), Logger: testlog.New(tb),
	})...)
	reevepb.RegisterReeveServer(srv, fakeReeve{answer: answer})
	grpctest.Serve(tb, srv, lis)
}

// registration is the registry's record of a node's registration.
type registration struct {
	Registered  bool
	ReevePubKey []byte
	Error       string // RegistrationError, or the part of it a test expects
}

// TestRegistrar runs the handshake for n1 against honest and forged
// callbacks: only a reeve that proves the key n1 offered registers n1, and
// every failure is recorded with its reason, as `fabric status` shows it.
func TestRegistrar(t *testing.T) {
	forger := newKey() // the key a forging n1 offers and signs with
	signing := func(key ed25519.PrivateKey, msg func(nonce []byte) []byte) func(context.Context, []byte) ([]byte, error) {
		return func(_ context.Context, nonce []byte) ([]byte, error) { return ed25519.Sign(key, msg(nonce)), nil }
	}
	tests := []struct {
		name string
		// setup serves n1's callback and returns the key n1 offers.
		setup   func(t *testing.T, c *cluster) []byte
		timeout time.Duration
		want    registration // Error: a substring of the recorded reason
	}{
		{
			name: "reeve answers",
			setup: func(t *testing.T, c *cluster) []byte {
				return reeveKey(c.startReeve(t, "n1", pub(c.coordKey), nil))
			},
			want: registration{Registered: true},
		},
		{
			name: "offered key is not the reeve's",
			setup: func(t *testing.T, c *cluster) []byte {
				c.startReeve(t, "n1", pub(c.coordKey), nil)
				return pub(forger)
			},
			want: registration{Error: "did not sign the nonce with the key it offered"},
		},
		{
			name: "another nonce signed",
			setup: func(t *testing.T, c *cluster) []byte {
				c.serveFakeReeve(t, "n1", signing(forger, func(nonce []byte) []byte {
					return serviceid.ChallengeMessage(testClusterID, "n1", bytes.Repeat([]byte{1}, len(nonce)))
				}))
				return pub(forger)
			},
			want: registration{Error: "did not sign the nonce with the key it offered"},
		},
		{
			name: "bare nonce signed",
			setup: func(t *testing.T, c *cluster) []byte {
				c.serveFakeReeve(t, "n1", signing(forger, func(nonce []byte) []byte { return nonce }))
				return pub(forger)
			},
			want: registration{Error: "did not sign the nonce with the key it offered"},
		},
		{
			name: "message of another cluster signed",
			setup: func(t *testing.T, c *cluster) []byte {
				c.serveFakeReeve(t, "n1", signing(forger, func(nonce []byte) []byte {
					return serviceid.ChallengeMessage("c0", "n1", nonce)
				}))
				return pub(forger)
			},
			want: registration{Error: "did not sign the nonce with the key it offered"},
		},
		{
			name: "message of another node signed",
			setup: func(t *testing.T, c *cluster) []byte {
				c.serveFakeReeve(t, "n1", signing(forger, func(nonce []byte) []byte {
					return serviceid.ChallengeMessage(testClusterID, "n2", nonce)
				}))
				return pub(forger)
			},
			want: registration{Error: "did not sign the nonce with the key it offered"},
		},
		{
			name: "nonce signed with the right form",
			setup: func(t *testing.T, c *cluster) []byte {
				c.serveFakeReeve(t, "n1", signing(forger, func(nonce []byte) []byte {
					return serviceid.ChallengeMessage(testClusterID, "n1", nonce)
				}))
				return pub(forger)
			},
			want: registration{Registered: true},
		},
		{
			name:  "callback unreachable",
			setup: func(t *testing.T, c *cluster) []byte { return pub(forger) },
			want:  registration{Error: "calling back the reeve at 203.0.113.3:7445"},
		},
		{
			name: "callback refused by a reeve that does not trust this coordinator",
			setup: func(t *testing.T, c *cluster) []byte {
				return reeveKey(c.startReeve(t, "n1", pub(newKey()), nil))
			},
			want: registration{Error: "Unauthenticated"},
		},
		{
			name: "callback answered by another node's reeve offering its key",
			setup: func(t *testing.T, c *cluster) []byte {
				r2 := c.startReeve(t, "n2", pub(c.coordKey), nil)
				c.vpn.Route(netip.AddrPortFrom(c.nodes["n1"].vpnIP, serviceid.ReevePort), netip.AddrPortFrom(c.nodes["n2"].vpnIP, serviceid.ReevePort))
				return reeveKey(r2)
			},
			// n2's reeve refuses a callback signed for n1's address.
			want: registration{Error: "signed for another endpoint: it is addressed to 203.0.113.3:7445, this endpoint is 203.0.113.4:7445"},
		},
		{
			name: "callback answered by another node's reeve",
			setup: func(t *testing.T, c *cluster) []byte {
				c.startReeve(t, "n2", pub(c.coordKey), nil)
				r1 := c.startReeve(t, "n1", pub(c.coordKey), nil)
				c.vpn.Route(netip.AddrPortFrom(c.nodes["n1"].vpnIP, serviceid.ReevePort), netip.AddrPortFrom(c.nodes["n2"].vpnIP, serviceid.ReevePort))
				return reeveKey(r1)
			},
			// n2's reeve refuses a callback signed for n1's address.
			want: registration{Error: "signed for another endpoint: it is addressed to 203.0.113.3:7445, this endpoint is 203.0.113.4:7445"},
		},
		{
			name: "callback never answered",
			setup: func(t *testing.T, c *cluster) []byte {
				c.serveFakeReeve(t, "n1", func(ctx context.Context, _ []byte) ([]byte, error) {
					<-ctx.Done()
					return nil, status.FromContextError(ctx.Err()).Err()
				})
				return pub(forger)
			},
			timeout: 100 * time.Millisecond,
			want:    registration{Error: "DeadlineExceeded"},
		},
		{
			name:  "offered key of the wrong size",
			setup: func(t *testing.T, c *cluster) []byte { return []byte("short") },
			want:  registration{Error: "offered reeve key has 5 bytes, want 32"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCluster(t, [2]string{"n1", "a"}, [2]string{"n2", "a"})
			offered := tt.setup(t, c)
			reg := c.registrar(t)
			reg.Timeout = tt.timeout
			before := c.reg.Revision()
			err := reg.Register(testContext(t), c.nodes["n1"].vpnIP, offered)
			want := tt.want
			if want.Registered {
				want.ReevePubKey = offered
				if err != nil {
					t.Errorf("Register: %v", err)
				}
			} else if !errors.Is(err, coordinator.ErrRegistration) || !strings.Contains(err.Error(), want.Error) {
				t.Errorf("Register: %v, want an ErrRegistration containing %q", err, want.Error)
			}
			p := c.peer(t, "n1")
			t.Logf("registrationError: %q", p.RegistrationError)
			got := registration{Registered: p.Registered, ReevePubKey: p.ReevePubKey, Error: p.RegistrationError}
			if want.Error != "" && strings.Contains(got.Error, want.Error) {
				got.Error = want.Error
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("registration recorded (-want +got):\n%s", diff)
			}
			if after := c.reg.Revision(); after != before+1 {
				t.Errorf("revision %d after the handshake, want %d (the outcome is one change)", after, before+1)
			}
			if n2 := c.peer(t, "n2"); n2.Registered || n2.RegistrationError != "" {
				t.Errorf("n2's registration changed: %+v", n2)
			}
		})
	}
}

// TestRegistrarNotActive: only active nodes and the coordinator register;
// other addresses are refused without a record.
func TestRegistrarNotActive(t *testing.T) {
	c := newCluster(t, [2]string{"n1", "a"})
	pending, err := c.reg.Reserve("192.0.2.50:7443", "n5", nil, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	for name, ip := range map[string]netip.Addr{
		"unknown": netip.MustParseAddr("203.0.113.200"),
		"admin":   c.adminIP,
		"pending": pending.VPNIP,
	} {
		t.Run(name, func(t *testing.T) {
			before := c.reg.Revision()
			err := c.registrar(t).Register(testContext(t), ip, pub(newKey()))
			if !errors.Is(err, coordinator.ErrRegistration) || !strings.Contains(err.Error(), "is not an active peer") {
				t.Errorf("Register(%s): %v, want ErrRegistration: not an active peer", ip, err)
			}
			if after := c.reg.Revision(); after != before {
				t.Errorf("revision moved from %d to %d", before, after)
			}
		})
	}
}

// TestRegistrarOutcomeReplaces: each handshake's outcome replaces the last:
// a failed one unregisters a registered node, a later success clears the
// reason.
func TestRegistrarOutcomeReplaces(t *testing.T) {
	c := newCluster(t, [2]string{"n1", "a"})
	c.nodes[testCoordinator] = testNode{name: testCoordinator, vpnIP: c.coordIP}
	ctx := testContext(t)
	reg := c.registrar(t)
	for _, name := range []string{"n1", testCoordinator} {
		t.Run(name, func(t *testing.T) {
			r := c.startReeve(t, name, pub(c.coordKey), nil)
			steps := []struct {
				offered []byte
				want    registration
			}{
				{reeveKey(r), registration{Registered: true, ReevePubKey: reeveKey(r)}},
				{pub(newKey()), registration{Error: "did not sign"}},
				{reeveKey(r), registration{Registered: true, ReevePubKey: reeveKey(r)}},
			}
			for i, s := range steps {
				_ = reg.Register(ctx, c.nodes[name].vpnIP, s.offered)
				p := c.peer(t, name)
				got := registration{Registered: p.Registered, ReevePubKey: p.ReevePubKey, Error: p.RegistrationError}
				if s.want.Error != "" && strings.Contains(got.Error, s.want.Error) {
					got.Error = s.want.Error
				}
				if diff := cmp.Diff(s.want, got); diff != "" {
					t.Errorf("after handshake %d (-want +got):\n%s", i+1, diff)
				}
			}
		})
	}
}

// TestRegistrationEndToEnd wires a node's reeve to the registrar and the
// steward as fabricd does: the reeve registers, then its services land in
// the registry.
func TestRegistrationEndToEnd(t *testing.T) {
	c := newCluster(t, [2]string{"n1", "a"})
	c.serveSteward(t)
	ctx := testContext(t)
	n1 := c.nodes["n1"]
	registrar := c.registrar(t)
	r := c.startReeve(t, "n1", pub(c.coordKey), func(ctx context.Context, pubKey []byte) error {
		return registrar.Register(ctx, n1.vpnIP, pubKey)
	})
	if _, _, err := r.RegisterEndpoint(ctx, serviceid.Pastiche, serviceid.PastichePort); err != nil {
		t.Fatal(err)
	}
	if _, err := r.RegisterClient(ctx, serviceid.Pastiche); err != nil {
		t.Fatal(err)
	}
	pasticheKey, _ := r.PubKey(serviceid.Pastiche)
	want := records.Services{
		Endpoints: []records.ServiceEndpoint{{Service: serviceid.Pastiche, Port: serviceid.PastichePort}},
		Clients:   []records.ServiceClient{{Service: serviceid.Pastiche, PubKey: pasticheKey}},
	}
	ignoreRev := cmp.Transformer("noRevision", func(s records.Services) records.Services { s.Revision = 0; return s })
	var rev uint64
	for {
		if diff := cmp.Diff(want, c.reg.Services()[n1.vpnIP], ignoreRev); diff == "" {
			break
		}
		var err error
		if rev, err = c.reg.Wait(ctx, rev); err != nil {
			t.Fatalf("n1's services never reached the registry: %v; have %+v", err, c.reg.Services()[n1.vpnIP])
		}
	}
	p := c.peer(t, "n1")
	if !p.Registered || !bytes.Equal(p.ReevePubKey, reeveKey(r)) || !r.Registered() {
		t.Errorf("n1 registered %v with key %x (reeve says %v), want registered with %x", p.Registered, p.ReevePubKey, r.Registered(), reeveKey(r))
	}
}

// TestRegistrarLateFailure: the callback of a first attempt fails only
// after the node (restarted) registered again; the registration recorded is
// the later attempt's, not the late failure.
func TestRegistrarLateFailure(t *testing.T) {
	c := newCluster(t, [2]string{"n1", "sharks"})
	key := newKey()
	first, release := make(chan struct{}), make(chan struct{})
	calls := 0
	c.serveFakeReeve(t, "n1", func(ctx context.Context, nonce []byte) ([]byte, error) {
		calls++ // the handshakes run one at a time
		if calls == 1 {
			close(first)
			<-release // the node crashed: its answer never comes
			return nil, errors.New("connection reset")
		}
		return ed25519.Sign(key, serviceid.ChallengeMessage(testClusterID, "n1", nonce)), nil
	})
	r := c.registrar(t)
	lost := make(chan error)
	go func() { lost <- r.Register(t.Context(), c.nodes["n1"].vpnIP, pub(key)) }()
	<-first
	again := make(chan error)
	go func() { again <- r.Register(t.Context(), c.nodes["n1"].vpnIP, pub(key)) }()
	time.Sleep(50 * time.Millisecond) // the second attempt waits for the first
	close(release)
	if err := <-lost; err == nil {
		t.Error("the lost attempt succeeded")
	}
	if err := <-again; err != nil {
		t.Fatalf("the later attempt: %v", err)
	}
	if p := c.peer(t, "n1"); !p.Registered || !bytes.Equal(p.ReevePubKey, pub(key)) {
		t.Errorf("n1 after a late failure and a later registration: %+v, want registered", p)
	}
}

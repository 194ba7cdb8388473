package reeve

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"fmt"
	"strings"
	"testing"

	"github.com/fabricmesh/fabric/internal/serviceid"
	"github.com/fabricmesh/fabric/internal/update"
	"github.com/fabricmesh/fabric/node/reeve/reevepb"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestChallenge calls n1's reeve endpoint as the registry's callback does,
// and as others: only the registry gets an answer (the activating
// coordinator's, or another coordinator's the node knows), and the answer
// is the reeve key's signature of the registration message for this
// cluster, node and nonce, never of the bare nonce.
func TestChallenge(t *testing.T) {
	vpn := newTestVPN()
	cfg := testConfig(t, newStore(t), vpn)
	otherKey := newKey()
	cfg.OtherCoordinators = func() map[string]ed25519.PublicKey { return map[string]ed25519.PublicKey{"c2": pub(otherKey)} }
	r := mustNew(t, cfg)
	ctx := testContext(t)
	// The view whitelists audit@n2 on the reeve too, to show that being
	// on the whitelist is not enough.
	if err := r.ApplyView(ctx, 1, update.ViewUpdate{Kind: update.ViewFull, Full: testView()}); err != nil {
		t.Fatal(err)
	}
	start(t, r)
	reeveKey, _ := r.PubKey(serviceid.Reeve)
	nonce := bytes.Repeat([]byte{0x5a}, 32)

	tests := []struct {
		name     string
		keyID    string
		key      ed25519.PrivateKey
		nonce    []byte
		wantCode codes.Code
		wantMsg  string
	}{
		{name: "registry", keyID: testRegistryID, key: testCoordKey, nonce: nonce},
		{name: "registry, shortest nonce", keyID: testRegistryID, key: testCoordKey, nonce: nonce[:16]},
		{name: "registry, short nonce", keyID: testRegistryID, key: testCoordKey, nonce: nonce[:15], wantCode: codes.InvalidArgument, wantMsg: "nonce too short"},
		{name: "registry, no nonce", keyID: testRegistryID, key: testCoordKey, wantCode: codes.InvalidArgument, wantMsg: "nonce too short"},
		{name: "registry key of the wrong coordinator", keyID: testRegistryID, key: newKey(), wantCode: codes.Unauthenticated},
		{name: "registry of another coordinator the node knows", keyID: serviceid.ID(serviceid.Registry, "c2"), key: otherKey, nonce: nonce},
		{name: "registry of another coordinator, wrong key", keyID: serviceid.ID(serviceid.Registry, "c2"), key: testCoordKey, wantCode: codes.Unauthenticated},
		{name: "registry of a coordinator the node does not know", keyID: serviceid.ID(serviceid.Registry, "n2"), key: testCoordKey, wantCode: codes.Unauthenticated},
		{name: "whitelisted client that is not the registry", keyID: testAuditID, key: testAuditKey, nonce: nonce, wantCode: codes.PermissionDenied, wantMsg: "only the registry may challenge"},
		{name: "known client not whitelisted here", keyID: testPastiche2ID, key: testPastiche2Key, nonce: nonce, wantCode: codes.PermissionDenied},
		{name: "unknown client", keyID: "stranger@n9", key: newKey(), nonce: nonce, wantCode: codes.Unauthenticated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn := dialSigned(t, vpn, testReeveAddr, tt.keyID, tt.key)
			resp, err := reevepb.NewReeveClient(conn).Challenge(ctx, &reevepb.ChallengeRequest{Nonce: tt.nonce})
			if tt.wantCode != codes.OK {
				if status.Code(err) != tt.wantCode || !strings.Contains(err.Error(), tt.wantMsg) {
					t.Fatalf("Challenge: %v, want code %v with %q", err, tt.wantCode, tt.wantMsg)
				}
				return
			}
			if err != nil {
				t.Fatalf("Challenge: %v", err)
			}
			sig := resp.GetSignature()
			if !ed25519.Verify(reeveKey, serviceid.ChallengeMessage(testCluster, testNode, tt.nonce), sig) {
				t.Error("the answer is not the reeve key's signature of the registration message")
			}
			for name, msg := range map[string][]byte{
				"the bare nonce":      tt.nonce,
				"another cluster's":   serviceid.ChallengeMessage("c0", testNode, tt.nonce),
				"another node's":      serviceid.ChallengeMessage(testCluster, "n2", tt.nonce),
				"another nonce's":     serviceid.ChallengeMessage(testCluster, testNode, append([]byte{1}, tt.nonce[1:]...)),
				"a truncated nonce's": serviceid.ChallengeMessage(testCluster, testNode, tt.nonce[1:]),
			} {
				if ed25519.Verify(reeveKey, msg, sig) {
					t.Errorf("the answer is also a signature of %s message", name)
				}
			}
		})
	}
}

// TestSyncAfterRegistration: once registered, the reeve sends its services
// to the steward whenever they change; its own client is known from the
// registration and is not sent.
func TestSyncAfterRegistration(t *testing.T) {
	ctx := testContext(t)
	vpn := newTestVPN()
	stw := startFakeSteward(t, vpn)
	cfg := testConfig(t, newStore(t), vpn)
	cfg.Register = func(context.Context, []byte) error { return nil }
	r := mustNew(t, cfg)
	key, _ := r.PubKey(serviceid.Reeve)
	stw.trust(key)
	start(t, r)
	diff := func(want, got services) string { return cmp.Diff(want, got) }
	want := services{Endpoints: map[string]uint32{}, Clients: map[string]string{}}
	stw.waitFor(ctx, t, want, diff)

	if _, _, err := r.RegisterEndpoint(ctx, "ledger", 9000); err != nil {
		t.Fatal(err)
	}
	want.Endpoints["ledger"] = 9000
	stw.waitFor(ctx, t, want, diff)

	if _, err := r.RegisterClient(ctx, "billing"); err != nil {
		t.Fatal(err)
	}
	billingKey, _ := r.PubKey("billing")
	want.Clients["billing"] = fmt.Sprintf("%x", billingKey)
	stw.waitFor(ctx, t, want, diff)

	if _, _, err := r.RegisterEndpoint(ctx, "ledger", 9001); err != nil {
		t.Fatal(err)
	}
	want.Endpoints["ledger"] = 9001
	stw.waitFor(ctx, t, want, diff)
}

// TestRegistersAgainWhenTheStewardForgets: a steward that no longer holds
// the reeve as registered refuses its signature; the reeve then runs the
// registration again and resends its services.
func TestRegistersAgainWhenTheStewardForgets(t *testing.T) {
	ctx := testContext(t)
	vpn := newTestVPN()
	stw := startFakeSteward(t, vpn)
	cfg := testConfig(t, newStore(t), vpn)
	registrations := make(chan struct{}, 10)
	var r *Reeve
	cfg.Register = func(context.Context, []byte) error {
		key, _ := r.PubKey(serviceid.Reeve)
		stw.trust(key) // what the registry's handshake achieves
		registrations <- struct{}{}
		return nil
	}
	r = mustNew(t, cfg)
	start(t, r)
	<-registrations
	diff := func(want, got services) string { return cmp.Diff(want, got) }
	want := services{Endpoints: map[string]uint32{}, Clients: map[string]string{}}
	stw.waitFor(ctx, t, want, diff)

	stw.trust(nil) // the coordinator forgot the registration
	if _, _, err := r.RegisterEndpoint(ctx, "ledger", 9000); err != nil {
		t.Fatal(err)
	}
	select {
	case <-registrations:
	case <-ctx.Done():
		t.Fatal("the reeve did not register again after the steward refused it")
	}
	want.Endpoints["ledger"] = 9000
	stw.waitFor(ctx, t, want, diff)
	if !r.Registered() {
		t.Error("Registered() = false after registering again")
	}
}

package coordinator_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/fabricmesh/fabric/coordinator"
	"github.com/fabricmesh/fabric/internal/httpsig"
	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/vpnapi/vpnapipb"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// stewardFixture is a cluster whose n1 is registered with reeve key n1Reeve
// and whose n2 is active but not registered, with the steward served.
type stewardFixture struct {
	*cluster
	n1Reeve ed25519.PrivateKey
	addr    netip.AddrPort         // the steward's
	steward vpnapipb.StewardClient // signed as reeve@n1
}

func newStewardFixture(tb testing.TB) *stewardFixture {
	tb.Helper()
	c := newCluster(tb, [2]string{"n1", "a"}, [2]string{"n2", "a"})
	f := &stewardFixture{cluster: c, n1Reeve: newKey()}
	if _, err := c.reg.SetRegistration(c.nodes["n1"].vpnIP, pub(f.n1Reeve), ""); err != nil {
		tb.Fatal(err)
	}
	f.addr = c.serveSteward(tb)
	f.steward = c.stewardClient(tb, f.addr, "reeve@n1", f.n1Reeve)
	return f
}

func endpoint(service string, port uint32) *vpnapipb.ServiceEndpoint {
	return &vpnapipb.ServiceEndpoint{Service: service, Port: port}
}

func client(service string, key []byte) *vpnapipb.ServiceClient {
	return &vpnapipb.ServiceClient{Service: service, PubKey: key}
}

// TestStewardUpdates sends n1's services through the steward: each change
// lands in the registry and bumps the revision, a repeat changes nothing.
func TestStewardUpdates(t *testing.T) {
	f := newStewardFixture(t)
	ctx := testContext(t)
	pasticheKey, billingKey := pub(newKey()), pub(newKey())
	steps := []struct {
		name    string
		req     *vpnapipb.UpdateServicesRequest
		want    records.Services // without Revision
		changes bool
	}{
		{
			name: "first",
			req: &vpnapipb.UpdateServicesRequest{
				Endpoints: []*vpnapipb.ServiceEndpoint{endpoint("pastiche", 7450), endpoint("ledger", 9000)},
				Clients:   []*vpnapipb.ServiceClient{client("pastiche", pasticheKey)},
			},
			want: records.Services{
				Endpoints: []records.ServiceEndpoint{{Service: "ledger", Port: 9000}, {Service: "pastiche", Port: 7450}},
				Clients:   []records.ServiceClient{{Service: "pastiche", PubKey: pasticheKey}},
			},
			changes: true,
		},
		{
			name: "same in another order",
			req: &vpnapipb.UpdateServicesRequest{
				Endpoints: []*vpnapipb.ServiceEndpoint{endpoint("ledger", 9000), endpoint("pastiche", 7450)},
				Clients:   []*vpnapipb.ServiceClient{client("pastiche", pasticheKey)},
			},
			want: records.Services{
				Endpoints: []records.ServiceEndpoint{{Service: "ledger", Port: 9000}, {Service: "pastiche", Port: 7450}},
				Clients:   []records.ServiceClient{{Service: "pastiche", PubKey: pasticheKey}},
			},
		},
		{
			name: "endpoint moved, client added",
			req: &vpnapipb.UpdateServicesRequest{
				Endpoints: []*vpnapipb.ServiceEndpoint{endpoint("ledger", 9001), endpoint("pastiche", 7450)},
				Clients:   []*vpnapipb.ServiceClient{client("pastiche", pasticheKey), client("billing", billingKey)},
			},
			want: records.Services{
				Endpoints: []records.ServiceEndpoint{{Service: "ledger", Port: 9001}, {Service: "pastiche", Port: 7450}},
				Clients:   []records.ServiceClient{{Service: "billing", PubKey: billingKey}, {Service: "pastiche", PubKey: pasticheKey}},
			},
			changes: true,
		},
		{
			name:    "everything removed",
			req:     &vpnapipb.UpdateServicesRequest{},
			want:    records.Services{},
			changes: true,
		},
	}
	n1IP := f.nodes["n1"].vpnIP
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			before := f.reg.Revision()
			resp, err := f.steward.UpdateServices(ctx, s.req)
			if err != nil {
				t.Fatalf("UpdateServices: %v", err)
			}
			after := f.reg.Revision()
			if moved := after != before; moved != s.changes || (moved && after != before+1) {
				t.Errorf("revision %d -> %d, want a change: %v", before, after, s.changes)
			}
			if resp.GetRevision() != after {
				t.Errorf("answered revision %d, want the registry's %d", resp.GetRevision(), after)
			}
			got := f.reg.Services()[n1IP]
			got.Revision = 0
			if diff := cmp.Diff(s.want, got); diff != "" {
				t.Errorf("n1's services in the registry (-want +got):\n%s", diff)
			}
		})
	}
}

// TestStewardRefuses: calls not signed by a registered node's reeve, and
// invalid records, are refused and change nothing.
func TestStewardRefuses(t *testing.T) {
	f := newStewardFixture(t)
	ctx := testContext(t)
	n2Reeve := newKey()
	valid := &vpnapipb.UpdateServicesRequest{Endpoints: []*vpnapipb.ServiceEndpoint{endpoint("pastiche", 7450)}}
	key := pub(newKey())
	tests := []struct {
		name     string
		keyID    string
		key      ed25519.PrivateKey
		req      *vpnapipb.UpdateServicesRequest
		wantCode codes.Code
		wantMsg  string
	}{
		{name: "unregistered node", keyID: "reeve@n2", key: n2Reeve, req: valid, wantCode: codes.Unauthenticated, wantMsg: "not registered"},
		{name: "unknown node", keyID: "reeve@n9", key: newKey(), req: valid, wantCode: codes.Unauthenticated, wantMsg: "no node n9"},
		{name: "admin", keyID: "reeve@admin", key: newKey(), req: valid, wantCode: codes.Unauthenticated, wantMsg: "not registered"},
		{name: "wrong reeve key", keyID: "reeve@n1", key: newKey(), req: valid, wantCode: codes.Unauthenticated, wantMsg: "does not verify"},
		{name: "not a reeve", keyID: "pastiche@n1", key: f.n1Reeve, req: valid, wantCode: codes.PermissionDenied, wantMsg: "only reeves may call the steward"},
		{name: "not an id", keyID: "reeve", key: f.n1Reeve, req: valid, wantCode: codes.Unauthenticated},
		{name: "bad endpoint name", keyID: "reeve@n1", key: f.n1Reeve, wantCode: codes.InvalidArgument, wantMsg: `service name "Ledger"`,
			req: &vpnapipb.UpdateServicesRequest{Endpoints: []*vpnapipb.ServiceEndpoint{endpoint("Ledger", 9000)}}},
		{name: "port 0", keyID: "reeve@n1", key: f.n1Reeve, wantCode: codes.InvalidArgument, wantMsg: "port 0 out of range",
			req: &vpnapipb.UpdateServicesRequest{Endpoints: []*vpnapipb.ServiceEndpoint{endpoint("ledger", 0)}}},
		{name: "port too high", keyID: "reeve@n1", key: f.n1Reeve, wantCode: codes.InvalidArgument, wantMsg: "port 65536 out of range",
			req: &vpnapipb.UpdateServicesRequest{Endpoints: []*vpnapipb.ServiceEndpoint{endpoint("ledger", 65536)}}},
		{name: "too many endpoints", keyID: "reeve@n1", key: f.n1Reeve, wantCode: codes.InvalidArgument, wantMsg: "65 endpoints and 0 clients: a peer may have at most 64 of each",
			req: &vpnapipb.UpdateServicesRequest{Endpoints: manyEndpoints(65)}},
		{name: "endpoint twice", keyID: "reeve@n1", key: f.n1Reeve, wantCode: codes.InvalidArgument, wantMsg: "endpoint ledger is listed twice",
			req: &vpnapipb.UpdateServicesRequest{Endpoints: []*vpnapipb.ServiceEndpoint{endpoint("ledger", 1), endpoint("ledger", 2)}}},
		{name: "reserved endpoint", keyID: "reeve@n1", key: f.n1Reeve, wantCode: codes.InvalidArgument, wantMsg: "endpoint steward: the name is reserved",
			req: &vpnapipb.UpdateServicesRequest{Endpoints: []*vpnapipb.ServiceEndpoint{endpoint("steward", 1)}}},
		{name: "reserved client", keyID: "reeve@n1", key: f.n1Reeve, wantCode: codes.InvalidArgument, wantMsg: "client registry: the name is reserved",
			req: &vpnapipb.UpdateServicesRequest{Clients: []*vpnapipb.ServiceClient{client("registry", key)}}},
		{name: "reeve client", keyID: "reeve@n1", key: f.n1Reeve, wantCode: codes.InvalidArgument, wantMsg: "client reeve: the name is reserved",
			req: &vpnapipb.UpdateServicesRequest{Clients: []*vpnapipb.ServiceClient{client("reeve", key)}}},
		{name: "fabric-admin client on a node", keyID: "reeve@n1", key: f.n1Reeve, wantCode: codes.InvalidArgument, wantMsg: "client fabric-admin: only the coordinator has it",
			req: &vpnapipb.UpdateServicesRequest{Clients: []*vpnapipb.ServiceClient{client("fabric-admin", key)}}},
		{name: "client twice", keyID: "reeve@n1", key: f.n1Reeve, wantCode: codes.InvalidArgument, wantMsg: "client billing is listed twice",
			req: &vpnapipb.UpdateServicesRequest{Clients: []*vpnapipb.ServiceClient{client("billing", key), client("billing", key)}}},
		{name: "short client key", keyID: "reeve@n1", key: f.n1Reeve, wantCode: codes.InvalidArgument, wantMsg: "public key has 31 bytes, want 32",
			req: &vpnapipb.UpdateServicesRequest{Clients: []*vpnapipb.ServiceClient{client("billing", key[:31])}}},
		{name: "one bad record among good ones", keyID: "reeve@n1", key: f.n1Reeve, wantCode: codes.InvalidArgument, wantMsg: "port 0",
			req: &vpnapipb.UpdateServicesRequest{
				Endpoints: []*vpnapipb.ServiceEndpoint{endpoint("pastiche", 7450), endpoint("ledger", 0)},
				Clients:   []*vpnapipb.ServiceClient{client("billing", key)},
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := f.reg.Revision()
			_, err := f.stewardClient(t, f.addr, tt.keyID, tt.key).UpdateServices(ctx, tt.req)
			if status.Code(err) != tt.wantCode || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("UpdateServices: %v, want code %v with %q", err, tt.wantCode, tt.wantMsg)
			}
			if after := f.reg.Revision(); after != before {
				t.Errorf("revision moved from %d to %d", before, after)
			}
			if got := f.reg.Services(); len(got) != 0 {
				t.Errorf("services recorded: %+v", got)
			}
		})
	}
}

// TestStewardUnsigned: a call that skipped the signing layer is refused by
// the handler itself.
func TestStewardUnsigned(t *testing.T) {
	s := &coordinator.StewardServer{Registry: newCluster(t).reg}
	_, err := s.UpdateServices(context.Background(), &vpnapipb.UpdateServicesRequest{})
	if status.Code(err) != codes.Unauthenticated {
		t.Errorf("UpdateServices without a verified caller: %v, want Unauthenticated", err)
	}
}

func TestStewardWhitelist(t *testing.T) {
	f := newStewardFixture(t)
	w := coordinator.StewardWhitelist{Registry: f.reg}
	tests := []struct {
		keyID   string
		want    ed25519.PublicKey
		wantErr error
	}{
		{keyID: "reeve@n1", want: pub(f.n1Reeve)},
		{keyID: "reeve@n2", wantErr: httpsig.ErrUnknownKey},
		{keyID: "reeve@n9", wantErr: httpsig.ErrUnknownKey},
		{keyID: "reeve@admin", wantErr: httpsig.ErrUnknownKey},
		{keyID: "reeve@coord", wantErr: httpsig.ErrUnknownKey},
		{keyID: "pastiche@n1", wantErr: httpsig.ErrNotWhitelisted},
		{keyID: "registry@coord", wantErr: httpsig.ErrNotWhitelisted},
		{keyID: "n1", wantErr: httpsig.ErrUnknownKey},
		{keyID: "", wantErr: httpsig.ErrUnknownKey},
	}
	for _, tt := range tests {
		t.Run(tt.keyID, func(t *testing.T) {
			got, err := w.Lookup(tt.keyID)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr != nil && err == nil) {
				t.Errorf("Lookup(%q): error %v, want %v", tt.keyID, err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Lookup(%q) (-want +got):\n%s", tt.keyID, diff)
			}
		})
	}
}

// manyEndpoints is n distinct endpoints.
func manyEndpoints(n int) []*vpnapipb.ServiceEndpoint {
	var out []*vpnapipb.ServiceEndpoint
	for i := range n {
		out = append(out, endpoint(fmt.Sprintf("svc%d", i), uint32(9000+i)))
	}
	return out
}

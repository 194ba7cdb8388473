package reeve

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fabricmesh/fabric/internal/httpsig"
	"github.com/fabricmesh/fabric/internal/serviceid"
	"github.com/fabricmesh/fabric/internal/update"
	"github.com/fabricmesh/fabric/node/reeve/reevepb"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// localAPI is what services get from their reeve, in process (*Reeve) or
// over the unix socket (*Client).
type localAPI interface {
	RegisterEndpoint(ctx context.Context, service string, port uint16) (id, address string, err error)
	RegisterClient(ctx context.Context, service string) (string, error)
	Catalog(ctx context.Context, clientID string) ([]string, error)
	EndpointsUp(ctx context.Context, clientID, service string) ([]Endpoint, error)
	Sign(ctx context.Context, keyID string, data []byte) ([]byte, error)
	Lookup(endpointID, client string) (ed25519.PublicKey, error)
	Whitelist(endpointID string) Whitelist
}

var (
	_ localAPI = (*Reeve)(nil)
	_ localAPI = (*Client)(nil)
)

// localFixture is n1's started reeve with its local socket.
type localFixture struct {
	r      *Reeve
	socket string
	client *Client
}

func newLocalFixture(tb testing.TB) *localFixture {
	tb.Helper()
	cfg := testConfig(tb, newStore(tb), newTestVPN())
	cfg.SocketPath = filepath.Join(tb.TempDir(), "reeve.sock")
	r := mustNew(tb, cfg)
	start(tb, r)
	c, err := DialLocal(cfg.SocketPath)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return &localFixture{r: r, socket: cfg.SocketPath, client: c}
}

// apis are the two ways to reach the fixture's reeve.
func (f *localFixture) apis() []struct {
	name string
	api  localAPI
} {
	return []struct {
		name string
		api  localAPI
	}{{"in-process", f.r}, {"socket", f.client}}
}

func TestLocalSocketMode(t *testing.T) {
	f := newLocalFixture(t)
	fi, err := os.Stat(f.socket)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want a socket with mode 0600", fi.Mode())
	}
}

// TestLocalSocketReplacesStale: a socket file left by a stopped reeve does
// not keep the next one from serving.
func TestLocalSocketReplacesStale(t *testing.T) {
	st := newStore(t)
	cfg := testConfig(t, st, newTestVPN())
	cfg.SocketPath = filepath.Join(t.TempDir(), "reeve.sock")
	if err := os.WriteFile(cfg.SocketPath, []byte("stale"), 0o644); err != nil {
		t.Fatal(err)
	}
	start(t, mustNew(t, cfg))
	c, err := DialLocal(cfg.SocketPath)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.RegisterClient(testContext(t), "billing"); err != nil {
		t.Errorf("RegisterClient over the socket: %v", err)
	}
}

// TestDialLocalRelative: a socket path relative to the working directory
// is a path, not a host name.
func TestDialLocalRelative(t *testing.T) {
	f := newLocalFixture(t)
	t.Chdir(filepath.Dir(f.socket))
	c, err := DialLocal(filepath.Base(f.socket))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.RegisterClient(testContext(t), "billing"); err != nil {
		t.Errorf("RegisterClient over %s: %v", filepath.Base(f.socket), err)
	}
}

func TestRegisterEndpoint(t *testing.T) {
	tests := []struct {
		name, service string
		port          uint16
		wantID        string
		wantAddr      string
		wantErr       string
	}{
		{name: "valid", service: "ledger", port: 9000, wantID: testLedgerID, wantAddr: "203.0.113.2:9000"},
		{name: "again", service: "ledger", port: 9000, wantID: testLedgerID, wantAddr: "203.0.113.2:9000"},
		{name: "moved", service: "ledger", port: 9001, wantID: testLedgerID, wantAddr: "203.0.113.2:9001"},
		{name: "dashes and digits", service: "a-1", port: 1, wantID: "a-1@n1", wantAddr: "203.0.113.2:1"},
		{name: "empty name", service: "", port: 9000, wantErr: `service name ""`},
		{name: "uppercase", service: "Ledger", port: 9000, wantErr: `service name "Ledger"`},
		{name: "leading digit", service: "9lives", port: 9000, wantErr: `service name "9lives"`},
		{name: "id not name", service: "ledger@n1", port: 9000, wantErr: `service name "ledger@n1"`},
		{name: "too long", service: "a" + strings.Repeat("b", 32), port: 9000, wantErr: "service name"},
		{name: "port 0", service: "ledger", port: 0, wantErr: "port 0"},
		{name: "reeve", service: serviceid.Reeve, port: 9000, wantErr: "reserved"},
		{name: "steward", service: serviceid.Steward, port: 9000, wantErr: "reserved"},
		{name: "registry", service: serviceid.Registry, port: 9000, wantErr: "reserved"},
	}
	f := newLocalFixture(t)
	ctx := testContext(t)
	for _, a := range f.apis() {
		t.Run(a.name, func(t *testing.T) {
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					id, addr, err := a.api.RegisterEndpoint(ctx, tt.service, tt.port)
					if tt.wantErr != "" {
						checkLocalErr(t, a.name, err, codes.InvalidArgument, tt.wantErr)
						return
					}
					if err != nil {
						t.Fatalf("RegisterEndpoint(%q, %d): %v", tt.service, tt.port, err)
					}
					if diff := cmp.Diff([]string{tt.wantID, tt.wantAddr}, []string{id, addr}); diff != "" {
						t.Errorf("RegisterEndpoint(%q, %d) (-want +got):\n%s", tt.service, tt.port, diff)
					}
				})
			}
		})
	}
	f.r.mu.RLock()
	got := f.r.endpoints
	f.r.mu.RUnlock()
	if diff := cmp.Diff(map[string]uint16{"ledger": 9001, "a-1": 1}, got); diff != "" {
		t.Errorf("registered endpoints (-want +got):\n%s", diff)
	}
}

// TestRegisterEndpointPortRange: the socket's port field is wider than a
// port.
func TestRegisterEndpointPortRange(t *testing.T) {
	f := newLocalFixture(t)
	conn, err := grpc.NewClient("unix:"+f.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	api := reevepb.NewLocalReeveClient(conn)
	for _, port := range []uint32{65536, 1 << 31} {
		_, err := api.RegisterEndpoint(testContext(t), &reevepb.RegisterEndpointRequest{Service: "ledger", Port: port})
		checkLocalErr(t, "socket", err, codes.InvalidArgument, "out of range")
	}
	resp, err := api.RegisterEndpoint(testContext(t), &reevepb.RegisterEndpointRequest{Service: "ledger", Port: 65535})
	if err != nil || resp.GetAddress() != "203.0.113.2:65535" {
		t.Errorf("RegisterEndpoint(ledger, 65535) = %v, %v; want address 203.0.113.2:65535", resp, err)
	}
}

func TestRegisterClient(t *testing.T) {
	tests := []struct {
		name, service string
		wantID        string
		wantErr       string
	}{
		{name: "valid", service: "billing", wantID: testBillingID},
		{name: "again", service: "billing", wantID: testBillingID},
		{name: "fabric-admin", service: serviceid.FabricAdmin, wantID: serviceid.ID(serviceid.FabricAdmin, testNode)},
		{name: "empty name", service: "", wantErr: `service name ""`},
		{name: "uppercase", service: "Billing", wantErr: `service name "Billing"`},
		{name: "space", service: "bill ing", wantErr: `service name "bill ing"`},
		{name: "reeve", service: serviceid.Reeve, wantErr: "reserved"},
		{name: "steward", service: serviceid.Steward, wantErr: "reserved"},
		{name: "registry", service: serviceid.Registry, wantErr: "reserved"},
	}
	f := newLocalFixture(t)
	ctx := testContext(t)
	reeveKey, _ := f.r.PubKey(serviceid.Reeve)
	var billingKey ed25519.PublicKey
	for _, a := range f.apis() {
		t.Run(a.name, func(t *testing.T) {
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					id, err := a.api.RegisterClient(ctx, tt.service)
					if a.name == "socket" && tt.service == serviceid.FabricAdmin {
						// fabricd registers the coordinator's fabric-admin in process;
						// services on the socket may not.
						checkLocalErr(t, a.name, err, codes.PermissionDenied, "coordinator's own client")
						return
					}
					if tt.wantErr != "" {
						checkLocalErr(t, a.name, err, codes.InvalidArgument, tt.wantErr)
						return
					}
					if err != nil || id != tt.wantID {
						t.Fatalf("RegisterClient(%q) = %q, %v; want %q", tt.service, id, err, tt.wantID)
					}
				})
			}
			// Registering again keeps the key.
			key, ok := f.r.PubKey("billing")
			if !ok {
				t.Fatal("billing has no key")
			}
			if billingKey != nil && !billingKey.Equal(key) {
				t.Error("registering billing again changed its key")
			}
			billingKey = key
		})
	}
	if key, _ := f.r.PubKey(serviceid.Reeve); !key.Equal(reeveKey) {
		t.Error("the reeve's key changed")
	}
	for _, service := range []string{serviceid.Steward, serviceid.Registry} {
		if _, ok := f.r.PubKey(service); ok {
			t.Errorf("a %s client was made", service)
		}
	}
}

// checkLocalErr checks an error of the local API: its message, and over the
// socket its code.
func checkLocalErr(tb testing.TB, api string, err error, code codes.Code, substr string) {
	tb.Helper()
	if err == nil || !strings.Contains(err.Error(), substr) {
		tb.Fatalf("error %v, want one containing %q", err, substr)
	}
	if api == "socket" && status.Code(err) != code {
		tb.Errorf("code %v, want %v (%v)", status.Code(err), code, err)
	}
}

// newViewFixture is a local fixture whose reeve has the clients of testView
// and has applied it.
func newViewFixture(tb testing.TB) *localFixture {
	tb.Helper()
	f := newLocalFixture(tb)
	ctx := testContext(tb)
	for _, service := range []string{serviceid.Pastiche, "billing", "audit"} {
		if _, err := f.r.RegisterClient(ctx, service); err != nil {
			tb.Fatal(err)
		}
	}
	if err := f.r.ApplyView(ctx, 3, update.ViewUpdate{Kind: update.ViewFull, Full: testView()}); err != nil {
		tb.Fatal(err)
	}
	return f
}

func TestCatalogAndEndpointsUp(t *testing.T) {
	pastiche := func(node, addr string) Endpoint {
		return Endpoint{ID: serviceid.ID(serviceid.Pastiche, node), Service: serviceid.Pastiche, Address: addr}
	}
	tests := []struct {
		name, client string
		wantCatalog  []string
		wantUp       map[string][]Endpoint // service -> endpoints
		wantErr      string
	}{
		{
			name: "pastiche", client: testPasticheID, wantCatalog: []string{serviceid.Pastiche},
			wantUp: map[string][]Endpoint{
				serviceid.Pastiche: {pastiche("n2", "203.0.113.3:7450"), pastiche("n3", "203.0.113.4:7450")},
				"ledger":           nil,
				serviceid.Steward:  nil,
			},
		},
		{
			name: "billing", client: testBillingID, wantCatalog: []string{"ledger"},
			wantUp: map[string][]Endpoint{
				"ledger":           {{ID: testLedger2ID, Service: "ledger", Address: "203.0.113.3:9000"}},
				serviceid.Pastiche: nil,
			},
		},
		{
			name: "reeve", client: testReeveID, wantCatalog: []string{serviceid.Steward},
			wantUp: map[string][]Endpoint{
				serviceid.Steward: {{ID: testStewardID, Service: serviceid.Steward, Address: "203.0.113.1:7446"}},
			},
		},
		{
			name: "local client the view does not mention", client: serviceid.ID("audit", testNode),
			wantUp: map[string][]Endpoint{serviceid.Pastiche: nil},
		},
		{name: "client of another node", client: testPastiche2ID, wantErr: "not a client registered on this peer"},
		{name: "unregistered local client", client: serviceid.ID("ghost", testNode), wantErr: "not a client registered on this peer"},
		{name: "not an id", client: "pastiche", wantErr: "want <service>@<node>"},
	}
	f := newViewFixture(t)
	ctx := testContext(t)
	for _, a := range f.apis() {
		t.Run(a.name, func(t *testing.T) {
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					catalog, err := a.api.Catalog(ctx, tt.client)
					if tt.wantErr != "" {
						checkLocalErr(t, a.name, err, codes.InvalidArgument, tt.wantErr)
						_, err := a.api.EndpointsUp(ctx, tt.client, serviceid.Pastiche)
						checkLocalErr(t, a.name, err, codes.InvalidArgument, tt.wantErr)
						return
					}
					if err != nil {
						t.Fatal(err)
					}
					if diff := cmp.Diff(tt.wantCatalog, catalog, equateEmpty); diff != "" {
						t.Errorf("Catalog(%s) (-want +got):\n%s", tt.client, diff)
					}
					for _, service := range sortedKeys(tt.wantUp) {
						eps, err := a.api.EndpointsUp(ctx, tt.client, service)
						if err != nil {
							t.Fatal(err)
						}
						if diff := cmp.Diff(tt.wantUp[service], eps, equateEmpty); diff != "" {
							t.Errorf("EndpointsUp(%s, %s) (-want +got):\n%s", tt.client, service, diff)
						}
					}
				})
			}
		})
	}
}

func TestSign(t *testing.T) {
	f := newViewFixture(t)
	ctx := testContext(t)
	data := []byte("(request-target): post /x\ndate: now")
	tests := []struct {
		name, keyID string
		service     string // whose key signs
		wantErr     string
	}{
		{name: "pastiche", keyID: testPasticheID, service: serviceid.Pastiche},
		{name: "billing", keyID: testBillingID, service: "billing"},
		{name: "unregistered local client", keyID: serviceid.ID("ghost", testNode), wantErr: "not a client registered on this peer"},
		{name: "client of another node", keyID: testPastiche2ID, wantErr: "not a client registered on this peer"},
		{name: "service name only", keyID: serviceid.Pastiche, wantErr: "want <service>@<node>"},
		{name: "empty", keyID: "", wantErr: "want <service>@<node>"},
		{name: "empty node", keyID: "pastiche@", wantErr: "empty node name"},
	}
	for _, a := range f.apis() {
		t.Run(a.name, func(t *testing.T) {
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					sig, err := a.api.Sign(ctx, tt.keyID, data)
					if tt.wantErr != "" {
						checkLocalErr(t, a.name, err, codes.PermissionDenied, tt.wantErr)
						if sig != nil {
							t.Errorf("a refused Sign returned signature %x", sig)
						}
						return
					}
					if err != nil {
						t.Fatal(err)
					}
					key, _ := f.r.PubKey(tt.service)
					if !ed25519.Verify(key, data, sig) {
						t.Errorf("the signature of %s does not verify with its key", tt.keyID)
					}
				})
			}
		})
	}
}

// TestLookup checks every pair of a local endpoint and a client: only the
// whitelisted pairs give a key, and it is the whitelisted key.
func TestLookup(t *testing.T) {
	f := newViewFixture(t)
	endpoints := []string{testPasticheID, testLedgerID, testReeveID, testBillingID}
	clients := map[string]ed25519.PublicKey{
		testPastiche2ID: pub(testPastiche2Key), testPastiche3ID: pub(testPastiche3Key),
		testBilling2ID: pub(testBilling2Key), testAuditID: pub(testAuditKey), testRegistryID: pub(testCoordKey),
		testPasticheID: nil, testReeveID: nil, "stranger@n9": nil, "Bad": nil,
	}
	// want is endpoint -> client -> key (absent: refused).
	want := map[string]map[string]ed25519.PublicKey{
		testPasticheID: {testPastiche2ID: pub(testPastiche2Key), testPastiche3ID: pub(testPastiche3Key)},
		testLedgerID:   {testBilling2ID: pub(testBilling2Key)},
		testReeveID:    {testRegistryID: pub(testCoordKey), testAuditID: pub(testAuditKey)},
	}
	for _, a := range f.apis() {
		t.Run(a.name, func(t *testing.T) {
			for _, endpoint := range endpoints {
				got := map[string]ed25519.PublicKey{}
				for _, client := range sortedKeys(clients) {
					key, err := a.api.Lookup(endpoint, client)
					key2, err2 := a.api.Whitelist(endpoint).Lookup(client)
					if !key.Equal(key2) || (err == nil) != (err2 == nil) {
						t.Errorf("Lookup(%s, %s) = %x, %v but the whitelist says %x, %v", endpoint, client, key, err, key2, err2)
					}
					switch {
					case err == nil:
						got[client] = key
					case clients[client] != nil && !errors.Is(err, httpsig.ErrNotWhitelisted):
						t.Errorf("Lookup(%s, %s): %v, want ErrNotWhitelisted (a known client)", endpoint, client, err)
					case clients[client] == nil && !errors.Is(err, httpsig.ErrUnknownKey):
						t.Errorf("Lookup(%s, %s): %v, want ErrUnknownKey", endpoint, client, err)
					}
				}
				if diff := cmp.Diff(want[endpoint], got, equateEmpty); diff != "" {
					t.Errorf("keys given for %s (-want +got):\n%s", endpoint, diff)
				}
			}
		})
	}
}

// TestLookupBeforeView: before any view, the reeve trusts only the
// registry's callback, with the coordinator key it was given at activation.
func TestLookupBeforeView(t *testing.T) {
	f := newLocalFixture(t)
	for _, a := range f.apis() {
		t.Run(a.name, func(t *testing.T) {
			key, err := a.api.Lookup(testReeveID, testRegistryID)
			if err != nil || !key.Equal(pub(testCoordKey)) {
				t.Errorf("Lookup(reeve, registry) = %x, %v; want the coordinator's key", key, err)
			}
			for _, pair := range [][2]string{
				{testPasticheID, testRegistryID},
				{testReeveID, serviceid.ID(serviceid.Registry, "n2")},
				{testReeveID, testPastiche2ID},
				{serviceid.ID(serviceid.Reeve, "n2"), testRegistryID},
			} {
				if key, err := a.api.Lookup(pair[0], pair[1]); !errors.Is(err, httpsig.ErrUnknownKey) {
					t.Errorf("Lookup(%s, %s) = %x, %v; want ErrUnknownKey", pair[0], pair[1], key, err)
				}
			}
		})
	}
}

// TestServicesPerPeerBounded: a peer has at most serviceid.MaxPerPeer
// endpoints (its reeve's own among them) and as many clients; registering
// one already there is still fine.
func TestServicesPerPeerBounded(t *testing.T) {
	f := newLocalFixture(t)
	conn, err := grpc.NewClient("unix:"+f.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	api := reevepb.NewLocalReeveClient(conn)
	ctx := testContext(t)
	for i := range serviceid.MaxPerPeer - 1 {
		if _, err := api.RegisterEndpoint(ctx, &reevepb.RegisterEndpointRequest{Service: fmt.Sprintf("svc%d", i), Port: uint32(8000 + i)}); err != nil {
			t.Fatalf("endpoint %d: %v", i, err)
		}
	}
	_, err = api.RegisterEndpoint(ctx, &reevepb.RegisterEndpointRequest{Service: "onemore", Port: 9000})
	checkLocalErr(t, "socket", err, codes.InvalidArgument, "endpoint onemore: this peer has 64 endpoints, the most a peer may have")
	if _, err := api.RegisterEndpoint(ctx, &reevepb.RegisterEndpointRequest{Service: "svc3", Port: 8003}); err != nil {
		t.Errorf("an endpoint registered again: %v", err)
	}
	for i := 0; ; i++ {
		_, err := api.RegisterClient(ctx, &reevepb.RegisterClientRequest{Service: fmt.Sprintf("svc%d", i)})
		if err != nil {
			checkLocalErr(t, "socket", err, codes.InvalidArgument, "this peer has 64 clients, the most a peer may have")
			break
		}
		if i > serviceid.MaxPerPeer {
			t.Fatalf("%d clients registered", i)
		}
	}
}

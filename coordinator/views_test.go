package coordinator_test

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"net/netip"
	"sync"
	"testing"

	"github.com/fabricmesh/fabric/coordinator"
	"github.com/fabricmesh/fabric/coordinator/steward"
	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/rules"
	"github.com/fabricmesh/fabric/internal/serviceid"
	"github.com/fabricmesh/fabric/internal/view"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

const testRules = `services: [billing, ledger]
rules:
  - {client: pastiche, service: pastiche, scope: horde}
  - {client: billing, service: ledger, scope: cluster}
`

// viewsFixture is a small cluster: the coordinator (registered, with the
// fabric-admin client), an admin, n1 and n2 in horde a and n3 in horde b
// (registered, with services), n4 in horde a (active, not registered) and
// n5 (pending).
type viewsFixture struct {
	*cluster
	rules   rules.Rules
	views   *coordinator.Views
	reeves  map[string]ed25519.PublicKey // node -> reeve key
	clients map[string]ed25519.PublicKey // client ID -> key
	pending netip.Addr
}

func newViewsFixture(tb testing.TB) *viewsFixture {
	tb.Helper()
	c := newCluster(tb, [2]string{"n1", "a"}, [2]string{"n2", "a"}, [2]string{"n3", "b"}, [2]string{"n4", "a"})
	c.nodes[testCoordinator] = testNode{name: testCoordinator, vpnIP: c.coordIP}
	rules, err := rules.Parse("rules.yaml", []byte(testRules))
	if err != nil {
		tb.Fatal(err)
	}
	f := &viewsFixture{cluster: c, rules: rules, reeves: map[string]ed25519.PublicKey{}, clients: map[string]ed25519.PublicKey{}}
	p, err := c.reg.Reserve("192.0.2.99:7443", "n5", nil, false)
	if err != nil {
		tb.Fatal(err)
	}
	f.pending = p.VPNIP
	services := map[string]records.Services{
		testCoordinator: {Clients: []records.ServiceClient{f.client("fabric-admin@coord")}},
		"n1": {
			Endpoints: []records.ServiceEndpoint{{Service: "pastiche", Port: 7450}},
			Clients:   []records.ServiceClient{f.client("pastiche@n1")},
		},
		"n2": {
			Endpoints: []records.ServiceEndpoint{{Service: "pastiche", Port: 7450}, {Service: "ledger", Port: 9000}},
			Clients:   []records.ServiceClient{f.client("pastiche@n2")},
		},
		"n3": {
			Endpoints: []records.ServiceEndpoint{{Service: "pastiche", Port: 7450}},
			Clients:   []records.ServiceClient{f.client("pastiche@n3"), f.client("billing@n3")},
		},
	}
	for _, name := range []string{testCoordinator, "n1", "n2", "n3"} {
		f.reeves[name] = pub(newKey())
		ip := c.nodes[name].vpnIP
		if _, err := c.reg.SetRegistration(ip, f.reeves[name], ""); err != nil {
			tb.Fatal(err)
		}
		if _, err := c.reg.SetServices(ip, services[name]); err != nil {
			tb.Fatal(err)
		}
	}
	f.views = coordinator.NewViews(c.reg, rules)
	f.views.MinInterval = 0
	return f
}

// client makes a key for the client ID and returns its record.
func (f *viewsFixture) client(id string) records.ServiceClient {
	service, _, _ := serviceid.Parse(id)
	f.clients[id] = pub(newKey())
	return records.ServiceClient{Service: service, PubKey: f.clients[id]}
}

// addr is the address of port on the named peer.
func (f *viewsFixture) addr(name string, port uint16) string {
	return netip.AddrPortFrom(f.nodes[name].vpnIP, port).String()
}

// records are the steward records the fixture's registry stands for, the
// built-in ones included, written out independently of Views.
func (f *viewsFixture) records() ([]steward.Node, []steward.Endpoint, []steward.Client) {
	nodes := []steward.Node{{Name: testCoordinator, VPNIP: f.coordIP}}
	for _, name := range []string{"n1", "n2", "n3", "n4"} {
		n := f.nodes[name]
		nodes = append(nodes, steward.Node{Name: name, Horde: n.horde, VPNIP: n.vpnIP})
	}
	endpoints := []steward.Endpoint{{Service: "steward", Node: testCoordinator, Port: serviceid.StewardPort}}
	clients := []steward.Client{{Service: "registry", Node: testCoordinator, PubKey: pub(f.coordKey)}}
	for _, name := range []string{testCoordinator, "n1", "n2", "n3"} {
		endpoints = append(endpoints, steward.Endpoint{Service: "reeve", Node: name, Port: serviceid.ReevePort})
		clients = append(clients, steward.Client{Service: "reeve", Node: name, PubKey: f.reeves[name]})
	}
	for _, n := range []string{"n1", "n2", "n3"} {
		endpoints = append(endpoints, steward.Endpoint{Service: "pastiche", Node: n, Port: 7450})
	}
	endpoints = append(endpoints, steward.Endpoint{Service: "ledger", Node: "n2", Port: 9000})
	for id, key := range f.clients {
		service, node, _ := serviceid.Parse(id)
		clients = append(clients, steward.Client{Service: service, Node: node, PubKey: key})
	}
	return nodes, endpoints, clients
}

// sortedView is a sorted view of the given entries.
func sortedView(wl []view.WhitelistEntry, eps []view.EndpointEntry, cat []view.CatalogEntry) view.View {
	v := view.View{Whitelist: wl, Endpoints: eps, Catalog: cat}
	v.Sort()
	return v
}

var equateEmpty = cmpopts.EquateEmpty()

// TestViews checks every peer's view against the steward's rules applied to
// the records, and two views entry by entry.
func TestViews(t *testing.T) {
	f := newViewsFixture(t)
	ctx := testContext(t)
	nodes, eps, cls := f.records()
	want := steward.Views(f.rules, nodes, eps, cls)
	want["n1"] = sortedView(
		[]view.WhitelistEntry{
			{Endpoint: "pastiche@n1", Client: "pastiche@n2", PubKey: f.clients["pastiche@n2"]},
			{Endpoint: "pastiche@n1", Client: "fabric-admin@coord", PubKey: f.clients["fabric-admin@coord"]},
			{Endpoint: "reeve@n1", Client: "registry@coord", PubKey: pub(f.coordKey)},
		},
		[]view.EndpointEntry{
			{Client: "pastiche@n1", Service: "pastiche", Endpoint: "pastiche@n2", Address: f.addr("n2", 7450)},
			{Client: "reeve@n1", Service: "steward", Endpoint: "steward@coord", Address: f.addr(testCoordinator, 7446)},
		},
		[]view.CatalogEntry{{Client: "pastiche@n1", Service: "pastiche"}, {Client: "reeve@n1", Service: "steward"}},
	)
	want["n3"] = sortedView(
		[]view.WhitelistEntry{
			{Endpoint: "pastiche@n3", Client: "fabric-admin@coord", PubKey: f.clients["fabric-admin@coord"]},
			{Endpoint: "reeve@n3", Client: "registry@coord", PubKey: pub(f.coordKey)},
		},
		[]view.EndpointEntry{
			{Client: "billing@n3", Service: "ledger", Endpoint: "ledger@n2", Address: f.addr("n2", 9000)},
			{Client: "reeve@n3", Service: "steward", Endpoint: "steward@coord", Address: f.addr(testCoordinator, 7446)},
		},
		[]view.CatalogEntry{
			{Client: "billing@n3", Service: "ledger"}, {Client: "pastiche@n3", Service: "pastiche"}, {Client: "reeve@n3", Service: "steward"},
		},
	)
	want["n4"] = view.View{} // active, not registered: nothing of its own
	rev := f.reg.Revision()
	for _, name := range []string{testCoordinator, "n1", "n2", "n3", "n4"} {
		t.Run(name, func(t *testing.T) {
			got, gotRev, ok, err := f.views.For(ctx, f.nodes[name].vpnIP)
			if err != nil || !ok || gotRev != rev {
				t.Fatalf("For(%s) = rev %d, %v, %v; want rev %d, true", name, gotRev, ok, err, rev)
			}
			if diff := cmp.Diff(want[name], got, equateEmpty); diff != "" {
				t.Errorf("view of %s (-want +got):\n%s", name, diff)
			}
		})
	}
	for name, ip := range map[string]netip.Addr{"admin": f.adminIP, "pending": f.pending, "unknown": netip.MustParseAddr("203.0.113.250")} {
		t.Run(name, func(t *testing.T) {
			got, _, ok, err := f.views.For(ctx, ip)
			if err != nil || ok {
				t.Errorf("For(%s) = %v, %v; want not a peer with a view", ip, ok, err)
			}
			if diff := cmp.Diff(view.View{}, got, equateEmpty); diff != "" {
				t.Errorf("view of %s (-want +got):\n%s", name, diff)
			}
		})
	}
}

// TestViewsFollowChanges: views are recomputed at the registry's revision
// after each change.
func TestViewsFollowChanges(t *testing.T) {
	f := newViewsFixture(t)
	ctx := testContext(t)
	n2, n3 := f.nodes["n2"].vpnIP, f.nodes["n3"].vpnIP
	steps := []struct {
		name   string
		change func(t *testing.T)
		node   string
		check  func(t *testing.T, v view.View)
	}{
		{
			name: "n3 serves ledger too",
			change: func(t *testing.T) {
				s := f.reg.Services()[n3]
				s.Endpoints = append(s.Endpoints, records.ServiceEndpoint{Service: "ledger", Port: 9000})
				if _, err := f.reg.SetServices(n3, s); err != nil {
					t.Fatal(err)
				}
			},
			node: "n3",
			check: func(t *testing.T, v view.View) {
				want := []view.EndpointEntry{
					{Client: "billing@n3", Service: "ledger", Endpoint: "ledger@n2", Address: f.addr("n2", 9000)},
					{Client: "billing@n3", Service: "ledger", Endpoint: "ledger@n3", Address: f.addr("n3", 9000)},
				}
				if diff := cmp.Diff(want, endpointsOf(v, "billing@n3")); diff != "" {
					t.Errorf("billing@n3's endpoints (-want +got):\n%s", diff)
				}
			},
		},
		{
			name: "n2 loses its registration",
			change: func(t *testing.T) {
				if _, err := f.reg.SetRegistration(n2, nil, "the reeve at n2 did not sign the nonce"); err != nil {
					t.Fatal(err)
				}
			},
			node: "n1",
			check: func(t *testing.T, v view.View) {
				if got := endpointsOf(v, "pastiche@n1"); len(got) != 0 {
					t.Errorf("pastiche@n1 may still use %v", got)
				}
				for _, w := range v.Whitelist {
					if w.Client == "pastiche@n2" {
						t.Errorf("pastiche@n2 still whitelisted: %+v", w)
					}
				}
			},
		},
		{
			name:   "n2, unregistered, has an empty view",
			change: func(*testing.T) {},
			node:   "n2",
			check: func(t *testing.T, v view.View) {
				if diff := cmp.Diff(view.View{}, v, equateEmpty); diff != "" {
					t.Errorf("view (-want +got):\n%s", diff)
				}
			},
		},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			s.change(t)
			rev := f.reg.Revision()
			v, gotRev, ok, err := f.views.For(ctx, f.nodes[s.node].vpnIP)
			if err != nil || !ok || gotRev != rev {
				t.Fatalf("For(%s) = rev %d, %v, %v; want rev %d", s.node, gotRev, ok, err, rev)
			}
			s.check(t, v)
			if diff := cmp.Diff(f.rulesView(s.node), v, equateEmpty); diff != "" {
				t.Errorf("view differs from the rules' (-want +got):\n%s", diff)
			}
		})
	}
}

// rulesView is the view the rules give node from the registry's records as
// they are now.
func (f *viewsFixture) rulesView(node string) view.View {
	_, endpoints, clients := coordinator.NewViews(f.reg, f.rules).Records()
	nodes, _, _ := f.records()
	var active []steward.Node
	for _, n := range nodes {
		if p, ok := f.reg.Peer(n.VPNIP); ok && p.State == records.StateActive {
			active = append(active, n)
		}
	}
	return steward.View(f.rules, active, endpoints, clients, node)
}

func endpointsOf(v view.View, client string) []view.EndpointEntry {
	var out []view.EndpointEntry
	for _, e := range v.Endpoints {
		if e.Client == client {
			out = append(out, e)
		}
	}
	return out
}

// TestViewsRecords: Records lists the rules in force and every record,
// built-in ones included.
func TestViewsRecords(t *testing.T) {
	f := newViewsFixture(t)
	rules, endpoints, clients := f.views.Records()
	wantRules := []string{
		"reeve -> steward (cluster)", "registry -> reeve (cluster)", "fabric-admin -> pastiche (cluster)",
		"pastiche -> pastiche (horde)", "billing -> ledger (cluster)",
	}
	if diff := cmp.Diff(wantRules, rules); diff != "" {
		t.Errorf("rules (-want +got):\n%s", diff)
	}
	_, wantEndpoints, wantClients := f.records()
	sortEndpoints := cmpopts.SortSlices(func(a, b steward.Endpoint) bool { return a.ID() < b.ID() })
	sortClients := cmpopts.SortSlices(func(a, b steward.Client) bool { return a.ID() < b.ID() })
	if diff := cmp.Diff(wantEndpoints, endpoints, sortEndpoints); diff != "" {
		t.Errorf("endpoints (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantClients, clients, sortClients); diff != "" {
		t.Errorf("clients (-want +got):\n%s", diff)
	}
}

// TestViewsConcurrent: callers during changes each get views at least as
// new as the registry was when they called, computed together.
func TestViewsConcurrent(t *testing.T) {
	f := newViewsFixture(t)
	f.views.MinInterval = coordinator.NewViews(f.reg, f.rules).MinInterval // the default
	ctx := testContext(t)
	n1 := f.nodes["n1"].vpnIP
	var wg sync.WaitGroup
	errs := make(chan string, 100)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 5 {
				atLeast := f.reg.Revision()
				_, rev, ok, err := f.views.For(ctx, n1)
				if err != nil || !ok || rev < atLeast {
					errs <- fmt.Sprintf("For during changes = rev %d, %v, %v; want rev >= %d", rev, ok, err, atLeast)
					return
				}
			}
		}()
	}
	for i := range 5 {
		s := f.reg.Services()[n1]
		s.Endpoints = []records.ServiceEndpoint{{Service: "pastiche", Port: uint16(7450 + i + 1)}}
		if _, err := f.reg.SetServices(n1, s); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := f.reg.SetServices(n1, records.Services{}); err != nil {
		t.Fatal(err)
	}
	// A computation is due; a caller whose context has ended still gets
	// either the new views or its context's error, never stale views.
	if _, rev, _, err := f.views.For(cancelled, n1); err == nil && rev < f.reg.Revision() {
		t.Errorf("For returned revision %d, older than the registry's %d", rev, f.reg.Revision())
	}
}

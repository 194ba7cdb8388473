package steward

import (
	"bytes"
	"net/netip"

	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/rules"
	"github.com/fabricmesh/fabric/internal/serviceid"
	"github.com/fabricmesh/fabric/internal/view"
)

// Node is a node record: its unique name, its horde and its VPN IP.
type Node struct {
	Name  string
	Horde string
	VPNIP netip.Addr
}

// Endpoint is a service endpoint record: service Service listens on node
// Node at the node's VPN IP and Port.
type Endpoint struct {
	Service string
	Node    string
	Port    uint16
}

// ID returns the endpoint's ID, "<service>@<node>".
func (e Endpoint) ID() string { return serviceid.ID(e.Service, e.Node) }

// Client is a service client record: a client of service Service runs on
// node Node and signs its calls with the ed25519 key PubKey.
type Client struct {
	Service string
	Node    string
	PubKey  []byte
}

// ID returns the client's ID, "<service>@<node>", which is also its
// http-signature keyId.
func (c Client) ID() string { return serviceid.ID(c.Service, c.Node) }

// View computes the view of node from the records, following the rules.
// The whitelist of each endpoint on node lists the clients, anywhere, that
// some rule lets call it; each client on node gets the endpoints, anywhere,
// and the services that some rule lets it use. A client is never paired
// with the endpoint of its own service on its own node. Records on unknown
// nodes are ignored, clients without a public key are not whitelisted, and
// endpoints on nodes without a valid VPN IP get no address and so are not
// listed. When several records share a node name or ID, the last counts.
// The view of an unknown node is empty.
func View(r rules.Rules, nodes []Node, endpoints []Endpoint, clients []Client, node string) view.View {
	return NewIndex(r, nodes, endpoints, clients).View(node)
}

// Views computes the view of every node in nodes at once; it is cheaper
// than calling View for each node.
func Views(r rules.Rules, nodes []Node, endpoints []Endpoint, clients []Client) map[string]view.View {
	w := newWorld(r, nodes, endpoints, clients)
	views := make(map[string]view.View, len(w.nodes))
	for name := range w.nodes {
		views[name] = w.view(name)
	}
	return views
}

// Index holds records indexed once, to compute the views of many nodes
// one after the other without holding them all, as Views does. It is safe
// for concurrent use.
type Index struct{ w *world }

// NewIndex indexes the records, following the rules.
func NewIndex(r rules.Rules, nodes []Node, endpoints []Endpoint, clients []Client) *Index {
	return &Index{w: newWorld(r, nodes, endpoints, clients)}
}

// View computes the view of node, as View does.
func (x *Index) View(node string) view.View { return x.w.view(node) }

// world indexes the records on known nodes.
type world struct {
	byClient    map[string][]rules.Rule // by client service
	byService   map[string][]rules.Rule // by endpoint service
	nodes       map[string]Node
	endpointsOn map[string][]Endpoint // by node
	endpointsOf map[string][]Endpoint // by service
	clientsOn   map[string][]Client   // by node
	clientsOf   map[string][]Client   // by service
}

func newWorld(r rules.Rules, nodes []Node, endpoints []Endpoint, clients []Client) *world {
	w := &world{
		byClient: r.ByClient(), byService: r.ByService(),
		nodes:       make(map[string]Node, len(nodes)),
		endpointsOn: make(map[string][]Endpoint), endpointsOf: make(map[string][]Endpoint),
		clientsOn: make(map[string][]Client), clientsOf: make(map[string][]Client),
	}
	for _, n := range nodes {
		w.nodes[n.Name] = n
	}
	for _, e := range lastByID(endpoints, func(e Endpoint) recordKey { return recordKey{e.Service, e.Node} }) {
		if _, ok := w.nodes[e.Node]; ok {
			w.endpointsOn[e.Node] = append(w.endpointsOn[e.Node], e)
			w.endpointsOf[e.Service] = append(w.endpointsOf[e.Service], e)
		}
	}
	for _, c := range lastByID(clients, func(c Client) recordKey { return recordKey{c.Service, c.Node} }) {
		if _, ok := w.nodes[c.Node]; ok {
			w.clientsOn[c.Node] = append(w.clientsOn[c.Node], c)
			w.clientsOf[c.Service] = append(w.clientsOf[c.Service], c)
		}
	}
	return w
}

// recordKey is what identifies an endpoint or client record.
type recordKey struct{ service, node string }

// lastByID keeps the last record of each ID, in input order.
func lastByID[T any](records []T, id func(T) recordKey) []T {
	last := make(map[recordKey]int, len(records))
	for i, rec := range records {
		last[id(rec)] = i
	}
	out := make([]T, 0, len(last))
	for i, rec := range records {
		if last[id(rec)] == i {
			out = append(out, rec)
		}
	}
	return out
}

func (w *world) view(node string) view.View {
	var v view.View
	if _, ok := w.nodes[node]; !ok {
		return v
	}
	for _, e := range w.endpointsOn[node] {
		v.Whitelist = w.whitelist(v.Whitelist, e)
	}
	for _, c := range w.clientsOn[node] {
		v.Endpoints, v.Catalog = w.uses(v.Endpoints, v.Catalog, c)
	}
	v.Sort()
	return v
}

// whitelist appends the clients that may call e.
func (w *world) whitelist(out []view.WhitelistEntry, e Endpoint) []view.WhitelistEntry {
	for _, rule := range w.byService[e.Service] {
		for _, c := range w.clientsOf[rule.Client] {
			if len(c.PubKey) == 0 || !w.allowed(rule.Scope, c, e) {
				continue
			}
			out = append(out, view.WhitelistEntry{Endpoint: e.ID(), Client: c.ID(), PubKey: bytes.Clone(c.PubKey)})
		}
	}
	return out
}

// uses appends the endpoints and services that c may use.
func (w *world) uses(eps []view.EndpointEntry, cat []view.CatalogEntry, c Client) ([]view.EndpointEntry, []view.CatalogEntry) {
	for _, rule := range w.byClient[c.Service] {
		cat = append(cat, view.CatalogEntry{Client: c.ID(), Service: rule.Service})
		for _, e := range w.endpointsOf[rule.Service] {
			ip := w.nodes[e.Node].VPNIP
			if !ip.IsValid() || !w.allowed(rule.Scope, c, e) {
				continue
			}
			eps = append(eps, view.EndpointEntry{
				Client: c.ID(), Service: e.Service, Endpoint: e.ID(),
				Address: netip.AddrPortFrom(ip, e.Port).String(),
			})
		}
	}
	return eps, cat
}

// allowed reports whether a rule of scope s pairs c with e.
func (w *world) allowed(s rules.Scope, c Client, e Endpoint) bool {
	if c.Service == e.Service && c.Node == e.Node {
		return false
	}
	switch s {
	case rules.ScopeCluster:
		return true
	case rules.ScopeHorde:
		h := w.nodes[c.Node].Horde
		return h != "" && h == w.nodes[e.Node].Horde
	}
	return false
}

// Member turns a peer's records into what views are computed from: the
// node, and its endpoints and clients, the built-in ones included (every
// registered peer has its reeve's endpoint and client; the coordinator has
// the steward endpoint and the registry client, whose key is its signing
// key). ok is false for a peer that has no part in views: one that is not
// active, and admins.
func Member(p records.Peer, s records.Services) (n Node, endpoints []Endpoint, clients []Client, ok bool) {
	if p.State != records.StateActive || p.Role == records.RoleAdmin {
		return Node{}, nil, nil, false
	}
	n = Node{Name: p.Name, Horde: p.Horde, VPNIP: p.VPNIP}
	if p.Role == records.RoleCoordinator {
		endpoints = append(endpoints, Endpoint{Service: serviceid.Steward, Node: p.Name, Port: serviceid.StewardPort})
		clients = append(clients, Client{Service: serviceid.Registry, Node: p.Name, PubKey: p.SigningPubKey})
	}
	if !p.Registered {
		return n, endpoints, clients, true
	}
	endpoints = append(endpoints, Endpoint{Service: serviceid.Reeve, Node: p.Name, Port: serviceid.ReevePort})
	clients = append(clients, Client{Service: serviceid.Reeve, Node: p.Name, PubKey: p.ReevePubKey})
	for _, e := range s.Endpoints {
		endpoints = append(endpoints, Endpoint{Service: e.Service, Node: p.Name, Port: e.Port})
	}
	for _, c := range s.Clients {
		clients = append(clients, Client{Service: c.Service, Node: p.Name, PubKey: c.PubKey})
	}
	return n, endpoints, clients, true
}

// Records turns every peer's records into the records views are computed
// from (see Member), in the order of peers.
func Records(peers []records.Peer, services map[netip.Addr]records.Services) (nodes []Node, endpoints []Endpoint, clients []Client) {
	for _, p := range peers {
		n, eps, cls, ok := Member(p, services[p.VPNIP])
		if !ok {
			continue
		}
		nodes = append(nodes, n)
		endpoints = append(endpoints, eps...)
		clients = append(clients, cls...)
	}
	return nodes, endpoints, clients
}

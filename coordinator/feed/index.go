package feed

import (
	"bytes"
	"net/netip"
	"slices"

	"github.com/fabricmesh/fabric/coordinator/steward"
	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/rules"
	"github.com/fabricmesh/fabric/internal/view"
)

// member is a node as views see it: its name, horde and VPN IP, and its
// endpoints and clients (built-in ones included, see steward.Member).
type member struct {
	node      steward.Node
	endpoints []steward.Endpoint
	clients   []steward.Client
	// What every view entry of the member repeats, made once: the IDs of
	// its endpoints and clients (by index), its endpoints' addresses.
	endpointIDs, endpointAddrs, clientIDs []string
}

// memberOf is p's member, or nil when p has no part in views.
func memberOf(p records.Peer, s records.Services) *member {
	n, eps, cls, ok := steward.Member(p, s)
	if !ok {
		return nil
	}
	m := &member{node: n, endpoints: eps, clients: cls,
		endpointIDs: make([]string, len(eps)), endpointAddrs: make([]string, len(eps)), clientIDs: make([]string, len(cls))}
	for i, e := range eps {
		m.endpointIDs[i] = e.ID()
		if n.VPNIP.IsValid() {
			m.endpointAddrs[i] = netip.AddrPortFrom(n.VPNIP, e.Port).String()
		}
	}
	for i, c := range cls {
		m.clientIDs[i] = c.ID()
	}
	return m
}

// equal compares two members (either may be nil).
func (m *member) equal(o *member) bool {
	if m == nil || o == nil {
		return m == o
	}
	return m.node == o.node && slices.Equal(m.endpoints, o.endpoints) &&
		slices.EqualFunc(m.clients, o.clients, func(a, b steward.Client) bool {
			return a.Service == b.Service && a.Node == b.Node && bytes.Equal(a.PubKey, b.PubKey)
		})
}

// index finds the members holding a service, by horde.
type index struct {
	members   map[string]*member                // by name
	clients   map[string]map[string]sortedNames // service -> horde -> names
	endpoints map[string]map[string]sortedNames // service -> horde -> names
}

// sortedNames is a set of node names kept as a sorted list, so that views
// can visit the members they pair with in name order (see eachName).
type sortedNames []string

func newIndex() index {
	return index{members: map[string]*member{}, clients: map[string]map[string]sortedNames{},
		endpoints: map[string]map[string]sortedNames{}}
}

func (x index) put(m *member) {
	if m == nil {
		return
	}
	x.members[m.node.Name] = m
	for _, e := range m.endpoints {
		add(x.endpoints, e.Service, m.node.Horde, m.node.Name)
	}
	for _, c := range m.clients {
		add(x.clients, c.Service, m.node.Horde, m.node.Name)
	}
}

func (x index) remove(m *member) {
	if m == nil || !m.equal(x.members[m.node.Name]) {
		return // not indexed (another member holds the name)
	}
	delete(x.members, m.node.Name)
	for _, e := range m.endpoints {
		del(x.endpoints, e.Service, m.node.Horde, m.node.Name)
	}
	for _, c := range m.clients {
		del(x.clients, c.Service, m.node.Horde, m.node.Name)
	}
}

func add(m map[string]map[string]sortedNames, service, horde, name string) {
	byHorde := m[service]
	if byHorde == nil {
		byHorde = map[string]sortedNames{}
		m[service] = byHorde
	}
	names := byHorde[horde]
	if i, found := slices.BinarySearch(names, name); !found {
		byHorde[horde] = slices.Insert(names, i, name)
	}
}

func del(m map[string]map[string]sortedNames, service, horde, name string) {
	names := m[service][horde]
	i, found := slices.BinarySearch(names, name)
	if !found {
		return
	}
	names = slices.Delete(names, i, i+1)
	if len(names) > 0 {
		m[service][horde] = names
		return
	}
	delete(m[service], horde)
	if len(m[service]) == 0 {
		delete(m, service)
	}
}

// holderNames returns the sorted name lists of the members that hold
// service in idx and that a rule of scope pairs with a node of horde (one
// list per horde; a name is in one list at most).
func holderNames(idx map[string]map[string]sortedNames, service string, scope rules.Scope, horde string, lists []sortedNames) []sortedNames {
	switch scope {
	case rules.ScopeCluster:
		for _, names := range idx[service] {
			lists = append(lists, names)
		}
	case rules.ScopeHorde:
		if names := idx[service][horde]; horde != "" && len(names) > 0 {
			lists = append(lists, names)
		}
	}
	return lists
}

// holders calls fn for every member that holds service in idx and that a
// rule of scope pairs with a node of horde.
func (x index) holders(idx map[string]map[string]sortedNames, service string, scope rules.Scope, horde string, fn func(*member)) {
	var buf [4]sortedNames
	for _, names := range holderNames(idx, service, scope, horde, buf[:0]) {
		for _, name := range names {
			fn(x.members[name])
		}
	}
}

// eachName calls fn for every name of the sorted lists, once, in order: a
// k-way merge, which keeps fullView's entries nearly sorted already and
// needs no set of the names visited.
func eachName(lists []sortedNames, fn func(string)) {
	lists = slices.DeleteFunc(lists, func(l sortedNames) bool { return len(l) == 0 })
	for len(lists) > 0 {
		next := lists[0][0]
		for _, l := range lists[1:] {
			if l[0] < next {
				next = l[0]
			}
		}
		fn(next)
		for i := range lists {
			if lists[i][0] == next {
				lists[i] = lists[i][1:]
			}
		}
		lists = slices.DeleteFunc(lists, func(l sortedNames) bool { return len(l) == 0 })
	}
}

// allowed reports whether a rule of scope s pairs client c with endpoint e.
func allowed(s rules.Scope, c steward.Client, cHorde string, e steward.Endpoint, eHorde string) bool {
	if c.Service == e.Service && c.Node == e.Node {
		return false
	}
	switch s {
	case rules.ScopeCluster:
		return true
	case rules.ScopeHorde:
		return cHorde != "" && cHorde == eHorde
	}
	return false
}

// related reports whether a rule pairs a record of a with a record of b,
// that is whether a's view has a slice for b.
func (f *Feed) related(a, b *member) bool {
	for _, e := range a.endpoints {
		for _, r := range f.byService[e.Service] {
			for _, c := range b.clients {
				if c.Service == r.Client && allowed(r.Scope, c, b.node.Horde, e, a.node.Horde) {
					return true
				}
			}
		}
	}
	for _, c := range a.clients {
		for _, r := range f.byClient[c.Service] {
			for _, e := range b.endpoints {
				if e.Service == r.Service && allowed(r.Scope, c, a.node.Horde, e, b.node.Horde) {
					return true
				}
			}
		}
	}
	return false
}

// relatedTo calls fn for every member a rule pairs with m (every a for
// which related(a, m) holds; m itself may be among them).
func (f *Feed) relatedTo(m *member, fn func(*member)) {
	if m == nil {
		return
	}
	visit := func(o *member) {
		if o != nil {
			fn(o)
		}
	}
	for _, e := range m.endpoints {
		for _, r := range f.byService[e.Service] {
			f.index.holders(f.index.clients, r.Client, r.Scope, m.node.Horde, visit)
		}
	}
	for _, c := range m.clients {
		for _, r := range f.byClient[c.Service] {
			f.index.holders(f.index.endpoints, r.Service, r.Scope, m.node.Horde, visit)
		}
	}
}

// pairs calls the functions for the entries of a's view whose other side
// is b: whitelist entries for b's clients calling a's endpoints, endpoint
// entries for a's clients calling b's endpoints.
func (f *Feed) pairs(a, b *member, wl func(view.WhitelistEntry), ep func(view.EndpointEntry)) {
	for i, e := range a.endpoints {
		for _, r := range f.byService[e.Service] {
			for j, c := range b.clients {
				if c.Service == r.Client && len(c.PubKey) > 0 && allowed(r.Scope, c, b.node.Horde, e, a.node.Horde) {
					wl(view.WhitelistEntry{Endpoint: a.endpointIDs[i], Client: b.clientIDs[j], PubKey: c.PubKey})
				}
			}
		}
	}
	for i, c := range a.clients {
		for _, r := range f.byClient[c.Service] {
			for j, e := range b.endpoints {
				if e.Service == r.Service && b.node.VPNIP.IsValid() && allowed(r.Scope, c, a.node.Horde, e, b.node.Horde) {
					ep(view.EndpointEntry{Client: a.clientIDs[i], Service: e.Service, Endpoint: b.endpointIDs[j], Address: b.endpointAddrs[j]})
				}
			}
		}
	}
}

// slice is the slice of a's view for the node named name (b, nil when it
// is no member any more).
func (f *Feed) slice(a, b *member, name string) view.Slice {
	var v view.View
	if b != nil {
		f.pairs(a, b, func(e view.WhitelistEntry) { v.Whitelist = append(v.Whitelist, e) },
			func(e view.EndpointEntry) { v.Endpoints = append(v.Endpoints, e) })
	}
	v.Sort()
	return view.Slice{Node: name, Whitelist: v.Whitelist, Endpoints: v.Endpoints}
}

// fullView computes a's whole view from the index: the work is the size
// of the view, not of the cluster. It visits a and the members its rules
// pair it with in name order, so that the lists come out nearly sorted.
// Entries share public key bytes with the members, which are never
// modified.
func (f *Feed) fullView(a *member) view.View {
	lists := []sortedNames{{a.node.Name}}
	for _, e := range a.endpoints {
		for _, r := range f.byService[e.Service] {
			lists = holderNames(f.index.clients, r.Client, r.Scope, a.node.Horde, lists)
		}
	}
	var v view.View
	for i, c := range a.clients {
		for _, r := range f.byClient[c.Service] {
			v.Catalog = append(v.Catalog, view.CatalogEntry{Client: a.clientIDs[i], Service: r.Service})
			lists = holderNames(f.index.endpoints, r.Service, r.Scope, a.node.Horde, lists)
		}
	}
	n := 0 // members visited at most: each usually adds one entry of either kind
	for _, l := range lists {
		n += len(l)
	}
	v.Whitelist = make([]view.WhitelistEntry, 0, n)
	v.Endpoints = make([]view.EndpointEntry, 0, n)
	eachName(lists, func(name string) {
		b := f.index.members[name]
		if name == a.node.Name {
			b = a
		}
		if b == nil {
			return
		}
		f.pairs(a, b, func(e view.WhitelistEntry) { v.Whitelist = append(v.Whitelist, e) },
			func(e view.EndpointEntry) { v.Endpoints = append(v.Endpoints, e) })
	})
	v.Whitelist, v.Endpoints = nilIfEmpty(v.Whitelist), nilIfEmpty(v.Endpoints)
	v.Sort()
	return v
}

// nilIfEmpty keeps a view's empty lists nil, as view.View asks.
func nilIfEmpty[T any](s []T) []T {
	if len(s) == 0 {
		return nil
	}
	return s
}

func sortPeers(ps []records.Peer) {
	slices.SortFunc(ps, func(a, b records.Peer) int { return a.VPNIP.Compare(b.VPNIP) })
}

func sortAddrs(as []netip.Addr) {
	slices.SortFunc(as, func(a, b netip.Addr) int { return a.Compare(b) })
}

package vpnapi

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"sort"

	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/serviceid"
	"github.com/fabricmesh/fabric/internal/update"
	"github.com/fabricmesh/fabric/internal/view"
	"github.com/fabricmesh/fabric/vpnapi/vpnapipb"
)

// UpdateToProto encodes an update for the node named self.
func UpdateToProto(u update.Update, self string) (*vpnapipb.WatchUpdate, error) {
	out := &vpnapipb.WatchUpdate{Revision: u.Revision}
	switch u.Kind {
	case update.Unchanged:
		out.Kind = vpnapipb.UpdateKind_UNCHANGED
	case update.Delta:
		out.Kind = vpnapipb.UpdateKind_DELTA
	case update.Full:
		out.Kind = vpnapipb.UpdateKind_FULL
	case update.Removed:
		out.Kind = vpnapipb.UpdateKind_REMOVED
	default:
		return nil, fmt.Errorf("update of kind %v", u.Kind)
	}
	for _, p := range u.Peers {
		out.Peers = append(out.Peers, PeerToProto(p))
	}
	for _, ip := range u.RemovedPeers {
		out.RemovedPeers = append(out.RemovedPeers, ip.AsSlice())
	}
	v, err := viewToProto(u.View, self)
	if err != nil {
		return nil, err
	}
	out.View = v
	if u.HasSSHUsers {
		out.SshUsers = SSHUsersToProto(u.SSHUsers)
	}
	return out, nil
}

// UpdateFromProto decodes an update.
func UpdateFromProto(p *vpnapipb.WatchUpdate) (update.Update, error) {
	u := update.Update{Revision: p.GetRevision()}
	switch p.GetKind() {
	case vpnapipb.UpdateKind_UNCHANGED:
		u.Kind = update.Unchanged
	case vpnapipb.UpdateKind_DELTA:
		u.Kind = update.Delta
	case vpnapipb.UpdateKind_FULL:
		u.Kind = update.Full
	case vpnapipb.UpdateKind_REMOVED:
		u.Kind = update.Removed
	default:
		return update.Update{}, fmt.Errorf("update of unknown kind %v", p.GetKind())
	}
	for _, pp := range p.GetPeers() {
		peer, err := PeerFromProto(pp)
		if err != nil {
			return update.Update{}, err
		}
		u.Peers = append(u.Peers, peer)
	}
	for _, b := range p.GetRemovedPeers() {
		ip, ok := netip.AddrFromSlice(b)
		if !ok {
			return update.Update{}, fmt.Errorf("removed peer: %d bytes are no IP", len(b))
		}
		u.RemovedPeers = append(u.RemovedPeers, ip)
	}
	v, err := viewFromProto(p.GetView())
	if err != nil {
		return update.Update{}, err
	}
	u.View = v
	if users := p.GetSshUsers(); users != nil {
		u.HasSSHUsers, u.SSHUsers = true, SSHUsersFromProto(users)
	}
	return u, nil
}

var roles = map[records.Role]vpnapipb.Role{
	records.RoleCoordinator: vpnapipb.Role_COORDINATOR,
	records.RoleNode:        vpnapipb.Role_NODE,
	records.RoleAdmin:       vpnapipb.Role_ADMIN,
}

// PeerToProto encodes what a node's WireGuard needs of a peer record.
func PeerToProto(p records.Peer) *vpnapipb.Peer {
	out := &vpnapipb.Peer{Name: p.Name, Role: roles[p.Role], VpnIp: p.VPNIP.AsSlice(), WgPubKey: p.WGPubKey}
	if p.Role == records.RoleCoordinator {
		out.TlsPin, out.SigningPubKey = p.TLSPin, p.SigningPubKey
	}
	if ap, err := netip.ParseAddrPort(p.WGEndpoint); err == nil {
		out.WgEndpoint = binary.BigEndian.AppendUint16(ap.Addr().AsSlice(), ap.Port())
	}
	return out
}

// PeerFromProto decodes it: an active peer.
func PeerFromProto(p *vpnapipb.Peer) (records.Peer, error) {
	ip, ok := netip.AddrFromSlice(p.GetVpnIp())
	if !ok {
		return records.Peer{}, fmt.Errorf("peer %q: vpn ip of %d bytes", p.GetName(), len(p.GetVpnIp()))
	}
	out := records.Peer{Name: p.GetName(), VPNIP: ip, WGPubKey: p.GetWgPubKey(), State: records.StateActive}
	for r, pr := range roles {
		if pr == p.GetRole() {
			out.Role = r
		}
	}
	if out.Role == "" {
		return records.Peer{}, fmt.Errorf("peer %q: unknown role %v", p.GetName(), p.GetRole())
	}
	if out.Role == records.RoleCoordinator {
		// Only a coordinator is dialed and signs callbacks; a pin or a
		// signing key sent with another peer means nothing (PeerToProto
		// sends none).
		out.TLSPin, out.SigningPubKey = p.GetTlsPin(), p.GetSigningPubKey()
	}
	if ep := p.GetWgEndpoint(); len(ep) > 0 {
		if len(ep) != 6 && len(ep) != 18 {
			return records.Peer{}, fmt.Errorf("peer %q: wireguard endpoint of %d bytes", p.GetName(), len(ep))
		}
		addr, _ := netip.AddrFromSlice(ep[:len(ep)-2])
		out.WGEndpoint = netip.AddrPortFrom(addr, binary.BigEndian.Uint16(ep[len(ep)-2:])).String()
	}
	return out, nil
}

// viewToProto groups a view change by the other node of each entry.
func viewToProto(u update.ViewUpdate, self string) (*vpnapipb.View, error) {
	switch u.Kind {
	case update.ViewUnchanged:
		return nil, nil
	case update.ViewDelta:
		out := &vpnapipb.View{Node: self}
		for _, s := range u.Slices {
			ps, err := sliceToProto(s)
			if err != nil {
				return nil, err
			}
			out.Slices = append(out.Slices, ps)
		}
		return out, nil
	}
	out := &vpnapipb.View{Full: true, Node: self}
	byNode := map[string]*view.Slice{}
	var order []*view.Slice
	var last *view.Slice // entries of one node are mostly next to each other
	slice := func(node string) *view.Slice {
		if last != nil && last.Node == node {
			return last
		}
		last = byNode[node]
		if last == nil {
			last = &view.Slice{Node: node}
			byNode[node] = last
			order = append(order, last)
		}
		return last
	}
	for _, e := range u.Full.Whitelist {
		s := slice(view.NodeOf(e.Client))
		s.Whitelist = append(s.Whitelist, e)
	}
	for _, e := range u.Full.Endpoints {
		s := slice(view.NodeOf(e.Endpoint))
		s.Endpoints = append(s.Endpoints, e)
	}
	var alloc sliceAlloc
	alloc.slices.reserve(len(order))
	alloc.whitelist.reserve(len(u.Full.Whitelist))
	alloc.endpoints.reserve(len(u.Full.Endpoints))
	out.Slices = make([]*vpnapipb.Slice, 0, len(order))
	for _, s := range order {
		ps, err := alloc.sliceToProto(*s)
		if err != nil {
			return nil, err
		}
		if s.Node == self {
			out.Local = ps
		} else {
			out.Slices = append(out.Slices, ps)
		}
	}
	for _, c := range u.Full.Catalog {
		out.Catalog = append(out.Catalog, &vpnapipb.CatalogEntry{Client: serviceOf(c.Client), Service: c.Service})
	}
	return out, nil
}

// sliceAlloc allocates the messages of slices in blocks: a full view at
// 10,000 nodes is tens of thousands of small messages, which one
// allocation each made the larger part of encoding it.
type sliceAlloc struct {
	slices    block[vpnapipb.Slice]
	whitelist block[vpnapipb.SliceWhitelistEntry]
	endpoints block[vpnapipb.SliceEndpointEntry]
}

// block hands out values of a slice allocated at once.
type block[T any] struct{ free []T }

// reserve allocates room for n values at once.
func (b *block[T]) reserve(n int) { b.free = make([]T, n) }

// next returns a new zero value, from the reserved room while it lasts.
func (b *block[T]) next() *T {
	if len(b.free) == 0 {
		return new(T)
	}
	v := &b.free[0]
	b.free = b.free[1:]
	return v
}

func sliceToProto(s view.Slice) (*vpnapipb.Slice, error) {
	var a sliceAlloc
	return a.sliceToProto(s)
}

func (a *sliceAlloc) sliceToProto(s view.Slice) (*vpnapipb.Slice, error) {
	out := a.slices.next()
	out.Node = s.Node
	if len(s.Whitelist) > 0 {
		out.Whitelist = make([]*vpnapipb.SliceWhitelistEntry, 0, len(s.Whitelist))
	}
	for _, e := range s.Whitelist {
		w := a.whitelist.next()
		w.Endpoint, w.Client, w.PubKey = serviceOf(e.Endpoint), serviceOf(e.Client), e.PubKey
		out.Whitelist = append(out.Whitelist, w)
	}
	if len(s.Endpoints) > 0 {
		out.Endpoints = make([]*vpnapipb.SliceEndpointEntry, 0, len(s.Endpoints))
	}
	for _, e := range s.Endpoints {
		ap, err := netip.ParseAddrPort(e.Address)
		if err != nil {
			return nil, fmt.Errorf("endpoint %s: address %q: %w", e.Endpoint, e.Address, err)
		}
		if out.VpnIp == nil {
			out.VpnIp = ap.Addr().AsSlice()
		} else if ip, _ := netip.AddrFromSlice(out.VpnIp); ip != ap.Addr() {
			return nil, fmt.Errorf("endpoints of node %s at two addresses, %s and %s", s.Node, ip, ap.Addr())
		}
		ep := a.endpoints.next()
		ep.Client, ep.Endpoint, ep.Port = serviceOf(e.Client), e.Service, uint32(ap.Port())
		out.Endpoints = append(out.Endpoints, ep)
	}
	return out, nil
}

// serviceOf is the service of an ID "<service>@<node>".
func serviceOf(id string) string {
	service, _, err := serviceid.Parse(id)
	if err != nil {
		return id
	}
	return service
}

func viewFromProto(p *vpnapipb.View) (update.ViewUpdate, error) {
	if p == nil {
		return update.ViewUpdate{}, nil
	}
	self := p.GetNode()
	if self == "" {
		return update.ViewUpdate{}, fmt.Errorf("view without the node's name")
	}
	d := viewDecoder{self: self}
	if !p.GetFull() {
		u := update.ViewUpdate{Kind: update.ViewDelta}
		for _, ps := range p.GetSlices() {
			s, err := d.slice(ps, ps.GetNode())
			if err != nil {
				return update.ViewUpdate{}, err
			}
			u.Slices = append(u.Slices, s)
		}
		return u, nil
	}
	u := update.ViewUpdate{Kind: update.ViewFull}
	all := p.GetSlices()
	if local := p.GetLocal(); local != nil {
		// The coordinator sends the slices in the order of their nodes'
		// names; the local one in its place keeps the entries in the
		// view's order, which then needs no sorting.
		i := sort.Search(len(all), func(i int) bool { return all[i].GetNode() > self })
		all = slices.Concat(all[:i:i], []*vpnapipb.Slice{local}, all[i:])
	}
	nWhitelist, nEndpoints := 0, 0
	for _, ps := range all {
		nWhitelist += len(ps.GetWhitelist())
		nEndpoints += len(ps.GetEndpoints())
	}
	if nWhitelist > 0 {
		u.Full.Whitelist = make([]view.WhitelistEntry, 0, nWhitelist)
	}
	if nEndpoints > 0 {
		u.Full.Endpoints = make([]view.EndpointEntry, 0, nEndpoints)
	}
	for _, ps := range all {
		other := ps.GetNode()
		if ps == p.GetLocal() {
			other = self
		}
		var err error
		if u.Full.Whitelist, u.Full.Endpoints, err = d.appendSlice(u.Full.Whitelist, u.Full.Endpoints, ps, other); err != nil {
			return update.ViewUpdate{}, err
		}
	}
	for _, c := range p.GetCatalog() {
		if err := checkServices(c.GetClient(), c.GetService()); err != nil {
			return update.ViewUpdate{}, fmt.Errorf("catalog: %w", err)
		}
		u.Full.Catalog = append(u.Full.Catalog, view.CatalogEntry{Client: d.selfID(c.GetClient()), Service: c.GetService()})
	}
	u.Full.Sort()
	return u, nil
}

// checkServices refuses a service name of the wire that is not one.
func checkServices(names ...string) error {
	for _, n := range names {
		if err := serviceid.CheckService(n); err != nil {
			return err
		}
	}
	return nil
}

// viewDecoder expands the slices of a view of node self. It makes the IDs
// of self's few services once, not once per entry: a full view at 10,000
// nodes has one entry of each kind per other node.
type viewDecoder struct {
	self    string
	selfIDs [][2]string // service, ID
}

// selfID is the ID of self's service.
func (d *viewDecoder) selfID(service string) string {
	for _, s := range d.selfIDs {
		if s[0] == service {
			return s[1]
		}
	}
	id := serviceid.ID(service, d.self)
	d.selfIDs = append(d.selfIDs, [2]string{service, id})
	return id
}

// slice expands a slice between node self and node other, sorted.
func (d *viewDecoder) slice(p *vpnapipb.Slice, other string) (view.Slice, error) {
	wl, eps, err := d.appendSlice(nil, nil, p, other)
	if err != nil {
		return view.Slice{}, err
	}
	v := view.View{Whitelist: wl, Endpoints: eps}
	v.Sort()
	return view.Slice{Node: other, Whitelist: v.Whitelist, Endpoints: v.Endpoints}, nil
}

// appendSlice appends the entries of a slice between node self and node
// other to wl and eps.
func (d *viewDecoder) appendSlice(wl []view.WhitelistEntry, eps []view.EndpointEntry, p *vpnapipb.Slice, other string) ([]view.WhitelistEntry, []view.EndpointEntry, error) {
	if other == "" {
		return nil, nil, fmt.Errorf("slice without its node's name")
	}
	for _, w := range p.GetWhitelist() {
		if err := checkServices(w.GetEndpoint(), w.GetClient()); err != nil {
			return nil, nil, fmt.Errorf("whitelist of node %s: %w", other, err)
		}
		wl = append(wl, view.WhitelistEntry{
			Endpoint: d.selfID(w.GetEndpoint()), Client: serviceid.ID(w.GetClient(), other), PubKey: w.GetPubKey()})
	}
	if len(p.GetEndpoints()) > 0 {
		ip, ok := netip.AddrFromSlice(p.GetVpnIp())
		if !ok {
			return nil, nil, fmt.Errorf("slice of node %s: vpn ip of %d bytes", other, len(p.GetVpnIp()))
		}
		for _, e := range p.GetEndpoints() {
			if err := checkServices(e.GetEndpoint(), e.GetClient()); err != nil {
				return nil, nil, fmt.Errorf("endpoints of node %s: %w", other, err)
			}
			if e.GetPort() == 0 || e.GetPort() > 65535 {
				return nil, nil, fmt.Errorf("slice of node %s: port %d", other, e.GetPort())
			}
			eps = append(eps, view.EndpointEntry{
				Client: d.selfID(e.GetClient()), Service: e.GetEndpoint(),
				Endpoint: serviceid.ID(e.GetEndpoint(), other), Address: netip.AddrPortFrom(ip, uint16(e.GetPort())).String()})
		}
	}
	return wl, eps, nil
}

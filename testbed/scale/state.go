package scale

import (
	"encoding/binary"
	"hash/maphash"
	"net/netip"
	"sync"

	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/update"
	"github.com/fabricmesh/fabric/internal/view"
)

// A simulated node holds what it applied as digests: one per WireGuard
// peer, indexed by the peer's VPN IP, and one per slice of its service
// view, indexed by the other node's number (see names), plus one for the
// part of its view that is in no slice (its catalog, the entries between
// its own endpoints and clients). 10,000 nodes that each hold 10,000 peers
// and 5,000 slices as records would need tens of GiB; as 32-bit digests
// they need 0.8 GiB, and applying an answer still touches exactly what
// the answer carries. The convergence check compares these digests with
// the same digests of the coordinator's from-scratch answer (verify.go).
type nodeState struct {
	rev      uint64
	peers    []uint32 // by VPN IP offset in the cluster's CIDR; 0: no peer
	slices   []uint32 // by node number; 0: no slice
	local    uint64   // catalog and the entries among the node's own services
	nPeers   int
	nSlices  int
	users    uint64 // digest of the SSH users
	hasState bool   // a full answer was applied
}

// names numbers node names, so that slices can be held in arrays. Names
// are never forgotten: a removed node keeps its number.
type names struct {
	mu    sync.RWMutex
	index map[string]int
}

func newNames() *names { return &names{index: map[string]int{}} }

// number returns name's number, giving it the next one if it has none.
func (n *names) number(name string) int {
	n.mu.RLock()
	i, ok := n.index[name]
	n.mu.RUnlock()
	if ok {
		return i
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if i, ok := n.index[name]; ok {
		return i
	}
	i = len(n.index)
	n.index[name] = i
	return i
}

// fold turns a 64-bit digest into a non-zero 32-bit one (0 means absent).
func fold(h uint64) uint32 {
	d := uint32(h ^ h>>32)
	if d == 0 {
		d = 1
	}
	return d
}

type hasher struct{ buf []byte }

func (h *hasher) str(s string) {
	h.buf = binary.AppendUvarint(h.buf, uint64(len(s)))
	h.buf = append(h.buf, s...)
}

func (h *hasher) bytes(b []byte) {
	h.buf = binary.AppendUvarint(h.buf, uint64(len(b)))
	h.buf = append(h.buf, b...)
}

// seed makes the digests of one process comparable with each other
// (digests never leave the simulator).
var seed = maphash.MakeSeed()

// sum is the hash of what was written since the last sum.
func (h *hasher) sum() uint64 {
	s := maphash.Bytes(seed, h.buf)
	h.buf = h.buf[:0]
	return s
}

// peerDigest is the digest of what a node receives of a peer (the fields
// vpnapi carries, as vpnapi.PeerFromProto decodes them).
func (h *hasher) peerDigest(p records.Peer) uint32 {
	h.str(p.Name)
	h.str(string(p.Role))
	h.str(string(p.State))
	h.bytes(p.VPNIP.AsSlice())
	h.str(p.WGEndpoint)
	h.bytes(p.WGPubKey)
	h.bytes(p.TLSPin)
	h.bytes(p.SigningPubKey)
	return fold(h.sum())
}

func (h *hasher) whitelist(e view.WhitelistEntry) uint64 {
	h.str("w")
	h.str(e.Endpoint)
	h.str(e.Client)
	h.bytes(e.PubKey)
	return h.sum()
}

func (h *hasher) endpoint(e view.EndpointEntry) uint64 {
	h.str("e")
	h.str(e.Client)
	h.str(e.Service)
	h.str(e.Endpoint)
	h.str(e.Address)
	return h.sum()
}

func (h *hasher) catalog(e view.CatalogEntry) uint64 {
	h.str("c")
	h.str(e.Client)
	h.str(e.Service)
	return h.sum()
}

// sliceDigest is the digest of a slice: the sum of its entries' (a digest
// of the set, whatever their order); 0 for an empty slice.
func (h *hasher) sliceDigest(s view.Slice) uint32 {
	if s.Empty() {
		return 0
	}
	var sum uint64
	for _, e := range s.Whitelist {
		sum += h.whitelist(e)
	}
	for _, e := range s.Endpoints {
		sum += h.endpoint(e)
	}
	return fold(sum)
}

// viewDigests splits a whole view the way view.Held does: the entries
// shared with each other node (by number) and the local part of self.
func (h *hasher) viewDigests(v view.View, self string, nm *names) (slices map[int]uint32, local uint64) {
	sums := map[int]uint64{}
	for _, e := range v.Catalog {
		local += h.catalog(e)
	}
	for _, e := range v.Whitelist {
		if node := view.NodeOf(e.Client); node == self {
			local += h.whitelist(e)
		} else {
			sums[nm.number(node)] += h.whitelist(e)
		}
	}
	for _, e := range v.Endpoints {
		if node := view.NodeOf(e.Endpoint); node == self {
			local += h.endpoint(e)
		} else {
			sums[nm.number(node)] += h.endpoint(e)
		}
	}
	slices = make(map[int]uint32, len(sums))
	for i, s := range sums {
		slices[i] = fold(s)
	}
	return slices, local
}

func (h *hasher) usersDigest(users []records.SSHUser) uint64 {
	for _, u := range users {
		h.str(u.Name)
		for _, k := range u.Keys {
			h.str(k)
		}
		h.str("")
	}
	return h.sum()
}

// offset is ip's place in cidr, or -1.
func offset(cidr netip.Prefix, ip netip.Addr) int {
	if !cidr.Contains(ip) || !ip.Is4() {
		return -1
	}
	a, b := ip.As4(), cidr.Addr().As4()
	return int(binary.BigEndian.Uint32(a[:]) - binary.BigEndian.Uint32(b[:]))
}

func set(arr []uint32, i int, d uint32, count *int) []uint32 {
	if i >= len(arr) {
		if d == 0 {
			return arr
		}
		arr = append(arr, make([]uint32, i+1-len(arr)+len(arr)/4)...)
	}
	switch {
	case arr[i] == 0 && d != 0:
		*count++
	case arr[i] != 0 && d == 0:
		*count--
	}
	arr[i] = d
	return arr
}

func get(arr []uint32, i int) uint32 {
	if i < 0 || i >= len(arr) {
		return 0
	}
	return arr[i]
}

// apply applies an answer of the coordinator to s; self is the node's
// name. It reports false for an answer a node would refuse (a peer outside
// the cluster's CIDR).
func (s *nodeState) apply(h *hasher, nm *names, cidr netip.Prefix, self string, u update.Update) bool {
	ok := true
	switch u.Kind {
	case update.Unchanged:
		s.rev = u.Revision
		return true
	case update.Full:
		clear(s.peers)
		s.nPeers = 0
		s.hasState = true
	}
	for _, p := range u.Peers {
		i := offset(cidr, p.VPNIP)
		if i < 0 {
			ok = false
			continue
		}
		s.peers = set(s.peers, i, h.peerDigest(p), &s.nPeers)
	}
	for _, ip := range u.RemovedPeers {
		if i := offset(cidr, ip); i >= 0 {
			s.peers = set(s.peers, i, 0, &s.nPeers)
		}
	}
	switch u.View.Kind {
	case update.ViewFull:
		clear(s.slices)
		s.nSlices = 0
		slices, local := h.viewDigests(u.View.Full, self, nm)
		for i, d := range slices {
			s.slices = set(s.slices, i, d, &s.nSlices)
		}
		s.local = local
	case update.ViewDelta:
		for _, sl := range u.View.Slices {
			s.slices = set(s.slices, nm.number(sl.Node), h.sliceDigest(sl), &s.nSlices)
		}
	}
	if u.HasSSHUsers {
		s.users = h.usersDigest(u.SSHUsers)
	}
	s.rev = u.Revision
	return ok
}

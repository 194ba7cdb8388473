package scale

import (
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fabricmesh/fabric/coordinator/registry"
	"github.com/fabricmesh/fabric/coordinator/steward"
	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/rules"
	"github.com/fabricmesh/fabric/internal/store"
	"github.com/fabricmesh/fabric/internal/store/boltstore"
	"github.com/fabricmesh/fabric/internal/store/etcdstore"
	"github.com/fabricmesh/fabric/vpnapi"
)

// openStore opens the coordinator's store named by spec: bolt:PATH (its
// fabric.db, once fabricd has stopped) or an etcd:// store address.
func openStore(spec string) (store.Store, func() error, error) {
	if path, ok := strings.CutPrefix(spec, "bolt:"); ok {
		b, err := boltstore.Open(path, boltstore.Options{})
		if err != nil {
			return nil, nil, err
		}
		return b, b.Close, nil
	}
	u, err := etcdstore.ParseURL(spec)
	if err != nil {
		return nil, nil, fmt.Errorf("store %q: want bolt:PATH or an etcd store: %w", spec, err)
	}
	e, err := etcdstore.Open(etcdstore.Options{Endpoints: u.Endpoints, Prefix: u.Prefix})
	if err != nil {
		return nil, nil, err
	}
	return e, e.Close, nil
}

// verify compares what every simulated node holds with the coordinator's
// from-scratch answer for it, computed from the coordinator's records: its
// WireGuard peers (every active peer, as vpnapi encodes them) and its
// service view (steward.View, the reference the feed is tested against).
func (s *simulator) verify(spec string) (verifyResp, error) {
	start := time.Now()
	st, closeStore, err := openStore(spec)
	if err != nil {
		return verifyResp{}, err
	}
	defer closeStore()
	reg, err := registry.Open(st)
	if err != nil {
		return verifyResp{}, err
	}
	ref, err := newReference(reg, s.names)
	if err != nil {
		return verifyResp{}, err
	}
	var (
		mu  sync.Mutex
		out verifyResp
		wg  sync.WaitGroup
	)
	work := make(chan *node)
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var h hasher
			for n := range work {
				problem := ref.check(&h, n)
				mu.Lock()
				out.Nodes++
				if problem != "" {
					out.Mismatches++
					if len(out.Examples) < 10 {
						out.Examples = append(out.Examples, n.name+": "+problem)
					}
				}
				mu.Unlock()
			}
		}()
	}
	for _, n := range s.nodes {
		if n.getPhase() != phaseWaiting {
			work <- n
		}
	}
	close(work)
	wg.Wait()
	slices.Sort(out.Examples)
	out.Converged = out.Mismatches == 0 && out.Nodes > 0
	out.Took = time.Since(start).Seconds()
	return out, nil
}

// reference is the coordinator's from-scratch answer for every node.
type reference struct {
	reg   *registry.Registry
	names *names
	peers []uint32 // what every node holds of the active peers, by offset
	idx   *steward.Index
}

func newReference(reg *registry.Registry, nm *names) (*reference, error) {
	cl, ok := reg.Cluster()
	if !ok {
		return nil, fmt.Errorf("the store holds no cluster")
	}
	rs, err := rules.ParseOrDefault("cluster rules", cl.Rules)
	if err != nil {
		return nil, err
	}
	_, peers, services := reg.Snapshot()
	ref := &reference{reg: reg, names: nm}
	var h hasher
	var count int
	for _, p := range peers {
		if p.State != records.StateActive {
			continue
		}
		q, err := vpnapi.PeerFromProto(vpnapi.PeerToProto(p))
		if err != nil {
			return nil, err
		}
		ref.peers = set(ref.peers, offset(cl.VPNCIDR, p.VPNIP), h.peerDigest(q), &count)
	}
	nodes, endpoints, clients := steward.Records(peers, services)
	ref.idx = steward.NewIndex(rs, nodes, endpoints, clients)
	return ref, nil
}

// check says how node n differs from the coordinator's records, or "".
func (ref *reference) check(h *hasher, n *node) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	rec, _ := ref.reg.Peer(n.vpnIP) // removed peers too
	wantPeers := ref.peers
	if n.getPhase() == phaseRemoved {
		if rec.State != records.StateRemoved {
			return fmt.Sprintf("removed here, %s at the coordinator", rec.State)
		}
		return ""
	}
	if rec.State != records.StateActive || rec.VPNIP != n.vpnIP {
		return fmt.Sprintf("active here as %s, %s as %s at the coordinator", n.vpnIP, rec.State, rec.VPNIP)
	}
	for i := range max(len(wantPeers), len(n.state.peers)) {
		if get(n.state.peers, i) != get(wantPeers, i) {
			return fmt.Sprintf("peer at offset %d differs (%d peers held, %d at the coordinator)", i, n.state.nPeers, countSet(wantPeers))
		}
	}
	slicesWant, local := h.viewDigests(ref.idx.View(n.name), n.name, ref.names)
	if local != n.state.local {
		return "the local part of its view differs"
	}
	if len(slicesWant) != n.state.nSlices {
		return fmt.Sprintf("%d slices held, %d in its view at the coordinator", n.state.nSlices, len(slicesWant))
	}
	for i, d := range slicesWant {
		if get(n.state.slices, i) != d {
			return fmt.Sprintf("its slice of node number %d differs", i)
		}
	}
	return ""
}

func countSet(arr []uint32) int {
	k := 0
	for _, d := range arr {
		if d != 0 {
			k++
		}
	}
	return k
}

package feed_test

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/fabricmesh/fabric/coordinator/feed"
	"github.com/fabricmesh/fabric/coordinator/registry"
	"github.com/fabricmesh/fabric/coordinator/steward"
	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/rules"
	"github.com/fabricmesh/fabric/internal/store"
	"github.com/fabricmesh/fabric/internal/update"
	"github.com/fabricmesh/fabric/internal/view"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// propertyRules pair pastiche within hordes, billing with ledger across the
// cluster, and auditors with ledgers within hordes.
const propertyRules = `
services: [billing, ledger, auditor]
rules:
  - {client: pastiche, service: pastiche, scope: horde}
  - {client: billing, service: ledger, scope: cluster}
  - {client: auditor, service: ledger, scope: horde}
`

// simNode is a node as it would hold what the feed sends it.
type simNode struct {
	ip    netip.Addr
	rev   uint64
	peers map[netip.Addr]records.Peer
	view  view.View
	users []records.SSHUser
	gone  bool
}

// apply applies u as a node does.
func (n *simNode) apply(tb testing.TB, u update.Update) {
	tb.Helper()
	switch u.Kind {
	case update.Removed:
		n.gone = true
		return
	case update.Full:
		n.peers = map[netip.Addr]records.Peer{}
	case update.Delta, update.Unchanged:
	default:
		tb.Fatalf("node %s: update of kind %v", n.ip, u.Kind)
	}
	for _, p := range u.Peers {
		n.peers[p.VPNIP] = facingFields(p)
	}
	for _, ip := range u.RemovedPeers {
		if _, ok := n.peers[ip]; !ok {
			tb.Errorf("node %s at %d: removal of %s, which it does not hold", n.ip, n.rev, ip)
		}
		delete(n.peers, ip)
	}
	if u.HasSSHUsers {
		n.users = u.SSHUsers
	}
	switch u.View.Kind {
	case update.ViewFull:
		n.view = u.View.Full
	case update.ViewDelta:
		n.view = n.view.ApplySlices(u.View.Slices)
	}
	n.rev = u.Revision
}

// world drives a registry with random changes.
type world struct {
	tb     testing.TB
	r      *rand.Rand
	reg    *registry.Registry
	rules  rules.Rules
	next   int
	nodes  map[string]netip.Addr // endpoint -> VPN IP of every node ever reserved
	keyGen int
}

func newWorld(tb testing.TB, seed uint64, st store.Store, capacity int) *world {
	rs, err := rules.Parse("rules", []byte(propertyRules))
	if err != nil {
		tb.Fatal(err)
	}
	reg, err := registry.Open(st, registry.Options{LogCapacity: capacity})
	if err != nil {
		tb.Fatal(err)
	}
	w := &world{tb: tb, r: rand.New(rand.NewPCG(seed, 7)), reg: reg, rules: rs, nodes: map[string]netip.Addr{}}
	if _, ok := reg.Cluster(); !ok {
		_, err = reg.Init(records.Cluster{ID: "c1", VPNCIDR: netip.MustParsePrefix("203.0.113.0/24")},
			records.Peer{Name: "coord", Horde: "sharks", PublicEndpoint: "192.0.2.1:7443", WGEndpoint: "192.0.2.1:51820",
				WGPubKey: w.key(), SigningPubKey: w.key()},
			[]records.Peer{{Name: "admin", WGPubKey: w.key(), SigningPubKey: w.key()}}, nil, nil)
		if err != nil {
			tb.Fatal(err)
		}
	}
	return w
}

func (w *world) key() []byte {
	w.keyGen++
	k := sha256.Sum256([]byte(fmt.Sprintf("key %d", w.keyGen)))
	return k[:]
}

// facingFields is what a node's WireGuard needs of a peer record, all that
// the vpnapi carries: the feed promises them current, not the rest.
func facingFields(p records.Peer) records.Peer {
	out := records.Peer{Name: p.Name, Role: p.Role, VPNIP: p.VPNIP, WGEndpoint: p.WGEndpoint, WGPubKey: p.WGPubKey, State: p.State}
	if p.Role == records.RoleCoordinator {
		out.TLSPin, out.SigningPubKey = p.TLSPin, p.SigningPubKey
	}
	return out
}

var hordes = []string{"sharks", "jets", ""}

// step makes one random change; errors the registry refuses are fine.
func (w *world) step() string {
	_, peers := w.reg.Peers()
	var active, any []records.Peer
	for _, p := range peers {
		if p.Role == records.RoleNode {
			any = append(any, p)
			if p.State == records.StateActive {
				active = append(active, p)
			}
		}
	}
	pick := func(ps []records.Peer) (records.Peer, bool) {
		if len(ps) == 0 {
			return records.Peer{}, false
		}
		return ps[w.r.IntN(len(ps))], true
	}
	switch k := w.r.IntN(100); {
	case k < 22: // a new node joins
		return w.join()
	case k < 40: // registration
		p, ok := pick(active)
		if !ok {
			return "none"
		}
		if w.r.IntN(4) == 0 {
			w.reg.SetRegistration(p.VPNIP, nil, "callback refused")
			return "unregistered " + p.Name
		}
		w.reg.SetRegistration(p.VPNIP, w.key(), "")
		return "registered " + p.Name
	case k < 65: // services
		p, ok := pick(active)
		if !ok {
			return "none"
		}
		var s records.Services
		for _, svc := range []string{"pastiche", "billing", "ledger", "auditor"} {
			if w.r.IntN(2) == 0 {
				s.Endpoints = append(s.Endpoints, records.ServiceEndpoint{Service: svc, Port: uint16(7000 + w.r.IntN(3))})
			}
			if w.r.IntN(2) == 0 {
				s.Clients = append(s.Clients, records.ServiceClient{Service: svc, PubKey: w.key()})
			}
		}
		_, err := w.reg.SetServices(p.VPNIP, s)
		return fmt.Sprintf("services of %s (%v)", p.Name, err)
	case k < 75: // endpoint change
		p, ok := pick(active)
		if !ok {
			return "none"
		}
		pub := netip.MustParseAddrPort(p.PublicEndpoint)
		if err := w.reg.SetWGEndpoint(p.VPNIP, netip.AddrPortFrom(pub.Addr(), uint16(51820+w.r.IntN(5))).String()); err != nil {
			w.tb.Fatalf("SetWGEndpoint: %v", err)
		}
		return "endpoint of " + p.Name
	case k < 85: // removal
		p, ok := pick(any)
		if !ok {
			return "none"
		}
		w.reg.Remove(p.VPNIP)
		return "removed " + p.Name
	case k < 88: // SSH users
		var users []records.SSHUser
		for i := range w.r.IntN(3) {
			users = append(users, records.SSHUser{Name: fmt.Sprintf("user%d", i), Keys: []string{fmt.Sprintf("ssh-ed25519 K%d", w.r.IntN(3))}})
		}
		w.reg.UpdateSSHUsers(func([]records.SSHUser) ([]records.SSHUser, error) { return users, nil })
		return "users"
	case k < 92: // liveness
		p, ok := pick(active)
		if !ok {
			return "none"
		}
		now := testTime()
		w.reg.SetLiveness(p.VPNIP, w.r.IntN(2) == 0, now, now, "co")
		return "liveness of " + p.Name
	default: // the coordinator's own services
		_, peers := w.reg.Peers()
		w.reg.SetRegistration(peers[0].VPNIP, w.key(), "")
		w.reg.SetServices(peers[0].VPNIP, records.Services{Endpoints: []records.ServiceEndpoint{{Service: "pastiche", Port: 7450}},
			Clients: []records.ServiceClient{{Service: "pastiche", PubKey: w.key()}, {Service: "fabric-admin", PubKey: w.key()}}})
		return "coordinator services"
	}
}

// join reserves and activates a new node, or fails its activation.
func (w *world) join() string {
	w.next++
	ep := fmt.Sprintf("192.0.2.%d:7443", 10+w.next%200)
	name := fmt.Sprintf("n%d", w.next%40)
	res, err := w.reg.Reserve(ep, name, w.key(), nil, w.r.IntN(3) == 0)
	if err != nil && !errors.Is(err, registry.ErrAlreadyActive) {
		return "reserve refused"
	}
	if w.r.IntN(5) == 0 {
		w.reg.Fail(ep, "unreachable")
		return "join failed " + name
	}
	_, err = w.reg.Activate(res.VPNIP, records.Activated{Name: name, Horde: hordes[w.r.IntN(len(hordes))],
		WGEndpoint: ep, WGPubKey: w.key(), SigningPubKey: w.key()})
	return fmt.Sprintf("join %s (%v)", name, err)
}

// expected is the state every watcher must hold: the peers the feed
// promises (every active peer; the coordinator also its pending nodes with
// a key) and each node's view computed from scratch.
type expected struct {
	peers, coordinatorPeers map[netip.Addr]records.Peer
	views                   map[string]view.View
	users                   []records.SSHUser
}

func (w *world) expected() expected {
	_, peers, services := w.reg.Snapshot()
	x := expected{peers: map[netip.Addr]records.Peer{}, coordinatorPeers: map[netip.Addr]records.Peer{}}
	for _, p := range peers {
		if p.State == records.StateActive {
			x.peers[p.VPNIP] = facingFields(p)
		}
		if p.State == records.StateActive || (p.State == records.StatePending && len(p.WGPubKey) > 0) {
			x.coordinatorPeers[p.VPNIP] = facingFields(p)
		}
	}
	nodes, eps, cls := steward.Records(peers, services)
	x.views = steward.Views(w.rules, nodes, eps, cls)
	_, x.users = w.reg.SSHUsers()
	return x
}

// of is what the watcher p must hold.
func (x expected) of(p records.Peer) (map[netip.Addr]records.Peer, view.View) {
	if p.Role == records.RoleCoordinator {
		return x.coordinatorPeers, x.views[p.Name]
	}
	return x.peers, x.views[p.Name]
}

var cmpView = cmp.Options{cmpopts.EquateEmpty(), cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})}

// TestIncrementalEqualsFromScratch: for random sequences of joins,
// failures, removals, registrations, service and endpoint changes, the
// state every node builds from the feed's answers equals the from-scratch
// one, after every step, whether it follows each change, lags several
// behind, or restarts from nothing, and with a log short enough that
// lagging nodes fall off it.
func TestIncrementalEqualsFromScratch(t *testing.T) {
	for _, tc := range []struct {
		name     string
		seed     uint64
		capacity int
		steps    int
		// follower: the feed follows a second registry on the same
		// store, which catches up with the first's commits (another
		// coordinator's).
		follower bool
	}{
		{"long log", 1, 10000, 400, false},
		{"short log", 2, 8, 400, false},
		{"other seed", 3, 10000, 400, false},
		{"another coordinator's commits", 4, 10000, 300, true},
		{"another coordinator's commits, short log", 5, 6, 300, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := store.NewMem()
			w := newWorld(t, tc.seed, st, tc.capacity)
			src := w.reg
			if tc.follower {
				var err error
				if src, err = registry.Open(st, registry.Options{LogCapacity: tc.capacity}); err != nil {
					t.Fatal(err)
				}
			}
			f, err := feed.New(src, w.rules, feed.Options{LogCapacity: tc.capacity})
			if err != nil {
				t.Fatal(err)
			}
			held := map[netip.Addr]*simNode{}
			for i := range tc.steps {
				what := w.step()
				if tc.follower && w.r.IntN(3) > 0 { // sometimes several steps at once
					if err := src.CatchUp(); err != nil {
						t.Fatal(err)
					}
				} else if tc.follower {
					continue
				}
				want := w.expected()
				_, peers := w.reg.Peers()
				for _, p := range peers {
					if p.Role == records.RoleAdmin || p.State != records.StateActive {
						continue
					}
					n := held[p.VPNIP]
					if n == nil || n.gone {
						n = &simNode{ip: p.VPNIP}
						held[p.VPNIP] = n
					}
					switch k := w.r.IntN(10); {
					case k == 0:
						continue // lags behind this step
					case k == 1:
						n.rev = 0 // restarts without its state
					}
					u, err := f.Answer(p.VPNIP, n.rev)
					if err != nil {
						t.Fatalf("step %d (%s): answer for %s: %v", i, what, p.Name, err)
					}
					n.apply(t, u)
					wantPeers, wantView := want.of(p)
					if !samePeers(wantPeers, n.peers) {
						t.Fatalf("step %d (%s): peers of %s at %d (-want +got):\n%s", i, what, p.Name, n.rev, cmp.Diff(wantPeers, n.peers, cmpView))
					}
					if !reflect.DeepEqual(want.users, n.users) && (len(want.users) > 0 || len(n.users) > 0) {
						t.Fatalf("step %d (%s): users of %s at %d (-want +got):\n%s", i, what, p.Name, n.rev, cmp.Diff(want.users, n.users))
					}
					if !sameView(wantView, n.view) {
						t.Fatalf("step %d (%s): view of %s at %d (-from scratch +incremental):\n%s", i, what, p.Name, n.rev, cmp.Diff(wantView, n.view, cmpView))
					}
				}
				for ip, n := range held {
					if p, _ := w.reg.Peer(ip); p.State == records.StateRemoved && !n.gone {
						u, err := f.Answer(ip, n.rev)
						if err != nil || u.Kind != update.Removed {
							t.Fatalf("step %d (%s): a removed node gets %v, %v; want Removed", i, what, u.Kind, err)
						}
						n.gone = true
					}
				}
			}
			if tc.follower {
				if err := src.CatchUp(); err != nil {
					t.Fatal(err)
				}
			}
			if got := f.Revision(); got != w.reg.Revision() {
				t.Errorf("feed at revision %d, registry at %d", got, w.reg.Revision())
			}
		})
	}
}

// TestRestartKeepsDeltas: a feed built on a reopened store answers every
// node from the log instead of a full snapshot, and the entries it read
// from the store concern the nodes as they did before the restart: a node
// whose last missed entries are only joins (an add-nodes the coordinator
// crashed in) gets the new peers, not "unchanged".
func TestRestartKeepsDeltas(t *testing.T) {
	for _, tc := range []struct {
		name  string
		steps func(w *world)
	}{
		{"random changes", func(w *world) {
			for range 20 {
				w.step()
			}
		}},
		{"only joins", func(w *world) {
			for range 4 {
				w.join()
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := store.NewMem()
			w := newWorld(t, 9, st, 10000)
			f, err := feed.New(w.reg, w.rules, feed.Options{})
			if err != nil {
				t.Fatal(err)
			}
			for range 60 {
				w.step()
			}
			held := map[netip.Addr]*simNode{}
			_, peers := w.reg.Peers()
			for _, p := range peers {
				if p.Role == records.RoleAdmin || p.State != records.StateActive {
					continue
				}
				n := &simNode{ip: p.VPNIP}
				u, err := f.Answer(p.VPNIP, 0)
				if err != nil {
					t.Fatal(err)
				}
				n.apply(t, u)
				held[p.VPNIP] = n
			}
			tc.steps(w)
			w2 := newWorld(t, 10, st, 10000) // the coordinator restarted
			f2, err := feed.New(w2.reg, w2.rules, feed.Options{})
			if err != nil {
				t.Fatal(err)
			}
			want := w2.expected()
			deltas := 0
			for ip, n := range held {
				p, _ := w2.reg.Peer(ip)
				if p.State != records.StateActive {
					continue
				}
				behind := w2.reg.Revision() - n.rev
				u, err := f2.Answer(ip, n.rev)
				if err != nil {
					t.Fatal(err)
				}
				if u.Kind == update.Full {
					t.Fatalf("after a restart, %s %d revisions behind gets a full snapshot, want an answer from the log", p.Name, behind)
				}
				if u.Kind == update.Delta {
					deltas++
				}
				n.apply(t, u)
				wantPeers, wantView := want.of(p)
				if diff := cmp.Diff(wantPeers, n.peers, cmpView); diff != "" {
					t.Errorf("peers of %s after the restart's %v answer (-want +got):\n%s", p.Name, u.Kind, diff)
				}
				if diff := cmp.Diff(wantView, n.view, cmpView); diff != "" {
					t.Errorf("view of %s after the restart's %v answer (-from scratch +incremental):\n%s", p.Name, u.Kind, diff)
				}
			}
			if deltas == 0 {
				t.Errorf("no node got a delta after the restart: the steps did not exercise it")
			}
		})
	}
}

// samePeers and sameView are quick equality checks (cmp.Diff, slow, only
// explains a difference).
func samePeers(a, b map[netip.Addr]records.Peer) bool {
	if len(a) != len(b) {
		return false
	}
	for ip, p := range a {
		if q, ok := b[ip]; !ok || p.Name != q.Name || p.Role != q.Role || p.VPNIP != q.VPNIP ||
			p.WGEndpoint != q.WGEndpoint || string(p.WGPubKey) != string(q.WGPubKey) || p.State != q.State {
			return false
		}
	}
	return true
}

func sameView(a, b view.View) bool {
	return slices.EqualFunc(a.Whitelist, b.Whitelist, func(x, y view.WhitelistEntry) bool {
		return x.Endpoint == y.Endpoint && x.Client == y.Client && string(x.PubKey) == string(y.PubKey)
	}) && slices.Equal(a.Endpoints, b.Endpoints) && slices.Equal(a.Catalog, b.Catalog)
}

func testTime() time.Time { return time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC) }

package registry_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/fabricmesh/fabric/coordinator/registry"
	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/store/etcdstore"
	"github.com/fabricmesh/fabric/testbed/etcdlab"
	"github.com/google/go-cmp/cmp"
)

// manyNode is node i of a test with more nodes than a byte counts.
type manyNode int

func (n manyNode) name() string     { return fmt.Sprintf("node%03d", int(n)) }
func (n manyNode) endpoint() string { return fmt.Sprintf("192.0.2.10:%d", 10000+int(n)) }
func (n manyNode) key(kind string) []byte {
	sum := sha256.Sum256([]byte(n.name() + " " + kind))
	return sum[:]
}
func (n manyNode) activated() records.Activated {
	return records.Activated{Name: n.name(), Horde: "h", WGEndpoint: fmt.Sprintf("192.0.2.10:%d", 20000+int(n)),
		WGPubKey: n.key("wg"), SigningPubKey: n.key("signing")}
}

// TestTwoCoordinatorsOnEtcd: two coordinators (two registries on one etcd
// store, each following the other's commits as coordinators do) activate
// 200 nodes at once, each through either: no VPN IP is handed out twice.
// Then, at once again, 50 of them are removed and 50 new nodes activated:
// none of these gets an address handed out before. Both end in the state
// the store holds.
func TestTwoCoordinatorsOnEtcd(t *testing.T) {
	c := etcdlab.StartLocal(t, 3, nil)
	openStore := func(endpoints []string) *etcdstore.Store {
		st, err := etcdstore.Open(etcdstore.Options{Endpoints: endpoints, Prefix: "/fabric/ipam/", Timeout: 30 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		return st
	}
	stA, stB := openStore(c.Endpoints()[:2]), openStore(c.Endpoints()[1:])
	a := initRegistry(t, stA, "203.0.113.0/24", 0)
	b, err := registry.Open(stB)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	var following sync.WaitGroup
	for _, r := range []*registry.Registry{a, b} {
		following.Go(func() { r.Follow(ctx, 50*time.Millisecond, func(err error) { t.Logf("Follow: %v", err) }) })
	}
	defer func() { cancel(); following.Wait() }()

	// activate activates nodes [from, to) at once, node i through a or b.
	activate := func(from, to int) map[netip.Addr]manyNode {
		ips := make([]netip.Addr, to-from)
		errs := make([]error, to-from)
		var wg sync.WaitGroup
		for i := from; i < to; i++ {
			wg.Go(func() {
				r, n := []*registry.Registry{a, b}[i%2], manyNode(i)
				p, err := r.Reserve(n.endpoint(), n.name(), n.key("wg"), n.key("signing"), false)
				if err == nil {
					p, err = r.Activate(p.VPNIP, n.activated())
				}
				ips[i-from], errs[i-from] = p.VPNIP, err
			})
		}
		wg.Wait()
		got := map[netip.Addr]manyNode{}
		for k, err := range errs {
			n := manyNode(from + k)
			if err != nil {
				t.Fatalf("activating %s: %v", n.name(), err)
			}
			if other, dup := got[ips[k]]; dup {
				t.Errorf("%s and %s both got %s", other.name(), n.name(), ips[k])
			}
			got[ips[k]] = n
		}
		return got
	}
	first := activate(0, 200)
	if len(first) != 200 {
		t.Fatalf("200 nodes got %d addresses", len(first))
	}
	coordinatorIP := netip.MustParseAddr("203.0.113.1")
	if n, ok := first[coordinatorIP]; ok {
		t.Errorf("%s got the coordinator's address", n.name())
	}

	var removed []netip.Addr
	for ip, n := range first {
		if n < 50 {
			removed = append(removed, ip)
		}
	}
	var removing sync.WaitGroup
	removeErrs := make([]error, len(removed))
	for k, ip := range removed {
		removing.Go(func() { _, removeErrs[k] = []*registry.Registry{a, b}[k%2].Remove(ip) })
	}
	second := activate(200, 250)
	removing.Wait()
	for k, err := range removeErrs {
		if err != nil {
			t.Errorf("removing %s: %v", removed[k], err)
		}
	}
	for ip, n := range second {
		if old, reused := first[ip]; reused {
			t.Errorf("%s got %s, which %s had", n.name(), ip, old.name())
		}
		if ip == coordinatorIP {
			t.Errorf("%s got the coordinator's address", n.name())
		}
	}

	for _, r := range []*registry.Registry{a, b} {
		if err := r.CatchUp(); err != nil {
			t.Fatal(err)
		}
	}
	fresh, err := registry.Open(openStore(c.Endpoints()))
	if err != nil {
		t.Fatal(err)
	}
	want := stateOf(fresh)
	if want.Revision != uint64(1+2*250+50) {
		t.Errorf("revision %d after 250 reservations and activations and 50 removals, want %d", want.Revision, 1+2*250+50)
	}
	states := map[records.State]int{}
	for _, p := range want.Peers {
		states[p.State]++
	}
	for _, ip := range removed {
		if p, _ := fresh.Peer(ip); p.State == records.StateRemoved {
			states[p.State]++
		}
	}
	if diff := cmp.Diff(map[records.State]int{records.StateActive: 201, records.StateRemoved: 50}, states); diff != "" {
		t.Errorf("peers by state (-want +got):\n%s", diff)
	}
	for name, r := range map[string]*registry.Registry{"a": a, "b": b} {
		if diff := cmp.Diff(want, stateOf(r), cmpNetip); diff != "" {
			t.Errorf("registry %s differs from the store (-store +%s):\n%s", name, name, diff)
		}
	}
}

// TestMigrateToEtcd: a cluster of 60 nodes (about 370 keys) in a bbolt file, copied to a
// real etcd in batches within etcd's limits, opens there as the same
// registry; the copy is verified, the file marked moved; a second
// coordinator on the etcd store activates a node.
func TestMigrateToEtcd(t *testing.T) {
	c := etcdlab.StartLocal(t, 1, nil)
	bolt := openBolt(t, etcdlab.TempDir(t)+"/fabric.db")
	src := migrationSource(t, bolt, 60)
	to, err := etcdstore.Open(etcdstore.Options{Endpoints: c.Endpoints(), Prefix: "/fabric/migrated/"})
	if err != nil {
		t.Fatal(err)
	}
	defer to.Close()
	res, err := registry.Migrate(bolt, to, "bolt:fabric.db", registry.MigrateTarget{Address: c.URL("fabric/migrated"), StoreID: to.ID()})
	if err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	t.Logf("copied %+v", res)
	a, err := registry.Open(to)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(stateOf(src), stateOf(a), cmpNetip); diff != "" {
		t.Errorf("the copy (-bolt +etcd):\n%s", diff)
	}
	if diff := cmp.Diff(logOf(t, src), logOf(t, a), cmpNetip); diff != "" {
		t.Errorf("the copy's log (-bolt +etcd):\n%s", diff)
	}
	if _, err := registry.Open(bolt); !errors.Is(err, registry.ErrMoved) {
		t.Errorf("Open of the bolt file: %v, want ErrMoved", err)
	}
	b, err := registry.Open(to)
	if err != nil {
		t.Fatal(err)
	}
	n := manyNode(300)
	p, err := b.Reserve(n.endpoint(), n.name(), n.key("wg"), n.key("signing"), false)
	if err != nil {
		t.Fatal(err)
	}
	if _, known := src.Peer(p.VPNIP); known {
		t.Errorf("the new node got %s, which the cluster had given before", p.VPNIP)
	}
	if err := a.CatchUp(); err != nil {
		t.Fatal(err)
	}
	if got, ok := a.Peer(p.VPNIP); !ok || got.Name != n.name() {
		t.Errorf("the other coordinator does not see the new node: %+v", got)
	}
}

package registry_test

import (
	"bytes"
	"errors"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"

	"github.com/fabricmesh/fabric/coordinator/registry"
	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/store"
	"github.com/fabricmesh/fabric/internal/store/boltstore"
	"github.com/google/go-cmp/cmp"
)

// storeKind opens an empty store of one implementation.
type storeKind struct {
	name string
	open func(t testing.TB) store.Store
}

func storeKinds() []storeKind {
	return []storeKind{
		{"mem", func(testing.TB) store.Store { return store.NewMem() }},
		{"bolt", func(t testing.TB) store.Store { return openBolt(t, filepath.Join(t.TempDir(), "state.db")) }},
	}
}

// openBolt opens the bbolt store at path and closes it at cleanup (a store
// the test closed itself is closed again harmlessly).
func openBolt(t testing.TB, path string) *boltstore.Bolt {
	t.Helper()
	b, err := boltstore.Open(path, boltstore.Options{})
	if err != nil {
		t.Fatalf("opening bolt store: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func mustParseCIDR(t testing.TB, s string) netip.Prefix {
	t.Helper()
	p, err := records.ParseVPNCIDR(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// key is a 32-byte test key filled with b.
func key(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

// coordinatorPeer is the coordinator record tests give Init.
func coordinatorPeer() records.Peer {
	return records.Peer{
		Name: "coord", PublicEndpoint: "192.0.2.1:7443", WGEndpoint: "192.0.2.1:51820",
		WGPubKey: key(0xc0), SigningPubKey: key(0xc1),
	}
}

// admin is the i-th admin record tests give Init.
func admin(i byte) records.Peer {
	return records.Peer{Name: "admin" + string('0'+i), WGPubKey: key(0xa0 + 2*i), SigningPubKey: key(0xa1 + 2*i)}
}

// activated is what the test node i reports when it is activated.
func activated(i byte) records.Activated {
	return records.Activated{
		Name: nodeName(i), Horde: "h", WGEndpoint: netip.AddrPortFrom(nodeIP(i), 51820).String(),
		WGPubKey: key(0x10 + 2*i), SigningPubKey: key(0x11 + 2*i),
	}
}

func nodeName(i byte) string { return "node" + string('0'+i) }

func nodeIP(i byte) netip.Addr { return netip.AddrFrom4([4]byte{192, 0, 2, 10 + i}) }

// nodeEndpoint is the public endpoint of test node i.
func nodeEndpoint(i byte) string { return netip.AddrPortFrom(nodeIP(i), 7443).String() }

// initRegistry opens a registry on st and initializes it with the VPN CIDR
// and n admins.
func initRegistry(t testing.TB, st store.Store, cidr string, admins int) *registry.Registry {
	t.Helper()
	r, err := registry.Open(st)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	var as []records.Peer
	for i := range admins {
		as = append(as, admin(byte(i)))
	}
	if _, err := r.Init(records.Cluster{ID: "c1", VPNCIDR: mustParseCIDR(t, cidr)}, coordinatorPeer(), as, nil, nil); err != nil {
		t.Fatalf("Init: %v", err)
	}
	return r
}

// activateNode reserves and activates test node i.
func activateNode(t testing.TB, r *registry.Registry, i byte) records.Peer {
	t.Helper()
	p, err := r.Reserve(nodeEndpoint(i), nodeName(i), nil, nil, false)
	if err != nil {
		t.Fatalf("Reserve(%s): %v", nodeEndpoint(i), err)
	}
	p, err = r.Activate(p.VPNIP, activated(i))
	if err != nil {
		t.Fatalf("Activate(%s): %v", nodeEndpoint(i), err)
	}
	return p
}

// regState is what a registry shows its readers.
type regState struct {
	Cluster     records.Cluster
	Initialized bool
	Revision    uint64
	Peers       []records.Peer
	SSHUsersRev uint64
	SSHUsers    []records.SSHUser
}

func stateOf(r *registry.Registry) regState {
	c, ok := r.Cluster()
	rev, peers := r.Peers()
	usersRev, users := r.SSHUsers()
	return regState{Cluster: c, Initialized: ok, Revision: rev, Peers: peers, SSHUsersRev: usersRev, SSHUsers: users}
}

var errInjected = errors.New("injected put failure")

// failingStore wraps a store so that the n-th Put of the next Update fails.
type failingStore struct {
	store.Store

	mu      sync.Mutex
	failNth int // 0: no failure armed
	puts    int
}

func (s *failingStore) failNthPut(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failNth = n
}

func (s *failingStore) Update(fn func(store.Tx) error) error {
	s.mu.Lock()
	s.puts = 0
	s.mu.Unlock()
	defer s.failNthPut(0)
	return s.Store.Update(func(tx store.Tx) error { return fn(&failingTx{Tx: tx, s: s}) })
}

type failingTx struct {
	store.Tx
	s *failingStore
}

func (tx *failingTx) Put(key string, value []byte) error {
	tx.s.mu.Lock()
	tx.s.puts++
	fail := tx.s.failNth > 0 && tx.s.puts == tx.s.failNth
	tx.s.mu.Unlock()
	if fail {
		return errInjected
	}
	return tx.Tx.Put(key, value)
}

// cmpNetip lets cmp compare and print netip values as text.
var cmpNetip = cmp.Options{
	cmp.Transformer("Addr", func(a netip.Addr) string { return a.String() }),
	cmp.Transformer("Prefix", func(p netip.Prefix) string { return p.String() }),
}

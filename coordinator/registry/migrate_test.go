package registry_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/fabricmesh/fabric/coordinator/registry"
	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/store"
	"github.com/fabricmesh/fabric/internal/store/storetest"
	"github.com/google/go-cmp/cmp"
)

// migrationSource is a registry with a cluster of n nodes, registered,
// with services and SSH users, and a change log, in st.
func migrationSource(t *testing.T, st store.Store, n int) *registry.Registry {
	t.Helper()
	r := initRegistry(t, st, "203.0.113.0/24", 1)
	for i := range n {
		node := manyNode(i)
		p, err := r.Reserve(node.endpoint(), node.name(), node.key("wg"), node.key("signing"), false)
		if err != nil {
			t.Fatal(err)
		}
		if p, err = r.Activate(p.VPNIP, node.activated()); err != nil {
			t.Fatal(err)
		}
		if _, err := r.SetRegistration(p.VPNIP, node.key("reeve"), ""); err != nil {
			t.Fatal(err)
		}
		if _, err := r.SetServices(p.VPNIP, records.Services{Endpoints: []records.ServiceEndpoint{{Service: "pastiche", Port: 7450}},
			Clients: []records.ServiceClient{{Service: "pastiche", PubKey: node.key("pastiche")}}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, _, err := r.UpdateSSHUsers(func([]records.SSHUser) ([]records.SSHUser, error) {
		return []records.SSHUser{{Name: "alice", Keys: []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGFsaWNlJ3Mga2V5IGZvciB0aGUgbWlncmF0aW9uIHQ alice"}}}, nil
	}); err != nil {
		t.Fatal(err)
	}
	return r
}

// logOf is the change log of r.
func logOf(t *testing.T, r *registry.Registry) []registry.Entry {
	t.Helper()
	var out []registry.Entry
	if _, err := r.ReadLog(0, func(e registry.Entry) error { out = append(out, e); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

var target = registry.MigrateTarget{Address: "etcd://192.0.2.50:2379/fabric/test", StoreID: "etcd cluster 1, prefix /fabric/test/"}

// TestMigrate: the copy opens as the same registry, with its log; the
// source is marked moved (Open refuses it, and so does Migrate again).
func TestMigrate(t *testing.T) {
	from, to := store.NewMem(), store.NewMem()
	src := migrationSource(t, from, 120) // more keys than one batch
	res, err := registry.Migrate(from, to, "bolt:/var/lib/fabric/fabric.db", target)
	if err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	if res.ClusterID != "c1" || res.Revision != src.Revision() || res.Peers != 1+1+120 || res.Keys < 4*120 {
		t.Errorf("Migrate = %+v; want cluster c1 at revision %d, %d peers and every key", res, src.Revision(), 122)
	}
	copied, err := registry.Open(to)
	if err != nil {
		t.Fatalf("opening the copy: %v", err)
	}
	if diff := cmp.Diff(stateOf(src), stateOf(copied), cmpNetip); diff != "" {
		t.Errorf("the copy (-source +copy):\n%s", diff)
	}
	if diff := cmp.Diff(src.Services(), copied.Services(), cmpNetip); diff != "" {
		t.Errorf("the copy's services (-source +copy):\n%s", diff)
	}
	if diff := cmp.Diff(logOf(t, src), logOf(t, copied), cmpNetip); diff != "" {
		t.Errorf("the copy's log (-source +copy):\n%s", diff)
	}
	if _, err := registry.Open(from); !errors.Is(err, registry.ErrMoved) || !strings.Contains(err.Error(), "start fabricd with --store "+target.Address) {
		t.Errorf("Open of the source: %v, want ErrMoved saying which --store", err)
	}
	if _, err := registry.Migrate(from, store.NewMem(), "bolt:x", target); !errors.Is(err, registry.ErrMoved) {
		t.Errorf("Migrate of a moved source: %v, want ErrMoved", err)
	}
	if err := registry.CheckMoved(from, target.StoreID); err != nil {
		t.Errorf("CheckMoved of the source with its new store: %v", err)
	}
	if err := registry.CheckMoved(from, "another store"); err == nil || !strings.Contains(err.Error(), "--store "+target.Address) {
		t.Errorf("CheckMoved with another store: %v, want an error saying which --store", err)
	}
}

// TestMigrateRefuses: no cluster in the source, or anything in the
// target, and nothing is written to either.
func TestMigrateRefuses(t *testing.T) {
	full := store.NewMem()
	if err := full.Update(func(tx store.Tx) error { return tx.Put("other/key", []byte("x")) }); err != nil {
		t.Fatal(err)
	}
	src := store.NewMem()
	migrationSource(t, src, 2)
	tests := []struct {
		name     string
		from, to store.Store
		want     string
	}{
		{"no cluster", store.NewMem(), store.NewMem(), "holds no cluster's records"},
		{"target not empty", src, full, `the store to copy to is not empty: it holds 1 keys (the first: "other/key")`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, beforeTo := storetest.Dump(t, tt.from), storetest.Dump(t, tt.to)
			if _, err := registry.Migrate(tt.from, tt.to, "bolt:x", target); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Migrate: %v, want an error containing %q", err, tt.want)
			}
			if diff := cmp.Diff(before, storetest.Dump(t, tt.from)); diff != "" {
				t.Errorf("the source changed (-before +after):\n%s", diff)
			}
			if diff := cmp.Diff(beforeTo, storetest.Dump(t, tt.to)); diff != "" {
				t.Errorf("the target changed (-before +after):\n%s", diff)
			}
		})
	}
}

// cutStore fails every Update after the first n, as a copy cut short.
type cutStore struct {
	store.Store
	n int
}

func (s *cutStore) Update(fn func(store.Tx) error) error {
	if s.n == 0 {
		return errors.New("cut")
	}
	s.n--
	return s.Store.Update(fn)
}

// TestMigrateCutShort: a copy cut short is no cluster (Open refuses it);
// the source is not marked; Migrate again deletes it and copies afresh.
func TestMigrateCutShort(t *testing.T) {
	from, to := store.NewMem(), store.NewMem()
	src := migrationSource(t, from, 60)
	if _, err := registry.Migrate(from, &cutStore{Store: to, n: 1}, "bolt:/var/lib/fabric/fabric.db", target); err == nil {
		t.Fatal("Migrate succeeded through a store cut after one batch")
	}
	if _, err := registry.Open(to); !errors.Is(err, registry.ErrUnfinishedCopy) || !strings.Contains(err.Error(), "run fabricd migrate-store again") {
		t.Errorf("Open of the cut copy: %v, want ErrUnfinishedCopy", err)
	}
	if _, err := registry.Open(from); err != nil {
		t.Errorf("the source after a failed copy: %v", err)
	}
	if _, err := registry.Migrate(from, to, "bolt:/var/lib/fabric/fabric.db", target); err != nil {
		t.Fatalf("Migrate again: %v", err)
	}
	copied, err := registry.Open(to)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(stateOf(src), stateOf(copied), cmpNetip); diff != "" {
		t.Errorf("the copy (-source +copy):\n%s", diff)
	}
}

// TestCheckMoved: a coordinator's own store may hold no cluster, or one
// moved to the shared store it runs with.
func TestCheckMoved(t *testing.T) {
	own := store.NewMem()
	if err := registry.CheckMoved(own, target.StoreID); err != nil {
		t.Errorf("an empty store: %v", err)
	}
	migrationSource(t, own, 1)
	err := registry.CheckMoved(own, target.StoreID)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("holds the records of cluster c1, which are not in the store fabricd runs with (%s)", target.StoreID)) ||
		!strings.Contains(err.Error(), "fabricd migrate-store") {
		t.Errorf("a store with a cluster not moved: %v", err)
	}
}

package node

import (
	"bytes"
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fabricmesh/fabric/coordinator/registry"
	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/store"
	"github.com/fabricmesh/fabric/internal/store/boltstore"
	"github.com/fabricmesh/fabric/testbed/etcdlab"
)

func runMigrate(args ...string) (int, string) {
	var out bytes.Buffer
	code := Main(context.Background(), append([]string{"migrate-store"}, args...), &out, &out)
	return code, out.String()
}

func TestMigrateStoreUsage(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name     string
		args     []string
		wantCode int
		want     string
	}{
		{"no --from", []string{"--to", "etcd://127.0.0.1:2379"}, 2, `migrate-store: --from "": want bolt:PATH`},
		{"--from not bolt", []string{"--from", "/var/lib/fabric/fabric.db", "--to", "etcd://127.0.0.1:2379"}, 2, `--from "/var/lib/fabric/fabric.db": want bolt:PATH`},
		{"no --to", []string{"--from", "bolt:x.db"}, 2, "--to is required"},
		{"--to bolt", []string{"--from", "bolt:x.db", "--to", "bolt"}, 2, `--to: "bolt": want an etcd store`},
		{"--to malformed", []string{"--from", "bolt:x.db", "--to", "etcd://127.0.0.1"}, 2, `endpoint "127.0.0.1": want HOST:PORT`},
		{"TLS key readable by others", []string{"--from", "bolt:x.db", "--to", "etcds://127.0.0.1:2379", "--etcd-cert", f.looseKey, "--etcd-key", f.looseKey}, 2, "has mode 0644"},
		{"argument", []string{"--from", "bolt:x.db", "extra"}, 2, `unexpected argument "extra"`},
		{"missing file", []string{"--from", "bolt:" + filepath.Join(f.dir, "none.db"), "--to", "etcd://127.0.0.1:2379"}, 1, "--from: stat " + filepath.Join(f.dir, "none.db")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out := runMigrate(tt.args...)
			if code != tt.wantCode || !strings.Contains(out, tt.want) {
				t.Errorf("exit %d, output:\n%s\nwant exit %d and %q", code, out, tt.wantCode, tt.want)
			}
		})
	}
}

// TestMigrateStore copies a coordinator's bbolt file to a real etcd; a
// second run finds the file moved, a copy into the same prefix finds it
// taken, and a fabricd still running on the file makes it wait.
func TestMigrateStore(t *testing.T) {
	c := etcdlab.StartLocal(t, 1, nil)
	path := filepath.Join(etcdlab.TempDir(t), "fabric.db")
	st := newBoltCoordinator(t, path)
	address := c.URL("fabric/migrated")
	if code, out := runMigrate("--from", "bolt:"+path, "--to", address); code != 1 || !strings.Contains(out, "is locked by another process") || !strings.Contains(out, "stop fabricd first") {
		t.Errorf("with the file open: exit %d, output:\n%s", code, out)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	code, out := runMigrate("--from", "bolt:"+path, "--to", address)
	if code != 0 || !strings.Contains(out, "copied cluster 0123456789abcdef (revision 1, 1 peers") || !strings.Contains(out, "Start this coordinator with --store "+address) {
		t.Fatalf("migrate-store: exit %d, output:\n%s", code, out)
	}
	t.Logf("migrate-store:\n%s", out)
	if code, out := runMigrate("--from", "bolt:"+path, "--to", c.URL("fabric/other")); code != 1 || !strings.Contains(out, "the cluster's records were moved to another store: to "+address) {
		t.Errorf("again: exit %d, output:\n%s", code, out)
	}

	other := filepath.Join(etcdlab.TempDir(t), "fabric.db")
	st2, err := boltstore.Open(other, boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	reg2, err := registry.Open(st2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reg2.Init(records.Cluster{ID: "fedcba9876543210", VPNCIDR: netip.MustParsePrefix("203.0.113.0/24")}, testCoordinator, nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	st2.Close()
	if code, out := runMigrate("--from", "bolt:"+other, "--to", address); code != 1 || !strings.Contains(out, "the store to copy to is not empty") {
		t.Errorf("into a taken prefix: exit %d, output:\n%s", code, out)
	}
}

// TestStartRefusesRecordsLeftBehind: a coordinator started with a shared
// store whose own fabric.db still holds its cluster's records (not
// migrated) does not start.
func TestStartRefusesRecordsLeftBehind(t *testing.T) {
	f := newFixture(t)
	stateDir := filepath.Join(f.dir, "state")
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	st := newBoltCoordinator(t, filepath.Join(stateDir, "fabric.db"))
	st.Close()
	_, err := Start(context.Background(), Config{
		StateDir: stateDir, Listen: netip.MustParseAddrPort("127.0.0.1:7443"), BootstrapKey: f.keyBytes, Name: "c1",
		ClusterStore: store.NewMem(), ClusterStoreID: "etcd cluster 1, prefix /fabric/",
	})
	if err == nil || !strings.Contains(err.Error(), "holds the records of cluster 0123456789abcdef, which are not in the store fabricd runs with") {
		t.Errorf("Start: %v, want a refusal saying the records were not moved", err)
	}
}

// testCoordinator is the coordinator of the clusters these tests migrate.
var testCoordinator = records.Peer{Name: "c1", PublicEndpoint: "192.0.2.1:7443", WGEndpoint: "192.0.2.1:51820",
	WGPubKey: bytes.Repeat([]byte{1}, 32), SigningPubKey: bytes.Repeat([]byte{2}, 32)}

// newBoltCoordinator makes a bbolt store at path holding a cluster with
// its coordinator, as a coordinator's fabric.db does.
func newBoltCoordinator(t *testing.T, path string) *boltstore.Bolt {
	t.Helper()
	st, err := boltstore.Open(path, boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	reg, err := registry.Open(st)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Init(records.Cluster{ID: "0123456789abcdef", VPNCIDR: netip.MustParsePrefix("203.0.113.0/24")}, testCoordinator, nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	return st
}

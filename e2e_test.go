package fabric_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/fabricmesh/fabric/internal/nshost"
)

// binDir holds the binaries under test: $FABRIC_BIN_DIR (make test sets it
// to bin/) or a fresh build.
var binDir string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	binDir = os.Getenv("FABRIC_BIN_DIR")
	if binDir == "" && os.Geteuid() == 0 {
		dir, err := os.MkdirTemp("", "fabric-bin")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		if err := nshost.BuildBinaries(context.Background(), dir); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		binDir = dir
	}
	return m.Run()
}

// newFabric makes a lab with n fabricd hosts and an admin host.
func newFabric(t *testing.T, n int, opts func(i int) nshost.PeerOptions) (*nshost.Fabric, []*nshost.Host) {
	t.Helper()
	if err := nshost.Check(); err != nil {
		t.Skipf("multi-host test: %v", err)
	}
	ctx := context.Background()
	lab, err := nshost.New(ctx, nshost.Config{WorkDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			dumpLogs(t, lab)
		}
		if err := lab.Close(); err != nil {
			t.Errorf("closing lab: %v", err)
		}
	})
	f, err := nshost.NewFabric(ctx, lab, nshost.FabricConfig{BinDir: binDir})
	if err != nil {
		t.Fatal(err)
	}
	hosts, err := f.AddPeers(ctx, n, func(i int) string { return fmt.Sprintf("h%d", i+1) }, opts)
	if err != nil {
		t.Fatal(err)
	}
	return f, hosts
}

func dumpLogs(t *testing.T, lab *nshost.Lab) {
	for _, h := range lab.Hosts() {
		data, err := os.ReadFile(h.Dir() + "/fabricd.log")
		if err == nil {
			t.Logf("--- %s fabricd.log:\n%s", h.Name(), tail(string(data), 4000))
		}
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

func TestMeshSmoke(t *testing.T) {
	f, hosts := newFabric(t, 3, nil)
	ctx := context.Background()
	out, err := f.Activate(ctx, hosts[0], hosts[1:])
	t.Log(out)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := f.Watch(ctx, 3, 30*time.Second); err != nil {
		t.Fatal(out, err)
	}
	if err := f.CheckMesh(ctx, hosts); err != nil {
		t.Fatal(err)
	}
}

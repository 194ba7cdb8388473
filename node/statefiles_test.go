package node

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fabricmesh/fabric/core/coretest"
	"github.com/fabricmesh/fabric/internal/authconn"
	"github.com/fabricmesh/fabric/internal/bootstrapkey"
	"github.com/fabricmesh/fabric/internal/loopvpn"
	"github.com/fabricmesh/fabric/internal/store"
	"github.com/fabricmesh/fabric/internal/store/boltstore"
	"github.com/fabricmesh/fabric/internal/testlog"
	"github.com/fabricmesh/fabric/node/usermgr/usermgrtest"
	"github.com/fabricmesh/fabric/pubapi"
	"github.com/fabricmesh/fabric/pubapi/pubapipb"
	"github.com/spf13/afero"
)

// testDaemon is a fabricd in this process, on a loopback pubapi with fake
// WireGuard, with its state in dir.
type testDaemon struct {
	t        *testing.T
	dir      string
	key      []byte
	endpoint string
	log      *slog.Logger // default: the test's log
}

func newTestDaemon(t *testing.T) *testDaemon {
	key, err := bootstrapkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return &testDaemon{t: t, dir: filepath.Join(t.TempDir(), "state"), key: key}
}

// start starts the daemon; the caller stops it with the returned function.
func (td *testDaemon) start() (stop func(), err error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		td.t.Fatal(err)
	}
	td.endpoint = lis.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	log := td.log
	if log == nil {
		log = testlog.New(td.t)
	}
	d, err := Start(ctx, Config{
		StateDir: td.dir, Listen: netip.MustParseAddrPort(td.endpoint), BootstrapKey: td.key, Name: "n1",
		Logger: log, PubListener: lis, Network: coretest.NewFakeNetworkManager(),
		Users: usermgrtest.NewLinuxUserManagerFake(afero.NewMemMapFs()), VPN: loopvpn.New(),
	})
	if err != nil {
		cancel()
		lis.Close()
		return nil, err
	}
	return func() { cancel(); d.Wait() }, nil
}

// startedOnce starts and stops the daemon, leaving its identity and store.
func (td *testDaemon) startedOnce() {
	stop, err := td.start()
	if err != nil {
		td.t.Fatalf("first start: %v", err)
	}
	stop()
}

// getState asks the daemon's pubapi for its state.
func (td *testDaemon) getState() (*pubapipb.GetStateResponse, error) {
	c, err := pubapi.Dial(td.endpoint, authconn.ClientConfig{BootstrapKey: td.key})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return c.GetState(ctx, &pubapipb.GetStateRequest{})
}

// TestStateFilesRefused is the regression test of defects 4 and 5 of
// issue 9 for what keeps fabricd from starting: a state directory or store
// that others may read, and a store that is empty or missing next to an
// identity (which made the peer a fresh one). Nothing is changed.
func TestStateFilesRefused(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(td *testDaemon)
		want    []string
	}{
		{"state directory 0777", func(td *testDaemon) {
			if err := os.Mkdir(td.dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(td.dir, 0o777); err != nil {
				t.Fatal(err)
			}
		}, []string{"state directory ", " has mode 0777: it holds the peer's private keys and must not be accessible by group or others (chmod 700 "}},
		{"state directory 0750", func(td *testDaemon) {
			td.startedOnce()
			if err := os.Chmod(td.dir, 0o750); err != nil {
				t.Fatal(err)
			}
		}, []string{"has mode 0750"}},
		{"identity directory 0755", func(td *testDaemon) {
			td.startedOnce()
			if err := os.Chmod(filepath.Join(td.dir, "identity"), 0o755); err != nil {
				t.Fatal(err)
			}
		}, []string{"identity directory ", " has mode 0755: it holds private keys and must not be accessible by group or others (chmod 700 "}},
		{"fabric.db 0644", func(td *testDaemon) {
			td.startedOnce()
			if err := os.Chmod(filepath.Join(td.dir, "fabric.db"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, []string{"fabric.db has mode 0644; it holds private keys and must not be accessible by group or others (chmod 600 "}},
		{"zero-length fabric.db", func(td *testDaemon) {
			td.startedOnce()
			if err := os.Truncate(filepath.Join(td.dir, "fabric.db"), 0); err != nil {
				t.Fatal(err)
			}
		}, []string{"fabric.db has 0 bytes", "this peer may have had a role in a cluster", "stop fabricd and delete " + "STATE"}},
		{"fabric.db missing next to an identity", func(td *testDaemon) {
			td.startedOnce()
			if err := os.Remove(filepath.Join(td.dir, "fabric.db")); err != nil {
				t.Fatal(err)
			}
		}, []string{"fabric.db is missing, but the identity next to it exists", "stop fabricd and delete STATE"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			td := newTestDaemon(t)
			tt.prepare(td)
			before := snapshot(t, td.dir)
			stop, err := td.start()
			if err == nil {
				stop()
				t.Fatal("fabricd started")
			}
			for _, w := range tt.want {
				if w = strings.ReplaceAll(w, "STATE", td.dir); !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if after := snapshot(t, td.dir); after != before {
				t.Errorf("the state directory changed:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

// snapshot describes every file under dir: name, mode, size, content hash.
func snapshot(t *testing.T, dir string) string {
	var b strings.Builder
	err := filepath.Walk(dir, func(path string, fi os.FileInfo, err error) error {
		if os.IsNotExist(err) {
			return nil
		}
		if err != nil {
			return err
		}
		data := []byte(nil)
		if fi.Mode().IsRegular() {
			if data, err = os.ReadFile(path); err != nil {
				return err
			}
		}
		fmt.Fprintf(&b, "%s %v %d %x; ", strings.TrimPrefix(path, dir), fi.Mode(), fi.Size(), bytes.TrimSpace(data[:min(len(data), 16)]))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestDamagedStoreFails is the regression test of defect 4 of issue 9 for
// a damaged store: bbolt panicked and fabricd exited 2 with a stack trace.
// Now the peer is failed with the reason, and GetState answers.
func TestDamagedStoreFails(t *testing.T) {
	if os.Getpagesize() != 4096 {
		t.Skipf("the damage is placed for 4 KiB pages, not %d", os.Getpagesize())
	}
	td := newTestDaemon(t)
	td.startedOnce()
	// Enough records for pages of data, then one of them damaged.
	path := filepath.Join(td.dir, "fabric.db")
	s, err := boltstore.Open(path, boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Update(func(tx store.Tx) error {
		for i := range 2000 {
			if err := tx.Put(fmt.Sprintf("padding/%05d", i), bytes.Repeat([]byte{'x'}, 100)); err != nil {
				return err
			}
		}
		return nil
	})
	if cerr := s.Close(); err != nil || cerr != nil {
		t.Fatal(err, cerr)
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(bytes.Repeat([]byte{0xa5}, 4096), 10*4096); err != nil {
		t.Fatal(err)
	}
	f.Close()

	stop, err := td.start()
	if err != nil {
		t.Fatalf("fabricd did not start with a damaged store: %v", err)
	}
	defer stop()
	resp, err := td.getState()
	if err != nil {
		t.Fatalf("GetState: %v", err)
	}
	if resp.GetState() != "failed" || !strings.Contains(resp.GetFailure(), "state store "+path+": state store is damaged: ") {
		t.Errorf("GetState: state %q, failure %q; want failed with the damage", resp.GetState(), resp.GetFailure())
	}
}

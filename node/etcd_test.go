package node

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fabricmesh/fabric/core"
	"github.com/fabricmesh/fabric/internal/store/etcdstore"
	"github.com/fabricmesh/fabric/pubapi"
	"github.com/fabricmesh/fabric/testbed/etcdlab"
)

// syncBuffer is a bytes.Buffer that the daemon and the test may use at
// once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// freeEndpoint is a loopback TCP endpoint nothing listens on.
func freeEndpoint(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ep := lis.Addr().String()
	lis.Close()
	return ep
}

// TestMainOnEtcd runs fabricd with an etcd store, a real etcd: in
// plaintext given as flags, over TLS with a client certificate given in
// the config file. The daemon serves the pubapi and reports the etcd
// store's ID (the same for every coordinator of the store), and stops
// cleanly.
func TestMainOnEtcd(t *testing.T) {
	t.Run("plaintext, flags", func(t *testing.T) {
		c := etcdlab.StartLocal(t, 1, nil)
		f := newFixture(t)
		address := c.URL("fabric/maintest")
		runOnEtcd(t, f, address, etcdstore.TLSFiles{}, f.writeConfig(t, "# empty\n"), "--store", address)
	})
	t.Run("TLS, config file", func(t *testing.T) {
		files, err := etcdlab.WriteTLS(t.TempDir(), netip.MustParseAddr("127.0.0.1"))
		if err != nil {
			t.Fatal(err)
		}
		c := etcdlab.StartLocal(t, 1, files)
		f := newFixture(t)
		address := c.URL("fabric/maintest")
		config := f.writeConfig(t, fmt.Sprintf("store: %s\netcd-cacert: %s\netcd-cert: %s\netcd-key: %s\n", address, files.CA, files.ClientCert, files.ClientKey))
		runOnEtcd(t, f, address, files.Store(), config)
	})
}

// runOnEtcd runs fabricd with config and args until it answers GetState,
// checks its store, and stops it.
func runOnEtcd(t *testing.T, f *fixture, address string, files etcdstore.TLSFiles, config string, args ...string) {
	endpoint := freeEndpoint(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out syncBuffer
	exited := make(chan int, 1)
	go func() {
		exited <- Main(ctx, append([]string{"--config", config,
			"--state-dir", filepath.Join(f.dir, "state"), "--listen", endpoint, "--bootstrap-key-file", f.key, "--name", "c1",
			"--wg-interface", "fbetcdmain0", "--no-pastiche"}, args...), &out, &out)
	}()
	// What every coordinator of this store reports.
	u, err := etcdstore.ParseURL(address)
	if err != nil {
		t.Fatal(err)
	}
	opts, err := u.Options(files)
	if err != nil {
		t.Fatal(err)
	}
	other, err := etcdstore.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()

	_, signingPrivKey, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	activator := pubapi.NewNodeActivator(f.keyBytes, signingPrivKey)
	var st core.NodeState
	deadline := time.Now().Add(30 * time.Second)
	for {
		callCtx, callCancel := context.WithTimeout(ctx, 5*time.Second)
		st, err = activator.GetNodeState(callCtx, endpoint)
		callCancel()
		if err == nil {
			break
		}
		select {
		case code := <-exited:
			t.Fatalf("fabricd exited %d:\n%s", code, out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("fabricd does not answer GetState: %v\n%s", err, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if st.State != core.StateAcceptingInit || st.StoreID != other.ID() {
		t.Errorf("GetState: %s with store %q; want %s with store %q", st.State, st.StoreID, core.StateAcceptingInit, other.ID())
	}
	if !strings.Contains(out.String(), "the cluster's records are in etcd") {
		t.Errorf("fabricd did not log its store:\n%s", out.String())
	}
	cancel()
	if code := <-exited; code != 0 {
		t.Errorf("fabricd exited %d after a stop:\n%s", code, out.String())
	}
}

// TestMainEtcdUnreachable: with no etcd at the store's address, fabricd
// exits 1 and says which member it could not reach.
func TestMainEtcdUnreachable(t *testing.T) {
	f := newFixture(t)
	member := freeEndpoint(t)
	var out bytes.Buffer
	code := Main(context.Background(), []string{"--config", f.writeConfig(t, "# empty\n"),
		"--state-dir", filepath.Join(f.dir, "state"), "--listen", freeEndpoint(t), "--bootstrap-key-file", f.key, "--name", "c1",
		"--store", "etcd://" + member + "/fabric/x"}, &out, &out)
	want := []string{"fabricd: store etcd://" + member + "/fabric/x: etcd has no quorum: 0 of 1 members reachable (" + member + " unreachable: connect: connection refused): opening the etcd store"}
	for _, w := range want {
		if !strings.Contains(out.String(), w) {
			t.Errorf("output lacks %q:\n%s", w, out.String())
		}
	}
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
}

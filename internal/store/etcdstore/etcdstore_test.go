package etcdstore_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fabricmesh/fabric/internal/store"
	"github.com/fabricmesh/fabric/internal/store/etcdstore"
	"github.com/fabricmesh/fabric/internal/store/storetest"
	"github.com/fabricmesh/fabric/testbed/etcdlab"
	"github.com/google/go-cmp/cmp"
)

// The conformance tests share one three-member cluster; every store they
// open has a prefix of its own, so each starts empty.
var (
	shared     *etcdlab.Cluster
	sharedErr  error
	sharedOnce sync.Once
	sharedDir  string
	prefixes   atomic.Int64
)

func TestMain(m *testing.M) {
	code := m.Run()
	if shared != nil {
		if err := shared.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping etcd:", err)
		}
	}
	if sharedDir != "" {
		_ = os.RemoveAll(sharedDir)
	}
	os.Exit(code)
}

func sharedCluster(tb testing.TB) *etcdlab.Cluster {
	tb.Helper()
	etcdlab.RequireBinary(tb)
	sharedOnce.Do(func() {
		// In /dev/shm when it is there: etcd's fsyncs cost nothing.
		if sharedDir, sharedErr = os.MkdirTemp("/dev/shm", "etcdstore-test-"); sharedErr != nil {
			if sharedDir, sharedErr = os.MkdirTemp("", "etcdstore-test-"); sharedErr != nil {
				return
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		shared, sharedErr = etcdlab.StartLocalCluster(ctx, sharedDir, 3, nil)
	})
	if sharedErr != nil {
		tb.Fatalf("starting etcd: %v", sharedErr)
	}
	return shared
}

func open(tb testing.TB, opts etcdstore.Options) *etcdstore.Store {
	tb.Helper()
	s, err := etcdstore.Open(opts)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

// freshPrefix is a key prefix no other store of the test binary uses.
func freshPrefix() string { return fmt.Sprintf("/test/%d/", prefixes.Add(1)) }

func TestConformance(t *testing.T) {
	c := sharedCluster(t)
	storetest.Run(t, func(tb testing.TB) store.Store {
		return open(tb, etcdstore.Options{Endpoints: c.Endpoints(), Prefix: freshPrefix(), Timeout: 10 * time.Second})
	})
}

func TestClients(t *testing.T) {
	c := sharedCluster(t)
	storetest.RunClients(t, func(tb testing.TB, n int) []store.Store {
		prefix := freshPrefix()
		var clients []store.Store
		for i := range n {
			// Each client talks to another member first.
			eps := append(c.Endpoints()[i%3:], c.Endpoints()[:i%3]...)
			clients = append(clients, open(tb, etcdstore.Options{Endpoints: eps, Prefix: prefix, Timeout: 10 * time.Second}))
		}
		return clients
	})
}

// TestPrefixIsolation: stores under different prefixes of one etcd do not
// see each other's keys, and the keys are stored under the prefix.
func TestPrefixIsolation(t *testing.T) {
	c := sharedCluster(t)
	a := open(t, etcdstore.Options{Endpoints: c.Endpoints(), Prefix: "/iso/a/"})
	b := open(t, etcdstore.Options{Endpoints: c.Endpoints(), Prefix: "/iso/a/b/"})
	if err := a.Update(func(tx store.Tx) error { return tx.Put("k", []byte("a")) }); err != nil {
		t.Fatal(err)
	}
	if err := b.Update(func(tx store.Tx) error { return tx.Put("k", []byte("b")) }); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]string{"k": "b"}, storetest.Dump(t, b)); diff != "" {
		t.Errorf("store b (-want +got):\n%s", diff)
	}
	// a's prefix holds b's: a sees b's key under its own name, as etcd
	// holds it. Prefixes of different stores must not nest.
	if diff := cmp.Diff(map[string]string{"k": "a", "b/k": "b"}, storetest.Dump(t, a)); diff != "" {
		t.Errorf("store a (-want +got):\n%s", diff)
	}
	client, err := c.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	resp, err := client.Get(context.Background(), "/iso/a/k")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "a" {
		t.Errorf("etcd key /iso/a/k: %v, %v; want value a", resp, err)
	}
}

// TestID: clients of the same prefix given different members have the same
// ID; another prefix or another etcd cluster has another.
func TestID(t *testing.T) {
	c := sharedCluster(t)
	eps := c.Endpoints()
	first := open(t, etcdstore.Options{Endpoints: eps[:1], Prefix: "/id/a/"})
	others := open(t, etcdstore.Options{Endpoints: eps[1:], Prefix: "/id/a/"})
	otherPrefix := open(t, etcdstore.Options{Endpoints: eps, Prefix: "/id/b/"})
	if first.ID() != others.ID() {
		t.Errorf("IDs %q and %q of one prefix through different members differ", first.ID(), others.ID())
	}
	if first.ID() == otherPrefix.ID() {
		t.Errorf("ID %q of two prefixes is the same", first.ID())
	}
	if !strings.Contains(first.ID(), "/id/a/") {
		t.Errorf("ID %q does not name the prefix", first.ID())
	}
	t.Logf("ID: %s", first.ID())
}

func TestParseURL(t *testing.T) {
	tests := []struct {
		in      string
		want    etcdstore.URL
		wantErr string
	}{
		{in: "etcd://198.51.100.31:2379", want: etcdstore.URL{Endpoints: []string{"198.51.100.31:2379"}, Prefix: "/fabric/"}},
		{in: "etcd://a:2379,b:2379,[2001:db8::1]:2379/fabric/prod/", want: etcdstore.URL{
			Endpoints: []string{"a:2379", "b:2379", "[2001:db8::1]:2379"}, Prefix: "/fabric/prod/"}},
		{in: "etcds://a:2379/x", want: etcdstore.URL{Endpoints: []string{"a:2379"}, TLS: true, Prefix: "/x/"}},
		{in: "etcd://a:2379/", want: etcdstore.URL{Endpoints: []string{"a:2379"}, Prefix: "/fabric/"}},
		{in: "bolt:/var/lib/fabric/fabric.db", wantErr: "want etcd://HOST:PORT"},
		{in: "etcd://", wantErr: "no etcd endpoint"},
		{in: "etcd://a", wantErr: `endpoint "a": want HOST:PORT`},
		{in: "etcd://a:2379,,b:2379", wantErr: `endpoint "": want HOST:PORT`},
		{in: "etcd://a:0", wantErr: "port must be 1-65535"},
		{in: "etcd://a:http", wantErr: "port must be 1-65535"},
		{in: "etcd://a:1/x//y", wantErr: "prefix"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := etcdstore.ParseURL(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseURL error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseURL: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseURL (-want +got):\n%s", diff)
			}
			again, err := etcdstore.ParseURL(got.String())
			if err != nil || !cmp.Equal(got, again) {
				t.Errorf("ParseURL(%q) = %+v, %v; want the URL back", got.String(), again, err)
			}
		})
	}
}

func TestOptionsTLSFiles(t *testing.T) {
	dir := t.TempDir()
	plain, _ := etcdstore.ParseURL("etcd://a:2379")
	secure, _ := etcdstore.ParseURL("etcds://a:2379")
	notPEM := dir + "/garbage.pem"
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	looseKey := dir + "/loose-key.pem"
	if err := os.WriteFile(looseKey, []byte("not a key"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		url     etcdstore.URL
		files   etcdstore.TLSFiles
		wantErr string
	}{
		{"plaintext", plain, etcdstore.TLSFiles{}, ""},
		{"TLS with the system's roots", secure, etcdstore.TLSFiles{}, ""},
		{"TLS files on plaintext", plain, etcdstore.TLSFiles{CACert: notPEM}, "use etcds:// for TLS"},
		{"missing CA", secure, etcdstore.TLSFiles{CACert: dir + "/nope.pem"}, "--etcd-cacert"},
		{"CA not PEM", secure, etcdstore.TLSFiles{CACert: notPEM}, "no PEM certificate"},
		{"cert without key", secure, etcdstore.TLSFiles{Cert: notPEM}, "--etcd-cert and --etcd-key go together"},
		{"bad key pair", secure, etcdstore.TLSFiles{Cert: notPEM, Key: notPEM}, "--etcd-cert"},
		{"missing key", secure, etcdstore.TLSFiles{Cert: notPEM, Key: dir + "/nope-key.pem"}, "--etcd-key: stat " + dir + "/nope-key.pem"},
		{"key readable by others", secure, etcdstore.TLSFiles{Cert: notPEM, Key: looseKey}, "has mode 0644: the client's private key must not be readable by group or others (chmod 600"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts, err := tt.url.Options(tt.files)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Options: %v", err)
				}
				if (opts.TLS != nil) != tt.url.TLS {
					t.Errorf("Options TLS = %v for %s", opts.TLS, tt.url)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Options error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

// TestTLS runs a member that requires client certificates: the store
// with the CA and a client certificate works; without the certificate,
// or in plaintext, Open fails within its timeout.
func TestTLS(t *testing.T) {
	etcdlab.RequireBinary(t)
	files, err := etcdlab.WriteTLS(t.TempDir(), netip.MustParseAddr("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	c := etcdlab.StartLocal(t, 1, files)
	u, err := etcdstore.ParseURL(c.URL("fabric/tls"))
	if err != nil {
		t.Fatal(err)
	}
	opts, err := u.Options(files.Store())
	if err != nil {
		t.Fatal(err)
	}
	s := open(t, opts)
	if err := s.Update(func(tx store.Tx) error { return tx.Put("k", []byte("v")) }); err != nil {
		t.Fatalf("Update over TLS: %v", err)
	}
	if diff := cmp.Diff(map[string]string{"k": "v"}, storetest.Dump(t, s)); diff != "" {
		t.Errorf("content (-want +got):\n%s", diff)
	}

	noCert, err := u.Options(etcdstore.TLSFiles{CACert: files.CA})
	if err != nil {
		t.Fatal(err)
	}
	plain := etcdstore.Options{Endpoints: c.Endpoints()}
	for name, o := range map[string]etcdstore.Options{"no client certificate": noCert, "plaintext": plain} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			o.Timeout, o.DialTimeout = 2*time.Second, 2*time.Second
			start := time.Now()
			s, err := etcdstore.Open(o)
			if err == nil {
				_ = s.Close()
				t.Fatal("Open succeeded")
			}
			if elapsed := time.Since(start); elapsed > 10*time.Second {
				t.Errorf("Open failed after %s, want within its timeouts", elapsed)
			}
			t.Logf("Open: %v", err)
		})
	}
}

// TestMemberLoss kills members of a three-member cluster: with one gone,
// Updates, Views and watches work; with two gone, Update and View fail
// within a bounded time with an error that says there is no quorum; once
// one member is back, everything works again.
func TestMemberLoss(t *testing.T) {
	const timeout = 2 * time.Second
	c := etcdlab.StartLocal(t, 3, nil)
	s := open(t, etcdstore.Options{Endpoints: c.Endpoints(), Timeout: timeout})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n := 0
	increment := func() error {
		return s.Update(func(tx store.Tx) error {
			var v int
			if err := store.GetJSON(tx, "n", &v); err != nil && !errors.Is(err, store.ErrNotFound) {
				return err
			}
			return store.PutJSON(tx, "n", v+1)
		})
	}
	read := func() (int, error) {
		var v int
		err := s.View(func(tx store.Tx) error { return store.GetJSON(tx, "n", &v) })
		return v, err
	}
	works := func(stage string) {
		t.Helper()
		for range 5 {
			if err := increment(); err != nil {
				t.Fatalf("%s: Update: %v", stage, err)
			}
			n++
		}
		if got, err := read(); err != nil || got != n {
			t.Fatalf("%s: View read %d, %v; want %d", stage, got, err, n)
		}
	}
	works("three members")

	if err := c.Kill(0); err != nil {
		t.Fatal(err)
	}
	works("one of three members killed")

	if err := c.Kill(1); err != nil {
		t.Fatal(err)
	}
	// The bound: the store's timeout, the look at the members, and slack
	// for a loaded machine.
	const bound = timeout + 2*time.Second + 3*time.Second
	for name, op := range map[string]func() error{
		"Update": increment,
		"View":   func() error { _, err := read(); return err },
	} {
		start := time.Now()
		err := op()
		elapsed := time.Since(start)
		if !errors.Is(err, etcdstore.ErrNoQuorum) {
			t.Fatalf("two of three members killed: %s error %v, want etcdstore.ErrNoQuorum", name, err)
		}
		if !strings.Contains(err.Error(), "etcd has no quorum: 1 of 3 members reachable") {
			t.Errorf("%s error %q does not say how many members are reachable", name, err)
		}
		if elapsed > bound {
			t.Errorf("%s failed after %s, want within %s", name, elapsed, bound)
		}
		t.Logf("%s without quorum failed after %s: %v", name, elapsed.Round(time.Millisecond), err)
	}

	if err := c.Restart(ctx, 1); err != nil {
		t.Fatal(err)
	}
	// The client reconnects to the restarted member within its backoff.
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := increment()
		if err == nil {
			n++
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("quorum back: Update still fails: %v", err)
		}
	}
	works("a member restarted")
	if err := c.Restart(ctx, 0); err != nil {
		t.Fatal(err)
	}
	works("every member back")
}

// TestCampaign: of two clients campaigning in one election, one leads and
// the other waits until it resigns; a leader whose store closes without
// resigning (as in a crash) loses the leadership, and the next campaign
// leads once its session's lease expired.
func TestCampaign(t *testing.T) {
	c := sharedCluster(t)
	prefix := freshPrefix()
	a := open(t, etcdstore.Options{Endpoints: c.Endpoints(), Prefix: prefix, ElectionTTL: 2})
	b := open(t, etcdstore.Options{Endpoints: c.Endpoints()[1:], Prefix: prefix, ElectionTTL: 2})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	leadA, resignA, err := a.Campaign(ctx, "job", "a")
	if err != nil {
		t.Fatalf("a campaigns: %v", err)
	}
	type led struct {
		lead   context.Context
		resign func()
		err    error
	}
	bLeads := make(chan led, 1)
	go func() {
		lead, resign, err := b.Campaign(ctx, "job", "b")
		bLeads <- led{lead, resign, err}
	}()
	// b's campaign is in etcd once a campaign in another election, made
	// after it, has been answered.
	_, resignOther, err := a.Campaign(ctx, "another job", "a")
	if err != nil {
		t.Fatal(err)
	}
	resignOther()
	select {
	case l := <-bLeads:
		t.Fatalf("b leads (%v) while a does", l.err)
	default:
	}
	if leadA.Err() != nil {
		t.Fatalf("a lost the leadership: %v", leadA.Err())
	}
	resignA()
	if leadA.Err() == nil {
		t.Error("a's leadership did not end when it resigned")
	}
	l := <-bLeads
	if l.err != nil {
		t.Fatalf("b's campaign: %v", l.err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-l.lead.Done():
	case <-ctx.Done():
		t.Fatal("b's leadership did not end when its store closed")
	}
	l.resign()
	leadA, resignA, err = a.Campaign(ctx, "job", "a")
	if err != nil {
		t.Fatalf("a campaigns again: %v", err)
	}
	defer resignA()
	if leadA.Err() != nil {
		t.Errorf("a's new leadership ended: %v", leadA.Err())
	}
}

// TestTooLarge: a transaction over etcd's limits (operations, or bytes
// beyond what the client sends) fails with store.ErrTooLarge and commits
// nothing.
func TestTooLarge(t *testing.T) {
	c := sharedCluster(t)
	s := open(t, etcdstore.Options{Endpoints: c.Endpoints(), Prefix: freshPrefix()})
	tests := []struct {
		name string
		fn   func(store.Tx) error
	}{
		{"too many operations", func(tx store.Tx) error {
			for i := range etcdlab.MaxTxnOps + 1 {
				if err := tx.Put(fmt.Sprintf("k%05d", i), []byte("v")); err != nil {
					return err
				}
			}
			return nil
		}},
		{"too many bytes", func(tx store.Tx) error {
			return tx.Put("big", make([]byte, 3<<20))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.Update(tt.fn)
			if !errors.Is(err, store.ErrTooLarge) {
				t.Fatalf("Update: %v, want ErrTooLarge", err)
			}
			t.Logf("Update: %v", err)
			if got := storetest.Dump(t, s); len(got) != 0 {
				t.Errorf("the store holds %d keys after the refused transaction", len(got))
			}
		})
	}
}

package fabric_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fabricmesh/fabric/internal/clusterstatus"
	"github.com/fabricmesh/fabric/internal/sshusers/sshuserstest"
	"github.com/fabricmesh/fabric/testbed/nshost"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
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

// newFabric makes a lab with an admin host and n hosts running fabricd,
// named h1..hn.
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
	f, err := nshost.NewFabric(ctx, lab, nshost.FabricConfig{BinDir: binDir, LogLevel: os.Getenv("FABRIC_LOG_LEVEL")})
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
		if data, err := os.ReadFile(filepath.Join(h.Dir(), "fabricd.log")); err == nil {
			s := string(data)
			if len(s) > 6000 {
				s = "..." + s[len(s)-6000:]
			}
			t.Logf("--- %s fabricd.log:\n%s", h.Name(), s)
		}
	}
}

func activate(t *testing.T, f *nshost.Fabric, coordinator *nshost.Host, nodes []*nshost.Host, extra ...string) string {
	t.Helper()
	out, err := f.Activate(context.Background(), coordinator, nodes, extra...)
	t.Logf("fabric activate:\n%s", out)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func converge(t *testing.T, f *nshost.Fabric, n int) {
	t.Helper()
	if out, err := f.Watch(context.Background(), n, time.Minute); err != nil {
		t.Fatalf("fabric watch --n %d: %v\n%s", n, err, out)
	}
}

func checkMesh(t *testing.T, f *nshost.Fabric, hosts []*nshost.Host) {
	t.Helper()
	if err := f.CheckMesh(context.Background(), hosts); err != nil {
		t.Fatalf("mesh: %v", err)
	}
}

func status(t *testing.T, f *nshost.Fabric) clusterstatus.Status {
	t.Helper()
	st, err := f.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func peerByName(t *testing.T, st clusterstatus.Status, name string) clusterstatus.Peer {
	t.Helper()
	for _, p := range st.Peers {
		if p.Name == name {
			return p
		}
	}
	t.Fatalf("no peer %s in status %+v", name, st)
	return clusterstatus.Peer{}
}

// ignoreProgress compares statuses without what changes as peers report.
var ignoreProgress = cmpopts.IgnoreFields(clusterstatus.Peer{}, "AppliedRevision", "Online", "LastSeen", "CoordinatorHandshakeAgeMs", "Watching")

func TestMesh(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f, hosts := newFabric(t, 5, nil)
	activate(t, f, hosts[0], hosts[1:])
	converge(t, f, 5)
	checkMesh(t, f, hosts)

	st := status(t, f)
	seen := map[string]bool{}
	for i, p := range st.Peers {
		wantRole := "node"
		if i == 0 {
			wantRole = "coordinator"
		}
		if p.Role != wantRole || p.State != "active" || p.Horde != "sharks" || p.AppliedRevision != st.Revision || seen[p.VPNIP] {
			t.Errorf("peer %d: %+v (revision %d)", i, p, st.Revision)
		}
		seen[p.VPNIP] = true
	}
	if c := peerByName(t, st, "h1"); c.VPNIP != "203.0.113.1" || c.PublicEndpoint != f.Endpoint(hosts[0]) {
		t.Errorf("coordinator %+v, want VPN IP 203.0.113.1 at %s", c, f.Endpoint(hosts[0]))
	}

	t.Run("second activation refused", func(t *testing.T) {
		for _, c := range []struct {
			coordinator *nshost.Host
			want        string
		}{
			{hosts[0], "already active as the coordinator"},
			{hosts[1], "already active as a node"},
		} {
			adminDir := filepath.Join(f.Admin.Dir(), "second-"+c.coordinator.Name())
			out, err := f.CLI(ctx, "activate", "--coordinator", f.Endpoint(c.coordinator), "--nodes", f.Endpoint(hosts[4]),
				"--bootstrap-key-file", f.KeyFile, "--vpn-cidr", "203.0.113.0/24", "--admin-dir", adminDir)
			if err == nil || !strings.Contains(out, c.want) {
				t.Errorf("second activation of %s: err %v, output %q; want refusal with %q", c.coordinator.Name(), err, out, c.want)
			}
			if _, err := os.Stat(filepath.Join(adminDir, "admin.key")); err == nil {
				t.Errorf("refused activation left an admin key in %s", adminDir)
			}
		}
		if diff := cmp.Diff(st, status(t, f), ignoreProgress); diff != "" {
			t.Errorf("refused activation changed the cluster (-before +after):\n%s", diff)
		}
	})

	t.Run("admin joins the VPN with wg-quick", func(t *testing.T) {
		if err := f.AdminVPNUp(ctx); err != nil {
			t.Fatal(err)
		}
		var ips []string
		for _, p := range st.Peers {
			ips = append(ips, p.VPNIP)
		}
		if err := nshost.PingAll(ctx, f.Admin, ips); err != nil {
			t.Fatalf("admin host: %v", err)
		}
	})

	t.Run("node restart keeps its VPN IP and rejoins", func(t *testing.T) {
		h3 := hosts[2]
		if err := f.Daemon(h3).Kill(); err != nil { // a crash, not a clean stop
			t.Fatal(err)
		}
		if err := f.StartFabricd(ctx, h3); err != nil {
			t.Fatal(err)
		}
		converge(t, f, 5)
		if diff := cmp.Diff(peerByName(t, st, "h3"), peerByName(t, status(t, f), "h3"), ignoreProgress); diff != "" {
			t.Errorf("h3 changed across its restart (-before +after):\n%s", diff)
		}
		checkMesh(t, f, hosts)
	})

	t.Run("coordinator restart keeps all state", func(t *testing.T) {
		before := status(t, f)
		if err := f.StopFabricd(ctx, hosts[0]); err != nil {
			t.Fatal(err)
		}
		if _, err := f.Status(ctx); err == nil {
			t.Error("status answered with the coordinator down")
		}
		if err := f.StartFabricd(ctx, hosts[0]); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(before, status(t, f), ignoreProgress); diff != "" {
			t.Errorf("coordinator restart changed the cluster (-before +after):\n%s", diff)
		}
		converge(t, f, 5)
		checkMesh(t, f, hosts)
	})

	t.Run("add-nodes adds a host all others reach", func(t *testing.T) {
		added, err := f.AddPeers(ctx, 1, func(int) string { return "h6" }, nil)
		if err != nil {
			t.Fatal(err)
		}
		out, err := f.AddNodes(ctx, added)
		t.Logf("fabric add-nodes:\n%s", out)
		if err != nil {
			t.Fatal(err)
		}
		converge(t, f, 6)
		checkMesh(t, f, append(hosts, added...))
		hosts = append(hosts, added...)
	})

	t.Run("SSH users reach every host and a removed one is locked", func(t *testing.T) {
		key := sshuserstest.Key(7, "carol@laptop")
		if out, err := f.CLI(ctx, "users", "add", "carol", "--key", key, "--admin-dir", f.AdminDir); err != nil {
			t.Fatalf("fabric users add: %v\n%s", err, out)
		}
		converge(t, f, len(hosts))
		for _, h := range hosts {
			checkSSHUser(t, f.UsersRoot(h), "carol", "/bin/bash", key)
		}
		if out, err := f.CLI(ctx, "users", "remove", "carol", "--admin-dir", f.AdminDir); err != nil {
			t.Fatalf("fabric users remove: %v\n%s", err, out)
		}
		converge(t, f, len(hosts))
		for _, h := range hosts {
			checkSSHUser(t, f.UsersRoot(h), "carol", "/usr/sbin/nologin")
		}
	})
}

// checkSSHUser checks the account that useradd and usermod made in root:
// its shell, its authorized keys (owned by it, 0600), and when it has no
// keys that it is expired.
func checkSSHUser(t *testing.T, root, name, wantShell string, wantKeys ...string) {
	t.Helper()
	line := func(file string) []string {
		data, err := os.ReadFile(filepath.Join(root, file))
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(data), "\n") {
			if strings.HasPrefix(l, name+":") {
				return strings.Split(l, ":")
			}
		}
		t.Fatalf("%s has no %s", filepath.Join(root, file), name)
		return nil
	}
	pw := line("etc/passwd")
	if pw[6] != wantShell {
		t.Errorf("%s: shell of %s = %q, want %q", root, name, pw[6], wantShell)
	}
	keysFile := filepath.Join(root, pw[5], ".ssh", "authorized_keys")
	data, err := os.ReadFile(keysFile)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, l := range strings.Split(string(data), "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			keys = append(keys, l)
		}
	}
	if strings.Join(keys, "\n") != strings.Join(wantKeys, "\n") {
		t.Errorf("%s holds %q, want %q", keysFile, keys, wantKeys)
	}
	fi, err := os.Stat(keysFile)
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); fi.Mode().Perm() != 0o600 || fmt.Sprint(st.Uid) != pw[2] {
		t.Errorf("%s: mode %v, owner %d; want 0600 and %s", keysFile, fi.Mode().Perm(), st.Uid, pw[2])
	}
	if expired := line("etc/shadow")[7] == "1"; expired != (len(wantKeys) == 0) {
		t.Errorf("%s: %s expired %v with %d keys", root, name, expired, len(wantKeys))
	}
}

func TestActivationFailures(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f, hosts := newFabric(t, 3, nil)
	h1, h2, h3 := hosts[0], hosts[1], hosts[2]
	h4, err := f.Lab.AddHost(ctx, "h4") // no fabricd: unreachable
	if err != nil {
		t.Fatal(err)
	}
	otherKey := filepath.Join(f.Admin.Dir(), "other.key")
	if _, err := f.CLI(ctx, "key", "--out", otherKey); err != nil {
		t.Fatal(err)
	}

	t.Run("wrong bootstrap key at the CLI is refused and changes nothing", func(t *testing.T) {
		adminDir := filepath.Join(f.Admin.Dir(), "wrong-key-admin")
		out, err := f.CLI(ctx, "activate", "--coordinator", f.Endpoint(h1), "--nodes", f.Endpoint(h3),
			"--bootstrap-key-file", otherKey, "--vpn-cidr", "203.0.113.0/24", "--admin-dir", adminDir)
		if err == nil || !strings.Contains(out, "permission denied") || !strings.Contains(out, "bootstrap key mismatch") {
			t.Fatalf("activation with a wrong key: err %v, output %q", err, out)
		}
		if entries, _ := os.ReadDir(adminDir); len(entries) != 0 {
			t.Errorf("refused activation left files in the admin dir: %v", entries)
		}
	})

	// h2 has another cluster's key; h4 runs no fabricd.
	f.SetPeerOptions(h2, nshost.PeerOptions{KeyFile: otherKey})
	if err := f.StopFabricd(ctx, h2); err != nil {
		t.Fatal(err)
	}
	if err := f.StartFabricd(ctx, h2); err != nil {
		t.Fatal(err)
	}
	out, err := f.Activate(ctx, h1, []*nshost.Host{h2, h3, h4})
	t.Logf("fabric activate:\n%s", out)
	if err == nil {
		t.Fatal("activation with two bad nodes succeeded")
	}
	for _, want := range []string{
		"FAILED node " + f.Endpoint(h2), "bootstrap key",
		"FAILED node " + f.Endpoint(h4),
		"ok     node " + f.Endpoint(h3),
		"fabric add-nodes", f.Endpoints([]*nshost.Host{h2, h4}),
	} {
		if !strings.Contains(out, want) {
			t.Errorf("activate output lacks %q", want)
		}
	}
	converge(t, f, 2)
	checkMesh(t, f, []*nshost.Host{h1, h3})

	failed := status(t, f)
	var failedIPs = map[string]string{}
	for _, p := range failed.Peers {
		if p.State == "failed" {
			failedIPs[p.PublicEndpoint] = p.VPNIP
			if p.LastError == "" {
				t.Errorf("failed peer %+v has no error", p)
			}
		}
	}
	if len(failedIPs) != 2 {
		t.Fatalf("want 2 failed peers in status, got %+v", failed.Peers)
	}

	t.Run("add-nodes retries the failed nodes with their reserved IPs", func(t *testing.T) {
		f.SetPeerOptions(h2, nshost.PeerOptions{})
		if err := f.StopFabricd(ctx, h2); err != nil {
			t.Fatal(err)
		}
		for _, h := range []*nshost.Host{h2, h4} {
			if err := f.StartFabricd(ctx, h); err != nil {
				t.Fatal(err)
			}
		}
		out, err := f.AddNodes(ctx, []*nshost.Host{h2, h4})
		t.Logf("fabric add-nodes:\n%s", out)
		if err != nil {
			t.Fatal(err)
		}
		converge(t, f, 4)
		st := status(t, f)
		for _, h := range []*nshost.Host{h2, h4} {
			p := peerByName(t, st, h.Name())
			if p.State != "active" || p.VPNIP != failedIPs[f.Endpoint(h)] {
				t.Errorf("%s after retry: %+v, want active with its reserved VPN IP %s", h.Name(), p, failedIPs[f.Endpoint(h)])
			}
		}
		checkMesh(t, f, []*nshost.Host{h1, h2, h3, h4})
	})
}

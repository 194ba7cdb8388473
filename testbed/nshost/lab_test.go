package nshost

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/fabricmesh/fabric/internal/testlog"
)

func TestConfigDefaults(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{name: "defaults", cfg: Config{WorkDir: "/w"}},
		{name: "other allowed underlay", cfg: Config{WorkDir: "/w", Underlay: netip.MustParsePrefix("192.0.2.0/24")}},
		{name: "no workdir", cfg: Config{}, wantErr: "WorkDir is required"},
		{name: "private underlay", cfg: Config{WorkDir: "/w", Underlay: netip.MustParsePrefix("10.0.0.0/24")}, wantErr: "underlay 10.0.0.0/24 not allowed"},
		{name: "smaller underlay", cfg: Config{WorkDir: "/w", Underlay: netip.MustParsePrefix("198.51.100.0/25")}, wantErr: "not allowed"},
		{name: "dash in prefix", cfg: Config{WorkDir: "/w", Prefix: "a-b"}, wantErr: "invalid prefix"},
		{name: "slash in prefix", cfg: Config{WorkDir: "/w", Prefix: "a/b"}, wantErr: "invalid prefix"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.cfg.withDefaults()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("withDefaults() error = %v, want containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("withDefaults() = %v", err)
			}
			if !strings.HasPrefix(got.Prefix, "fab") || !got.Underlay.IsValid() || got.Logger == nil || got.Grace <= 0 {
				t.Errorf("withDefaults() = %+v, want prefix fab..., an underlay, a logger and a grace period", got)
			}
		})
	}
	a, _ := Config{WorkDir: "/w"}.withDefaults()
	b, _ := Config{WorkDir: "/w"}.withDefaults()
	if a.Prefix == b.Prefix {
		t.Errorf("two default prefixes are both %q, want unique", a.Prefix)
	}
}

func TestCheckHostName(t *testing.T) {
	for _, name := range []string{"", "sw", "a b", "-a", "a/b", strings.Repeat("a", 33)} {
		if checkHostName(name) == nil {
			t.Errorf("checkHostName(%q) = nil, want error", name)
		}
	}
	for _, name := range []string{"a", "node-1", "coordinator", "h_2"} {
		if err := checkHostName(name); err != nil {
			t.Errorf("checkHostName(%q) = %v", name, err)
		}
	}
}

func TestCommandLine(t *testing.T) {
	got := commandLine("wg", []string{"show", "fabric0", "a b", ""})
	want := `wg show fabric0 "a b" ""`
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("commandLine() (-want +got):\n%s", diff)
	}
}

// TestLab checks a lab of three hosts: addresses, reachability inside the
// lab, no way out, a private /run/wireguard per host, and the root
// namespace left alone.
func TestLab(t *testing.T) {
	requireRoot(t)
	ctx := t.Context()
	rootBefore := rootLinks(t)
	l := newLab(t, Config{})
	hosts, err := l.AddHosts(ctx, 3, func(i int) string { return fmt.Sprintf("h%d", i+1) })
	if err != nil {
		t.Fatalf("AddHosts() = %v", err)
	}

	t.Run("addresses", func(t *testing.T) {
		var got []string
		for _, h := range l.Hosts() {
			got = append(got, h.Name()+" "+h.IP().String()+" "+h.Namespace())
		}
		p := l.Prefix()
		want := []string{"h1 198.51.100.10 " + p + "-h1", "h2 198.51.100.11 " + p + "-h2", "h3 198.51.100.12 " + p + "-h3"}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("hosts (-want +got):\n%s", diff)
		}
		for _, h := range hosts {
			if fi, err := os.Stat(h.Dir()); err != nil || !fi.IsDir() {
				t.Errorf("%s: Dir() %s: %v", h, h.Dir(), err)
			}
		}
	})

	t.Run("ping", func(t *testing.T) {
		for _, from := range hosts {
			for _, to := range hosts {
				if from != to {
					if err := ping(ctx, from, to.IP().String()); err != nil {
						t.Error(err)
					}
				}
			}
		}
	})

	t.Run("no way out", func(t *testing.T) { testNoWayOut(t, l, hosts[0]) })
	t.Run("private run wireguard", func(t *testing.T) { testPrivateRunWireguard(t, hosts[0], hosts[1]) })
	t.Run("duplicate host", func(t *testing.T) {
		if _, err := l.AddHost(ctx, "h1"); err == nil || !strings.Contains(err.Error(), "already exists") {
			t.Errorf("AddHost(h1) again: error = %v, want already exists", err)
		}
	})
	t.Run("root namespace untouched", func(t *testing.T) {
		if diff := cmp.Diff(rootBefore, rootLinks(t)); diff != "" {
			t.Errorf("veth and bridge links of the root namespace changed (-before +after):\n%s", diff)
		}
	})
}

// rootLinks lists the root namespace's veth and bridge links (read only).
func rootLinks(t *testing.T) []string {
	return append(linkNames(t, "", "veth"), linkNames(t, "", "bridge")...)
}

func testNoWayOut(t *testing.T, l *Lab, h *Host) {
	ctx := t.Context()
	routes, err := h.Run(ctx, "ip", "-4", "route", "show")
	if err != nil {
		t.Fatal(err)
	}
	wantRoutes := "198.51.100.0/24 dev eth0 proto kernel scope link src 198.51.100.10"
	if diff := cmp.Diff(wantRoutes, strings.TrimSpace(routes)); diff != "" {
		t.Errorf("%s: routes (-want +got):\n%s", h, diff)
	}
	got := linkNames(t, l.switchNS, "")
	slices.Sort(got)
	want := []string{"br0", "lo", "v10", "v11", "v12"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("switch namespace links (-want +got):\n%s", diff)
	}
	outside := []string{"192.0.2.1"}
	if ip := rootIPv4(t); ip != "" {
		outside = append(outside, ip)
	}
	for _, ip := range outside {
		err := ping(ctx, h, ip)
		if err == nil {
			t.Errorf("%s reached %s outside the lab", h, ip)
			continue
		}
		t.Logf("as expected: %v", err)
	}
}

// rootIPv4 returns a global IPv4 address of the root namespace, or "".
func rootIPv4(t *testing.T) string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && n.IP.IsGlobalUnicast() {
			return n.IP.String()
		}
	}
	return ""
}

// testPrivateRunWireguard: a unix socket made at /run/wireguard by a process
// in host a is seen by other commands in a, not in b nor in the root.
func testPrivateRunWireguard(t *testing.T, a, b *Host) {
	ctx := t.Context()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	sock := fmt.Sprintf("%s/nshost-test-%d.sock", wireguardRun, os.Getpid())
	p, err := a.Start(exe, helperArg, "listen", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop(ctx)
	inDir := filepath.Join(a.Dir(), "run-wireguard", filepath.Base(sock))
	waitFor(t, "the socket in "+inDir, func() bool {
		_, err := os.Stat(inDir)
		return err == nil
	})

	if out, err := a.Run(ctx, exe, helperArg, "dial", sock); err != nil || out != "hello\n" {
		t.Errorf("dialing %s in %s = %q, %v; want hello", sock, a, out, err)
	}
	if _, err := b.Run(ctx, "test", "-e", sock); err == nil {
		t.Errorf("%s sees %s made in %s", b, sock, a)
	}
	if _, err := b.Run(ctx, exe, helperArg, "dial", sock); err == nil {
		t.Errorf("%s can dial %s made in %s", b, sock, a)
	}
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("root namespace: stat %s = %v, want not exist", sock, err)
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(mounts), wireguardRun) {
		t.Errorf("a mount on %s leaked into the root mount namespace", wireguardRun)
	}
}

// TestAddHostsMany makes 20 hosts at once and pings around the ring.
func TestAddHostsMany(t *testing.T) {
	const n = 20
	ctx := t.Context()
	l := newLab(t, Config{Underlay: netip.MustParsePrefix("192.0.2.0/24")})
	hosts, err := l.AddHosts(ctx, n, nil)
	if err != nil {
		t.Fatalf("AddHosts(%d) = %v", n, err)
	}
	if got := len(l.Hosts()); got != n {
		t.Fatalf("len(Hosts()) = %d, want %d", got, n)
	}
	for i, h := range hosts {
		wantName, wantIP := fmt.Sprintf("host%d", i), fmt.Sprintf("192.0.2.%d", 10+i)
		if h.Name() != wantName || h.IP().String() != wantIP {
			t.Errorf("host %d = %s %s, want %s %s", i, h.Name(), h.IP(), wantName, wantIP)
		}
	}
	err = forEach(n, func(i int) error {
		return ping(ctx, hosts[i], hosts[(i+1)%n].IP().String())
	})
	if err != nil {
		t.Error(err)
	}
}

func TestAddHostsBadNames(t *testing.T) {
	l := newLab(t, Config{})
	tests := []struct {
		name  string
		names []string
	}{
		{"duplicate", []string{"a", "b", "a"}},
		{"invalid", []string{"a", "no/slash"}},
		{"reserved", []string{"sw"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := l.AddHosts(t.Context(), len(tt.names), func(i int) string { return tt.names[i] })
			if err == nil {
				t.Fatalf("AddHosts(%q) = nil error", tt.names)
			}
			if got := l.Hosts(); len(got) != 0 {
				t.Errorf("after a rejected AddHosts, Hosts() has %d hosts", len(got))
			}
		})
	}
}

// TestCloseAfterFailure breaks host creation halfway (its namespace exists,
// its veth cannot be made) and checks that Close still removes everything.
func TestCloseAfterFailure(t *testing.T) {
	requireRoot(t)
	ctx := t.Context()
	l, err := New(ctx, Config{WorkDir: t.TempDir(), Logger: testlog.New(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() }) // in case we stop early
	if _, err := l.AddHost(ctx, "ok"); err != nil {
		t.Fatal(err)
	}
	// Take the bridge port name the next host needs.
	if out, err := exec.Command("ip", "-n", l.switchNS, "link", "add", "v11", "type", "bridge").CombinedOutput(); err != nil {
		t.Fatalf("making a link named v11: %v: %s", err, out)
	}
	_, err = l.AddHost(ctx, "broken")
	if err == nil || !strings.Contains(err.Error(), "creating host broken") || !strings.Contains(err.Error(), "v11") {
		t.Errorf("AddHost(broken) error = %v, want it to name the host and the failing command", err)
	}
	if left := namespacesWithPrefix(t, l.Prefix()); !slices.Contains(left, l.Prefix()+"-broken") {
		t.Errorf("want the half-made host's namespace before Close, got %v", left)
	}
	if got := len(l.Hosts()); got != 1 {
		t.Errorf("len(Hosts()) = %d, want 1", got)
	}
	if err := l.Close(); err != nil {
		t.Errorf("Close() = %v", err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close() = %v", err)
	}
	if left := namespacesWithPrefix(t, l.Prefix()); len(left) > 0 {
		t.Errorf("after Close, namespaces remain: %v", left)
	}
	if _, err := l.AddHost(ctx, "late"); err == nil {
		t.Error("AddHost after Close = nil error")
	}
}

// TestNewKeepsForeignNamespace: a New that fails because its switch name is
// taken must not delete that namespace, which is not its own.
func TestNewKeepsForeignNamespace(t *testing.T) {
	requireRoot(t)
	prefix := fmt.Sprintf("fabtest%d", os.Getpid())
	foreign := prefix + "-sw"
	if out, err := exec.Command("ip", "netns", "add", foreign).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", foreign, err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "delete", foreign).Run() })
	_, err := New(t.Context(), Config{Prefix: prefix, WorkDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), foreign) {
		t.Errorf("New() error = %v, want it to name %s", err, foreign)
	}
	if left := namespacesWithPrefix(t, prefix); !slices.Equal(left, []string{foreign}) {
		t.Errorf("namespaces = %v, want only the foreign %s", left, foreign)
	}
}

package core

import (
	"os/exec"
	"strings"
	"testing"
)

// goList runs `go list` with args on ./... of this package directory and
// returns the non-empty output lines. It skips the test when go is missing.
func goList(t *testing.T, args ...string) []string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("skipping: the go command is not in PATH (%v); core's imports cannot be listed", err)
	}
	cmd := exec.Command(goBin, append([]string{"list"}, args...)...)
	out, err := cmd.Output()
	if err != nil {
		stderr := ""
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("go list %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	var lines []string
	for _, l := range strings.Split(string(out), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	return lines
}

// TestNoIODependencies keeps core free of I/O: none of its transitive
// dependencies may be a package that talks to the network, the kernel, the
// disk or other processes. (core may use the types of wgctrl/wgtypes.)
func TestNoIODependencies(t *testing.T) {
	deps := goList(t, "-deps", "./...")
	if len(deps) == 0 {
		t.Fatal("go list -deps ./... listed nothing")
	}
	tests := []struct {
		name   string
		match  func(pkg string) bool
		reason string
	}{
		{"grpc", under("google.golang.org/grpc"), "gRPC belongs in pubapi/vpnapi; core takes a NodeActivator and a CoordinatorDialer"},
		{"netlink", under("github.com/vishvananda/netlink"), "netlink belongs in the network manager; core takes a NetworkManager"},
		{"wgctrl", func(p string) bool {
			return p == "golang.zx2c4.com/wireguard/wgctrl" || strings.HasPrefix(p, "golang.zx2c4.com/wireguard/wgctrl/internal/")
		}, "wgctrl configures devices; core may only use wgctrl/wgtypes"},
		{"wireguard-go device", under("golang.zx2c4.com/wireguard/device"), "wireguard-go belongs in the network manager"},
		{"wireguard-go tun", under("golang.zx2c4.com/wireguard/tun"), "wireguard-go belongs in the network manager"},
		{"wireguard-go conn", under("golang.zx2c4.com/wireguard/conn"), "wireguard-go belongs in the network manager"},
		{"wireguard-go ipc", under("golang.zx2c4.com/wireguard/ipc"), "wireguard-go belongs in the network manager"},
		{"bbolt", under("go.etcd.io/bbolt"), "the bbolt store lives in internal/store/boltstore; core takes a store.Store"},
		{"afero", under("github.com/spf13/afero"), "file systems belong in the user manager"},
		{"os/exec", exactly("os/exec"), "core must not run processes"},
		{"net/http", exactly("net/http"), "core must not serve or call HTTP"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, dep := range deps {
				if tt.match(dep) {
					t.Errorf("core depends on %s: %s", dep, tt.reason)
				}
			}
		})
	}
}

// TestNoIODirectImports forbids the standard packages that reach the OS.
// (net itself is fine: core uses net.IPNet and net.UDPAddr as types.)
func TestNoIODirectImports(t *testing.T) {
	imports := goList(t, "-f", `{{join .Imports "\n"}}`, "./...")
	if len(imports) == 0 {
		t.Fatal("go list found no imports in core")
	}
	tests := []struct {
		pkg    string
		reason string
	}{
		{"os", "core must not touch files or the environment; take an interface instead"},
		{"os/exec", "core must not run processes"},
		{"syscall", "core must not make system calls"},
	}
	for _, tt := range tests {
		t.Run(tt.pkg, func(t *testing.T) {
			for _, imp := range imports {
				if imp == tt.pkg {
					t.Errorf("core imports %s directly: %s", imp, tt.reason)
				}
			}
		})
	}
}

func under(root string) func(string) bool {
	return func(p string) bool { return p == root || strings.HasPrefix(p, root+"/") }
}

func exactly(pkg string) func(string) bool {
	return func(p string) bool { return p == pkg }
}

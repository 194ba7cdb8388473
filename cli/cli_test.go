package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fabricmesh/fabric/internal/bootstrapkey"
	"github.com/fabricmesh/fabric/internal/clusterstatus"
	"github.com/fabricmesh/fabric/internal/version"
)

func run(args ...string) (int, string) {
	var out bytes.Buffer
	code := Run(context.Background(), args, &out, &out)
	return code, out.String()
}

func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "key")
	if code, out := run("key", "--out", key); code != 0 {
		t.Fatalf("fabric key: %d %s", code, out)
	}
	loose := filepath.Join(dir, "loose.key")
	data, _ := os.ReadFile(key)
	if err := os.WriteFile(loose, data, 0o644); err != nil {
		t.Fatal(err)
	}
	activate := func(extra ...string) []string {
		args := []string{"activate", "--coordinator", "198.51.100.10:7443", "--nodes", "198.51.100.11:7443",
			"--bootstrap-key-file", key, "--admin-dir", filepath.Join(dir, "admin")}
		return append(args, extra...)
	}
	tests := []struct {
		name     string
		args     []string
		wantCode int
		want     []string
	}{
		{"unknown command", []string{"frobnicate"}, 2, []string{"unknown command"}},
		{"unknown flag", []string{"status", "--colour"}, 2, []string{"unknown flag", "--colour"}},
		{"coordinator not an endpoint", activate("--coordinator", "198.51.100.10"), 2, []string{"--coordinator", "not an endpoint IP:PORT"}},
		{"coordinator missing", []string{"activate", "--bootstrap-key-file", key}, 2, []string{"--coordinator is required"}},
		{"node not an endpoint", activate("--nodes", "198.51.100.11:7443,nodeB"), 2, []string{"--nodes", "nodeB"}},
		{"key file missing flag", []string{"activate", "--coordinator", "198.51.100.10:7443"}, 2, []string{"--bootstrap-key-file is required"}},
		{"key file unreadable", activate("--bootstrap-key-file", filepath.Join(dir, "nope")), 1, []string{"--bootstrap-key-file", "nope"}},
		{"key file readable by others", activate("--bootstrap-key-file", loose), 1, []string{"--bootstrap-key-file", "loose.key"}},
		{"cidr with host bits", activate("--vpn-cidr", "203.0.113.7/24"), 2, []string{"--vpn-cidr", "did you mean 203.0.113.0/24"}},
		{"cidr too small", activate("--vpn-cidr", "203.0.113.0/31"), 2, []string{"--vpn-cidr", "too small"}},
		{"cidr garbage", activate("--vpn-cidr", "vpn"), 2, []string{"--vpn-cidr", "not a CIDR"}},
		{"unknown admin dir", []string{"status", "--admin-dir", filepath.Join(dir, "none")}, 1, []string{"has no admin.json", "fabric activate"}},
		{"bad output format", []string{"status", "-o", "yaml"}, 2, []string{"-o \"yaml\""}},
		{"watch without n", []string{"watch"}, 2, []string{"--n"}},
		{"add-nodes without nodes", []string{"add-nodes"}, 2, []string{"--nodes is required"}},
		{"key refuses to overwrite", []string{"key", "--out", key}, 1, []string{"--out", "exists"}},
		{"unreachable coordinator", activate("--coordinator", "127.0.0.1:1"), 1, []string{"activating coordinator 127.0.0.1:1", "unreachable"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out := run(tt.args...)
			if code != tt.wantCode {
				t.Errorf("exit code %d, want %d; output:\n%s", code, tt.wantCode, out)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if k, err := bootstrapkey.ReadFile(key); err == nil && strings.Contains(out, bootstrapkey.Encode(k)) {
				t.Error("output contains the bootstrap key")
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "admin", "admin.key")); err == nil {
		t.Error("a failed activation left an admin key behind")
	}
}

func TestKeyPrintsAndWrites(t *testing.T) {
	code, out := run("key")
	if code != 0 {
		t.Fatalf("fabric key: %d %s", code, out)
	}
	path := filepath.Join(t.TempDir(), "k")
	if err := os.WriteFile(path, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := bootstrapkey.ReadFile(path); err != nil {
		t.Errorf("printed key does not read back: %v", err)
	}
	path2 := filepath.Join(t.TempDir(), "k2")
	if code, out := run("key", "--out", path2); code != 0 {
		t.Fatalf("fabric key --out: %d %s", code, out)
	}
	info, err := os.Stat(path2)
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("key file mode: %v %v", info, err)
	}
}

func TestVersion(t *testing.T) {
	want := "fabric " + version.Get().String() + "\n"
	for _, args := range [][]string{{"version"}, {"--version"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			code, out := run(args...)
			if code != 0 || out != want {
				t.Errorf("fabric %s: exit %d, output %q; want 0, %q", strings.Join(args, " "), code, out, want)
			}
		})
	}
}

func TestPrintStatusShowsCoordinatorVersion(t *testing.T) {
	tests := []struct {
		version, want string
	}{
		{"v0.1.0 (commit 1a2b3c4, go1.26.8)", "cluster c1  revision 3  vpn 203.0.113.0/24\ncoordinator fabricd v0.1.0 (commit 1a2b3c4, go1.26.8)\n\n"},
		{"", "cluster c1  revision 3  vpn 203.0.113.0/24\ncoordinator fabricd (version not reported)\n\n"},
	}
	for _, tt := range tests {
		t.Run(tt.version, func(t *testing.T) {
			var out bytes.Buffer
			printStatus(&out, clusterstatus.Status{ClusterID: "c1", Revision: 3, VPNCIDR: "203.0.113.0/24", CoordinatorVersion: tt.version})
			if !strings.HasPrefix(out.String(), tt.want) {
				t.Errorf("status:\n%s\nwant it to start with:\n%s", out.String(), tt.want)
			}
		})
	}
}

package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fabricmesh/fabric/internal/bootstrapkey"
	"github.com/fabricmesh/fabric/internal/clusterstatus"
	"github.com/fabricmesh/fabric/internal/version"
	"github.com/fabricmesh/fabric/pubapi/pubapipb"
	"github.com/google/go-cmp/cmp"
	"github.com/spf13/cobra"
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
		{"unknown subcommand", []string{"pastiche", "sned"}, 2, []string{`unknown command "sned" for "fabric pastiche"`, "Did you mean this?\n\tsend"}},
		{"unknown subcommand, no suggestion", []string{"users", "frob"}, 2, []string{`unknown command "frob" for "fabric users"`, "fabric users --help"}},
		{"unknown completion shell", []string{"completion", "bashh"}, 2, []string{`unknown command "bashh" for "fabric completion"`, "\tbash"}},
		{"unknown help topic", []string{"help", "stauts"}, 2, []string{`unknown command "stauts" for "fabric"`, "\tstatus"}},
		{"unknown nested help topic", []string{"help", "users", "ad"}, 2, []string{`unknown command "ad" for "fabric users"`, "\tadd"}},
		{"cidr without room for a node", activate("--vpn-cidr", "203.0.113.0/30"), 2, []string{"--vpn-cidr", "too small to hold a node", "/29"}},
		{"node listed twice", activate("--nodes", "198.51.100.11:7443,198.51.100.12:7443,198.51.100.11:7443"), 2, []string{"--nodes: 198.51.100.11:7443 is listed twice"}},
		{"node listed twice, mapped", activate("--nodes", "198.51.100.11:7443,[::ffff:198.51.100.11]:7443"), 2, []string{"--nodes: 198.51.100.11:7443 is listed twice"}},
		{"coordinator as a node", activate("--nodes", "198.51.100.10:7443"), 2, []string{"--nodes: 198.51.100.10:7443 is the coordinator's own endpoint"}},
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

// TestHelpExitsZero: help asked for, or a command group given no
// subcommand, is not a mistake.
func TestHelpExitsZero(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"--help"}, {"help", "users", "add"}, {"users"}, {"pastiche"}, {"completion"}, {"users", "add", "--help"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			code, out := run(args...)
			if code != 0 || !strings.Contains(out, "Usage:") {
				t.Errorf("fabric %s: exit %d, want 0 and the help; output:\n%s", strings.Join(args, " "), code, out)
			}
		})
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
			printStatus(&out, clusterstatus.Status{ClusterID: "c1", Revision: 3, VPNCIDR: "203.0.113.0/24", CoordinatorVersion: tt.version}, time.Now())
			if !strings.HasPrefix(out.String(), tt.want) {
				t.Errorf("status:\n%s\nwant it to start with:\n%s", out.String(), tt.want)
			}
		})
	}
}

func TestStatusLiveness(t *testing.T) {
	now := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	proto := &pubapipb.ClusterStatus{ClusterId: "c1", Revision: 9, VpnCidr: "203.0.113.0/24", Peers: []*pubapipb.Peer{
		{Name: "h1", Role: "coordinator", State: "active", VpnIp: "203.0.113.1", AppliedRevision: 9, Online: true, LastSeen: now.Unix(), CoordinatorHandshakeAgeMs: -1},
		{Name: "h2", Role: "node", State: "active", VpnIp: "203.0.113.3", AppliedRevision: 9, Online: true, LastSeen: now.Add(-4 * time.Second).Unix(), CoordinatorHandshakeAgeMs: 1200},
		{Name: "h3", Role: "node", State: "active", VpnIp: "203.0.113.4", AppliedRevision: 8, LastSeen: now.Add(-190 * time.Second).Unix(), CoordinatorHandshakeAgeMs: -1},
		{Role: "node", State: "failed", VpnIp: "203.0.113.5", PublicEndpoint: "198.51.100.99:7443", CoordinatorHandshakeAgeMs: -1},
		{Name: "admin", Role: "admin", State: "active", VpnIp: "203.0.113.2", CoordinatorHandshakeAgeMs: -1},
	}}
	st := statusFromProto(proto)
	type live struct {
		Name        string
		Online      bool
		LastSeen    string
		HandshakeMs int64
	}
	var got []live
	for _, p := range append(st.Peers, st.Admins...) {
		got = append(got, live{p.Name, p.Online, p.LastSeen, p.CoordinatorHandshakeAgeMs})
	}
	want := []live{
		{"h1", true, "2026-05-01T10:00:00Z", -1},
		{"h2", true, "2026-05-01T09:59:56Z", 1200},
		{"h3", false, "2026-05-01T09:56:50Z", -1},
		{"", false, "", -1},
		{"admin", false, "", -1},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("status liveness (-want +got):\n%s", diff)
	}
	data, err := json.Marshal(st.Peers[2])
	if err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{`"online":false`, `"lastSeen":"2026-05-01T09:56:50Z"`, `"coordinatorHandshakeAgeMs":-1`} {
		if !strings.Contains(string(data), field) {
			t.Errorf("status JSON of h3 lacks %s: %s", field, data)
		}
	}

	var out bytes.Buffer
	printStatus(&out, st, now)
	rows := map[string][]string{}
	lines := strings.Split(out.String(), "\n")
	header := lines[3]
	for _, line := range lines[4:] {
		if f := strings.Fields(line); len(f) > 0 && f[0] != "admin" {
			rows[f[0]] = f
		}
	}
	if got := strings.Join(strings.Fields(header), " "); got != "NAME ROLE STATE ONLINE LAST SEEN VPN IP PUBLIC ENDPOINT HORDE REGISTERED SERVICES APPLIED NOTE" {
		t.Errorf("status header %q", header)
	}
	for name, want := range map[string]string{
		"h1": "h1 coordinator active online 0s ago 203.0.113.1",
		"h2": "h2 node active online 4s ago 203.0.113.3",
		"h3": "h3 node active offline 3m10s ago 203.0.113.4",
	} {
		if got := strings.Join(rows[name], " "); !strings.HasPrefix(got, want) {
			t.Errorf("status row of %s = %q, want it to start with %q", name, got, want)
		}
	}
	if !regexp.MustCompile(`\n\s+node\s+failed\s+offline\s+never\s+203\.0\.113\.5\s`).MatchString(out.String()) {
		t.Errorf("the failed row is not offline and never seen:\n%s", out.String())
	}
}

func TestLastSeen(t *testing.T) {
	now := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	tests := []struct{ at, want string }{
		{"", "never"},
		{"2026-05-01T10:00:00Z", "0s ago"},
		{"2026-05-01T09:59:30Z", "30s ago"},
		{"2026-05-01T08:59:00Z", "1h1m0s ago"},
		{"2026-05-01T10:00:01Z", "0s ago"},               // within a second of clock skew
		{"2026-05-01T10:05:00Z", "2026-05-01T10:05:00Z"}, // ahead: shown as it is
		{"yesterday", "yesterday"},                       // does not parse
	}
	for _, tt := range tests {
		if got := lastSeen(tt.at, now); got != tt.want {
			t.Errorf("lastSeen(%q) = %q, want %q", tt.at, got, tt.want)
		}
	}
}

// TestEveryCallHasADeadline: every command that calls a peer has a
// --timeout with a positive default (activate and add-nodes compute
// theirs from the number of nodes, pastiche send from the size of the
// file: 0 means that).
func TestEveryCallHasADeadline(t *testing.T) {
	// These read or write local files only (vpn status: the VPN daemon's state
	// and the interface).
	local := map[string]bool{"fabric key": true, "fabric version": true, "fabric help": true, "fabric vpn status": true}
	computed := map[string]bool{"fabric activate": true, "fabric add-nodes": true, "fabric pastiche send": true}
	var walk func(cmd *cobra.Command)
	walk = func(cmd *cobra.Command) {
		for _, sub := range cmd.Commands() {
			walk(sub)
		}
		path := cmd.CommandPath()
		if cmd.HasSubCommands() || local[path] || strings.HasPrefix(path, "fabric completion") || !cmd.Runnable() {
			return
		}
		f := cmd.Flags().Lookup("timeout")
		switch {
		case f == nil:
			t.Errorf("%s has no --timeout", path)
		case computed[path]:
			if f.DefValue != "0s" {
				t.Errorf("%s --timeout defaults to %s; it is computed (0s)", path, f.DefValue)
			}
		default:
			if d, err := time.ParseDuration(f.DefValue); err != nil || d <= 0 {
				t.Errorf("%s --timeout defaults to %s, want a positive duration", path, f.DefValue)
			}
		}
	}
	walk(NewRootCommand(io.Discard, io.Discard))
}

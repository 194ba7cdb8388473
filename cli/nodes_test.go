package cli

import (
	"bytes"
	"context"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/fabricmesh/fabric/pubapi/pubapipb"
)

// runConsole runs the CLI with answers read from con.
func runConsole(con console, args ...string) (int, string) {
	var out bytes.Buffer
	code := runWith(context.Background(), args, &out, &out, con)
	return code, out.String()
}

func TestNodesRemoveUsage(t *testing.T) {
	noBundle := filepath.Join(t.TempDir(), "none")
	batch := console{in: strings.NewReader(""), interactive: false}
	terminal := console{in: strings.NewReader(""), interactive: true}
	tests := []struct {
		name     string
		con      console
		args     []string
		wantCode int
		want     []string
	}{
		{"no node", batch, []string{"nodes", "remove", "--yes"}, 2, []string{"accepts 1 arg(s)"}},
		{"two nodes", batch, []string{"nodes", "remove", "h1", "h2", "--yes"}, 2, []string{"accepts 1 arg(s)"}},
		{"empty node", batch, []string{"nodes", "remove", " ", "--yes"}, 2, []string{"give the node's name, VPN IP or public endpoint"}},
		{"malformed endpoint", batch, []string{"nodes", "remove", "198.51.100.11:", "--yes"}, 2, []string{`"198.51.100.11:" is not an endpoint IP:PORT nor a VPN IP`}},
		{"host name endpoint", batch, []string{"nodes", "remove", "node1.example:7443", "--yes"}, 2, []string{"not an endpoint IP:PORT"}},
		{"no terminal and no --yes", batch, []string{"nodes", "remove", "h3", "--admin-dir", noBundle}, 2, []string{"needs confirmation", "standard input is not a terminal", "--yes"}},
		{"bad timeout", batch, []string{"nodes", "remove", "h3", "--yes", "--timeout", "0s"}, 2, []string{"--timeout must be positive"}},
		{"unknown flag", batch, []string{"nodes", "remove", "h3", "--force"}, 2, []string{"unknown flag: --force"}},
		// With a terminal the question comes once the row is known, so
		// these get as far as the admin bundle.
		{"terminal, no bundle", terminal, []string{"nodes", "remove", "h3", "--admin-dir", noBundle}, 1, []string{"has no admin.json"}},
		{"--yes, no bundle", batch, []string{"nodes", "remove", "198.51.100.13:7443", "--yes", "--admin-dir", noBundle}, 1, []string{"has no admin.json"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out := runConsole(tt.con, tt.args...)
			if code != tt.wantCode {
				t.Errorf("exit code %d, want %d; output:\n%s", code, tt.wantCode, out)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}

func TestConfirmRemoval(t *testing.T) {
	const desc = "h3 (VPN IP 203.0.113.4, 198.51.100.13:7443, active)"
	tests := []struct {
		name    string
		in      io.Reader
		wantErr string // "" to go on
	}{
		{"y", strings.NewReader("y\n"), ""},
		{"yes, upper case, spaces", strings.NewReader("  YES \n"), ""},
		{"yes without newline", strings.NewReader("yes"), ""},
		{"n", strings.NewReader("n\n"), "not confirmed"},
		{"empty line", strings.NewReader("\n"), "not confirmed"},
		{"something else", strings.NewReader("remove it\n"), "not confirmed"},
		{"end of input", strings.NewReader(""), "not confirmed"},
		{"read error", iotest.ErrReader(errors.New("terminal gone")), "reading the answer: terminal gone"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			err := console{in: tt.in, interactive: true}.confirmRemoval(&out, desc)
			if (err == nil) != (tt.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("confirmRemoval = %v, want %q", err, tt.wantErr)
			}
			var ee *exitError
			if tt.wantErr == "not confirmed" && (!errors.As(err, &ee) || ee.code != 1) {
				t.Errorf("a refusal is %#v, want exit code 1", err)
			}
			if want := "Remove node " + desc + "? Its VPN IP is retired and its keys are refused from then on. [y/N] "; !strings.HasPrefix(out.String(), want) {
				t.Errorf("question %q, want %q", out.String(), want)
			}
		})
	}
}

func TestFindNodeRow(t *testing.T) {
	cluster := &pubapipb.ClusterStatus{ClusterId: "c1", Peers: []*pubapipb.Peer{
		{Name: "h1", Role: "coordinator", State: "active", VpnIp: "203.0.113.1", PublicEndpoint: "198.51.100.11:7443"},
		{Name: "admin", Role: "admin", State: "active", VpnIp: "203.0.113.2"},
		{Name: "h2", Role: "node", State: "active", VpnIp: "203.0.113.3", PublicEndpoint: "198.51.100.12:7443"},
		{Role: "node", State: "failed", VpnIp: "203.0.113.4", PublicEndpoint: "198.51.100.99:7443", LastError: "unreachable"},
		{Name: "h5", Role: "node", State: "pending", VpnIp: "203.0.113.5", PublicEndpoint: "198.51.100.15:7443"},
		{Name: "twin", Role: "node", State: "failed", VpnIp: "203.0.113.6", PublicEndpoint: "198.51.100.16:7443"},
		{Name: "twin", Role: "node", State: "active", VpnIp: "203.0.113.7", PublicEndpoint: "198.51.100.17:7443"},
	}}
	tests := []struct {
		target    string
		wantVPNIP string
		wantErr   string
		wantUsage bool
	}{
		{target: "h2", wantVPNIP: "203.0.113.3"},
		{target: "203.0.113.3", wantVPNIP: "203.0.113.3"},
		{target: "198.51.100.12:7443", wantVPNIP: "203.0.113.3"},
		{target: "198.51.100.99:7443", wantVPNIP: "203.0.113.4"}, // a mistyped endpoint's failed row
		{target: "h5", wantVPNIP: "203.0.113.5"},                 // pending
		{target: "203.0.113.7", wantVPNIP: "203.0.113.7"},
		{target: "h9", wantErr: "no node of cluster c1 is named h9"},
		{target: "twin", wantErr: "2 rows match twin: twin (VPN IP 203.0.113.6, 198.51.100.16:7443, failed); twin (VPN IP 203.0.113.7, 198.51.100.17:7443, active); give the VPN IP", wantUsage: true},
		{target: "h1", wantErr: "h1 (VPN IP 203.0.113.1, 198.51.100.11:7443, active) is a coordinator: use fabric coordinators remove", wantUsage: true},
		{target: "admin", wantErr: "admin (VPN IP 203.0.113.2, active) is an admin, not a node", wantUsage: true},
	}
	for _, tt := range tests {
		t.Run(tt.target, func(t *testing.T) {
			p, err := findNodeRow(cluster, tt.target)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("findNodeRow(%s) = %v, %v; want error %q", tt.target, p, err, tt.wantErr)
				}
				if isUsage(err) != tt.wantUsage {
					t.Errorf("usage error %v, want %v", isUsage(err), tt.wantUsage)
				}
				return
			}
			if err != nil || p.GetVpnIp() != tt.wantVPNIP {
				t.Fatalf("findNodeRow(%s) = %v, %v; want the row of %s", tt.target, p, err, tt.wantVPNIP)
			}
		})
	}
}

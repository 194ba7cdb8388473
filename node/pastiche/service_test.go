package pastiche

import (
	"context"
	"crypto/sha256"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestCheckName(t *testing.T) {
	for _, tt := range []struct {
		name string
		ok   bool
	}{
		{"report.pdf", true},
		{"a", true},
		{"with space and ünïcode", true},
		{"a..b", true},
		{"back\\slash", true},
		{strings.Repeat("x", MaxNameLen), true},
		{strings.Repeat("é", MaxNameLen/2), true},
		{"", false},
		{".", false},
		{"..", false},
		{".hidden", false},
		{"a/b", false},
		{"/etc", false},
		{"../up", false},
		{strings.Repeat("x", MaxNameLen+1), false},
		{"tab\there", false},
		{"new\nline", false},
		{"nul\x00", false},
		{"del\x7f", false},
		{"c1\u0085", false},
		{"bad\xffutf8", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckName(tt.name)
			if (err == nil) != tt.ok {
				t.Errorf("CheckName(%q) = %v, want ok %v", tt.name, err, tt.ok)
			}
		})
	}
}

func TestStartRemovesLeftovers(t *testing.T) {
	tc := newTestCluster(t, nil)
	p := tc.newPeer(t, "h1", netip.MustParseAddr("203.0.113.2"))
	if err := os.MkdirAll(p.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]string{tempPrefix + "123": "half a fi", "kept": "a file"} {
		if err := os.WriteFile(filepath.Join(p.dir, name), []byte(data), fileMode); err != nil {
			t.Fatal(err)
		}
	}
	tc.startPastiche(t, p)
	want := map[string][sha256.Size]byte{"kept": sha256.Sum256([]byte("a file"))}
	if diff := cmp.Diff(want, storedFiles(t, p.dir)); diff != "" {
		t.Errorf("files after start (-want +got):\n%s", diff)
	}
}

func TestStartFails(t *testing.T) {
	tc := newTestCluster(t, nil)
	r := tc.peers[coordinator].reeve
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		cfg  Config
	}{
		{"no reeve", Config{Dir: dir, Listen: tc.vpn.Listen}},
		{"no dir", Config{Reeve: r, Listen: tc.vpn.Listen}},
		{"no listen", Config{Reeve: r, Dir: dir}},
		{"listen fails", Config{Reeve: r, Dir: dir, Listen: func(context.Context, netip.AddrPort) (net.Listener, error) {
			return nil, errors.New("address in use")
		}}},
		{"dir is a file", Config{Reeve: r, Dir: file, Listen: tc.vpn.Listen}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Start(context.Background(), tt.cfg); err == nil {
				t.Error("Start succeeded")
			}
		})
	}
}

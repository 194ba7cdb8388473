package node

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fabricmesh/fabric/internal/bootstrapkey"
)

func TestParseFlags(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "key")
	k, _ := bootstrapkey.Generate()
	if err := bootstrapkey.WriteFile(key, k); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(bad, []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := func(extra ...string) []string {
		return append([]string{"--state-dir", dir, "--listen", "198.51.100.10:7443", "--bootstrap-key-file", key, "--name", "n1"}, extra...)
	}
	tests := []struct {
		name string
		args []string
		want string // "" = valid
	}{
		{"valid", base(), ""},
		{"valid with horde and port", base("--horde", "jets", "--wg-port", "51999"), ""},
		{"no state dir", []string{"--listen", "198.51.100.10:7443", "--bootstrap-key-file", key}, "--state-dir is required"},
		{"no listen", []string{"--state-dir", dir, "--bootstrap-key-file", key}, "--listen is required"},
		{"listen without port", base("--listen", "198.51.100.10"), "--listen \"198.51.100.10\": want IP:PORT"},
		{"listen on any", base("--listen", "0.0.0.0:7443"), "needs a specific IP"},
		{"no key file", []string{"--state-dir", dir, "--listen", "198.51.100.10:7443"}, "--bootstrap-key-file is required"},
		{"missing key file", base("--bootstrap-key-file", filepath.Join(dir, "nope")), "--bootstrap-key-file"},
		{"malformed key file", base("--bootstrap-key-file", bad), "--bootstrap-key-file"},
		{"bad name", base("--name", "Node_1"), "--name \"Node_1\""},
		{"bad horde", base("--horde", "-x"), "--horde \"-x\""},
		{"bad port", base("--wg-port", "70000"), "--wg-port 70000"},
		{"not a number", base("--wg-port", "many"), "wg-port"},
		{"bad log level", base("--log-level", "loud"), "--log-level \"loud\""},
		{"stray argument", base("extra"), "unexpected argument \"extra\""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			cfg, err := parseFlags(tt.args, &out, &out)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("parseFlags: %v", err)
				}
				if len(cfg.BootstrapKey) != bootstrapkey.Size || cfg.Name != "n1" {
					t.Errorf("config %+v", cfg)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
			if strings.Contains(err.Error(), bootstrapkey.Encode(k)) {
				t.Error("error contains the bootstrap key")
			}
		})
	}
}

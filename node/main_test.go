package node

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fabricmesh/fabric/internal/bootstrapkey"
	"github.com/fabricmesh/fabric/internal/fabricdconfig"
	"github.com/fabricmesh/fabric/internal/version"
	"github.com/google/go-cmp/cmp"
)

type fixture struct {
	dir, key, badKey string
	looseKey         string
	keyText          string
	keyBytes         []byte
	configs          int
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	f := &fixture{dir: dir, key: filepath.Join(dir, "key"), badKey: filepath.Join(dir, "bad")}
	k, err := bootstrapkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	f.keyText, f.keyBytes = bootstrapkey.Encode(k), k
	if err := bootstrapkey.WriteFile(f.key, k); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.badKey, []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f.looseKey = filepath.Join(dir, "loose-key.pem")
	if err := os.WriteFile(f.looseKey, []byte("not a key\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// writeConfig writes a new config file (<n>.yaml, n counting up) or, with
// reuse, rewrites the last one.
func (f *fixture) writeConfig(t *testing.T, content string) string {
	t.Helper()
	f.configs++
	return f.rewriteConfig(t, content)
}

func (f *fixture) rewriteConfig(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(f.dir, fmt.Sprintf("%d.yaml", f.configs))
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// configure runs fabricd's argument handling up to the daemon's Config.
func configure(args []string) (Config, error) {
	var out bytes.Buffer
	inv, err := parseArgs(args, &out, &out)
	if err != nil {
		return Config{}, err
	}
	s, err := inv.load()
	if err != nil {
		return Config{}, err
	}
	cfg, err := newConfig(s, slog.New(slog.DiscardHandler))
	if err != nil {
		return Config{}, err
	}
	_, err = etcdStoreOptions(s)
	return cfg, err
}

func TestConfigure(t *testing.T) {
	f := newFixture(t)
	base := func(extra ...string) []string {
		return append([]string{"--config", filepath.Join(f.dir, "none.yaml"), "--state-dir", f.dir, "--listen", "198.51.100.10:7443", "--bootstrap-key-file", f.key, "--name", "n1"}, extra...)
	}
	withConfig := func(content string, extra ...string) []string {
		return append([]string{"--config", f.writeConfig(t, content)}, extra...)
	}
	tests := []struct {
		name string
		args []string
		want string // "" = valid
	}{
		{"valid", base()[2:], ""},
		{"valid with horde and port", base("--horde", "jets", "--wg-port", "51999")[2:], ""},
		{"missing --config file", base(), "reading config file: open " + filepath.Join(f.dir, "none.yaml")},
		{"config file", withConfig("listen: 198.51.100.10:7443\nname: n1\nbootstrap-key-file: " + f.key + "\nstate-dir: " + f.dir + "\n"), ""},
		{"flag overrides a bad key file in the config", withConfig("listen: 198.51.100.10:7443\nname: n1\nbootstrap-key-file: "+f.badKey+"\n", "--bootstrap-key-file", f.key, "--state-dir", f.dir), ""},
		{"config file error", withConfig("listen: 198.51.100.10:7443\nwg-port: 0\n"), ".yaml:2: wg-port: 0: must be 1-65535"},
		{"no listen", withConfig("name: n1\n"), `listen is required: set "listen" in`},
		{"listen without port", base("--listen", "198.51.100.10")[2:], `"198.51.100.10": want IP:PORT`},
		{"listen on any", base("--listen", "0.0.0.0:7443")[2:], "needs a specific IP"},
		{"missing key file", base("--bootstrap-key-file", filepath.Join(f.dir, "nope"))[2:], "bootstrap-key-file"},
		{"malformed key file", base("--bootstrap-key-file", f.badKey)[2:], "bootstrap-key-file"},
		{"bad name", base("--name", "Node_1")[2:], `"Node_1"`},
		{"bad horde", base("--horde", "-x")[2:], `"-x"`},
		{"bad port", base("--wg-port", "70000")[2:], "70000: must be 1-65535"},
		{"not a number", base("--wg-port", "many")[2:], "wg-port"},
		{"bad log level", base("--log-level", "loud")[2:], `"loud": want debug, info, warn or error`},
		{"stray argument", base("extra")[2:], `unexpected argument "extra"`},
		{"etcd store", base("--store", "etcd://127.0.0.1:2379/fabric/test")[2:], ""},
		{"bad store", base("--store", "etcd:/127.0.0.1:2379")[2:], `invalid argument "etcd:/127.0.0.1:2379" for "--store" flag: want bolt or an etcd store`},
		{"etcd TLS files with the bolt store", base("--etcd-cacert", f.key)[2:], "set but store is bolt"},
		{"etcd TLS key readable by others", base("--store", "etcds://127.0.0.1:2379", "--etcd-cert", f.looseKey, "--etcd-key", f.looseKey)[2:],
			"--etcd-key " + f.looseKey + " has mode 0644"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := configure(tt.args)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("configure: %v", err)
				}
				if len(cfg.BootstrapKey) != bootstrapkey.Size || cfg.Name != "n1" || cfg.StateDir != f.dir {
					t.Errorf("config: key of %d bytes, name %q, state dir %q; want %d, n1, %s", len(cfg.BootstrapKey), cfg.Name, cfg.StateDir, bootstrapkey.Size, f.dir)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
			if strings.Contains(err.Error(), f.keyText) {
				t.Error("error contains the bootstrap key")
			}
		})
	}
}

func TestMainWithoutDaemon(t *testing.T) {
	f := newFixture(t)
	good := f.writeConfig(t, "listen: 198.51.100.10:7443\nname: n1\nbootstrap-key-file: "+f.key+"\n")
	bad := f.writeConfig(t, "listen: 198.51.100.10:7443\nhorde: X\nfoo: 1\n")
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string
	}{
		{"version", []string{"--version"}, 0, "fabricd " + version.Get().String() + "\n"},
		{"check-config valid", []string{"--config", good, "--check-config", "--horde", "jets"}, 0, "# " + good + ": valid; the settings fabricd would run with:\n" +
			`listen: "198.51.100.10:7443"  # ` + good + ":1\n" +
			`bootstrap-key-file: "` + f.key + `"  # ` + good + ":3\n" +
			`state-dir: "/var/lib/fabric"  # default` + "\n" +
			`name: "n1"  # ` + good + ":2\n" +
			`horde: "jets"  # flag --horde` + "\n" +
			"wg-port: 51820  # default\n" +
			`wg-interface: "fabric0"  # default` + "\n" +
			`log-level: "info"  # default` + "\n" +
			"no-pastiche: false  # default\n" +
			`ssh-users-root: "/"  # default` + "\n" +
			`store: "bolt"  # default` + "\n" +
			`etcd-cacert: ""  # default` + "\n" +
			`etcd-cert: ""  # default` + "\n" +
			`etcd-key: ""  # default` + "\n"},
		{"check-config invalid", []string{"--config", bad, "--check-config"}, 2,
			"fabricd: " + bad + `:2: horde: "X": use 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit` + "\n" +
				"fabricd: " + bad + `:3: unknown key "foo" (keys: listen, bootstrap-key-file, state-dir, name, horde, wg-port, wg-interface, log-level, no-pastiche, ssh-users-root, store, etcd-cacert, etcd-cert, etcd-key)` + "\n"},
		{"check-config with a bad key file", []string{"--config", f.writeConfig(t, "listen: 198.51.100.10:7443\nbootstrap-key-file: "+f.badKey+"\n"), "--check-config"}, 2,
			"fabricd: bootstrap-key-file: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			code := Main(context.Background(), tt.args, &out, &out)
			if code != tt.wantCode || !strings.HasPrefix(out.String(), tt.wantOut) {
				t.Errorf("fabricd %s: exit %d, output:\n%s\nwant exit %d, output starting:\n%s", strings.Join(tt.args, " "), code, out.String(), tt.wantCode, tt.wantOut)
			}
		})
	}
}

func TestHelpListsEveryKey(t *testing.T) {
	var out bytes.Buffer
	if code := Main(context.Background(), []string{"--help"}, &out, &out); code != 0 {
		t.Fatalf("--help: exit %d", code)
	}
	for _, k := range fabricdconfig.Keys() {
		if !strings.Contains(out.String(), "--"+k.Name+" ") {
			t.Errorf("--help does not list --%s:\n%s", k.Name, out.String())
		}
	}
}

func TestReload(t *testing.T) {
	f := newFixture(t)
	path := f.writeConfig(t, "listen: 198.51.100.10:7443\nname: n1\nbootstrap-key-file: "+f.key+"\n")
	var out bytes.Buffer
	inv, err := parseArgs([]string{"--config", path, "--horde", "jets"}, &out, &out)
	if err != nil {
		t.Fatal(err)
	}
	running, err := inv.load()
	if err != nil {
		t.Fatal(err)
	}
	level := new(slog.LevelVar)
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))
	steps := []struct {
		name      string
		file      string
		wantLevel slog.Level
		wantLogs  []string
	}{
		{"unchanged", "listen: 198.51.100.10:7443\nname: n1\nbootstrap-key-file: " + f.key + "\n", slog.LevelInfo, []string{
			`level=INFO msg="config unchanged"`}},
		{"log level applied, name needs a restart, the flag's horde wins", "listen: 198.51.100.10:7443\nname: n2\nhorde: sharks\nlog-level: warn\nbootstrap-key-file: " + f.key + "\n", slog.LevelWarn, []string{
			`level=WARN msg="config key changed; restart fabricd to apply it" key=name running=n1 file=n2`,
			`level=INFO msg="config key applied" key=log-level old=info new=warn`}},
		{"invalid file changes nothing", "listen: 198.51.100.10:7443\nlog-level: debug\nwg-port: 0\n", slog.LevelWarn, []string{
			`level=ERROR msg="config file invalid; nothing changed" err="` + path + `:3: wg-port: 0: must be 1-65535"`}},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			f.rewriteConfig(t, st.file)
			logs.Reset()
			level.Set(running.LogLevel)
			running = inv.reload(running, level, log)
			if level.Level() != st.wantLevel || running.LogLevel != st.wantLevel {
				t.Errorf("log level %v (settings %v), want %v", level.Level(), running.LogLevel, st.wantLevel)
			}
			var got []string
			for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
				if !strings.Contains(line, "SIGHUP") {
					got = append(got, line)
				}
			}
			if diff := cmp.Diff(st.wantLogs, got); diff != "" {
				t.Errorf("logs (-want +got):\n%s", diff)
			}
			if running.Name != "n1" || running.Horde != "jets" {
				t.Errorf("running name %q horde %q changed; want n1, jets until a restart", running.Name, running.Horde)
			}
		})
	}
}

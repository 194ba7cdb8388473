package fabricdconfig

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"log/slog"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fabricmesh/fabric/internal/store/etcdstore"
	"github.com/google/go-cmp/cmp"
	"github.com/spf13/pflag"
)

var update = flag.Bool("update", false, "rewrite the key reference in docs/config.md")

const path = "/etc/fabric/fabricd.yaml"

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		file string
		want []string // the error's lines
	}{
		{"unknown key", "listen: 198.51.100.10:7443\nwg_port: 51820\n",
			[]string{path + `:2: unknown key "wg_port" (did you mean "wg-port"?) (keys: ` + keyNames() + ")"}},
		{"unknown key far from any", "frobnicate: yes\n",
			[]string{path + `:1: unknown key "frobnicate" (keys: ` + keyNames() + ")"}},
		{"duplicate key", "horde: jets\nlisten: 198.51.100.10:7443\nhorde: sharks\n",
			[]string{path + `:3: duplicate key "horde" (first at line 1)`}},
		{"string key given a number", "name: 42\n",
			[]string{path + `:1: name: want a string, got !!int "42" (quote it: name: "42")`}},
		{"string key given a list", "listen: [2001:db8::10]:7443\n",
			[]string{path + `:1: did not find expected key`}},
		{"string key given null", "horde:\n",
			[]string{path + `:1: horde: want a string, got null`}},
		{"integer key given a string", "wg-port: many\n",
			[]string{path + `:1: wg-port: want an integer, got !!str "many"`}},
		{"integer key given a float", "wg-port: 5.5\n",
			[]string{path + `:1: wg-port: want an integer, got !!float "5.5"`}},
		{"boolean key given a string", "no-pastiche: yes\n",
			[]string{path + `:1: no-pastiche: want a boolean, got !!str "yes"`}},
		{"port out of range", "\n\nwg-port: 70000\n",
			[]string{path + `:3: wg-port: 70000: must be 1-65535`}},
		{"listen without port", "listen: 198.51.100.10\n",
			[]string{path + `:1: listen: "198.51.100.10": want IP:PORT, e.g. 198.51.100.10:7443`}},
		{"listen on any address", "listen: 0.0.0.0:7443\n",
			[]string{path + `:1: listen: "0.0.0.0:7443": needs a specific IP and port; the IP is the peer's public endpoint`}},
		{"bad name", "name: Node_1\n",
			[]string{path + `:1: name: "Node_1": ` + nameRule}},
		{"bad horde", "horde: -x\n",
			[]string{path + `:1: horde: "-x": ` + nameRule}},
		{"bad log level", "log-level: loud\n",
			[]string{path + `:1: log-level: "loud": want debug, info, warn or error`}},
		{"interface name too long", "wg-interface: fabric-interface0\n",
			[]string{path + `:1: wg-interface: interface name "fabric-interface0" longer than 15 bytes`}},
		{"relative users root", "ssh-users-root: accounts\n",
			[]string{path + `:1: ssh-users-root: "accounts": want an absolute path`}},
		{"store neither bolt nor etcd", "store: bolt:/var/lib/fabric/fabric.db\n",
			[]string{path + `:1: store: want bolt or an etcd store: "bolt:/var/lib/fabric/fabric.db": want etcd://HOST:PORT[,HOST:PORT...][/PREFIX], or etcds://... for TLS`}},
		{"etcd store without a port", "store: etcd://192.0.2.11\n",
			[]string{path + `:1: store: want bolt or an etcd store: "etcd://192.0.2.11": endpoint "192.0.2.11": want HOST:PORT`}},
		{"empty path", "state-dir: \"\"\n",
			[]string{path + `:1: state-dir: empty path`}},
		{"not a mapping", "- listen\n",
			[]string{path + `:1: want a mapping of keys (` + keyNames() + "), got a sequence"}},
		{"alias", "horde: &h jets\nname: *h\n",
			[]string{path + `:2: name: want a string, got an alias (aliases are not supported)`}},
		{"two documents", "horde: jets\n---\nhorde: sharks\n",
			[]string{path + `:2: more than one YAML document`}},
		{"every problem at once", "wg-port: 0\nname: UPPER\nextra: 1\n", []string{
			path + `:1: wg-port: 0: must be 1-65535`,
			path + `:2: name: "UPPER": ` + nameRule,
			path + `:3: unknown key "extra" (keys: ` + keyNames() + ")",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(path, []byte(tt.file))
			if err == nil {
				t.Fatal("Parse: no error")
			}
			if diff := cmp.Diff(tt.want, strings.Split(err.Error(), "\n")); diff != "" {
				t.Errorf("Parse error (-want +got):\n%s", diff)
			}
		})
	}
}

// resolve parses file and args the way fabricd does.
func resolve(t *testing.T, file string, args ...string) (Settings, error) {
	t.Helper()
	f, err := Parse(path, []byte(file))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	fs := pflag.NewFlagSet("fabricd", pflag.ContinueOnError)
	AddFlags(fs)
	if err := fs.Parse(args); err != nil {
		return Settings{}, err
	}
	return Resolve(f, fs)
}

func TestResolve(t *testing.T) {
	host, err := hostLabel()
	if err != nil {
		t.Fatal(err)
	}
	defaults := Settings{
		Listen: netip.MustParseAddrPort("198.51.100.10:7443"), BootstrapKeyFile: "/etc/fabric/bootstrap.key",
		StateDir: "/var/lib/fabric", Name: host, Horde: "sharks", WGPort: 51820, WGInterface: "fabric0",
		LogLevel: slog.LevelInfo, SSHUsersRoot: "/", Store: "bolt",
	}
	with := func(change func(*Settings)) Settings {
		s := defaults
		change(&s)
		return s
	}
	full := `listen: 198.51.100.20:7443
bootstrap-key-file: /run/fabric/key
state-dir: /srv/fabric
name: node2
horde: jets
wg-port: 51999
wg-interface: wg7
log-level: debug
no-pastiche: true
ssh-users-root: /srv/accounts
store: etcds://192.0.2.11:2379,192.0.2.12:2379/fabric/prod
etcd-cacert: /etc/fabric/ca.pem
etcd-cert: /etc/fabric/client.pem
etcd-key: /etc/fabric/client-key.pem
`
	fromFile := Settings{
		Listen: netip.MustParseAddrPort("198.51.100.20:7443"), BootstrapKeyFile: "/run/fabric/key",
		StateDir: "/srv/fabric", Name: "node2", Horde: "jets", WGPort: 51999, WGInterface: "wg7",
		LogLevel: slog.LevelDebug, NoPastiche: true, SSHUsersRoot: "/srv/accounts",
		Store: "etcds://192.0.2.11:2379,192.0.2.12:2379/fabric/prod", EtcdCACert: "/etc/fabric/ca.pem",
		EtcdCert: "/etc/fabric/client.pem", EtcdKey: "/etc/fabric/client-key.pem",
	}
	tests := []struct {
		name string
		file string
		args []string
		want Settings
	}{
		{"defaults", "listen: 198.51.100.10:7443\n", nil, defaults},
		{"only comments, listen as flag", "# nothing\n", []string{"--listen", "198.51.100.10:7443"}, defaults},
		{"every key from the file", full, nil, fromFile},
		{"flags override the file", full, []string{"--listen", "198.51.100.10:7443", "--horde", "sharks", "--wg-port", "51820", "--no-pastiche=false", "--log-level", "info"},
			with(func(s *Settings) {
				*s = fromFile
				s.Listen = defaults.Listen
				s.Horde = "sharks"
				s.WGPort = 51820
				s.NoPastiche = false
				s.LogLevel = slog.LevelInfo
			})},
		{"boolean flag without value", "listen: 198.51.100.10:7443\n", []string{"--no-pastiche"}, with(func(s *Settings) { s.NoPastiche = true })},
		{"IPv6 listen, quoted", "listen: \"[2001:db8::10]:7443\"\n", nil, with(func(s *Settings) { s.Listen = netip.MustParseAddrPort("[2001:db8::10]:7443") })},
		{"etcd store as a flag", "listen: 198.51.100.10:7443\n", []string{"--store", "etcd://127.0.0.1:2379"}, with(func(s *Settings) { s.Store = "etcd://127.0.0.1:2379" })},
		{"log level in capitals", "listen: 198.51.100.10:7443\nlog-level: WARN\n", nil, with(func(s *Settings) { s.LogLevel = slog.LevelWarn })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := resolve(t, tt.file, tt.args...)
			if err != nil {
				t.Fatalf("resolve: %v", err)
			}
			if diff := cmp.Diff(tt.want, got, cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })); diff != "" {
				t.Errorf("settings (-want +got):\n%s", diff)
			}
		})
	}
}

func TestResolveErrors(t *testing.T) {
	tests := []struct {
		name string
		file string
		args []string
		want string
	}{
		{"listen nowhere", "horde: jets\n", nil, `listen is required: set "listen" in ` + path + ` or pass --listen`},
		{"bad flag value", "", []string{"--wg-port", "70000"}, `invalid argument "70000" for "--wg-port" flag: 70000: must be 1-65535`},
		{"flag not a number", "", []string{"--wg-port", "many"}, `invalid argument "many" for "--wg-port" flag: "many": want a port number 1-65535`},
		{"bad listen flag", "", []string{"--listen", "0.0.0.0:7443"}, `invalid argument "0.0.0.0:7443" for "--listen" flag: "0.0.0.0:7443": needs a specific IP`},
		{"unknown flag", "", []string{"--wg_port", "1"}, `unknown flag: --wg_port`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := resolve(t, tt.file, tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestEtcdStore(t *testing.T) {
	dir := t.TempDir()
	ca, cert, key := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "client.pem"), filepath.Join(dir, "client-key.pem")
	writeTestTLS(t, ca, cert, key)
	tests := []struct {
		name     string
		settings Settings
		want     etcdstore.Options // Endpoints and Prefix
		wantTLS  bool
		wantErr  string
	}{
		{name: "bolt", settings: Settings{Store: "bolt"}},
		{name: "bolt with etcd keys", settings: Settings{Store: "bolt", EtcdCACert: ca},
			wantErr: "the etcd TLS keys (etcd-cacert, etcd-cert, etcd-key) are set but store is bolt"},
		{name: "plaintext", settings: Settings{Store: "etcd://192.0.2.11:2379,192.0.2.12:2379"},
			want: etcdstore.Options{Endpoints: []string{"192.0.2.11:2379", "192.0.2.12:2379"}, Prefix: "/fabric/"}},
		{name: "plaintext with TLS files", settings: Settings{Store: "etcd://192.0.2.11:2379", EtcdCACert: ca},
			wantErr: "is plaintext but TLS files are given: use etcds:// for TLS"},
		{name: "TLS", settings: Settings{Store: "etcds://192.0.2.11:2379/fabric/prod", EtcdCACert: ca, EtcdCert: cert, EtcdKey: key},
			want: etcdstore.Options{Endpoints: []string{"192.0.2.11:2379"}, Prefix: "/fabric/prod/"}, wantTLS: true},
		{name: "TLS with a missing CA", settings: Settings{Store: "etcds://192.0.2.11:2379", EtcdCACert: filepath.Join(dir, "none.pem")},
			wantErr: "--etcd-cacert: open " + filepath.Join(dir, "none.pem")},
		{name: "TLS with a cert and no key", settings: Settings{Store: "etcds://192.0.2.11:2379", EtcdCert: cert},
			wantErr: "--etcd-cert and --etcd-key go together"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts, etcd, err := tt.settings.EtcdStore()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("EtcdStore error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("EtcdStore: %v", err)
			}
			if etcd != (tt.want.Endpoints != nil) {
				t.Errorf("EtcdStore says etcd %v for store %q", etcd, tt.settings.Store)
			}
			got := etcdstore.Options{Endpoints: opts.Endpoints, Prefix: opts.Prefix}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("options (-want +got):\n%s", diff)
			}
			if (opts.TLS != nil) != tt.wantTLS || tt.wantTLS && len(opts.TLS.Certificates) != 1 {
				t.Errorf("TLS config %+v, want TLS %v with the client certificate", opts.TLS, tt.wantTLS)
			}
		})
	}
}

// writeTestTLS writes a self-signed certificate as the CA and as the
// client certificate, and its key (mode 0600).
func writeTestTLS(t *testing.T, ca, cert, key string) {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	for _, f := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{{ca, certPEM, 0o644}, {cert, certPEM, 0o644}, {key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600}} {
		if err := os.WriteFile(f.path, f.data, f.mode); err != nil {
			t.Fatal(err)
		}
	}
}

func TestReadFile(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "none.yaml")
	if f, err := ReadFile(missing, true); err != nil || len(f.values) != 0 || f.Path != missing {
		t.Errorf("ReadFile(missing, missingOK): %+v, %v; want an empty file", f, err)
	}
	if _, err := ReadFile(missing, false); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("ReadFile(missing): %v; want an error naming %s", err, missing)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("horde: jets\nhord: x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadFile(bad, true); err == nil || !strings.HasPrefix(err.Error(), bad+`:2: unknown key "hord"`) {
		t.Errorf("ReadFile(bad): %v; want the file, line 2 and the key", err)
	}
}

func TestChanges(t *testing.T) {
	old, err := resolve(t, "listen: 198.51.100.10:7443\n")
	if err != nil {
		t.Fatal(err)
	}
	new, err := resolve(t, "listen: 198.51.100.10:7443\nlog-level: debug\nhorde: jets\n")
	if err != nil {
		t.Fatal(err)
	}
	want := []Change{
		{Key: "horde", Old: "sharks", New: "jets"},
		{Key: "log-level", Old: "info", New: "debug", Live: true},
	}
	if diff := cmp.Diff(want, Changes(old, new)); diff != "" {
		t.Errorf("Changes (-want +got):\n%s", diff)
	}
	if got := Changes(old, old); len(got) != 0 {
		t.Errorf("Changes(old, old) = %v, want none", got)
	}
}

// TestDefaultFile checks that the default config file is valid as
// shipped (only comments) and that uncommenting every example line gives a
// valid file that sets every key.
func TestDefaultFile(t *testing.T) {
	data := DefaultFile()
	f, err := Parse(path, data)
	if err != nil || len(f.values) != 0 {
		t.Fatalf("default file as shipped: %d keys, %v; want none and no error", len(f.values), err)
	}
	var uncommented []string
	for _, line := range strings.Split(string(data), "\n") {
		for _, k := range keys {
			if strings.HasPrefix(line, "#"+k.Name+": ") {
				line = line[1:]
			}
		}
		uncommented = append(uncommented, line)
	}
	f, err = Parse(path, []byte(strings.Join(uncommented, "\n")))
	if err != nil {
		t.Fatalf("default file with every example uncommented: %v", err)
	}
	for _, k := range keys {
		if _, ok := f.values[k.Name]; !ok {
			t.Errorf("the default file has no example line for %s", k.Name)
		}
	}
}

// TestDocs checks that docs/config.md holds the key reference Markdown
// renders, between its markers; -update rewrites it.
func TestDocs(t *testing.T) {
	const docPath = "../../docs/config.md"
	const begin, end = "<!-- keys: generated from internal/fabricdconfig; go test ./internal/fabricdconfig -update -->\n", "<!-- end of keys -->\n"
	data, err := os.ReadFile(docPath)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	i, j := strings.Index(doc, begin), strings.Index(doc, end)
	if i < 0 || j < i {
		t.Fatalf("%s lacks the markers %q and %q", docPath, begin, end)
	}
	want := doc[:i+len(begin)] + Markdown() + doc[j:]
	if *update {
		if err := os.WriteFile(docPath, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if diff := cmp.Diff(want, doc); diff != "" {
		t.Errorf("%s is out of date (go test ./internal/fabricdconfig -update) (-want +got):\n%s", docPath, diff)
	}
}

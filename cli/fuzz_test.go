package cli

import (
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// FuzzAdminDir: any admin.json and key files load or are refused with an
// error; what loads is usable (every coordinator an endpoint with a
// SHA-256 pin, the keys real keys) and writes back to a bundle that reads
// the same.
func FuzzAdminDir(f *testing.F) {
	seed := sha256.Sum256([]byte("fuzz admin"))
	signingKey := ed25519.NewKeyFromSeed(seed[:])
	der, err := x509.MarshalPKCS8PrivateKey(signingKey)
	if err != nil {
		f.Fatal(err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	vpnKey := wgtypes.Key(sha256.Sum256([]byte("fuzz admin vpn")))
	pin := sha256.Sum256([]byte("coordinator certificate"))
	good := bundle{Version: bundleVersion, ClusterID: "7a03e15ba6732618", CoordinatorPublicEndpoint: "192.0.2.10:7443", CoordinatorTLSPin: pin[:],
		AdminName: "admin", AdminVPNIP: "203.0.113.2", VPNCIDR: "203.0.113.0/24"}
	several := good
	several.Coordinators = []bundleCoordinator{{PublicEndpoint: "192.0.2.10:7443", TLSPin: pin[:]}, {PublicEndpoint: "[2001:db8::2]:7443", TLSPin: pin[:]}}
	for _, b := range []bundle{good, several, {Version: bundleVersion, CoordinatorPublicEndpoint: "x", CoordinatorTLSPin: []byte{1}}} {
		data, err := json.Marshal(b)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data, keyPEM, []byte(vpnKey.String()+"\n"))
	}
	f.Add([]byte(`{"version":1,"coordinatorPublicEndpoint":"192.0.2.10:7443","coordinatorTLSPin":"AAAA"}`), []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), []byte("not a key"))
	f.Add([]byte("{"), []byte(""), []byte(""))
	f.Fuzz(func(t *testing.T, bundleJSON, signingPEM, vpnKeyText []byte) {
		dir := t.TempDir()
		for name, data := range map[string][]byte{bundleFile: bundleJSON, signingKeyFile: signingPEM, vpnKeyFile: vpnKeyText} {
			if err := os.WriteFile(filepath.Join(dir, name), data, privateFileMode); err != nil {
				t.Fatal(err)
			}
		}
		a, err := loadAdminDir(dir)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("refused with an empty error")
			}
			return
		}
		if err := a.bundle.check(); err != nil {
			t.Fatalf("loaded a bundle its own check refuses: %v", err)
		}
		if len(a.adminSigningKey) != ed25519.PrivateKeySize {
			t.Fatalf("loaded a signing key of %d bytes", len(a.adminSigningKey))
		}
		if len(a.bundle.coordinators()) == 0 {
			t.Fatal("loaded a bundle without a coordinator")
		}
		loaded := a.bundle
		if err := a.writeBundle(); err != nil {
			t.Fatalf("writing the loaded bundle back: %v", err)
		}
		again := &adminDir{path: dir}
		if err := again.readBundle(); err != nil {
			t.Fatalf("the bundle written back does not read: %v", err)
		}
		if diff := cmp.Diff(loaded, again.bundle); diff != "" {
			t.Fatalf("the bundle written back reads otherwise (-loaded +again):\n%s", diff)
		}
	})
}

// TestBundleCheck: a bundle with a field the commands cannot use is
// refused, naming the field.
func TestBundleCheck(t *testing.T) {
	pin := sha256.Sum256([]byte("coordinator certificate"))
	good := bundle{Version: bundleVersion, ClusterID: "7a03e15ba6732618", CoordinatorPublicEndpoint: "192.0.2.10:7443", CoordinatorTLSPin: pin[:],
		AdminName: "admin", AdminVPNIP: "203.0.113.2", VPNCIDR: "203.0.113.0/24",
		Coordinators: []bundleCoordinator{{PublicEndpoint: "192.0.2.11:7443", TLSPin: pin[:]}}}
	tests := []struct {
		name   string
		modify func(*bundle)
		want   string
	}{
		{"good", func(*bundle) {}, ""},
		{"no cluster ID", func(b *bundle) { b.ClusterID = "" }, "clusterID is empty"},
		{"host name", func(b *bundle) { b.CoordinatorPublicEndpoint = "coord:7443" }, `coordinatorPublicEndpoint: "coord:7443" is not an endpoint IP:PORT`},
		{"port 0", func(b *bundle) { b.CoordinatorPublicEndpoint = "192.0.2.10:0" }, "coordinatorPublicEndpoint"},
		{"short pin", func(b *bundle) { b.CoordinatorTLSPin = pin[:31] }, "coordinatorPublicEndpoint: its TLS pin is 31 bytes, not a SHA-256"},
		{"other coordinator's endpoint", func(b *bundle) { b.Coordinators = []bundleCoordinator{{PublicEndpoint: "x", TLSPin: pin[:]}} }, `coordinators[0]: "x" is not an endpoint`},
		{"other coordinator's pin", func(b *bundle) { b.Coordinators = []bundleCoordinator{{PublicEndpoint: "192.0.2.11:7443"}} }, "coordinators[0]: its TLS pin is 0 bytes"},
		{"admin VPN IP", func(b *bundle) { b.AdminVPNIP = "203.0.113" }, `adminVPNIP: "203.0.113" is not an IP`},
		{"VPN CIDR", func(b *bundle) { b.VPNCIDR = "203.0.113.0" }, `vpnCIDR: "203.0.113.0" is not a CIDR`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := good
			b.Coordinators = append([]bundleCoordinator(nil), good.Coordinators...)
			tt.modify(&b)
			err := b.check()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("check = %v, want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("check = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

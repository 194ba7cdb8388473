package cli

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/fabricmesh/fabric/internal/atomicfile"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// The admin bundle is what `fabric activate` leaves in the admin directory
// and every later admin command reads.
const (
	bundleFile      = "admin.json"
	signingKeyFile  = "admin.key"
	vpnKeyFile      = "admin-wg.key"
	wgQuickFile     = "fabric-vpn.conf"
	bundleVersion   = 1
	privateFileMode = 0o600
)

// bundle is admin.json: where the coordinator is and how to trust it.
type bundle struct {
	Version                   int    `json:"version"`
	ClusterID                 string `json:"clusterID"`
	CoordinatorPublicEndpoint string `json:"coordinatorPublicEndpoint"`
	// CoordinatorTLSPin is the SHA-256 of the coordinator's certificate.
	CoordinatorTLSPin []byte `json:"coordinatorTLSPin"`
	AdminName         string `json:"adminName"`
	AdminVPNIP        string `json:"adminVPNIP"`
	VPNCIDR           string `json:"vpnCIDR"`
	// Coordinators are every active coordinator of the cluster (several
	// share its records in etcd); the CLI fails over between them.
	// Empty: only the one above.
	Coordinators []bundleCoordinator `json:"coordinators,omitempty"`
}

// adminDir is an admin directory with its keys loaded.
type adminDir struct {
	path            string
	bundle          bundle
	adminSigningKey ed25519.PrivateKey
	adminVPNPrivKey wgtypes.Key
}

// openAdminKeys makes the admin's keys in a new or empty admin directory
// (created), or loads the keys of an activation that did not finish there
// (keys, perhaps admin.json, but no fabric-vpn.conf): once a request may
// have reached the coordinator its keys are kept, and running the
// activation again with them resumes it. A directory with a complete
// bundle is refused: overwriting it would lock its cluster's admin out.
func openAdminKeys(dir, coordinatorEndpoint string) (a *adminDir, created bool, err error) {
	has := func(name string) bool {
		_, err := os.Stat(filepath.Join(dir, name))
		return err == nil
	}
	switch {
	case has(wgQuickFile):
		return nil, false, fmt.Errorf("admin dir %s already holds the admin bundle of a cluster whose activation finished; choose another --admin-dir, or add nodes with 'fabric add-nodes --admin-dir %s'", dir, dir)
	case has(signingKeyFile) || has(vpnKeyFile):
		a = &adminDir{path: dir}
		if err := a.readKeys(); err != nil {
			return nil, false, err
		}
		if has(bundleFile) {
			if err := a.readBundle(); err != nil {
				return nil, false, err
			}
			if a.bundle.CoordinatorPublicEndpoint != coordinatorEndpoint {
				return nil, false, fmt.Errorf("admin dir %s holds the keys of an unfinished activation of coordinator %s, not %s; activate %s again, or choose another --admin-dir",
					dir, a.bundle.CoordinatorPublicEndpoint, coordinatorEndpoint, a.bundle.CoordinatorPublicEndpoint)
			}
		}
		return a, false, nil
	case has(bundleFile):
		return nil, false, fmt.Errorf("admin dir %s holds %s but not the admin keys; choose another --admin-dir", dir, bundleFile)
	}
	a, err = newAdminKeys(dir)
	return a, err == nil, err
}

// newAdminKeys creates the admin's keys in dir.
func newAdminKeys(dir string) (*adminDir, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating admin dir: %w", err)
	}
	_, signingKey, err := ed25519.GenerateKey(nil)
	if err != nil {
		return nil, err
	}
	vpnKey, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(signingKey)
	if err != nil {
		return nil, err
	}
	a := &adminDir{path: dir, adminSigningKey: signingKey, adminVPNPrivKey: vpnKey}
	if err := atomicfile.WriteFileNew(a.file(signingKeyFile), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), privateFileMode); err != nil {
		return nil, fmt.Errorf("writing admin key: %w", err)
	}
	if err := atomicfile.WriteFileNew(a.file(vpnKeyFile), []byte(vpnKey.String()+"\n"), privateFileMode); err != nil {
		os.Remove(a.file(signingKeyFile))
		return nil, fmt.Errorf("writing admin wireguard key: %w", err)
	}
	return a, nil
}

// removeKeys undoes newAdminKeys when no request with the keys can have
// been committed by the coordinator.
func (a *adminDir) removeKeys() {
	os.Remove(a.file(signingKeyFile))
	os.Remove(a.file(vpnKeyFile))
}

func (a *adminDir) file(name string) string { return filepath.Join(a.path, name) }

// loadAdminDir reads an admin directory written by `fabric activate`.
func loadAdminDir(dir string) (*adminDir, error) {
	a := &adminDir{path: dir}
	if err := a.readBundle(); err != nil {
		return nil, err
	}
	if err := a.readKeys(); err != nil {
		return nil, err
	}
	return a, nil
}

// readBundle reads admin.json.
func (a *adminDir) readBundle() error {
	data, err := os.ReadFile(a.file(bundleFile))
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("admin dir %s has no %s: run 'fabric activate' first, or pass the --admin-dir it wrote", a.path, bundleFile)
	}
	if err != nil {
		return fmt.Errorf("reading admin bundle: %w", err)
	}
	if err := json.Unmarshal(data, &a.bundle); err != nil {
		return fmt.Errorf("admin bundle %s is not valid JSON: %w", a.file(bundleFile), err)
	}
	if a.bundle.Version != bundleVersion || a.bundle.CoordinatorPublicEndpoint == "" || len(a.bundle.CoordinatorTLSPin) == 0 {
		return fmt.Errorf("admin bundle %s is incomplete or of an unknown version", a.file(bundleFile))
	}
	if err := a.bundle.check(); err != nil {
		return fmt.Errorf("admin bundle %s: %w", a.file(bundleFile), err)
	}
	return nil
}

// check refuses a bundle whose fields the commands cannot use, naming the
// field (a hand-edited admin.json would otherwise fail later, as a pin
// mismatch or an unreachable coordinator).
func (b bundle) check() error {
	if b.ClusterID == "" {
		return errors.New("clusterID is empty")
	}
	coordinators := append([]bundleCoordinator{{PublicEndpoint: b.CoordinatorPublicEndpoint, TLSPin: b.CoordinatorTLSPin}}, b.Coordinators...)
	for i, co := range coordinators {
		field := "coordinatorPublicEndpoint"
		if i > 0 {
			field = fmt.Sprintf("coordinators[%d]", i-1)
		}
		if ap, err := netip.ParseAddrPort(co.PublicEndpoint); err != nil || ap.Port() == 0 || ap.Addr().IsUnspecified() {
			return fmt.Errorf("%s: %q is not an endpoint IP:PORT", field, co.PublicEndpoint)
		}
		if len(co.TLSPin) != sha256.Size {
			return fmt.Errorf("%s: its TLS pin is %d bytes, not a SHA-256", field, len(co.TLSPin))
		}
	}
	if b.AdminVPNIP != "" {
		if _, err := netip.ParseAddr(b.AdminVPNIP); err != nil {
			return fmt.Errorf("adminVPNIP: %q is not an IP", b.AdminVPNIP)
		}
	}
	if b.VPNCIDR != "" {
		if _, err := netip.ParsePrefix(b.VPNCIDR); err != nil {
			return fmt.Errorf("vpnCIDR: %q is not a CIDR", b.VPNCIDR)
		}
	}
	return nil
}

// readKeys reads the admin's two private keys.
func (a *adminDir) readKeys() (err error) {
	if a.adminSigningKey, err = readSigningKey(a.file(signingKeyFile)); err != nil {
		return err
	}
	a.adminVPNPrivKey, err = readVPNKey(a.file(vpnKeyFile))
	return err
}

func readPrivate(path string) ([]byte, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("reading admin key: %w", err)
	}
	if info.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("admin key %s has mode %04o; private keys must not be readable by others (chmod 600)", path, info.Mode().Perm())
	}
	return os.ReadFile(path)
}

func readSigningKey(path string) (ed25519.PrivateKey, error) {
	data, err := readPrivate(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("admin key %s: not a PEM private key", path)
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("admin key %s: not a PKCS#8 key", path)
	}
	ed, ok := key.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("admin key %s: not an ed25519 key", path)
	}
	return ed, nil
}

func readVPNKey(path string) (wgtypes.Key, error) {
	data, err := readPrivate(path)
	if err != nil {
		return wgtypes.Key{}, err
	}
	key, err := wgtypes.ParseKey(string(bytes.TrimSpace(data)))
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("admin wireguard key %s: not a base64 WireGuard key", path)
	}
	return key, nil
}

// writeBundle writes admin.json atomically.
func (a *adminDir) writeBundle() error {
	a.bundle.Version = bundleVersion
	data, err := json.MarshalIndent(a.bundle, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(a.file(bundleFile), append(data, '\n'), privateFileMode); err != nil {
		return fmt.Errorf("writing admin bundle: %w", err)
	}
	return nil
}

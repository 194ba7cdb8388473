package identity

import (
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// The files of an identity directory.
const (
	WGKeyFile      = "wg.key"
	SigningKeyFile = "signing.key"
	TLSKeyFile     = "tls.key"
	TLSCertFile    = "tls.crt"
)

// Identity is a peer's long-lived identity.
type Identity struct {
	// VPNPrivKey is the WireGuard private key.
	VPNPrivKey wgtypes.Key
	// SigningPrivKey signs the peer's calls and registration proofs.
	SigningPrivKey ed25519.PrivateKey
	// TLSCert is the self-signed certificate, with its ed25519 private key
	// (not the signing key) and its parsed Leaf.
	TLSCert tls.Certificate
	// TLSCertPin is the SHA-256 of the certificate's DER encoding.
	TLSCertPin []byte
}

// VPNPubKey returns the WireGuard public key.
func (id *Identity) VPNPubKey() wgtypes.Key { return id.VPNPrivKey.PublicKey() }

// SigningPubKey returns the ed25519 public key matching SigningPrivKey.
func (id *Identity) SigningPubKey() ed25519.PublicKey {
	return id.SigningPrivKey.Public().(ed25519.PublicKey)
}

// LoadOrCreate loads the identity in dir (normally <state-dir>/identity),
// first creating dir (mode 0700) and any missing file. It logs the public
// parts of the identity; logger may be nil.
func LoadOrCreate(dir string, logger *slog.Logger) (*Identity, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating identity directory: %w", err)
	}
	if err := checkDir(dir); err != nil {
		return nil, err
	}
	id, created, err := load(dir)
	if err != nil {
		return nil, fmt.Errorf("loading identity: %w", err)
	}
	attrs := []any{
		"dir", dir,
		"vpn_pub_key", id.VPNPubKey().String(),
		"signing_pub_key", base64.StdEncoding.EncodeToString(id.SigningPubKey()),
		"tls_cert_pin", hex.EncodeToString(id.TLSCertPin),
	}
	if len(created) > 0 {
		logger.Info("created identity", append(attrs, "created_files", created)...)
	} else {
		logger.Info("loaded identity", attrs...)
	}
	return id, nil
}

// Exists reports whether dir holds any part of an identity: a peer that
// has started once has one.
func Exists(dir string) (bool, error) {
	for _, name := range []string{WGKeyFile, SigningKeyFile, TLSKeyFile, TLSCertFile} {
		ok, err := exists(filepath.Join(dir, name))
		if ok || err != nil {
			return ok, err
		}
	}
	return false, nil
}

// checkDir refuses an identity directory that group or others may access.
func checkDir(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("checking identity directory: %w", err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("identity directory %s has mode %04o: it holds private keys and must not be accessible by group or others (chmod 700 %s)",
			dir, perm, dir)
	}
	return nil
}

// load reads every part of the identity in dir, creating missing ones, and
// returns the names of the files it created.
func load(dir string) (*Identity, []string, error) {
	var created []string
	note := func(name string, isNew bool) {
		if isNew {
			created = append(created, name)
		}
	}
	id := &Identity{}
	var isNew bool
	var err error
	if id.VPNPrivKey, isNew, err = loadOrCreate(dir, WGKeyFile, true, parseWGKey, newWGKey); err != nil {
		return nil, nil, err
	}
	note(WGKeyFile, isNew)
	if id.SigningPrivKey, isNew, err = loadOrCreate(dir, SigningKeyFile, true, parseEd25519Key, newEd25519Key); err != nil {
		return nil, nil, err
	}
	note(SigningKeyFile, isNew)
	tlsCert, tlsCreated, err := loadTLS(dir)
	if err != nil {
		return nil, nil, err
	}
	id.TLSCert = tlsCert
	pin := sha256.Sum256(tlsCert.Certificate[0])
	id.TLSCertPin = pin[:]
	return id, append(created, tlsCreated...), nil
}

// loadTLS loads or creates the TLS key and its certificate.
func loadTLS(dir string) (tls.Certificate, []string, error) {
	keyPath, certPath := filepath.Join(dir, TLSKeyFile), filepath.Join(dir, TLSCertFile)
	keyExists, err := exists(keyPath)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	certExists, err := exists(certPath)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	if !keyExists && certExists {
		// The key is written first, so no crash leaves this state.
		return tls.Certificate{}, nil, fmt.Errorf("identity file %s exists but %s is missing; remove %s to make a new TLS identity",
			certPath, keyPath, certPath)
	}
	var created []string
	key, isNew, err := loadOrCreate(dir, TLSKeyFile, true, parseEd25519Key, newEd25519Key)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	if isNew {
		created = append(created, TLSKeyFile)
	}
	parse := func(data []byte) (tls.Certificate, error) { return parseCert(data, key) }
	create := func() (tls.Certificate, []byte, error) { return newCert(key) }
	cert, isNew, err := loadOrCreate(dir, TLSCertFile, false, parse, create)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	if isNew {
		created = append(created, TLSCertFile)
	}
	return cert, created, nil
}

func exists(path string) (bool, error) {
	_, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("checking identity file: %w", err)
	}
	return true, nil
}

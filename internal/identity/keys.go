package identity

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

const (
	// CertCommonName is the subject CN of every peer's TLS certificate.
	// Peers are authenticated by certificate pin, not by name.
	CertCommonName = "fabric peer"
	// certValidity is long enough to outlive the machine: the pin, not
	// the expiry date, is what peers check.
	certValidity = 20 * 365 * 24 * time.Hour
	// certBackdate tolerates peers whose clocks run somewhat behind.
	certBackdate = time.Hour
)

// Errors from the parsers below say what is wrong, never the content.

func newWGKey() (wgtypes.Key, []byte, error) {
	key, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return wgtypes.Key{}, nil, err
	}
	return key, []byte(key.String() + "\n"), nil
}

// parseWGKey parses a key as `wg genkey` prints it.
func parseWGKey(data []byte) (wgtypes.Key, error) {
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		return wgtypes.Key{}, errors.New("file is empty")
	}
	b := make([]byte, base64.StdEncoding.DecodedLen(len(data)))
	n, err := base64.StdEncoding.Decode(b, data)
	if err != nil {
		// A CorruptInputError names only an offset.
		return wgtypes.Key{}, fmt.Errorf("WireGuard key is not valid base64: %w", err)
	}
	if n != wgtypes.KeyLen {
		return wgtypes.Key{}, fmt.Errorf("WireGuard key must be %d bytes, got %d", wgtypes.KeyLen, n)
	}
	key, err := wgtypes.NewKey(b[:n])
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("WireGuard key: %w", err)
	}
	if key == (wgtypes.Key{}) {
		return wgtypes.Key{}, errors.New("WireGuard key is all zeros")
	}
	return key, nil
}

func newEd25519Key() (ed25519.PrivateKey, []byte, error) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// parseEd25519Key parses a PEM PKCS#8 ed25519 private key.
func parseEd25519Key(data []byte) (ed25519.PrivateKey, error) {
	der, err := decodePEM(data, "PRIVATE KEY")
	if err != nil {
		return nil, err
	}
	// x509's errors describe the structure (tags, lengths), not the bytes.
	key, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("not a PKCS#8 private key: %w", err)
	}
	edKey, ok := key.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("want an ed25519 private key, got %T", key) // the type only
	}
	return edKey, nil
}

// decodePEM returns the DER bytes of the single PEM block of type typ.
func decodePEM(data []byte, typ string) ([]byte, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, errors.New("file is empty")
	}
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block found")
	}
	if block.Type != typ {
		return nil, fmt.Errorf("PEM block type is %q, want %q", block.Type, typ)
	}
	if len(block.Headers) > 0 {
		return nil, errors.New("PEM block has headers (encrypted keys are not supported)")
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return nil, errors.New("unexpected data after the PEM block")
	}
	return block.Bytes, nil
}

// newCert makes a self-signed certificate for key.
func newCert(key ed25519.PrivateKey) (tls.Certificate, []byte, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: CertCommonName},
		NotBefore:             now.Add(-certBackdate),
		NotAfter:              now.Add(certValidity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("signing certificate: %w", err)
	}
	cert, err := tlsCertificate(der, key)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	return cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// parseCert parses a PEM certificate and checks that it belongs to key.
func parseCert(data []byte, key ed25519.PrivateKey) (tls.Certificate, error) {
	der, err := decodePEM(data, "CERTIFICATE")
	if err != nil {
		return tls.Certificate{}, err
	}
	return tlsCertificate(der, key)
}

// tlsCertificate pairs the certificate der with key, checking they match.
func tlsCertificate(der []byte, key ed25519.PrivateKey) (tls.Certificate, error) {
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("not an X.509 certificate: %w", err)
	}
	pub, ok := leaf.PublicKey.(ed25519.PublicKey)
	if !ok || !pub.Equal(key.Public()) {
		return tls.Certificate{}, fmt.Errorf("certificate does not match %s (it is for another key)", TLSKeyFile)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

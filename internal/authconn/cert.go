package authconn

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"time"
)

// CertPin returns the pin of a certificate: the SHA-256 of its DER bytes.
func CertPin(certDER []byte) []byte {
	sum := sha256.Sum256(certDER)
	return sum[:]
}

// noExpiry is the RFC 5280 "no well-defined expiration date" value: trust in
// fabric certificates comes from pins and proofs, not from validity periods.
var noExpiry = time.Date(9999, time.December, 31, 23, 59, 59, 0, time.UTC)

// NewSelfSignedCertificate returns a self-signed TLS certificate for
// signingKey (normally an ed25519.PrivateKey, giving an ed25519 certificate)
// with the given common name and no practical expiry.
func NewSelfSignedCertificate(signingKey crypto.Signer, commonName string) (tls.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("making certificate serial number: %w", err)
	}
	template := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             time.Now().Add(-time.Hour).UTC(),
		NotAfter:              noExpiry,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, signingKey.Public(), signingKey)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("creating self-signed certificate for %q: %w", commonName, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("parsing self-signed certificate for %q: %w", commonName, err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: signingKey, Leaf: leaf}, nil
}

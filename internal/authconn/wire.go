package authconn

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Methods a client can prove its credential with.
const (
	// MethodBootstrap proves the cluster's bootstrap key with an HMAC, in
	// both directions.
	MethodBootstrap = "bootstrap-hmac"
	// MethodSignature proves an ed25519 signing key (admin or node key);
	// the server is authenticated by its certificate pin.
	MethodSignature = "ed25519"
)

// IdentityBootstrap is the AuthInfo.Identity of a client that proved the
// bootstrap key.
const IdentityBootstrap = "bootstrap"

const (
	protocolVersion = 1
	maxMessageSize  = 4096
	bootstrapKeyLen = 32

	exporterLabel  = "EXPORTER-fabric-authconn-v1"
	exporterLen    = 32
	labelClientMAC = "fabric authconn v1 client"
	labelServerMAC = "fabric authconn v1 server"
	labelClientSig = "fabric authconn v1 client ed25519"
)

// Reasons the server gives when it refuses a hello.
const (
	reasonMalformedHello       = "malformed hello"
	reasonUnsupportedVersion   = "unsupported protocol version"
	reasonUnsupportedMethod    = "unsupported method"
	reasonBootstrapMismatch    = "bootstrap key mismatch"
	reasonBootstrapNotAccepted = "bootstrap key not accepted here"
	reasonSignatureNotAccepted = "signature method not accepted here"
	reasonBadSignature         = "signature does not verify"
	reasonUnknownSigningKey    = "unknown signing key"
)

// errMalformed marks a message that arrived but is not a valid message.
var errMalformed = errors.New("malformed message")

// hello is the client's first message.
type hello struct {
	V      int    `json:"v"`
	Method string `json:"method"`
	PubKey []byte `json:"pubKey,omitempty"`
	Proof  []byte `json:"proof"`
}

// reply is the server's answer to a hello.
type reply struct {
	V      int    `json:"v"`
	OK     bool   `json:"ok"`
	Proof  []byte `json:"proof,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// writeMessage sends v as one length-prefixed JSON message.
func writeMessage(w io.Writer, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encoding message: %w", err)
	}
	if len(body) > maxMessageSize {
		return fmt.Errorf("encoding message: %d bytes is over the %d byte limit", len(body), maxMessageSize)
	}
	buf := make([]byte, 4, 4+len(body))
	binary.BigEndian.PutUint32(buf, uint32(len(body)))
	if _, err := w.Write(append(buf, body...)); err != nil {
		return fmt.Errorf("writing message: %w", err)
	}
	return nil
}

// readMessage reads one length-prefixed JSON message into v. Errors wrap
// errMalformed when bytes arrived but do not form a valid message.
func readMessage(r io.Reader, v any) error {
	var prefix [4]byte
	if _, err := io.ReadFull(r, prefix[:]); err != nil {
		return fmt.Errorf("reading message length: %w", err)
	}
	n := binary.BigEndian.Uint32(prefix[:])
	if n == 0 || n > maxMessageSize {
		return fmt.Errorf("%w: length %d is outside 1..%d", errMalformed, n, maxMessageSize)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return fmt.Errorf("reading message body: %w", err)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("%w: %v", errMalformed, err)
	}
	return nil
}

// exportedKey returns the TLS exporter value the proofs are bound to.
func exportedKey(cs tls.ConnectionState) ([]byte, error) {
	ekm, err := cs.ExportKeyingMaterial(exporterLabel, nil, exporterLen)
	if err != nil {
		return nil, fmt.Errorf("exporting keying material: %w", err)
	}
	return ekm, nil
}

// bootstrapProof is HMAC-SHA256(key, label || ekm).
func bootstrapProof(key []byte, label string, ekm []byte) []byte {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(label))
	mac.Write(ekm)
	return mac.Sum(nil)
}

// signedMessage is what a client signs with its ed25519 key.
func signedMessage(ekm []byte) []byte {
	return append([]byte(labelClientSig), ekm...)
}

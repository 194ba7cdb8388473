package authconn

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"google.golang.org/grpc/credentials"
)

// DefaultHandshakeTimeout bounds a server handshake when
// ServerConfig.HandshakeTimeout is zero.
const DefaultHandshakeTimeout = 10 * time.Second

// ServerConfig says which credentials a server accepts.
type ServerConfig struct {
	// Certificate is the server's TLS certificate; clients pin it.
	Certificate tls.Certificate
	// BootstrapKey is the cluster's 32-byte bootstrap key; nil refuses
	// bootstrap proofs.
	BootstrapKey []byte
	// LookupSigningKey returns the identity of a client's ed25519 key; an
	// error refuses the key ("unknown signing key"). Nil refuses signature
	// proofs.
	LookupSigningKey func(pubKey ed25519.PublicKey) (identity string, err error)
	// HandshakeTimeout bounds TLS and proof exchange; zero means
	// DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// MaxPendingHandshakes caps the handshakes in progress, and
	// MaxPendingHandshakesPerIP those from one source address; zero means
	// DefaultMaxPendingHandshakes and DefaultMaxPendingHandshakesPerIP. A
	// connection over its address's cap is closed before its TLS
	// handshake; one over the total cap makes room by dropping the oldest
	// handshake in progress if that one started EvictAfter ago (zero:
	// DefaultEvictAfter), and is closed before its handshake otherwise.
	MaxPendingHandshakes, MaxPendingHandshakesPerIP int
	EvictAfter                                      time.Duration
	// Logger receives a Warn record (remote address and reason) for a
	// rejected handshake: per reason, the first few of every 10 seconds,
	// then one record with the count of the others. Nil discards.
	Logger *slog.Logger
}

// validate checks the config without ever printing a key.
func (cfg ServerConfig) validate() error {
	switch {
	case len(cfg.Certificate.Certificate) == 0 || cfg.Certificate.PrivateKey == nil:
		return errors.New("a TLS certificate with its private key is required")
	case cfg.BootstrapKey == nil && cfg.LookupSigningKey == nil:
		return errors.New("neither a bootstrap key nor a signing key lookup is set: no client could authenticate")
	case cfg.BootstrapKey != nil && len(cfg.BootstrapKey) != bootstrapKeyLen:
		return fmt.Errorf("bootstrap key must be %d bytes, not %d", bootstrapKeyLen, len(cfg.BootstrapKey))
	case cfg.HandshakeTimeout < 0:
		return fmt.Errorf("handshake timeout %v is negative", cfg.HandshakeTimeout)
	case cfg.EvictAfter < 0:
		return fmt.Errorf("eviction age of pending handshakes %v is negative", cfg.EvictAfter)
	case cfg.MaxPendingHandshakes < 0 || cfg.MaxPendingHandshakesPerIP < 0:
		return fmt.Errorf("caps on pending handshakes %d and %d per address: negative", cfg.MaxPendingHandshakes, cfg.MaxPendingHandshakesPerIP)
	}
	return nil
}

// serverCredentials are the gRPC transport credentials of a fabric server.
// Clones share the caps and the rejection log.
type serverCredentials struct {
	cfg      ServerConfig
	tls      *tls.Config
	pending  *pendingHandshakes
	rejected *rejectionLog
}

var _ credentials.TransportCredentials = (*serverCredentials)(nil)

// NewServerCredentials returns server transport credentials (for
// grpc.Creds) that accept the credentials cfg allows.
func NewServerCredentials(cfg ServerConfig) (credentials.TransportCredentials, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("configuring authconn server: %w", err)
	}
	cfg.BootstrapKey = bytes.Clone(cfg.BootstrapKey)
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxPendingHandshakes == 0 {
		cfg.MaxPendingHandshakes = DefaultMaxPendingHandshakes
	}
	if cfg.MaxPendingHandshakesPerIP == 0 {
		cfg.MaxPendingHandshakesPerIP = DefaultMaxPendingHandshakesPerIP
	}
	if cfg.EvictAfter == 0 {
		cfg.EvictAfter = DefaultEvictAfter
	}
	return &serverCredentials{
		cfg: cfg,
		tls: &tls.Config{
			Certificates: []tls.Certificate{cfg.Certificate},
			MinVersion:   tls.VersionTLS13,
			NextProtos:   []string{"h2"},
		},
		pending:  newPendingHandshakes(cfg.MaxPendingHandshakes, cfg.MaxPendingHandshakesPerIP, cfg.EvictAfter),
		rejected: newRejectionLog(cfg.Logger),
	}, nil
}

// ClientHandshake is not supported: these are server credentials.
func (s *serverCredentials) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("authconn server credentials cannot dial")
}

// ServerHandshake runs TLS and the fabric proof exchange on rawConn within
// the handshake timeout, and logs a rejection. A connection over the caps
// on handshakes in progress is closed at once.
func (s *serverCredentials) ServerHandshake(rawConn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	remote := rawConn.RemoteAddr().String()
	pc, err := s.pending.admit(rawConn)
	if err != nil {
		rawConn.Close()
		s.rejected.rejected(remote, err.Error(), nil)
		return nil, nil, fmt.Errorf("authenticating %s: %w", remote, err)
	}
	if err := rawConn.SetDeadline(time.Now().Add(s.cfg.HandshakeTimeout)); err != nil {
		s.pending.release(pc)
		rawConn.Close()
		return nil, nil, fmt.Errorf("setting handshake deadline for %s: %w", remote, err)
	}
	conn := tls.Server(rawConn, s.tls)
	info, err := s.handshake(conn, pc)
	if err == nil {
		err = rawConn.SetDeadline(time.Time{})
	}
	if err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("authenticating %s: %w", remote, err)
	}
	return conn, info, nil
}

// Info describes the security protocol.
func (s *serverCredentials) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "tls", SecurityVersion: "1.3"}
}

// Clone returns a copy.
func (s *serverCredentials) Clone() credentials.TransportCredentials {
	clone := *s
	clone.tls = s.tls.Clone()
	return &clone
}

// OverrideServerName does nothing: servers have no server name to override.
func (s *serverCredentials) OverrideServerName(string) error { return nil }

// rejection is a hello the server refused with reason.
type rejection struct {
	reason string
	cause  error // server-side detail, e.g. from LookupSigningKey; may be nil
}

func (r *rejection) Error() string { return "refused hello: " + r.reason }

// handshake runs TLS, reads the hello and answers it. Its count in the
// caps (pc) ends with the exchange of proofs.
func (s *serverCredentials) handshake(conn *tls.Conn, pc *pendingConn) (*AuthInfo, error) {
	remote := conn.RemoteAddr().String()
	released := false
	release := func() (evicted bool) {
		if released {
			return false
		}
		released = true
		return s.pending.release(pc)
	}
	defer release()
	if err := conn.Handshake(); err != nil {
		if release() {
			s.logRejected(remote, reasonEvicted, nil)
			return nil, errors.New(reasonEvicted)
		}
		s.logRejected(remote, "tls handshake failed", err)
		return nil, fmt.Errorf("tls handshake: %w", err)
	}
	cs := conn.ConnectionState()
	ekm, err := exportedKey(cs)
	if err != nil {
		s.logRejected(remote, "no exporter value", err)
		return nil, err
	}
	var h hello
	if err := readMessage(conn, &h); err != nil {
		if errors.Is(err, errMalformed) {
			return nil, s.refuse(conn, &rejection{reason: reasonMalformedHello})
		}
		if release() {
			s.logRejected(remote, reasonEvicted, nil)
			return nil, errors.New(reasonEvicted)
		}
		s.logRejected(remote, "no hello", err)
		return nil, fmt.Errorf("reading hello: %w", err)
	}
	info, rej := s.verify(h, ekm)
	if rej != nil {
		return nil, s.refuse(conn, rej)
	}
	if err := writeMessage(conn, s.accept(h, ekm)); err != nil {
		return nil, fmt.Errorf("accepting hello: %w", err)
	}
	info.TLS = cs
	return info, nil
}

// refuse logs a rejection, tells the client why and returns the rejection.
// The caller closes the connection.
func (s *serverCredentials) refuse(conn *tls.Conn, rej *rejection) error {
	s.logRejected(conn.RemoteAddr().String(), rej.reason, rej.cause)
	if err := writeMessage(conn, reply{V: protocolVersion, Reason: rej.reason}); err != nil {
		return fmt.Errorf("%w (and telling the client failed: %v)", rej, err)
	}
	return rej
}

// logRejected logs a rejected handshake (sampled, see rejectionLog).
// Nothing passed here contains a secret: reasons are constants and causes
// are network or lookup errors.
func (s *serverCredentials) logRejected(remote, reason string, cause error) {
	if errors.Is(cause, os.ErrDeadlineExceeded) {
		reason = "handshake timed out"
	}
	s.rejected.rejected(remote, reason, cause)
}

// verify checks a hello's proof over ekm and returns who the client is.
func (s *serverCredentials) verify(h hello, ekm []byte) (*AuthInfo, *rejection) {
	if h.V != protocolVersion {
		return nil, &rejection{reason: reasonUnsupportedVersion}
	}
	switch h.Method {
	case MethodBootstrap:
		return s.verifyBootstrap(h, ekm)
	case MethodSignature:
		return s.verifySignature(h, ekm)
	}
	return nil, &rejection{reason: reasonUnsupportedMethod}
}

// verifyBootstrap checks a bootstrap key HMAC in constant time.
func (s *serverCredentials) verifyBootstrap(h hello, ekm []byte) (*AuthInfo, *rejection) {
	if s.cfg.BootstrapKey == nil {
		return nil, &rejection{reason: reasonBootstrapNotAccepted}
	}
	if !hmac.Equal(h.Proof, bootstrapProof(s.cfg.BootstrapKey, labelClientMAC, ekm)) {
		return nil, &rejection{reason: reasonBootstrapMismatch}
	}
	return newServerAuthInfo(MethodBootstrap, nil, IdentityBootstrap), nil
}

// verifySignature checks possession of the signing key first, then looks
// the key up, so that nobody learns which keys are known without holding one.
func (s *serverCredentials) verifySignature(h hello, ekm []byte) (*AuthInfo, *rejection) {
	if s.cfg.LookupSigningKey == nil {
		return nil, &rejection{reason: reasonSignatureNotAccepted}
	}
	if len(h.PubKey) != ed25519.PublicKeySize || len(h.Proof) != ed25519.SignatureSize {
		return nil, &rejection{reason: reasonMalformedHello}
	}
	pubKey := ed25519.PublicKey(h.PubKey)
	if !ed25519.Verify(pubKey, signedMessage(ekm), h.Proof) {
		return nil, &rejection{reason: reasonBadSignature}
	}
	identity, err := s.cfg.LookupSigningKey(pubKey)
	if err != nil {
		return nil, &rejection{reason: reasonUnknownSigningKey, cause: err}
	}
	return newServerAuthInfo(MethodSignature, pubKey, identity), nil
}

// accept is the reply to a verified hello.
func (s *serverCredentials) accept(h hello, ekm []byte) reply {
	r := reply{V: protocolVersion, OK: true}
	if h.Method == MethodBootstrap {
		r.Proof = bootstrapProof(s.cfg.BootstrapKey, labelServerMAC, ekm)
	}
	return r
}

func newServerAuthInfo(method string, pubKey ed25519.PublicKey, identity string) *AuthInfo {
	return &AuthInfo{
		CommonAuthInfo:    credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity},
		Method:            method,
		PeerSigningPubKey: pubKey,
		Identity:          identity,
	}
}

package authconn

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// ClientConfig chooses the credential a client proves.
type ClientConfig struct {
	// BootstrapKey is the cluster's 32-byte bootstrap key. Exactly one of
	// BootstrapKey and SigningPrivKey is set.
	BootstrapKey []byte
	// SigningPrivKey is an ed25519 key (admin or node key).
	SigningPrivKey ed25519.PrivateKey
	// ServerCertPin is the CertPin of the server's certificate. Required with
	// SigningPrivKey; checked too if set with BootstrapKey.
	ServerCertPin []byte
}

// validate checks the config without ever printing a key.
func (cfg ClientConfig) validate() error {
	switch {
	case (cfg.BootstrapKey == nil) == (cfg.SigningPrivKey == nil):
		return errors.New("exactly one of the bootstrap key and the signing key must be set")
	case cfg.BootstrapKey != nil && len(cfg.BootstrapKey) != bootstrapKeyLen:
		return fmt.Errorf("bootstrap key must be %d bytes, not %d", bootstrapKeyLen, len(cfg.BootstrapKey))
	case cfg.SigningPrivKey != nil && len(cfg.SigningPrivKey) != ed25519.PrivateKeySize:
		return fmt.Errorf("signing private key must be %d bytes, not %d", ed25519.PrivateKeySize, len(cfg.SigningPrivKey))
	case cfg.SigningPrivKey != nil && cfg.ServerCertPin == nil:
		return errors.New("a server certificate pin is required with a signing key")
	case cfg.ServerCertPin != nil && len(cfg.ServerCertPin) != exporterLen:
		return fmt.Errorf("server certificate pin must be a %d-byte SHA-256, not %d bytes", exporterLen, len(cfg.ServerCertPin))
	}
	return nil
}

// ClientCredentials are the gRPC transport credentials of a fabric client.
// Use DialOptions rather than passing them to grpc.WithTransportCredentials
// alone, so that authentication failures reach the caller as
// PermissionDenied.
type ClientCredentials struct {
	cfg        ClientConfig
	serverName string
	failures   *failureLog // shared with clones
}

var _ credentials.TransportCredentials = (*ClientCredentials)(nil)

// NewClientCredentials returns client credentials that prove cfg's
// credential on every connection.
func NewClientCredentials(cfg ClientConfig) (*ClientCredentials, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("configuring authconn client: %w", err)
	}
	cfg = ClientConfig{
		BootstrapKey:   bytes.Clone(cfg.BootstrapKey),
		SigningPrivKey: ed25519.PrivateKey(bytes.Clone(cfg.SigningPrivKey)),
		ServerCertPin:  bytes.Clone(cfg.ServerCertPin),
	}
	return &ClientCredentials{cfg: cfg, failures: &failureLog{}}, nil
}

// DialOptions returns the options a grpc.ClientConn needs: these transport
// credentials and interceptors that report authentication failures as
// PermissionDenied instead of Unavailable.
func (c *ClientCredentials) DialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithTransportCredentials(c),
		grpc.WithChainUnaryInterceptor(c.unaryInterceptor),
		grpc.WithChainStreamInterceptor(c.streamInterceptor),
	}
}

// ClientHandshake runs TLS and the fabric proof exchange on rawConn.
func (c *ClientCredentials) ClientHandshake(ctx context.Context, authority string, rawConn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	peerEndpoint := rawConn.RemoteAddr().String()
	conn := tls.Client(rawConn, c.tlsConfig(authority))
	info, err := c.handshake(ctx, conn, peerEndpoint)
	if err != nil {
		conn.Close()
		var authErr *authError
		if errors.As(err, &authErr) {
			c.failures.record(authErr.Error())
		}
		return nil, nil, err
	}
	return conn, info, nil
}

// ServerHandshake is not supported: these are client credentials.
func (c *ClientCredentials) ServerHandshake(net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("authconn client credentials cannot accept connections")
}

// Info describes the security protocol.
func (c *ClientCredentials) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "tls", SecurityVersion: "1.3", ServerName: c.serverName}
}

// Clone returns a copy that shares the memory of authentication failures.
func (c *ClientCredentials) Clone() credentials.TransportCredentials {
	clone := *c
	return &clone
}

// OverrideServerName sets the TLS server name (SNI). Call it before use.
//
// Deprecated: gRPC no longer calls it; use grpc.WithAuthority.
func (c *ClientCredentials) OverrideServerName(serverName string) error {
	c.serverName = serverName
	return nil
}

// tlsConfig is the TLS configuration of one connection. Trust comes from the
// proof or the pin, not from a CA, so chain verification is skipped.
func (c *ClientCredentials) tlsConfig(authority string) *tls.Config {
	serverName := c.serverName
	if serverName == "" {
		serverName = authority
		if host, _, err := net.SplitHostPort(authority); err == nil {
			serverName = host
		}
	}
	return &tls.Config{
		ServerName:         serverName,
		MinVersion:         tls.VersionTLS13,
		NextProtos:         []string{"h2"},
		InsecureSkipVerify: true, // see doc.go: the pin or the proof authenticates the server
		VerifyConnection:   c.verifyPin,
	}
}

// errPinMismatch is returned by verifyPin when the certificate is not pinned.
var errPinMismatch = errors.New("server certificate does not match the pinned certificate")

// verifyPin checks the server certificate against the pin, if there is one.
func (c *ClientCredentials) verifyPin(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("server sent no certificate")
	}
	if c.cfg.ServerCertPin == nil {
		return nil
	}
	if subtle.ConstantTimeCompare(CertPin(cs.PeerCertificates[0].Raw), c.cfg.ServerCertPin) != 1 {
		return errPinMismatch
	}
	return nil
}

// handshake runs TLS then the proof exchange, both bounded by ctx.
func (c *ClientCredentials) handshake(ctx context.Context, conn *tls.Conn, peerEndpoint string) (*AuthInfo, error) {
	if err := conn.HandshakeContext(ctx); err != nil {
		if errors.Is(err, errPinMismatch) {
			return nil, &authError{peer: peerEndpoint, msg: ": " + errPinMismatch.Error()}
		}
		return nil, fmt.Errorf("tls handshake with %s: %w", peerEndpoint, err)
	}
	if deadline, ok := ctx.Deadline(); ok {
		if err := conn.SetDeadline(deadline); err != nil {
			return nil, fmt.Errorf("setting handshake deadline with %s: %w", peerEndpoint, err)
		}
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	info, err := c.prove(conn, peerEndpoint)
	if !stop() {
		return nil, fmt.Errorf("authenticating with %s: %w", peerEndpoint, ctx.Err())
	}
	if err != nil {
		return nil, err
	}
	if err := conn.SetDeadline(time.Time{}); err != nil {
		return nil, fmt.Errorf("clearing handshake deadline with %s: %w", peerEndpoint, err)
	}
	return info, nil
}

// prove sends the hello and checks the server's reply.
func (c *ClientCredentials) prove(conn *tls.Conn, peerEndpoint string) (*AuthInfo, error) {
	cs := conn.ConnectionState()
	ekm, err := exportedKey(cs)
	if err != nil {
		return nil, fmt.Errorf("authenticating with %s: %w", peerEndpoint, err)
	}
	if err := writeMessage(conn, c.hello(ekm)); err != nil {
		return nil, fmt.Errorf("sending hello to %s: %w", peerEndpoint, err)
	}
	var r reply
	if err := readMessage(conn, &r); err != nil {
		if errors.Is(err, errMalformed) {
			return nil, &authError{peer: peerEndpoint, msg: " sent a malformed handshake reply"}
		}
		return nil, fmt.Errorf("reading handshake reply from %s: %w", peerEndpoint, err)
	}
	if err := c.checkReply(r, ekm, peerEndpoint); err != nil {
		return nil, err
	}
	return &AuthInfo{
		CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity},
		TLS:            cs,
		Method:         c.method(),
		ServerCertPin:  CertPin(cs.PeerCertificates[0].Raw),
	}, nil
}

// method is the proof method this client uses.
func (c *ClientCredentials) method() string {
	if c.cfg.BootstrapKey != nil {
		return MethodBootstrap
	}
	return MethodSignature
}

// hello builds the client's proof over ekm.
func (c *ClientCredentials) hello(ekm []byte) hello {
	if c.cfg.BootstrapKey != nil {
		return hello{V: protocolVersion, Method: MethodBootstrap, Proof: bootstrapProof(c.cfg.BootstrapKey, labelClientMAC, ekm)}
	}
	return hello{
		V:      protocolVersion,
		Method: MethodSignature,
		PubKey: c.cfg.SigningPrivKey.Public().(ed25519.PublicKey),
		Proof:  ed25519.Sign(c.cfg.SigningPrivKey, signedMessage(ekm)),
	}
}

// checkReply accepts a reply that says ok and, for the bootstrap method,
// proves the bootstrap key over this connection's ekm.
func (c *ClientCredentials) checkReply(r reply, ekm []byte, peerEndpoint string) error {
	if r.V != protocolVersion {
		return &authError{peer: peerEndpoint, msg: fmt.Sprintf(" answered with unsupported protocol version %d", r.V)}
	}
	if !r.OK {
		return &authError{peer: peerEndpoint, msg: " refused our credentials: " + sanitizeReason(r.Reason)}
	}
	if c.cfg.BootstrapKey == nil {
		return nil // the certificate pin authenticated the server
	}
	if !hmac.Equal(r.Proof, bootstrapProof(c.cfg.BootstrapKey, labelServerMAC, ekm)) {
		return &authError{peer: peerEndpoint, msg: " did not prove the bootstrap key (not a peer of this cluster, or a man-in-the-middle)"}
	}
	return nil
}

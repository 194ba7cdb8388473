package authconn

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// authType is what AuthInfo.AuthType reports.
const authType = "fabric-authconn"

// AuthInfo describes an authenticated connection. gRPC hands it to handlers
// through the peer in the context; see FromContext.
type AuthInfo struct {
	credentials.CommonAuthInfo // SecurityLevel is PrivacyAndIntegrity
	TLS                        tls.ConnectionState
	// Method is the proof the client gave: MethodBootstrap or MethodSignature.
	Method string
	// PeerSigningPubKey is the client's ed25519 public key (server side,
	// MethodSignature only).
	PeerSigningPubKey ed25519.PublicKey
	// Identity is, on the server side, what LookupSigningKey returned for the
	// client's key, or IdentityBootstrap for the bootstrap method.
	Identity string
	// ServerCertPin is, on the client side, the pin (CertPin) of the server
	// certificate actually seen.
	ServerCertPin []byte
}

// AuthType returns "fabric-authconn".
func (AuthInfo) AuthType() string { return authType }

// FromContext returns the AuthInfo of the connection a call arrived on (or
// was made on), if that connection was authenticated by this package.
func FromContext(ctx context.Context) (*AuthInfo, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok || p.AuthInfo == nil {
		return nil, false
	}
	switch info := p.AuthInfo.(type) {
	case *AuthInfo:
		return info, info != nil
	case AuthInfo:
		return &info, true
	}
	return nil, false
}

// RequireMethod returns the AuthInfo of the call's connection if it was
// authenticated with one of methods, and otherwise a PermissionDenied status
// that says what the call needs. With no methods every call is refused.
func RequireMethod(ctx context.Context, methods ...string) (*AuthInfo, error) {
	info, ok := FromContext(ctx)
	if !ok {
		return nil, status.Error(codes.PermissionDenied, "connection is not authenticated by fabric (no authconn proof)")
	}
	if slices.Contains(methods, info.Method) {
		return info, nil
	}
	if len(methods) == 0 {
		return nil, status.Error(codes.PermissionDenied, "this call accepts no credential")
	}
	return nil, status.Errorf(codes.PermissionDenied,
		"this call requires a connection authenticated with %s; this connection was authenticated with %s",
		describeMethods(methods), describeMethod(info.Method))
}

// describeMethods names methods for an operator, joined with "or".
func describeMethods(methods []string) string {
	names := make([]string, len(methods))
	for i, m := range methods {
		names[i] = describeMethod(m)
	}
	return strings.Join(names, " or ")
}

// describeMethod names one method for an operator.
func describeMethod(method string) string {
	switch method {
	case MethodBootstrap:
		return "the bootstrap key"
	case MethodSignature:
		return "an ed25519 signing key (admin or node key)"
	}
	return fmt.Sprintf("method %q", method)
}

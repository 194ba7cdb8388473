package authconn

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

func TestRequireMethod(t *testing.T) {
	withAuth := func(info credentials.AuthInfo) context.Context {
		return peer.NewContext(context.Background(), &peer.Peer{AuthInfo: info})
	}
	bootstrap := &AuthInfo{Method: MethodBootstrap, Identity: IdentityBootstrap}
	admin := &AuthInfo{Method: MethodSignature, Identity: "admin"}
	tests := []struct {
		name     string
		ctx      context.Context
		methods  []string
		want     *AuthInfo
		wantCode codes.Code
		wantMsg  string
	}{
		{name: "bootstrap allowed", ctx: withAuth(bootstrap), methods: []string{MethodBootstrap}, want: bootstrap},
		{name: "signature allowed", ctx: withAuth(admin), methods: []string{MethodSignature}, want: admin},
		{name: "either allowed", ctx: withAuth(admin), methods: []string{MethodBootstrap, MethodSignature}, want: admin},
		{name: "value AuthInfo", ctx: withAuth(*admin), methods: []string{MethodSignature}, want: admin},
		{name: "bootstrap where signature required", ctx: withAuth(bootstrap), methods: []string{MethodSignature}, wantCode: codes.PermissionDenied,
			wantMsg: "this call requires a connection authenticated with an ed25519 signing key (admin or node key); this connection was authenticated with the bootstrap key"},
		{name: "signature where bootstrap required", ctx: withAuth(admin), methods: []string{MethodBootstrap}, wantCode: codes.PermissionDenied,
			wantMsg: "this call requires a connection authenticated with the bootstrap key; this connection was authenticated with an ed25519 signing key (admin or node key)"},
		{name: "no methods", ctx: withAuth(admin), wantCode: codes.PermissionDenied, wantMsg: "this call accepts no credential"},
		{name: "no peer", ctx: context.Background(), methods: []string{MethodBootstrap}, wantCode: codes.PermissionDenied,
			wantMsg: "connection is not authenticated by fabric (no authconn proof)"},
		{name: "other credentials", ctx: withAuth(credentials.TLSInfo{}), methods: []string{MethodBootstrap}, wantCode: codes.PermissionDenied,
			wantMsg: "connection is not authenticated by fabric (no authconn proof)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := RequireMethod(tc.ctx, tc.methods...)
			st := status.Convert(err)
			if diff := cmp.Diff(struct {
				Code codes.Code
				Msg  string
			}{tc.wantCode, tc.wantMsg}, struct {
				Code codes.Code
				Msg  string
			}{st.Code(), st.Message()}); diff != "" {
				t.Errorf("RequireMethod error (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(seenBy(tc.want), seenBy(got)); diff != "" {
				t.Errorf("RequireMethod AuthInfo (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNewSelfSignedCertificate(t *testing.T) {
	ecdsaKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	edKey := newSigningKey(t)
	for _, tc := range []struct {
		name    string
		signer  crypto.Signer
		wantAlg string
	}{
		{name: "ed25519", signer: edKey, wantAlg: "Ed25519"},
		{name: "ecdsa", signer: ecdsaKey, wantAlg: "ECDSA"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cert, err := NewSelfSignedCertificate(tc.signer, "node-1")
			if err != nil {
				t.Fatal(err)
			}
			got := struct {
				CN, Alg string
				Pin     []byte
				SameKey bool
			}{cert.Leaf.Subject.CommonName, cert.Leaf.PublicKeyAlgorithm.String(), CertPin(cert.Leaf.Raw),
				cert.Leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(tc.signer.Public())}
			want := struct {
				CN, Alg string
				Pin     []byte
				SameKey bool
			}{"node-1", tc.wantAlg, sha256Of(cert.Certificate[0]), true}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("certificate (-want +got):\n%s", diff)
			}
			if cert.Leaf.NotAfter.Year() != 9999 {
				t.Errorf("certificate expires %v, want no practical expiry", cert.Leaf.NotAfter)
			}
		})
	}
}

func TestConfigValidation(t *testing.T) {
	key := newKey(t)
	signingKey := newSigningKey(t)
	pin := CertPin([]byte("cert"))
	clientTests := []struct {
		name    string
		cfg     ClientConfig
		wantErr string
	}{
		{name: "bootstrap", cfg: ClientConfig{BootstrapKey: key}},
		{name: "bootstrap and pin", cfg: ClientConfig{BootstrapKey: key, ServerCertPin: pin}},
		{name: "signing key and pin", cfg: ClientConfig{SigningPrivKey: signingKey, ServerCertPin: pin}},
		{name: "nothing", cfg: ClientConfig{}, wantErr: "exactly one of the bootstrap key and the signing key must be set"},
		{name: "both", cfg: ClientConfig{BootstrapKey: key, SigningPrivKey: signingKey, ServerCertPin: pin}, wantErr: "exactly one"},
		{name: "short bootstrap key", cfg: ClientConfig{BootstrapKey: key[:16]}, wantErr: "bootstrap key must be 32 bytes, not 16"},
		{name: "signing key without pin", cfg: ClientConfig{SigningPrivKey: signingKey}, wantErr: "a server certificate pin is required"},
		{name: "short pin", cfg: ClientConfig{BootstrapKey: key, ServerCertPin: pin[:8]}, wantErr: "pin must be a 32-byte SHA-256"},
		{name: "short signing key", cfg: ClientConfig{SigningPrivKey: signingKey[:32], ServerCertPin: pin}, wantErr: "signing private key must be 64 bytes"},
	}
	for _, tc := range clientTests {
		t.Run("client/"+tc.name, func(t *testing.T) {
			_, err := NewClientCredentials(tc.cfg)
			assertErrContains(t, err, tc.wantErr)
			assertNoSecrets(t, "error", errString(err), key, signingKey.Seed())
		})
	}
	cert := newCert(t, "server")
	lookup := func(ed25519.PublicKey) (string, error) { return "", nil }
	serverTests := []struct {
		name    string
		cfg     ServerConfig
		wantErr string
	}{
		{name: "bootstrap", cfg: ServerConfig{Certificate: cert, BootstrapKey: key}},
		{name: "lookup", cfg: ServerConfig{Certificate: cert, LookupSigningKey: lookup}},
		{name: "no certificate", cfg: ServerConfig{BootstrapKey: key}, wantErr: "a TLS certificate with its private key is required"},
		{name: "no credential", cfg: ServerConfig{Certificate: cert}, wantErr: "no client could authenticate"},
		{name: "long bootstrap key", cfg: ServerConfig{Certificate: cert, BootstrapKey: append(bytes.Clone(key), 1)}, wantErr: "bootstrap key must be 32 bytes, not 33"},
	}
	for _, tc := range serverTests {
		t.Run("server/"+tc.name, func(t *testing.T) {
			_, err := NewServerCredentials(tc.cfg)
			assertErrContains(t, err, tc.wantErr)
			assertNoSecrets(t, "error", errString(err), key)
		})
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// assertErrContains fails unless err is nil when want is empty, or contains want.
func assertErrContains(t testing.TB, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Errorf("unexpected error: %v", err)
	case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
		t.Errorf("error = %v, want one containing %q", err, want)
	}
}

func TestReadMessage(t *testing.T) {
	frame := func(n uint32, body string) []byte {
		return append(binary.BigEndian.AppendUint32(nil, n), body...)
	}
	tests := []struct {
		name          string
		input         []byte
		want          hello
		wantMalformed bool
		wantErr       bool
	}{
		{name: "hello", input: frame(27, `{"v":1,"method":"ed25519"} `), want: hello{V: 1, Method: MethodSignature}},
		{name: "empty", input: frame(0, ""), wantMalformed: true, wantErr: true},
		{name: "over 4 KiB", input: frame(4097, strings.Repeat(" ", 4097)), wantMalformed: true, wantErr: true},
		{name: "http/2 preface", input: []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), wantMalformed: true, wantErr: true},
		{name: "not json", input: frame(3, "abc"), wantMalformed: true, wantErr: true},
		{name: "truncated", input: frame(10, "{}"), wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got hello
			err := readMessage(bytes.NewReader(tc.input), &got)
			if (err != nil) != tc.wantErr || errors.Is(err, errMalformed) != tc.wantMalformed {
				t.Fatalf("readMessage error = %v, want error %v, malformed %v", err, tc.wantErr, tc.wantMalformed)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("readMessage (-want +got):\n%s", diff)
			}
		})
	}
}

func sha256Of(b []byte) []byte {
	sum := sha256.Sum256(b)
	return sum[:]
}

package authconn

import (
	"crypto/ed25519"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// seen is what a handler learned from the connection's AuthInfo.
type seen struct {
	Method   string
	Identity string
	PubKey   ed25519.PublicKey
	Level    credentials.SecurityLevel
}

func seenBy(info *AuthInfo) *seen {
	if info == nil {
		return nil
	}
	return &seen{Method: info.Method, Identity: info.Identity, PubKey: info.PeerSigningPubKey, Level: info.SecurityLevel}
}

// assertNoSecrets fails if text contains any secret in hex or base64.
func assertNoSecrets(t testing.TB, what, text string, secrets ...[]byte) {
	t.Helper()
	for _, s := range secrets {
		for _, enc := range []string{hex.EncodeToString(s), base64.StdEncoding.EncodeToString(s), base64.RawURLEncoding.EncodeToString(s)} {
			if strings.Contains(text, enc) {
				t.Errorf("%s contains a secret: %q", what, text)
			}
		}
	}
}

// assertStatus fails unless err has code and, if msgFormat is not empty,
// the message fmt.Sprintf(msgFormat, endpoint).
func assertStatus(t testing.TB, err error, code codes.Code, msgFormat, endpoint string) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != code {
		t.Fatalf("call error = %v, want code %v", err, code)
	}
	if msgFormat == "" {
		return
	}
	if diff := cmp.Diff(fmt.Sprintf(msgFormat, endpoint), st.Message()); diff != "" {
		t.Errorf("call error message (-want +got):\n%s", diff)
	}
}

func TestCredentials(t *testing.T) {
	checkGoroutineLeaks(t)
	key, otherKey := newKey(t), newKey(t)
	adminKey, strangerKey := newSigningKey(t), newSigningKey(t)
	adminPubKey := adminKey.Public().(ed25519.PublicKey)
	lookup := func(pubKey ed25519.PublicKey) (string, error) {
		if pubKey.Equal(adminPubKey) {
			return "admin", nil
		}
		return "", errors.New("not a registered key")
	}
	wrongPin := CertPin([]byte("some other certificate"))
	rightPin := func(ts *testServer) []byte { return ts.pin() }
	noPin := func(*testServer) []byte { return nil }
	const mismatch = "peer %s refused our credentials: bootstrap key mismatch"
	const pinMismatch = "peer %s: server certificate does not match the pinned certificate"

	tests := []struct {
		name     string
		server   ServerConfig
		client   ClientConfig
		pin      func(*testServer) []byte
		wantCode codes.Code
		wantMsg  string // format with the server endpoint
		wantLog  string
		want     *seen // what the handler saw; nil when it must not run
	}{
		{name: "bootstrap key", server: ServerConfig{BootstrapKey: key}, client: ClientConfig{BootstrapKey: key}, pin: noPin,
			want: &seen{Method: MethodBootstrap, Identity: IdentityBootstrap, Level: credentials.PrivacyAndIntegrity}},
		{name: "bootstrap key and pin", server: ServerConfig{BootstrapKey: key}, client: ClientConfig{BootstrapKey: key}, pin: rightPin,
			want: &seen{Method: MethodBootstrap, Identity: IdentityBootstrap, Level: credentials.PrivacyAndIntegrity}},
		{name: "wrong bootstrap key", server: ServerConfig{BootstrapKey: key}, client: ClientConfig{BootstrapKey: otherKey}, pin: noPin,
			wantCode: codes.PermissionDenied, wantMsg: mismatch, wantLog: "reason=\"bootstrap key mismatch\""},
		{name: "bootstrap key and wrong pin", server: ServerConfig{BootstrapKey: key}, client: ClientConfig{BootstrapKey: key}, pin: func(*testServer) []byte { return wrongPin },
			wantCode: codes.PermissionDenied, wantMsg: pinMismatch, wantLog: "reason=\"tls handshake failed\""},
		{name: "bootstrap key not accepted", server: ServerConfig{LookupSigningKey: lookup}, client: ClientConfig{BootstrapKey: key}, pin: noPin,
			wantCode: codes.PermissionDenied, wantMsg: "peer %s refused our credentials: bootstrap key not accepted here", wantLog: "bootstrap key not accepted here"},
		{name: "known signing key", server: ServerConfig{LookupSigningKey: lookup}, client: ClientConfig{SigningPrivKey: adminKey}, pin: rightPin,
			want: &seen{Method: MethodSignature, Identity: "admin", PubKey: adminPubKey, Level: credentials.PrivacyAndIntegrity}},
		{name: "known signing key, server also takes bootstrap", server: ServerConfig{BootstrapKey: key, LookupSigningKey: lookup}, client: ClientConfig{SigningPrivKey: adminKey}, pin: rightPin,
			want: &seen{Method: MethodSignature, Identity: "admin", PubKey: adminPubKey, Level: credentials.PrivacyAndIntegrity}},
		{name: "unknown signing key", server: ServerConfig{LookupSigningKey: lookup}, client: ClientConfig{SigningPrivKey: strangerKey}, pin: rightPin,
			wantCode: codes.PermissionDenied, wantMsg: "peer %s refused our credentials: unknown signing key", wantLog: "not a registered key"},
		{name: "signing key and wrong pin", server: ServerConfig{LookupSigningKey: lookup}, client: ClientConfig{SigningPrivKey: adminKey}, pin: func(*testServer) []byte { return wrongPin },
			wantCode: codes.PermissionDenied, wantMsg: pinMismatch, wantLog: "bad certificate"},
		{name: "signature not accepted", server: ServerConfig{BootstrapKey: key}, client: ClientConfig{SigningPrivKey: adminKey}, pin: rightPin,
			wantCode: codes.PermissionDenied, wantMsg: "peer %s refused our credentials: signature method not accepted here", wantLog: "signature method not accepted here"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, tc.server)
			cfg := tc.client
			cfg.ServerCertPin = tc.pin(ts)
			client := dial(t, ts.addr, cfg)
			// Twice: the second call fails on the remembered connection state.
			for range 2 {
				clientInfo, err := check(t, client)
				assertStatus(t, err, tc.wantCode, tc.wantMsg, ts.addr)
				assertNoSecrets(t, "client error", fmt.Sprint(err), key, otherKey, adminKey.Seed(), strangerKey.Seed())
				if err == nil {
					if diff := cmp.Diff(ts.pin(), clientInfo.ServerCertPin); diff != "" {
						t.Errorf("client AuthInfo.ServerCertPin (-want +got):\n%s", diff)
					}
					if clientInfo.Method != tc.client.method() {
						t.Errorf("client AuthInfo.Method = %q, want %q", clientInfo.Method, tc.client.method())
					}
				}
			}
			var want []*seen
			if tc.want != nil {
				want = []*seen{tc.want, tc.want}
			}
			var got []*seen
			for _, info := range ts.health.Calls() {
				got = append(got, seenBy(info))
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("handler calls (-want +got):\n%s", diff)
			}
			if tc.wantLog != "" {
				waitForLog(t, ts.logs, "level=WARN", tc.wantLog)
			}
			assertNoSecrets(t, "server log", ts.logs.String(), key, otherKey, adminKey.Seed(), strangerKey.Seed())
		})
	}
}

// method is the method a client config proves (test helper).
func (cfg ClientConfig) method() string {
	if cfg.BootstrapKey != nil {
		return MethodBootstrap
	}
	return MethodSignature
}

func TestNetworkErrorStaysUnavailable(t *testing.T) {
	checkGoroutineLeaks(t)
	// A peer refuses us, then goes away: the next failure is a network
	// failure and must not be reported as the earlier refusal.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	fake := startFakeServerOn(t, lis, func(hello, []byte) reply { return reply{V: 1, Reason: reasonBootstrapMismatch} })
	creds, err := NewClientCredentials(ClientConfig{BootstrapKey: newKey(t)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = check(t, dialWith(t, addr, creds.DialOptions()...))
	assertStatus(t, err, codes.PermissionDenied, "peer %s refused our credentials: bootstrap key mismatch", addr)

	fake.stop()
	_, err = check(t, dialWith(t, addr, creds.DialOptions()...))
	assertStatus(t, err, codes.Unavailable, "", addr)
	if strings.Contains(err.Error(), "refused our credentials") {
		t.Errorf("network failure reported as a refusal: %v", err)
	}
}

func TestPlainTLSClient(t *testing.T) {
	checkGoroutineLeaks(t)
	ts := startServer(t, ServerConfig{BootstrapKey: newKey(t)})
	client := dialWith(t, ts.addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{InsecureSkipVerify: true})))
	if _, err := check(t, client); err == nil {
		t.Fatal("call without a fabric proof succeeded")
	}
	if calls := ts.health.Calls(); len(calls) != 0 {
		t.Errorf("handler ran %d times for a client without a proof", len(calls))
	}
	waitForLog(t, ts.logs, reasonMalformedHello)
}

func TestSilentClient(t *testing.T) {
	checkGoroutineLeaks(t)
	tests := []struct {
		name string
		dial func(t testing.TB, addr string) net.Conn
	}{
		{name: "silent before TLS", dial: func(t testing.TB, addr string) net.Conn {
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			return conn
		}},
		{name: "silent after TLS", dial: func(t testing.TB, addr string) net.Conn { return rawTLSDial(t, addr) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, ServerConfig{BootstrapKey: newKey(t), HandshakeTimeout: 100 * time.Millisecond})
			conn := tc.dial(t, ts.addr)
			defer conn.Close()
			if err := conn.SetReadDeadline(time.Now().Add(testTimeout)); err != nil {
				t.Fatal(err)
			}
			_, err := conn.Read(make([]byte, 1))
			if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("read from a silent connection = %v, want the server to close it", err)
			}
			waitForLog(t, ts.logs, "handshake timed out")
		})
	}
}

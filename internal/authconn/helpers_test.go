package authconn

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"

	"github.com/fabricmesh/fabric/internal/grpctest"
)

// testTimeout bounds waits in tests so that a bug fails instead of hanging.
// It is not an assertion about speed.
const testTimeout = 20 * time.Second

// checkGoroutineLeaks fails t if, after every other cleanup has run, more
// goroutines are alive than when it was called. Call it first in a test.
func checkGoroutineLeaks(t testing.TB) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(testTimeout)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Errorf("goroutine leak: %d before, %d after:\n%s", before, runtime.NumGoroutine(), buf)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

func newKey(t testing.TB) []byte {
	t.Helper()
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	return key
}

func newSigningKey(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	_, privKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return privKey
}

func newCert(t testing.TB, commonName string) tls.Certificate {
	t.Helper()
	cert, err := NewSelfSignedCertificate(newSigningKey(t), commonName)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// lockedBuffer is a bytes.Buffer safe for concurrent use.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// recordingHealth is grpc's health service that records the AuthInfo of
// every Check call (nil when the connection had none).
type recordingHealth struct {
	*health.Server
	mu    sync.Mutex
	calls []*AuthInfo
}

func (h *recordingHealth) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	info, _ := FromContext(ctx)
	h.mu.Lock()
	h.calls = append(h.calls, info)
	h.mu.Unlock()
	return h.Server.Check(ctx, req)
}

func (h *recordingHealth) Calls() []*AuthInfo {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*AuthInfo(nil), h.calls...)
}

// testServer is a real gRPC server with authconn credentials on 127.0.0.1.
type testServer struct {
	addr   string
	cert   tls.Certificate
	health *recordingHealth
	logs   *lockedBuffer
	creds  *serverCredentials
}

// startServer serves the health service with cfg; a missing certificate
// and logger are filled in.
func startServer(t testing.TB, cfg ServerConfig) *testServer {
	t.Helper()
	ts := &testServer{health: &recordingHealth{Server: health.NewServer()}, logs: &lockedBuffer{}}
	if cfg.Certificate.Certificate == nil {
		cfg.Certificate = newCert(t, "server")
	}
	ts.cert = cfg.Certificate
	cfg.Logger = slog.New(slog.NewTextHandler(ts.logs, nil))
	creds, err := NewServerCredentials(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts.creds = creds.(*serverCredentials)
	srv := grpc.NewServer(grpc.Creds(creds))
	healthpb.RegisterHealthServer(srv, ts.health)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts.addr = lis.Addr().String()
	t.Cleanup(func() { t.Logf("server log:\n%s", ts.logs) }) // after the server stopped
	grpctest.Serve(t, srv, lis)
	return ts
}

// pin is the pin of the server's certificate.
func (ts *testServer) pin() []byte { return CertPin(ts.cert.Certificate[0]) }

// dial returns a health client for addr using authconn client credentials.
func dial(t testing.TB, addr string, cfg ClientConfig) healthpb.HealthClient {
	t.Helper()
	creds, err := NewClientCredentials(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return dialWith(t, addr, creds.DialOptions()...)
}

// dialWith returns a health client for addr with the given options.
func dialWith(t testing.TB, addr string, opts ...grpc.DialOption) healthpb.HealthClient {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return healthpb.NewHealthClient(cc)
}

// check makes one health Check call and returns its error and the
// AuthInfo the client saw.
func check(t testing.TB, client healthpb.HealthClient) (*AuthInfo, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	var p peer.Peer
	_, err := client.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&p))
	info, _ := p.AuthInfo.(*AuthInfo)
	return info, err
}

// waitForLog waits until logs has a line containing every one of parts. A
// server may log a rejection after the client has already seen it fail.
func waitForLog(t testing.TB, logs *lockedBuffer, parts ...string) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for {
		for _, line := range strings.Split(logs.String(), "\n") {
			if containsAll(line, parts) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Errorf("server log has no line with %q:\n%s", parts, logs)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func containsAll(s string, parts []string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}

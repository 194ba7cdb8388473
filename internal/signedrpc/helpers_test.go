package signedrpc

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"

	"github.com/fabricmesh/fabric/internal/grpctest"
	"github.com/fabricmesh/fabric/internal/httpsig"
	"github.com/fabricmesh/fabric/internal/leakcheck"
	"github.com/fabricmesh/fabric/internal/signedrpc/testdata/testpb"
	"github.com/fabricmesh/fabric/internal/testlog"
)

// TestMain fails the run if a test left a gRPC server, connection or stream
// goroutine running.
func TestMain(m *testing.M) {
	leakcheck.Main(m, 5*time.Second, "google.golang.org/grpc", "internal/signedrpc.")
}

// Key IDs of the tests: pastiche@h7 is whitelisted, steward@h1 is known
// but not whitelisted, nobody@h9 is unknown.
const (
	clientID   = "pastiche@h7"
	strangerID = "steward@h1"
	unknownID  = "nobody@h9"
)

func testKey(name string) ed25519.PrivateKey {
	seed := sha256.Sum256([]byte(name))
	return ed25519.NewKeyFromSeed(seed[:])
}

// fakeWhitelist is a hand-written Whitelist: known keys and the subset
// allowed to call the endpoint.
type fakeWhitelist struct {
	keys    map[string]ed25519.PublicKey
	allowed map[string]bool
}

var _ Whitelist = (*fakeWhitelist)(nil)

func newFakeWhitelist() *fakeWhitelist {
	return &fakeWhitelist{
		keys: map[string]ed25519.PublicKey{
			clientID:   testKey(clientID).Public().(ed25519.PublicKey),
			strangerID: testKey(strangerID).Public().(ed25519.PublicKey),
		},
		allowed: map[string]bool{clientID: true},
	}
}

func (w *fakeWhitelist) Lookup(keyID string) (ed25519.PublicKey, error) {
	pub, ok := w.keys[keyID]
	if !ok {
		return nil, httpsig.ErrUnknownKey
	}
	if !w.allowed[keyID] {
		return nil, httpsig.ErrNotWhitelisted
	}
	return pub, nil
}

// keySigner is a hand-written Signer holding private keys by key ID.
type keySigner map[string]ed25519.PrivateKey

var _ Signer = keySigner(nil)

func (s keySigner) Sign(_ context.Context, keyID string, data []byte) ([]byte, error) {
	key, ok := s[keyID]
	if !ok {
		return nil, fmt.Errorf("no key for %q", keyID)
	}
	return ed25519.Sign(key, data), nil
}

// signerFor signs as keyID with the key of keyName.
func signerFor(keyID, keyName string) keySigner {
	return keySigner{keyID: testKey(keyName)}
}

// echoServer implements the test service and records what its handlers
// were given.
type echoServer struct {
	testpb.UnimplementedEchoServer
	discard  bool // keep nothing (benchmarks)
	mu       sync.Mutex
	received [][]byte // chunk data handed to Upload and Chat
}

func (e *echoServer) Echo(ctx context.Context, req *testpb.EchoRequest) (*testpb.EchoReply, error) {
	caller, _ := Caller(ctx)
	return &testpb.EchoReply{Text: req.GetText(), Seq: req.GetSeq(), Caller: caller}, nil
}

func (e *echoServer) Upload(stream grpc.ClientStreamingServer[testpb.Chunk, testpb.UploadSummary]) error {
	caller, _ := Caller(stream.Context())
	sum := &testpb.UploadSummary{Caller: caller}
	for {
		c, err := stream.Recv()
		if err == io.EOF {
			return stream.SendAndClose(sum)
		}
		if err != nil {
			return err
		}
		sum.Chunks++
		if !e.discard {
			e.record(c.GetData())
			sum.Data = append(sum.Data, c.GetData()...)
		}
	}
}

func (e *echoServer) Chat(stream grpc.BidiStreamingServer[testpb.Chunk, testpb.Chunk]) error {
	for {
		c, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		e.record(c.GetData())
		if err := stream.Send(c); err != nil {
			return err
		}
	}
}

func (e *echoServer) record(b []byte) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.received = append(e.received, b)
}

func (e *echoServer) receivedData() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, b := range e.received {
		out = append(out, string(b))
	}
	return out
}

// startServer serves the echo service on loopback with cfg and returns the
// address and the service. cfg's Whitelist defaults to newFakeWhitelist,
// its Logger to t.Logf, its Host to the listener's address, and its Start
// to an hour ago (as if the server had been up for a while; the restart
// tests leave it zero).
func startServer(tb testing.TB, cfg ServerConfig) (string, *echoServer) {
	tb.Helper()
	return startServerOn(tb, listen(tb, "127.0.0.1:0"), cfg)
}

func startServerOn(tb testing.TB, lis net.Listener, cfg ServerConfig) (string, *echoServer) {
	tb.Helper()
	if cfg.Start.IsZero() {
		cfg.Start = time.Now().Add(-time.Hour)
	}
	svc := &echoServer{}
	srv := grpc.NewServer(ServerOptions(serverConfig(tb, lis, cfg))...)
	testpb.RegisterEchoServer(srv, svc)
	grpctest.Serve(tb, srv, lis)
	return lis.Addr().String(), svc
}

// serverConfig fills in cfg's Whitelist, Logger and Host (lis's address)
// when they are not set.
func serverConfig(tb testing.TB, lis net.Listener, cfg ServerConfig) ServerConfig {
	if cfg.Whitelist == nil {
		cfg.Whitelist = newFakeWhitelist()
	}
	if cfg.Logger == nil {
		cfg.Logger = testlog.New(tb)
	}
	if cfg.Host == "" {
		cfg.Host = lis.Addr().String()
	}
	return cfg
}

// listen listens on addr until the test ends.
func listen(tb testing.TB, addr string) net.Listener {
	tb.Helper()
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		tb.Fatalf("listening: %v", err)
	}
	tb.Cleanup(func() { _ = lis.Close() })
	return lis
}

// serve runs srv on a loopback listener until the test ends.
func serve(tb testing.TB, srv *grpc.Server) string {
	tb.Helper()
	lis := listen(tb, "127.0.0.1:0")
	grpctest.Serve(tb, srv, lis)
	return lis.Addr().String()
}

// dial connects to addr with opts, closed when the test ends.
func dial(tb testing.TB, addr string, opts ...grpc.DialOption) *grpc.ClientConn {
	tb.Helper()
	opts = append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)
	cc, err := grpc.NewClient(addr, opts...)
	if err != nil {
		tb.Fatalf("dialing %s: %v", addr, err)
	}
	tb.Cleanup(func() { _ = cc.Close() })
	return cc
}

// signedClient is an echo client signing as keyID with the key of keyName.
func signedClient(tb testing.TB, addr, keyID, keyName string, extra ...grpc.DialOption) testpb.EchoClient {
	tb.Helper()
	opts := append(DialOptions(keyID, signerFor(keyID, keyName)), extra...)
	return testpb.NewEchoClient(dial(tb, addr, opts...))
}

func testContext(tb testing.TB) context.Context {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	tb.Cleanup(cancel)
	return ctx
}

// rawMsg is a message as bytes on the wire.
type rawMsg struct{ b []byte }

// rawCodec sends and receives rawMsg bytes as they are.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.(*rawMsg).b)}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	v.(*rawMsg).b = data.Materialize()
	return nil
}

// rawClient calls addr with raw bytes and hand-made metadata.
func rawClient(tb testing.TB, addr string) *grpc.ClientConn {
	return dial(tb, addr, grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{})))
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func nowFunc() func() time.Time { return time.Now }

// clientAs returns a maker of echo clients signing as keyID with the key
// of keyName.
func clientAs(keyID, keyName string) func(testing.TB, string) testpb.EchoClient {
	return func(tb testing.TB, addr string) testpb.EchoClient { return signedClient(tb, addr, keyID, keyName) }
}

// unsigned makes an echo client that does not sign.
func unsigned(tb testing.TB, addr string) testpb.EchoClient {
	return testpb.NewEchoClient(dial(tb, addr))
}

package bench

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/fabricmesh/fabric/internal/httpsig"
	"github.com/fabricmesh/fabric/internal/signedrpc"
)

// benchKeyID is the key ID the signed client signs as.
const benchKeyID = "bench@loopback"

// parallelCallers is the number of goroutines calling at once in the
// throughput measurements (sharing one connection, as the clients of a
// service do): 8 per CPU, as internal/signedrpc's parallel benchmarks.
var parallelCallers = 8 * runtime.GOMAXPROCS(0)

// signedFigures are the results of one signed/unsigned comparison.
type signedFigures struct {
	unsignedUS, signedUS         float64 // µs per sequential call
	unsignedPerSec, signedPerSec float64 // calls/s with parallelCallers
}

// signed measures plain and signed unary calls on loopback (b.runs times,
// each measurement lasting d) and raw ed25519.
func (b *bench) signed(ctx context.Context, d time.Duration) {
	var runs []signedFigures
	for i := range b.runs {
		f, err := signedRun(ctx, d)
		if err != nil {
			b.fail(fmt.Sprintf("signed run %d", i+1), err)
			return
		}
		runs = append(runs, f)
	}
	pick := func(get func(signedFigures) float64) []float64 {
		var vs []float64
		for _, f := range runs {
			vs = append(vs, get(f))
		}
		return vs
	}
	unsignedUS := pick(func(f signedFigures) float64 { return f.unsignedUS })
	signedUS := pick(func(f signedFigures) float64 { return f.signedUS })
	unsignedPS := pick(func(f signedFigures) float64 { return f.unsignedPerSec })
	signedPS := pick(func(f signedFigures) float64 { return f.signedPerSec })
	b.record("unsigned_unary_us", "µs/call (sequential, loopback gRPC)", unsignedUS)
	b.record("signed_unary_us", "µs/call (sequential, signed + verified)", signedUS)
	b.ratio("signed_unary_ratio", median(signedUS), median(unsignedUS), "signed/unsigned latency")
	b.record("unsigned_parallel_calls_per_s", fmt.Sprintf("calls/s (%d callers)", parallelCallers), unsignedPS)
	b.record("signed_parallel_calls_per_s", fmt.Sprintf("calls/s (%d callers)", parallelCallers), signedPS)
	b.ratio("signed_parallel_ratio", median(signedPS), median(unsignedPS), "signed/unsigned throughput")
	sign, verify := ed25519Times(d)
	b.record("ed25519_sign_us", "µs/signature", []float64{sign})
	b.record("ed25519_verify_us", "µs/verification", []float64{verify})
}

// signedRun starts a plain and a signed health server on loopback and
// measures calls to each.
func signedRun(ctx context.Context, d time.Duration) (signedFigures, error) {
	var f signedFigures
	key := benchKey()
	plain, err := startEcho(func(string) []grpc.ServerOption { return nil })
	if err != nil {
		return f, err
	}
	defer plain.close()
	signed, err := startEcho(func(addr string) []grpc.ServerOption {
		return signedrpc.ServerOptions(signedrpc.ServerConfig{
			Host:      addr,
			Whitelist: oneKey{id: benchKeyID, pub: key.Public().(ed25519.PublicKey)},
			// As large as any run, so that it never evicts.
			Replay: httpsig.NewReplayCache(1 << 23),
		})
	})
	if err != nil {
		return f, err
	}
	defer signed.close()
	if err := checkRefusesUnsigned(ctx, signed.addr); err != nil {
		return f, err
	}
	plainConn, err := dial(plain.addr)
	if err != nil {
		return f, err
	}
	defer plainConn.Close()
	signedConn, err := dial(signed.addr, signedrpc.DialOptions(benchKeyID, signedrpc.KeySigner{KeyID: benchKeyID, PrivKey: key})...)
	if err != nil {
		return f, err
	}
	defer signedConn.Close()
	pc, sc := healthpb.NewHealthClient(plainConn), healthpb.NewHealthClient(signedConn)
	if f.unsignedUS, err = sequential(ctx, pc, d); err != nil {
		return f, fmt.Errorf("unsigned calls: %w", err)
	}
	if f.signedUS, err = sequential(ctx, sc, d); err != nil {
		return f, fmt.Errorf("signed calls: %w", err)
	}
	if f.unsignedPerSec, err = parallel(ctx, pc, d); err != nil {
		return f, fmt.Errorf("unsigned parallel calls: %w", err)
	}
	if f.signedPerSec, err = parallel(ctx, sc, d); err != nil {
		return f, fmt.Errorf("signed parallel calls: %w", err)
	}
	return f, nil
}

// checkRefusesUnsigned proves the signed server verifies: an unsigned call
// must be refused, or the benchmark would compare plain with plain.
func checkRefusesUnsigned(ctx context.Context, addr string) error {
	cc, err := dial(addr)
	if err != nil {
		return err
	}
	defer cc.Close()
	_, err = healthpb.NewHealthClient(cc).Check(ctx, nextRequest())
	if status.Code(err) != codes.Unauthenticated {
		return fmt.Errorf("an unsigned call to the signed server returned %v, want Unauthenticated", err)
	}
	return nil
}

// callSeq makes every request distinct, as real calls are: identical
// requests from one key get dates a second apart (httpsig.DateSource).
var callSeq atomic.Int64

func nextRequest() *healthpb.HealthCheckRequest {
	return &healthpb.HealthCheckRequest{Service: "bench-" + strconv.FormatInt(callSeq.Add(1), 10)}
}

// sequential calls c one call after the other for about d (after a short
// warm-up) and returns the mean latency in µs.
func sequential(ctx context.Context, c healthpb.HealthClient, d time.Duration) (float64, error) {
	if _, err := callFor(ctx, c, d/10); err != nil {
		return 0, err
	}
	start := time.Now()
	n, err := callFor(ctx, c, d)
	if err != nil {
		return 0, err
	}
	return float64(time.Since(start).Microseconds()) / float64(n), nil
}

// parallel calls c from parallelCallers goroutines for about d and returns
// the calls per second.
func parallel(ctx context.Context, c healthpb.HealthClient, d time.Duration) (float64, error) {
	var total atomic.Int64
	errs := make([]error, parallelCallers)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range parallelCallers {
		wg.Go(func() {
			n, err := callFor(ctx, c, d)
			total.Add(int64(n))
			errs[i] = err
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := errors.Join(errs...); err != nil {
		return 0, err
	}
	return float64(total.Load()) / elapsed.Seconds(), nil
}

// callFor calls c until d has passed and returns the number of calls.
func callFor(ctx context.Context, c healthpb.HealthClient, d time.Duration) (int, error) {
	n := 0
	for end := time.Now().Add(d); n == 0 || time.Now().Before(end); n++ {
		resp, err := c.Check(ctx, nextRequest())
		if err != nil {
			return n, err
		}
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			return n, fmt.Errorf("health check answered %v", resp.GetStatus())
		}
	}
	return n, nil
}

// ed25519Times returns the mean µs of one ed25519 signature and one
// verification of a message the size of a signed call's signing string,
// each measured for about d/2.
func ed25519Times(d time.Duration) (signUS, verifyUS float64) {
	key := benchKey()
	pub := key.Public().(ed25519.PublicKey)
	msg := []byte("(request-target): post /grpc.health.v1.Health/Check\n" +
		"date: Mon, 04 May 2026 12:00:00 GMT\ndigest: SHA-256=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=")
	var sig []byte
	signUS = timePerOp(d/2, func() { sig = ed25519.Sign(key, msg) })
	ok := true
	verifyUS = timePerOp(d/2, func() { ok = ok && ed25519.Verify(pub, msg, sig) })
	if !ok {
		panic("ed25519: own signature does not verify")
	}
	return signUS, verifyUS
}

// timePerOp runs op for about d and returns its mean µs.
func timePerOp(d time.Duration, op func()) float64 {
	n := 0
	start := time.Now()
	for end := start.Add(d); n == 0 || time.Now().Before(end); n++ {
		op()
	}
	return float64(time.Since(start).Nanoseconds()) / 1e3 / float64(n)
}

func benchKey() ed25519.PrivateKey {
	seed := sha256.Sum256([]byte("fabric-bench signing key"))
	return ed25519.NewKeyFromSeed(seed[:])
}

// oneKey is a whitelist of one client.
type oneKey struct {
	id  string
	pub ed25519.PublicKey
}

var _ signedrpc.Whitelist = oneKey{}

func (w oneKey) Lookup(keyID string) (ed25519.PublicKey, error) {
	if keyID != w.id {
		return nil, httpsig.ErrUnknownKey
	}
	return w.pub, nil
}

// healthEcho answers every health check with SERVING.
type healthEcho struct {
	healthpb.UnimplementedHealthServer
}

func (healthEcho) Check(context.Context, *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

// echoServer is a health server on a loopback TCP port.
type echoServer struct {
	addr string
	srv  *grpc.Server
	done chan struct{}
}

func startEcho(opts func(addr string) []grpc.ServerOption) (*echoServer, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listening on loopback: %w", err)
	}
	addr := lis.Addr().String()
	s := &echoServer{addr: addr, srv: grpc.NewServer(opts(addr)...), done: make(chan struct{})}
	healthpb.RegisterHealthServer(s.srv, healthEcho{})
	go func() {
		defer close(s.done)
		_ = s.srv.Serve(lis)
	}()
	return s, nil
}

func (s *echoServer) close() {
	s.srv.Stop()
	<-s.done
}

func dial(addr string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	opts = append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)
	cc, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("dialing %s: %w", addr, err)
	}
	return cc, nil
}

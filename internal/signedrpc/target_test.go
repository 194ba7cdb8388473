package signedrpc

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/google/go-cmp/cmp"

	"github.com/fabricmesh/fabric/internal/httpsig"
	"github.com/fabricmesh/fabric/internal/signedrpc/testdata/testpb"
)

// recordedCall is a signed call as it left the client: its metadata, the
// host it was signed for and, for a unary call, its request bytes.
type recordedCall struct {
	md   metadata.MD
	host string
	body []byte
}

// callRecorder keeps every signed call a client sends, refused or not.
// Placed after DialOptions, it sees what the signing interceptors hand to
// gRPC.
type callRecorder struct {
	calls chan recordedCall
}

func newCallRecorder() *callRecorder { return &callRecorder{calls: make(chan recordedCall, 100)} }

func (r *callRecorder) options() []grpc.DialOption {
	record := func(ctx context.Context, cc *grpc.ClientConn, body []byte) {
		md, _ := metadata.FromOutgoingContext(ctx)
		host, _ := targetHost(cc.Target())
		r.calls <- recordedCall{md: md.Copy(), host: host, body: body}
	}
	return []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			record(ctx, cc, req.(*preEncoded).b)
			return invoker(ctx, method, req, reply, cc, opts...)
		}),
		grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			record(ctx, cc, nil)
			return streamer(ctx, desc, cc, method, opts...)
		}),
	}
}

// taken returns the calls recorded since the last time.
func (r *callRecorder) taken() []recordedCall {
	var out []recordedCall
	for {
		select {
		case c := <-r.calls:
			out = append(out, c)
		default:
			return out
		}
	}
}

// replay sends a recorded unary call to addr, unchanged: same metadata,
// same bytes, and the :authority it was signed for.
func replay(tb testing.TB, addr string, call recordedCall) error {
	tb.Helper()
	cc := dial(tb, addr, grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{})), grpc.WithAuthority(call.host))
	return send(tb, cc, call.md, call.body)
}

// replayStream opens a recorded stream at addr, unchanged, and returns the
// status the endpoint ends it with.
func replayStream(tb testing.TB, addr, method string, call recordedCall) error {
	tb.Helper()
	cc := dial(tb, addr, grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{})), grpc.WithAuthority(call.host))
	ctx := metadata.NewOutgoingContext(testContext(tb), call.md)
	s, err := cc.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, method)
	if err != nil {
		return err
	}
	if err := s.CloseSend(); err != nil {
		return err
	}
	for {
		if err := s.RecvMsg(&rawMsg{}); err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
	}
}

// TestCallBoundToItsEndpoint: a call signed for one endpoint is refused by
// another that whitelists the same client, unchanged or re-addressed.
func TestCallBoundToItsEndpoint(t *testing.T) {
	addrA, _ := startServer(t, ServerConfig{})
	addrB, svcB := startServer(t, ServerConfig{})
	rec := newCallRecorder()
	c := signedClient(t, addrA, clientID, clientID, rec.options()...)
	if _, err := c.Echo(testContext(t), &testpb.EchoRequest{Text: "pay 10"}); err != nil {
		t.Fatalf("Echo to A: %v", err)
	}
	if _, err := upload(t, c, chunks("a")); err != nil {
		t.Fatalf("Upload to A: %v", err)
	}
	calls := rec.taken()
	if len(calls) != 2 || calls[0].host != addrA {
		t.Fatalf("recorded %d calls (%+v), want 2 signed for %s", len(calls), calls, addrA)
	}
	unary, stream := calls[0], calls[1]
	wrongHost := "signature rejected: signed for another endpoint: it is addressed to " + addrA + ", this endpoint is " + addrB

	t.Run("unary replayed to another endpoint", func(t *testing.T) {
		checkStatus(t, replay(t, addrB, unary), codes.Unauthenticated, wrongHost)
	})
	t.Run("unary re-addressed to another endpoint", func(t *testing.T) {
		readdressed := unary
		readdressed.host = addrB
		checkStatus(t, replay(t, addrB, readdressed), codes.Unauthenticated, "signature rejected: bad signature")
	})
	t.Run("stream replayed to another endpoint", func(t *testing.T) {
		checkStatus(t, replayStream(t, addrB, testpb.Echo_Upload_FullMethodName, stream), codes.Unauthenticated, wrongHost)
	})
	t.Run("stream re-addressed to another endpoint", func(t *testing.T) {
		readdressed := stream
		readdressed.host = addrB
		checkStatus(t, replayStream(t, addrB, testpb.Echo_Upload_FullMethodName, readdressed), codes.Unauthenticated, "signature rejected: bad signature")
	})
	if got := svcB.receivedData(); len(got) != 0 {
		t.Errorf("B's handler received %q", got)
	}
	t.Run("endpoint configured with another host", func(t *testing.T) {
		// The client dials 127.0.0.1:port; the endpoint believes it is
		// reached at its VPN address.
		addr, _ := startServer(t, ServerConfig{Host: "203.0.113.9:7450"})
		_, err := signedClient(t, addr, clientID, clientID).Echo(testContext(t), &testpb.EchoRequest{})
		checkStatus(t, err, codes.Unauthenticated, "signed for another endpoint: it is addressed to "+addr+", this endpoint is 203.0.113.9:7450")
	})
}

// restartable is an echo server that can be stopped and started again at
// the same address, as a restarted process would be.
type restartable struct {
	tb   testing.TB
	addr string
	stop func()
}

func startRestartable(tb testing.TB) *restartable {
	s := &restartable{tb: tb, addr: "127.0.0.1:0"}
	s.start()
	return s
}

// start serves a fresh server (new replay cache, started now).
func (s *restartable) start() {
	s.tb.Helper()
	lis := listen(s.tb, s.addr)
	s.addr = lis.Addr().String()
	srv := grpc.NewServer(ServerOptions(serverConfig(s.tb, lis, ServerConfig{}))...)
	testpb.RegisterEchoServer(srv, &echoServer{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	s.stop = func() { srv.Stop(); <-done }
	s.tb.Cleanup(s.stop)
}

func (s *restartable) restart() {
	s.stop()
	s.start()
}

// TestRestart: an endpoint refuses, after a restart, every signature it
// could have accepted before; clients are refused once per endpoint, learn
// the dates it accepts, and sign again, unary calls and streams alike.
func TestRestart(t *testing.T) {
	srv := startRestartable(t)
	rec := newCallRecorder()
	c := signedClient(t, srv.addr, clientID, clientID, rec.options()...)
	ctx := testContext(t)
	// callOnce makes one unary call and one stream and checks how many
	// signed attempts each took.
	callOnce := func(t *testing.T, what string, wantUnary, wantStream int) (unary, stream recordedCall) {
		t.Helper()
		if _, err := c.Echo(ctx, &testpb.EchoRequest{Text: what}); err != nil {
			t.Fatalf("%s: Echo: %v", what, err)
		}
		u := rec.taken()
		if _, err := upload(t, c, chunks(what)); err != nil {
			t.Fatalf("%s: Upload: %v", what, err)
		}
		s := rec.taken()
		if len(u) != wantUnary || len(s) != wantStream {
			t.Errorf("%s: %d unary and %d stream attempts, want %d and %d", what, len(u), len(s), wantUnary, wantStream)
		}
		return u[len(u)-1], s[len(s)-1]
	}
	// A fresh endpoint: the first unary call is refused for its date (the
	// endpoint cannot know what a previous process accepted) and signed
	// again; the stream that follows is dated after the floor at once.
	unary, stream := callOnce(t, "first", 2, 1)
	date, err := httpsig.ParseDate(unary.md.Get(mdDate)[0])
	if err != nil || !date.After(time.Now().Add(httpsig.DefaultSkew-time.Minute)) {
		t.Errorf("accepted call dated %v (%v), want after the endpoint's start plus the skew", date, err)
	}
	callOnce(t, "again", 1, 1)
	// Identical calls get later and later dates (the DateSource), but the
	// endpoint accepts none beyond its skew: dated at its floor, they wait
	// for it rather than run ahead.
	for i := range 3 {
		if _, err := c.Echo(ctx, &testpb.EchoRequest{Text: "same"}); err != nil {
			t.Fatalf("identical call %d: %v", i, err)
		}
	}
	if got := len(rec.taken()); got != 3 {
		t.Errorf("%d attempts for 3 identical calls, want 3", got)
	}

	srv.restart()
	t.Run("nothing accepted before the restart is accepted after", func(t *testing.T) {
		checkStatus(t, replay(t, srv.addr, unary), codes.Unauthenticated,
			"signature rejected: signature dated before this endpoint's start: dated ")
		checkStatus(t, replayStream(t, srv.addr, testpb.Echo_Upload_FullMethodName, stream), codes.Unauthenticated,
			"signature rejected: signature dated before this endpoint's start")
	})
	t.Run("the client copes", func(t *testing.T) {
		// Its stream is the first call after the restart this time.
		if _, err := upload(t, c, chunks("stream first")); err != nil {
			t.Fatalf("Upload after the restart: %v", err)
		}
		if got := len(rec.taken()); got != 2 {
			t.Errorf("%d stream attempts, want 2 (refused for its date, then accepted)", got)
		}
		callOnce(t, "after the restart", 1, 1)
	})
}

// TestSameCallFromTwoProcesses: two processes of one client (a client
// and its restarted self) sign the same call with the same key in the same
// second, so with the same signature; the endpoint refuses the second as a
// replay, and its client signs again a second later.
func TestSameCallFromTwoProcesses(t *testing.T) {
	addr, _ := startServer(t, ServerConfig{})
	clock := time.Now().Truncate(time.Second)
	rec := newCallRecorder()
	for i := range 2 {
		cl := &client{keyID: clientID, signer: signerFor(clientID, clientID), dates: httpsig.NewDateSource(httpsig.DateSourceConfig{}),
			floors: newFloors(), now: func() time.Time { return clock }}
		c := testpb.NewEchoClient(dial(t, addr, append(cl.dialOptions(), rec.options()...)...))
		if _, err := c.Echo(testContext(t), &testpb.EchoRequest{Text: "same"}); err != nil {
			t.Fatalf("process %d: Echo: %v", i, err)
		}
	}
	var dates []string
	for _, call := range rec.taken() {
		dates = append(dates, call.md.Get(mdDate)[0])
	}
	first, second := httpsig.FormatDate(clock), httpsig.FormatDate(clock.Add(time.Second))
	if diff := cmp.Diff([]string{first, first, second}, dates); diff != "" {
		t.Errorf("dates of the attempts (-want +got):\n%s", diff)
	}
}

func TestLearnFloor(t *testing.T) {
	now := time.Date(2026, 5, 4, 12, 0, 0, 0, time.UTC)
	trailer := func(earliest, latest time.Time) metadata.MD {
		return metadata.Pairs(mdEarliestDate, httpsig.FormatDate(earliest), mdLatestDate, httpsig.FormatDate(latest))
	}
	refused := status.Error(codes.Unauthenticated, "signature rejected")
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name      string
		ctx       context.Context
		err       error
		trailer   metadata.MD
		want      bool
		wantClock time.Time // the date of the next call to the host
	}{
		{"dates accepted", context.Background(), refused, trailer(now.Add(time.Minute), now.Add(5*time.Minute)), true, now.Add(time.Minute)},
		{"a moment to wait, canceled", canceled, refused, trailer(now.Add(time.Minute), now.Add(time.Minute-time.Second)), false, now.Add(time.Minute)},
		{"too long to wait", context.Background(), refused, trailer(now.Add(time.Minute), now), false, now},
		{"no trailer", context.Background(), refused, nil, false, now},
		{"malformed trailer", context.Background(), refused, metadata.Pairs(mdEarliestDate, "soon", mdLatestDate, "later"), false, now},
		{"another refusal", context.Background(), status.Error(codes.PermissionDenied, "signature rejected"), trailer(now.Add(time.Minute), now.Add(5*time.Minute)), false, now},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &client{floors: newFloors(), now: func() time.Time { return now }}
			got, err := c.learnFloor(tt.ctx, "203.0.113.3:7450", tt.err, tt.trailer)
			if got != tt.want {
				t.Errorf("learnFloor = %v, want %v", got, tt.want)
			}
			switch {
			case got && err != nil:
				t.Errorf("learnFloor = true, %v; want no error", err)
			case !got && tt.ctx.Err() != nil && status.Code(err) != codes.Canceled:
				t.Errorf("learnFloor canceled while waiting = %v, want Canceled", err)
			case !got && tt.ctx.Err() == nil && err != tt.err:
				t.Errorf("learnFloor = %v, want the refusal %v", err, tt.err)
			}
			if got := c.floors.get("203.0.113.3:7450", now).clock(now); !got.Equal(tt.wantClock) {
				t.Errorf("next date %v, want %v", got, tt.wantClock)
			}
			if got := c.floors.get("203.0.113.4:7450", now).clock(now); !got.Equal(now) {
				t.Errorf("next date to another host %v, want the clock", got)
			}
			// Once the clock passes the floor, the floor is forgotten.
			later := now.Add(time.Hour)
			if got := c.floors.get("203.0.113.3:7450", later).clock(later); !got.Equal(later) {
				t.Errorf("next date an hour later %v, want the clock", got)
			}
		})
	}
}

func TestTargetHost(t *testing.T) {
	for _, tt := range []struct{ target, want string }{
		{"passthrough:///203.0.113.3:7450", "203.0.113.3:7450"},
		{"dns:///node2.example:7450", "node2.example:7450"},
		{"127.0.0.1:7450", "127.0.0.1:7450"},
		{"[2001:db8::1]:7450", "[2001:db8::1]:7450"},
		{"passthrough:///[2001:db8::1]:7450", "[2001:db8::1]:7450"},
		{"unix:///run/reeve.sock", ""},
		{"passthrough:///no-port", ""},
	} {
		got, err := targetHost(tt.target)
		if got != tt.want || (err != nil) != (tt.want == "") {
			t.Errorf("targetHost(%q) = %q, %v; want %q", tt.target, got, err, tt.want)
		}
		if err != nil && !strings.Contains(err.Error(), "names no host:port to sign") {
			t.Errorf("targetHost(%q) error %q", tt.target, err)
		}
	}
}

// TestFloorsFull: with as many floors remembered as fit, none expired (a
// mass join: every joining node's endpoint started a moment ago), a new
// endpoint's floor is still remembered, so its call is signed with a date
// it accepts; another is forgotten instead.
func TestFloorsFull(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	f := newFloors()
	fl := floor{earliest: now.Add(5 * time.Minute), ahead: 5 * time.Minute}
	for i := range maxFloors + 1 {
		f.raise(fmt.Sprintf("host%d", i), fl, now)
	}
	if got := f.get(fmt.Sprintf("host%d", maxFloors), now); !got.earliest.Equal(fl.earliest) {
		t.Errorf("floor of the endpoint that came last: %v, want %v", got.earliest, fl.earliest)
	}
	if n := len(f.m); n > maxFloors {
		t.Errorf("%d floors remembered, over %d", n, maxFloors)
	}
}

package signedrpc

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/fabricmesh/fabric/internal/grpctest"
	"github.com/fabricmesh/fabric/internal/httpsig"
	"github.com/fabricmesh/fabric/internal/signedrpc/testdata/testpb"
)

// checkStatus checks that err is a status with code and a message
// containing text.
func checkStatus(tb testing.TB, err error, code codes.Code, text string) {
	tb.Helper()
	st, _ := status.FromError(err)
	if st.Code() != code || !strings.Contains(st.Message(), text) {
		tb.Errorf("status = %v %q, want %v containing %q", st.Code(), st.Message(), code, text)
	}
}

func TestUnarySigned(t *testing.T) {
	addr, _ := startServer(t, ServerConfig{})
	c := signedClient(t, addr, clientID, clientID)
	ctx := testContext(t)
	req := &testpb.EchoRequest{Text: "hi", Seq: 7, Labels: map[string]string{"b": "2", "a": "1", "c": "3"}}
	// The same request twice in a row, and on a second connection with the
	// same key: the date source keeps every signature distinct.
	c2 := signedClient(t, addr, clientID, clientID)
	for i, client := range []testpb.EchoClient{c, c, c2, c2} {
		got, err := client.Echo(ctx, req)
		if err != nil {
			t.Fatalf("call %d: Echo: %v", i, err)
		}
		want := &testpb.EchoReply{Text: "hi", Seq: 7, Caller: clientID}
		if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
			t.Errorf("call %d: Echo (-want +got):\n%s", i, diff)
		}
	}
}

func TestUnaryKeepsCallerMetadata(t *testing.T) {
	var got metadata.MD
	lis := listen(t, "127.0.0.1:0")
	srv := grpc.NewServer(append(ServerOptions(serverConfig(t, lis, ServerConfig{})),
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			got, _ = metadata.FromIncomingContext(ctx)
			return h(ctx, req)
		}))...)
	testpb.RegisterEchoServer(srv, &echoServer{})
	grpctest.Serve(t, srv, lis)
	c := signedClient(t, lis.Addr().String(), clientID, clientID)
	ctx := metadata.AppendToOutgoingContext(testContext(t), "x-trace", "abc", "signature", "forged")
	if _, err := c.Echo(ctx, &testpb.EchoRequest{}); err != nil {
		t.Fatalf("Echo: %v", err)
	}
	if v := got.Get("x-trace"); len(v) != 1 || v[0] != "abc" {
		t.Errorf("x-trace = %q, want [abc]", v)
	}
	if v := got.Get("signature"); len(v) != 1 || !strings.HasPrefix(v[0], `keyId="pastiche@h7"`) {
		t.Errorf("signature = %q, want the client's own, once", v)
	}
}

func TestUnaryRefused(t *testing.T) {
	tests := []struct {
		name   string
		cfg    ServerConfig
		client func(tb testing.TB, addr string) testpb.EchoClient
		code   codes.Code
		text   string
	}{
		{
			name:   "unsigned",
			client: unsigned,
			code:   codes.Unauthenticated, text: "signature rejected: missing signature",
		},
		{
			name:   "unknown key",
			client: clientAs(unknownID, unknownID),
			code:   codes.Unauthenticated, text: `signature rejected: keyId "nobody@h9" is unknown`,
		},
		{
			name:   "not whitelisted",
			client: clientAs(strangerID, strangerID),
			code:   codes.PermissionDenied, text: `signature rejected: keyId "steward@h1" is not on the whitelist of this endpoint`,
		},
		{
			name:   "wrong key",
			client: clientAs(clientID, strangerID),
			code:   codes.Unauthenticated, text: `signature rejected: bad signature: signature of keyId "pastiche@h7" does not verify`,
		},
		{
			name:   "client clock behind",
			cfg:    ServerConfig{Now: func() time.Time { return time.Now().Add(10 * time.Minute) }},
			client: clientAs(clientID, clientID),
			code:   codes.Unauthenticated, text: "behind this endpoint's clock",
		},
		{
			name:   "client clock ahead of a tight window",
			cfg:    ServerConfig{Skew: 30 * time.Second, Now: func() time.Time { return time.Now().Add(-time.Minute) }},
			client: clientAs(clientID, clientID),
			code:   codes.Unauthenticated, text: "ahead of this endpoint's clock",
		},
		{
			name:   "no whitelist",
			cfg:    ServerConfig{Whitelist: emptyWhitelist{}},
			client: clientAs(clientID, clientID),
			code:   codes.Unauthenticated, text: "is unknown",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, _ := startServer(t, tt.cfg)
			_, err := tt.client(t, addr).Echo(testContext(t), &testpb.EchoRequest{Text: "hi"})
			checkStatus(t, err, tt.code, tt.text)
		})
	}
}

type emptyWhitelist struct{}

func (emptyWhitelist) Lookup(string) (ed25519.PublicKey, error) { return nil, httpsig.ErrUnknownKey }

// wiretap records the metadata and the bytes of the calls it sees. Placed
// after DialOptions, it sees what the signing interceptor hands to gRPC.
type wiretap struct {
	mu    sync.Mutex
	calls []tappedCall
}

type tappedCall struct {
	md   metadata.MD
	body []byte
}

func (w *wiretap) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	md, _ := metadata.FromOutgoingContext(ctx)
	w.mu.Lock()
	w.calls = append(w.calls, tappedCall{md: md.Copy(), body: req.(*preEncoded).b})
	w.mu.Unlock()
	return invoker(ctx, method, req, reply, cc, opts...)
}

func (w *wiretap) last() tappedCall {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.calls[len(w.calls)-1]
}

// send sends body with md, as a raw client.
func send(tb testing.TB, cc *grpc.ClientConn, md metadata.MD, body []byte) error {
	tb.Helper()
	ctx := metadata.NewOutgoingContext(testContext(tb), md)
	return cc.Invoke(ctx, testpb.Echo_Echo_FullMethodName, &rawMsg{body}, &rawMsg{})
}

func TestUnaryReplay(t *testing.T) {
	addr, _ := startServer(t, ServerConfig{})
	tap := &wiretap{}
	c := signedClient(t, addr, clientID, clientID, grpc.WithChainUnaryInterceptor(tap.unary))
	if _, err := c.Echo(testContext(t), &testpb.EchoRequest{Text: "pay 10"}); err != nil {
		t.Fatalf("Echo: %v", err)
	}
	call := tap.last()
	raw := rawClient(t, addr)
	err := send(t, raw, call.md, call.body)
	checkStatus(t, err, codes.Unauthenticated, "signature rejected: replayed signature: this signature, dated ")
}

func TestUnaryTampered(t *testing.T) {
	addr, _ := startServer(t, ServerConfig{})
	tap := &wiretap{}
	c := signedClient(t, addr, clientID, clientID, grpc.WithChainUnaryInterceptor(tap.unary))
	sent := func(seq int64) tappedCall {
		// A call the tap records and the server never receives.
		ctx, cancel := context.WithCancel(testContext(t))
		cancel()
		_, _ = c.Echo(ctx, &testpb.EchoRequest{Text: "pay 10", Seq: seq})
		return tap.last()
	}
	other, _ := proto.Marshal(&testpb.EchoRequest{Text: "pay 1000"})
	tests := []struct {
		name   string
		tamper func(tappedCall) (metadata.MD, []byte)
		text   string
	}{
		{"original", func(c tappedCall) (metadata.MD, []byte) { return c.md, c.body }, ""},
		{"body replaced", func(c tappedCall) (metadata.MD, []byte) { return c.md, other }, "signature rejected: digest does not match the body: header says SHA-256="},
		{"body and digest replaced", func(c tappedCall) (metadata.MD, []byte) {
			md := c.md.Copy()
			md.Set("digest", httpsig.Digest(other))
			return md, other
		}, "signature rejected: bad signature"},
		{"date replaced", func(c tappedCall) (metadata.MD, []byte) {
			md := c.md.Copy()
			md.Set("date", httpsig.FormatDate(time.Now().Add(time.Minute)))
			return md, c.body
		}, "signature rejected: bad signature"},
		{"digest missing", func(c tappedCall) (metadata.MD, []byte) {
			md := c.md.Copy()
			delete(md, "digest")
			return md, c.body
		}, "signature rejected: missing digest"},
		{"date missing", func(c tappedCall) (metadata.MD, []byte) {
			md := c.md.Copy()
			delete(md, "date")
			return md, c.body
		}, "signature rejected: missing date"},
		{"two signatures", func(c tappedCall) (metadata.MD, []byte) {
			md := c.md.Copy()
			md.Append("signature", md.Get("signature")[0])
			return md, c.body
		}, "signature rejected: malformed signature: 2 signature values"},
		{"malformed signature", func(c tappedCall) (metadata.MD, []byte) {
			md := c.md.Copy()
			md.Set("signature", strings.Replace(md.Get("signature")[0], ",", ", ", 1))
			return md, c.body
		}, "signature rejected: malformed signature: invalid parameter name"},
	}
	raw := rawClient(t, addr)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			md, body := tt.tamper(sent(int64(i)))
			err := send(t, raw, md, body)
			if tt.text == "" {
				if err != nil {
					t.Fatalf("untampered call: %v", err)
				}
				return
			}
			checkStatus(t, err, codes.Unauthenticated, tt.text)
		})
	}
}

func TestUnaryDigestOfRawBytes(t *testing.T) {
	// The digest is checked against the bytes received, not a re-marshal:
	// a body with its fields in a non-canonical order (same message,
	// different bytes) must be accepted when signed as such.
	addr, _ := startServer(t, ServerConfig{})
	// seq=0 (a default value, which a marshaller leaves out), then text="hi".
	body := append(protowireString(2<<3, nil), protowireString(1<<3|2, []byte("hi"))...)
	sum := sha256.Sum256(body)
	h, err := httpsig.Sign(clientID, "POST", testpb.Echo_Echo_FullMethodName, addr, time.Now(), sum, func(data []byte) ([]byte, error) {
		return keySigner{clientID: testKey(clientID)}.Sign(context.Background(), clientID, data)
	})
	if err != nil {
		t.Fatal(err)
	}
	md := metadata.Pairs("date", h.Date, "digest", h.Digest, "signature", h.Signature)
	if err := send(t, rawClient(t, addr), md, body); err != nil {
		t.Errorf("call with non-canonical bytes: %v", err)
	}
}

// protowireString encodes a tag byte then, when v is not nil, a length and v.
func protowireString(tag byte, v []byte) []byte {
	if v == nil {
		return []byte{tag, 0}
	}
	return append([]byte{tag, byte(len(v))}, v...)
}

// TestRequestSizeBounded: a request above the server's MaxRequestBytes is
// refused before anything else, unary calls and stream messages alike.
func TestRequestSizeBounded(t *testing.T) {
	addr, svc := startServer(t, ServerConfig{MaxRequestBytes: 1000})
	c := signedClient(t, addr, clientID, clientID)
	if _, err := c.Echo(testContext(t), &testpb.EchoRequest{Payload: make([]byte, 900)}); err != nil {
		t.Fatalf("a request under the bound: %v", err)
	}
	_, err := c.Echo(testContext(t), &testpb.EchoRequest{Payload: make([]byte, 1000)})
	checkStatus(t, err, codes.ResourceExhausted, "larger than max")
	_, err = upload(t, c, []*testpb.Chunk{{Data: make([]byte, 1000)}})
	checkStatus(t, err, codes.ResourceExhausted, "larger than max")
	if got := svc.receivedData(); len(got) != 0 {
		t.Errorf("handler received %d messages", len(got))
	}
}

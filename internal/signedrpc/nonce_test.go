package signedrpc

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	"github.com/fabricmesh/fabric/internal/httpsig"
	"github.com/fabricmesh/fabric/internal/signedrpc/testdata/testpb"
)

// mdRecorder keeps the outgoing metadata of every call. Placed after
// DialOptions, it sees what the signing interceptors hand to gRPC.
type mdRecorder struct {
	mu  sync.Mutex
	mds []metadata.MD
}

func (r *mdRecorder) record(ctx context.Context) {
	md, _ := metadata.FromOutgoingContext(ctx)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.mds = append(r.mds, md.Copy())
}

func (r *mdRecorder) options() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			r.record(ctx)
			return invoker(ctx, method, req, reply, cc, opts...)
		}),
		grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			r.record(ctx)
			return streamer(ctx, desc, cc, method, opts...)
		}),
	}
}

func (r *mdRecorder) recorded() []metadata.MD {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]metadata.MD(nil), r.mds...)
}

// mdTap is a stream interceptor placed after DialOptions that edits the
// signed stream's outgoing metadata.
func mdTap(edit func(md metadata.MD)) grpc.DialOption {
	return grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		md, _ := metadata.FromOutgoingContext(ctx)
		md = md.Copy()
		edit(md)
		return streamer(metadata.NewOutgoingContext(ctx, md), desc, cc, method, opts...)
	})
}

// chat sends one chunk on a Chat stream and reads the echo back.
func chat(tb testing.TB, c testpb.EchoClient, data string) error {
	tb.Helper()
	stream, err := c.Chat(testContext(tb))
	if err != nil {
		return err
	}
	if err := stream.Send(&testpb.Chunk{Data: []byte(data)}); err != nil && err != io.EOF {
		return err
	}
	if _, err := stream.Recv(); err != nil {
		return err
	}
	if err := stream.CloseSend(); err != nil {
		return err
	}
	if _, err := stream.Recv(); err != io.EOF {
		return err
	}
	return nil
}

// nonceOf decodes the stream nonce of md, or fails the test.
func nonceOf(tb testing.TB, md metadata.MD) []byte {
	tb.Helper()
	vals := md.Get(mdStreamNonce)
	if len(vals) != 1 {
		tb.Fatalf("%s = %q, want one value", mdStreamNonce, vals)
	}
	nonce, err := base64.StdEncoding.Strict().DecodeString(vals[0])
	if err != nil || len(nonce) != nonceSize {
		tb.Fatalf("%s = %q, want the padded standard base64 of %d bytes", mdStreamNonce, vals[0], nonceSize)
	}
	return nonce
}

// TestStreamDates: streams carry a fresh nonce, so many streams from one
// key in the same second all get the clock's date and leave the key's
// DateSource alone; identical unary calls still get later and later dates.
func TestStreamDates(t *testing.T) {
	type call byte
	const (
		up   call = 'u' // an Upload stream
		bidi call = 'c' // a Chat stream
		echo call = 'e' // a unary Echo, always the same request
	)
	tests := []struct {
		name    string
		calls   string // one call per byte
		ahead   string // per call, how many seconds its date is after the clock
		wantLen int    // pairs the DateSource remembers at the end
	}{
		{"50 uploads", strings.Repeat("u", 50), strings.Repeat("0", 50), 0},
		{"50 bidi streams", strings.Repeat("c", 50), strings.Repeat("0", 50), 0},
		{"identical unary calls", "eee", "012", 1},
		{"streams between identical unary calls",
			"e" + strings.Repeat("u", 20) + "e" + strings.Repeat("c", 20) + "e",
			"0" + strings.Repeat("0", 20) + "1" + strings.Repeat("0", 20) + "2", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, _ := startServer(t, ServerConfig{})
			clock := time.Now().Truncate(time.Second) // stopped: every call is in the same second
			dates := httpsig.NewDateSource(httpsig.DateSourceConfig{})
			cl := &client{keyID: clientID, signer: signerFor(clientID, clientID), dates: dates, floors: newFloors(), now: func() time.Time { return clock }}
			rec := &mdRecorder{}
			c := testpb.NewEchoClient(dial(t, addr, append(cl.dialOptions(), rec.options()...)...))
			for i, k := range []byte(tt.calls) {
				var err error
				switch call(k) {
				case up:
					_, err = upload(t, c, chunks("a"))
				case bidi:
					err = chat(t, c, "a")
				case echo:
					_, err = c.Echo(testContext(t), &testpb.EchoRequest{Text: "same"})
				}
				if err != nil {
					t.Fatalf("call %d (%c): %v", i, k, err)
				}
			}
			mds := rec.recorded()
			var wantDates, gotDates []string
			nonces := make(map[string]bool)
			for i, md := range mds {
				wantDates = append(wantDates, httpsig.FormatDate(clock.Add(time.Duration(tt.ahead[i]-'0')*time.Second)))
				gotDates = append(gotDates, strings.Join(md.Get(mdDate), ","))
				if call(tt.calls[i]) == echo {
					continue
				}
				nonce := nonceOf(t, md)
				if nonces[string(nonce)] {
					t.Errorf("call %d: nonce %x used twice", i, nonce)
				}
				nonces[string(nonce)] = true
				if got, want := strings.Join(md.Get(mdDigest), ","), httpsig.Digest(nonce); got != want {
					t.Errorf("call %d: digest = %q, want the nonce's %q", i, got, want)
				}
			}
			if diff := cmp.Diff(wantDates, gotDates); diff != "" {
				t.Errorf("dates (-want +got):\n%s", diff)
			}
			if got := dates.Len(); got != tt.wantLen {
				t.Errorf("DateSource.Len = %d, want %d", got, tt.wantLen)
			}
		})
	}
}

// TestStreamNonceRefused: a stream whose nonce is missing, malformed or
// not the one its digest covers is refused before the handler runs.
func TestStreamNonceRefused(t *testing.T) {
	other := bytes.Repeat([]byte{0xfb}, nonceSize)
	set := func(v string) func(metadata.MD) {
		return func(md metadata.MD) { md.Set(mdStreamNonce, v) }
	}
	const malformed = "signature rejected: stream nonce malformed: fabric-stream-nonce is not the padded standard base64 of 16 bytes"
	tests := []struct {
		name string
		edit func(metadata.MD)
		text string
	}{
		{"untouched", func(metadata.MD) {}, ""},
		{"nonce missing", func(md metadata.MD) { delete(md, mdStreamNonce) },
			"signature rejected: stream nonce missing: the call has no fabric-stream-nonce metadata"},
		{"signed as an empty body, no nonce", func(md metadata.MD) {
			delete(md, mdStreamNonce)
			md.Set(mdDigest, httpsig.Digest(nil))
		}, "signature rejected: stream nonce missing"},
		{"another nonce", set(base64.StdEncoding.EncodeToString(other)),
			"signature rejected: digest does not match the body: header says SHA-256="},
		{"another nonce and its digest", func(md metadata.MD) {
			md.Set(mdStreamNonce, base64.StdEncoding.EncodeToString(other))
			md.Set(mdDigest, httpsig.Digest(other))
		}, "signature rejected: bad signature"},
		{"two nonces", func(md metadata.MD) { md.Append(mdStreamNonce, md.Get(mdStreamNonce)[0]) },
			"signature rejected: stream nonce malformed: 2 fabric-stream-nonce values"},
		{"empty", set(""), malformed},
		{"not base64", set("not a nonce at all!!!!=="), malformed},
		{"unpadded", set(base64.RawStdEncoding.EncodeToString(other)), malformed},
		{"url-safe alphabet", set(base64.URLEncoding.EncodeToString(other)), malformed},
		{"nonzero padding bits", set("+/v7+/v7+/v7+/v7+/v7+/=="), malformed},
		{"15 bytes", set(base64.StdEncoding.EncodeToString(other[:15])), malformed},
		{"17 bytes", set(base64.StdEncoding.EncodeToString(append(other, 0))), malformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, kind := range []string{"upload", "chat"} {
				addr, svc := startServer(t, ServerConfig{})
				c := signedClient(t, addr, clientID, clientID, mdTap(tt.edit))
				var err error
				if kind == "upload" {
					_, err = upload(t, c, chunks("a"))
				} else {
					err = chat(t, c, "a")
				}
				if tt.text == "" {
					if err != nil {
						t.Fatalf("%s: untampered stream: %v", kind, err)
					}
					continue
				}
				checkStatus(t, err, codes.Unauthenticated, tt.text)
				if got := svc.receivedData(); len(got) != 0 {
					t.Errorf("%s: handler received %q", kind, got)
				}
			}
		})
	}
}

// TestStreamNonceSum checks the nonce parser alone, including what gRPC
// metadata cannot carry.
func TestStreamNonceSum(t *testing.T) {
	nonce := []byte("0123456789abcdef")
	b64 := base64.StdEncoding.EncodeToString(nonce)
	tests := []struct {
		name string
		md   metadata.MD
		want error // nil: the sum of nonce
	}{
		{"canonical", metadata.Pairs(mdStreamNonce, b64), nil},
		{"missing", metadata.MD{}, errNonceMissing},
		{"line break", metadata.MD{mdStreamNonce: {b64[:8] + "\n" + b64[8:]}}, errNonceMalformed},
		{"two values", metadata.MD{mdStreamNonce: {b64, b64}}, errNonceMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sum, err := streamNonceSum(tt.md)
			if tt.want != nil {
				if !errors.Is(err, tt.want) {
					t.Errorf("streamNonceSum = %v, want %v", err, tt.want)
				}
				return
			}
			if err != nil || sum != sha256.Sum256(nonce) {
				t.Errorf("streamNonceSum = %x, %v; want the nonce's SHA-256", sum, err)
			}
		})
	}
}

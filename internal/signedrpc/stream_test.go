package signedrpc

import (
	"context"
	"io"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/fabricmesh/fabric/internal/signedrpc/testdata/testpb"
)

func chunks(data ...string) []*testpb.Chunk {
	var out []*testpb.Chunk
	for _, d := range data {
		out = append(out, &testpb.Chunk{Data: []byte(d)})
	}
	return out
}

// upload sends chunks on an Upload stream and returns the summary.
func upload(tb testing.TB, c testpb.EchoClient, cs []*testpb.Chunk) (*testpb.UploadSummary, error) {
	tb.Helper()
	stream, err := c.Upload(testContext(tb))
	if err != nil {
		return nil, err
	}
	for _, ch := range cs {
		if err := stream.Send(ch); err == io.EOF {
			break // the server ended the call; CloseAndRecv says why
		} else if err != nil {
			return nil, err
		}
	}
	return stream.CloseAndRecv()
}

func TestStreamSigned(t *testing.T) {
	addr, svc := startServer(t, ServerConfig{})
	c := signedClient(t, addr, clientID, clientID)
	got, err := upload(t, c, chunks("a", "b", "", "c"))
	if err != nil {
		t.Fatalf("Upload: %v", err)
	}
	want := &testpb.UploadSummary{Chunks: 4, Data: []byte("abc"), Caller: clientID}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("Upload (-want +got):\n%s", diff)
	}
	// The same stream again, same messages: another nonce, another call
	// signature, another chain.
	if _, err := upload(t, c, chunks("a", "b", "", "c")); err != nil {
		t.Fatalf("second Upload: %v", err)
	}
	if diff := cmp.Diff([]string{"a", "b", "", "c", "a", "b", "", "c"}, svc.receivedData()); diff != "" {
		t.Errorf("handler received (-want +got):\n%s", diff)
	}
}

func TestStreamBidi(t *testing.T) {
	addr, _ := startServer(t, ServerConfig{})
	c := signedClient(t, addr, clientID, clientID)
	stream, err := c.Chat(testContext(t))
	if err != nil {
		t.Fatalf("Chat: %v", err)
	}
	var got []string
	for _, d := range []string{"one", "two", "three"} {
		if err := stream.Send(&testpb.Chunk{Data: []byte(d)}); err != nil {
			t.Fatalf("Send: %v", err)
		}
		reply, err := stream.Recv() // server-to-client messages are not signed
		if err != nil {
			t.Fatalf("Recv: %v", err)
		}
		got = append(got, string(reply.GetData()))
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatalf("CloseSend: %v", err)
	}
	if _, err := stream.Recv(); err != io.EOF {
		t.Errorf("Recv after CloseSend = %v, want io.EOF", err)
	}
	if diff := cmp.Diff([]string{"one", "two", "three"}, got); diff != "" {
		t.Errorf("Chat replies (-want +got):\n%s", diff)
	}
}

// streamTap sits after DialOptions: it sees each envelope the signing
// interceptor sends and may rewrite, hold back or replace it.
type streamTap struct {
	// edit returns the envelopes to send instead of message n (1-based)
	// of the stream.
	edit func(n int, env []byte) [][]byte
}

func (tap *streamTap) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	cs, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil {
		return nil, err
	}
	return &tappedStream{ClientStream: cs, tap: tap}, nil
}

type tappedStream struct {
	grpc.ClientStream
	tap *streamTap
	n   int
}

func (s *tappedStream) SendMsg(m any) error {
	s.n++
	for _, env := range s.tap.edit(s.n, m.(*preEncoded).b) {
		if err := s.ClientStream.SendMsg(&preEncoded{env}); err != nil {
			return err
		}
	}
	return nil
}

// envelopeRecorder keeps the envelopes of a stream.
type envelopeRecorder struct {
	mu   sync.Mutex
	envs [][]byte
}

func (r *envelopeRecorder) edit(_ int, env []byte) [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.envs = append(r.envs, env)
	return [][]byte{env}
}

func TestStreamRefused(t *testing.T) {
	addr, _ := startServer(t, ServerConfig{})
	// Envelopes of another stream, to inject.
	rec := &envelopeRecorder{}
	recClient := signedClient(t, addr, clientID, clientID, grpc.WithChainStreamInterceptor((&streamTap{edit: rec.edit}).stream))
	if _, err := upload(t, recClient, chunks("x", "y", "z")); err != nil {
		t.Fatalf("recording Upload: %v", err)
	}
	flip := func(i int) func(int, []byte) [][]byte {
		return func(_ int, env []byte) [][]byte {
			env = append([]byte(nil), env...)
			env[i] ^= 1
			return [][]byte{env}
		}
	}
	var held []byte
	tests := []struct {
		name string
		edit func(n int, env []byte) [][]byte // for message 2
		text string
	}{
		{"payload tampered", flip(envelopeHeader), "message 2 of the stream from keyId \"pastiche@h7\" does not follow the previous message"},
		{"chain tampered", flip(4), "message 2 of the stream from keyId \"pastiche@h7\" does not follow the previous message"},
		{"signature tampered", flip(36), "message 2 of the stream from keyId \"pastiche@h7\" has a bad signature"},
		{"dropped", func(int, []byte) [][]byte { return nil }, "message 2 of the stream from keyId \"pastiche@h7\" does not follow"},
		{"duplicated", func(_ int, env []byte) [][]byte { return [][]byte{env, env} }, "message 3 of the stream from keyId \"pastiche@h7\" does not follow"},
		{"foreign", func(int, []byte) [][]byte { return [][]byte{rec.envs[1]} }, "message 2 of the stream from keyId \"pastiche@h7\" does not follow"},
		{"unsigned", func(_ int, env []byte) [][]byte { return [][]byte{env[envelopeHeader:]} }, "message 2 of the stream from keyId \"pastiche@h7\" is not signed (no FSM1 envelope)"},
		{"truncated envelope", func(_ int, env []byte) [][]byte { return [][]byte{env[:envelopeHeader-1]} }, "message 2 of the stream from keyId \"pastiche@h7\" has a truncated FSM1 envelope (99 bytes, the header is 100)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, svc := startServer(t, ServerConfig{})
			tap := &streamTap{edit: func(n int, env []byte) [][]byte {
				if n == 2 {
					return tt.edit(n, env)
				}
				return [][]byte{env}
			}}
			c := signedClient(t, addr, clientID, clientID, grpc.WithChainStreamInterceptor(tap.stream))
			_, err := upload(t, c, chunks("a", "b", "c", "d"))
			checkStatus(t, err, codes.Unauthenticated, "signature rejected: "+tt.text)
			// The handler saw the messages before the refused one, and
			// nothing after.
			want := []string{"a"}
			if tt.name == "duplicated" {
				want = []string{"a", "b"}
			}
			if diff := cmp.Diff(want, svc.receivedData()); diff != "" {
				t.Errorf("handler received (-want +got):\n%s", diff)
			}
		})
	}

	t.Run("reordered", func(t *testing.T) {
		addr, svc := startServer(t, ServerConfig{})
		tap := &streamTap{edit: func(n int, env []byte) [][]byte {
			switch n {
			case 2:
				held = env
				return nil
			case 3:
				return [][]byte{env, held}
			}
			return [][]byte{env}
		}}
		c := signedClient(t, addr, clientID, clientID, grpc.WithChainStreamInterceptor(tap.stream))
		_, err := upload(t, c, chunks("a", "b", "c", "d"))
		checkStatus(t, err, codes.Unauthenticated, "message 2 of the stream from keyId \"pastiche@h7\" does not follow")
		if diff := cmp.Diff([]string{"a"}, svc.receivedData()); diff != "" {
			t.Errorf("handler received (-want +got):\n%s", diff)
		}
	})
}

func TestStreamCallRefused(t *testing.T) {
	tests := []struct {
		name   string
		client func(tb testing.TB, addr string) testpb.EchoClient
		code   codes.Code
		text   string
	}{
		{"unsigned", unsigned,
			codes.Unauthenticated, "signature rejected: missing signature"},
		{"not whitelisted", clientAs(strangerID, strangerID),
			codes.PermissionDenied, `signature rejected: keyId "steward@h1" is not on the whitelist of this endpoint`},
		{"wrong key", clientAs(clientID, strangerID),
			codes.Unauthenticated, "signature rejected: bad signature"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, svc := startServer(t, ServerConfig{})
			_, err := upload(t, tt.client(t, addr), chunks("a"))
			checkStatus(t, err, tt.code, tt.text)
			if got := svc.receivedData(); len(got) != 0 {
				t.Errorf("handler received %q", got)
			}
		})
	}
}

// TestStreamSignedCallWithUnsignedMessages: a client that signs the call
// but sends plain messages (an ordinary ClientConn given a stolen call
// signature would) is refused at the first message.
func TestStreamSignedCallWithUnsignedMessages(t *testing.T) {
	addr, svc := startServer(t, ServerConfig{})
	tap := &streamTap{edit: func(_ int, env []byte) [][]byte { return [][]byte{env[envelopeHeader:]} }}
	c := signedClient(t, addr, clientID, clientID, grpc.WithChainStreamInterceptor(tap.stream))
	_, err := upload(t, c, chunks("a"))
	checkStatus(t, err, codes.Unauthenticated, "message 1 of the stream from keyId \"pastiche@h7\" is not signed")
	if got := svc.receivedData(); len(got) != 0 {
		t.Errorf("handler received %q", got)
	}
}

func TestEnvelopeLayout(t *testing.T) {
	sig := make([]byte, 64)
	for i := range sig {
		sig[i] = byte(i)
	}
	payload, _ := proto.Marshal(&testpb.Chunk{Data: []byte("p")})
	c0 := firstChain(sig)
	c1 := c0.next(payload)
	env := seal(c1, sig, payload)
	if string(env[:4]) != "FSM1" || string(env[4:36]) != string(c1[:]) || string(env[36:100]) != string(sig) || string(env[100:]) != string(payload) {
		t.Errorf("seal = %x, want FSM1 | chain | sig | payload", env)
	}
	if got := string(c1.signingInput()); got != "fabric signed stream v1\n"+string(c1[:]) {
		t.Errorf("signingInput = %q", got)
	}
}

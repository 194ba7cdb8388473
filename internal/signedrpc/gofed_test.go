package signedrpc

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	gofed "github.com/go-fed/httpsig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/fabricmesh/fabric/internal/signedrpc/testdata/testpb"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
)

// captured is what a server received for one call.
type captured struct {
	method string
	md     metadata.MD
	body   []byte // raw bytes of the first client message
}

// capturingServer accepts any call without checking it and records the
// method, the metadata and the raw bytes of the first message. It sends
// its headers at once, as a signed server does when it accepts a stream.
type capturingServer struct {
	mu    sync.Mutex
	calls []captured
}

func (s *capturingServer) handle(_ any, stream grpc.ServerStream) error {
	method, _ := grpc.MethodFromServerStream(stream)
	md, _ := metadata.FromIncomingContext(stream.Context())
	if err := stream.SendHeader(metadata.MD{}); err != nil {
		return err
	}
	var m rawMsg
	if err := stream.RecvMsg(&m); err != nil {
		return err
	}
	s.mu.Lock()
	s.calls = append(s.calls, captured{method: method, md: md, body: m.b})
	s.mu.Unlock()
	return stream.SendMsg(&rawMsg{})
}

// httpRequest rebuilds, from what a server received, the HTTP request the
// draft describes: the call's :authority is its Host, body its body.
func httpRequest(tb testing.TB, call captured, body []byte) *http.Request {
	tb.Helper()
	host := call.md.Get(":authority")
	if len(host) != 1 {
		tb.Fatalf(":authority = %q, want one value", host)
	}
	r, err := http.NewRequest("POST", "http://"+host[0]+call.method, bytes.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	for _, h := range []string{"Date", "Digest", "Signature"} {
		vals := call.md.Get(h)
		if len(vals) != 1 {
			tb.Fatalf("metadata %s = %q, want one value", h, vals)
		}
		r.Header.Set(h, vals[0])
	}
	return r
}

// TestIndependentVerification rebuilds, from what a server received, the
// HTTP request the draft describes and verifies it with go-fed/httpsig, an
// independent implementation of draft-cavage-http-signatures, and checks
// the Digest header against the body with crypto/sha256 directly. The host
// is signed: the same request at another Host does not verify.
func TestIndependentVerification(t *testing.T) {
	capture := &capturingServer{}
	srv := grpc.NewServer(grpc.ForceServerCodecV2(rawCodec{}), grpc.UnknownServiceHandler(capture.handle))
	addr := serve(t, srv)
	c := signedClient(t, addr, clientID, clientID)
	reqs := []*testpb.EchoRequest{
		{},
		{Text: "hello", Seq: 42, Labels: map[string]string{"z": "26", "a": "1"}},
		{Payload: bytes.Repeat([]byte{0xfe}, 100000)},
	}
	for _, req := range reqs {
		if _, err := c.Echo(testContext(t), req); err != nil {
			t.Fatalf("Echo: %v", err)
		}
	}
	pub := testKey(clientID).Public().(ed25519.PublicKey)
	for i, call := range capture.calls {
		r := httpRequest(t, call, call.body)
		if r.Host != addr {
			t.Errorf("call %d: host %q, want the server's address %s", i, r.Host, addr)
		}
		verifyGoFed(t, r, pub)
		r = httpRequest(t, call, call.body)
		r.Host = "203.0.113.5:7450"
		if v, err := gofed.NewVerifier(r); err != nil || v.Verify(pub, gofed.ED25519) == nil {
			t.Errorf("call %d: go-fed verifies the call at another host (%v)", i, err)
		}
		sum := sha256.Sum256(call.body)
		if want := "SHA-256=" + base64.StdEncoding.EncodeToString(sum[:]); r.Header.Get("Digest") != want {
			t.Errorf("call %d: Digest = %q, the body's is %q", i, r.Header.Get("Digest"), want)
		}
		// The bytes on the wire are the request, marshalled.
		var got testpb.EchoRequest
		if err := proto.Unmarshal(call.body, &got); err != nil {
			t.Fatalf("call %d: body does not decode: %v", i, err)
		}
		if diff := cmp.Diff(reqs[i], &got, protocmp.Transform()); diff != "" {
			t.Errorf("call %d: body (-want +got):\n%s", i, diff)
		}
	}
	if len(capture.calls) != len(reqs) {
		t.Errorf("captured %d calls, want %d", len(capture.calls), len(reqs))
	}
}

// TestIndependentStreamVerification checks streams the same way: the call
// signature with go-fed over an HTTP request whose body is the stream's
// nonce (decoded from its metadata), then the first message's envelope
// recomputed from the documented scheme with crypto/sha256 and
// crypto/ed25519 only.
func TestIndependentStreamVerification(t *testing.T) {
	capture := &capturingServer{}
	srv := grpc.NewServer(grpc.ForceServerCodecV2(rawCodec{}), grpc.UnknownServiceHandler(capture.handle))
	c := signedClient(t, serve(t, srv), clientID, clientID)
	chunk := &testpb.Chunk{Data: []byte("first chunk")}
	const streams = 2 // identical streams, back to back
	for range streams {
		if _, err := upload(t, c, []*testpb.Chunk{chunk}); err != nil {
			t.Fatalf("Upload: %v", err)
		}
	}
	if len(capture.calls) != streams {
		t.Fatalf("captured %d calls, want %d", len(capture.calls), streams)
	}
	pub := testKey(clientID).Public().(ed25519.PublicKey)
	nonces := make(map[string]bool)
	for i, call := range capture.calls {
		vals := call.md.Get("fabric-stream-nonce")
		if len(vals) != 1 {
			t.Fatalf("stream %d: fabric-stream-nonce = %q, want one value", i, vals)
		}
		nonce, err := base64.StdEncoding.DecodeString(vals[0])
		if err != nil || len(nonce) != 16 {
			t.Fatalf("stream %d: fabric-stream-nonce %q is not the base64 of 16 bytes", i, vals[0])
		}
		if nonces[string(nonce)] {
			t.Errorf("stream %d: nonce %x used twice", i, nonce)
		}
		nonces[string(nonce)] = true
		r := httpRequest(t, call, nonce)
		sum := sha256.Sum256(nonce)
		if got, want := r.Header.Get("Digest"), "SHA-256="+base64.StdEncoding.EncodeToString(sum[:]); got != want {
			t.Errorf("stream %d: Digest = %q, the nonce's is %q", i, got, want)
		}
		verifyGoFed(t, r, pub)
		checkFirstEnvelope(t, pub, r.Header.Get("Signature"), call.body, chunk)
	}
}

// verifyGoFed verifies r's signature with go-fed, as keyId clientID.
func verifyGoFed(tb testing.TB, r *http.Request, pub ed25519.PublicKey) {
	tb.Helper()
	v, err := gofed.NewVerifier(r)
	if err != nil {
		tb.Fatalf("go-fed NewVerifier: %v", err)
	}
	if v.KeyId() != clientID {
		tb.Errorf("go-fed KeyId = %q, want %q", v.KeyId(), clientID)
	}
	if err := v.Verify(pub, gofed.ED25519); err != nil {
		tb.Errorf("go-fed Verify: %v", err)
	}
}

// checkFirstEnvelope checks env, the first message of a stream whose call
// signature header is sigHeader, carrying msg.
func checkFirstEnvelope(tb testing.TB, pub ed25519.PublicKey, sigHeader string, env []byte, msg proto.Message) {
	tb.Helper()
	// The call's raw signature, from the signature header.
	p, err := parseSigParam(sigHeader)
	if err != nil {
		tb.Fatal(err)
	}
	if len(env) < 100 || string(env[:4]) != "FSM1" {
		tb.Fatalf("first message %x is not an FSM1 envelope", env)
	}
	payload := env[100:]
	chain0 := sha256.Sum256(p)
	payloadSum := sha256.Sum256(payload)
	chain1 := sha256.Sum256(append(chain0[:], payloadSum[:]...))
	if !bytes.Equal(env[4:36], chain1[:]) {
		tb.Errorf("chain_1 = %x, want %x", env[4:36], chain1)
	}
	if !ed25519.Verify(pub, append([]byte("fabric signed stream v1\n"), chain1[:]...), env[36:100]) {
		tb.Errorf("sig_1 does not verify")
	}
	want, _ := proto.MarshalOptions{Deterministic: true}.Marshal(msg)
	if !bytes.Equal(payload, want) {
		tb.Errorf("payload = %x, want %x", payload, want)
	}
}

// parseSigParam extracts and decodes the signature parameter by hand.
func parseSigParam(header string) ([]byte, error) {
	const key = `signature="`
	i := strings.LastIndex(header, key)
	if i < 0 {
		return nil, fmt.Errorf("no signature parameter in %q", header)
	}
	rest := header[i+len(key):]
	return base64.StdEncoding.DecodeString(strings.TrimSuffix(rest, `"`))
}

package pastiche

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"strings"
	"sync"
	"testing"

	"github.com/fabricmesh/fabric/internal/signedrpc"
	"github.com/fabricmesh/fabric/node/pastiche/pastichepb"
	"github.com/fabricmesh/fabric/node/reeve"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/testing/protocmp"
)

func header(name string, size int64, sum []byte) *pastichepb.PutRequest {
	return &pastichepb.PutRequest{Msg: &pastichepb.PutRequest_Header{Header: &pastichepb.FileHeader{Name: name, Size: size, Sha256: sum}}}
}

func chunk(data string) *pastichepb.PutRequest {
	return &pastichepb.PutRequest{Msg: &pastichepb.PutRequest_Chunk{Chunk: []byte(data)}}
}

// putMsgs runs a Put call that sends msgs.
func putMsgs(ctx context.Context, c pastichepb.PasticheClient, msgs ...*pastichepb.PutRequest) (*pastichepb.PutResponse, error) {
	stream, err := c.Put(ctx)
	if err != nil {
		return nil, err
	}
	for _, m := range msgs {
		if err := stream.Send(m); err != nil {
			break // the status comes with CloseAndRecv
		}
	}
	return stream.CloseAndRecv()
}

// forger signs with a key of its own after its first honest signatures,
// which it asks of r.
type forger struct {
	r      *reeve.Reeve
	honest int

	mu  sync.Mutex
	n   int
	key ed25519.PrivateKey
}

func newForger(r *reeve.Reeve, honest int) *forger {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	return &forger{r: r, honest: honest, key: key}
}

func (f *forger) Sign(ctx context.Context, keyID string, data []byte) ([]byte, error) {
	f.mu.Lock()
	f.n++
	honest := f.n <= f.honest
	f.mu.Unlock()
	if honest {
		return f.r.Sign(ctx, keyID, data)
	}
	return ed25519.Sign(f.key, data), nil
}

func TestPutRefused(t *testing.T) {
	tc := newTestCluster(t, sharksAndJets)
	plain := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithContextDialer(tc.vpn.Dial)}
	forged := func(honest int) pastichepb.PasticheClient {
		opts := append(plain, signedrpc.DialOptions("pastiche@h2", newForger(tc.peers["h2"].reeve, honest))...)
		return tc.dialWith(t, "h1", opts...)
	}
	h2 := tc.dial(t, "h2", "pastiche@h2", "h1")
	put := func(msgs ...*pastichepb.PutRequest) func(pastichepb.PasticheClient) error {
		return func(c pastichepb.PasticheClient) error {
			_, err := putMsgs(context.Background(), c, msgs...)
			return err
		}
	}
	abc := put(header("f", 3, nil), chunk("abc"))
	wrongSum := sha256.Sum256([]byte("abd"))
	for _, tt := range []struct {
		test   string
		client pastichepb.PasticheClient
		call   func(pastichepb.PasticheClient) error
		code   codes.Code
		msg    string
	}{
		{"client of another horde", tc.dial(t, "h3", "pastiche@h3", "h1"), abc, codes.Unauthenticated, `pastiche@h3`},
		{"fabric-admin may not put", tc.dial(t, "c", "fabric-admin@c", "h1"), abc, codes.PermissionDenied,
			"Put of pastiche@h1 is for pastiche clients only, not fabric-admin@c"},
		{"pastiche may not send", h2, func(c pastichepb.PasticheClient) error {
			_, err := sendMsgs(context.Background(), c, sendHeader("h2", "f", 3, nil), sendChunk("abc"))
			return err
		}, codes.PermissionDenied, "Send of pastiche@h1 is for fabric-admin clients only, not pastiche@h2"},
		{"unsigned", tc.dialWith(t, "h1", plain...), abc, codes.Unauthenticated, "missing signature"},
		{"forged call signature", forged(0), abc, codes.Unauthenticated, "bad signature"},
		{"forged message signature", forged(2), abc, codes.Unauthenticated, `message 2 of the stream from keyId "pastiche@h2"`},
		{"path as name", h2, put(header("a/b", 3, nil), chunk("abc")), codes.InvalidArgument, "contains '/'"},
		{"dot dot", h2, put(header("..", 0, nil)), codes.InvalidArgument, "starts with '.'"},
		{"control character", h2, put(header("a\nb", 3, nil), chunk("abc")), codes.InvalidArgument, "control character"},
		{"long name", h2, put(header(strings.Repeat("x", 256), 3, nil), chunk("abc")), codes.InvalidArgument, "256 bytes"},
		{"chunk before header", h2, put(chunk("abc")), codes.InvalidArgument, "missing file header"},
		{"empty stream", h2, put(), codes.InvalidArgument, "empty stream"},
		{"two headers", h2, put(header("f", 3, nil), header("f", 3, nil), chunk("abc")), codes.InvalidArgument, "second header"},
		{"short SHA-256", h2, put(header("f", 3, []byte{1, 2}), chunk("abc")), codes.InvalidArgument, "2 bytes, want 32"},
		{"SHA-256 differs", h2, put(header("f", 3, wrongSum[:]), chunk("abc")), codes.DataLoss, "file f: SHA-256"},
		{"more than announced", h2, put(header("f", 3, nil), chunk("ab"), chunk("cd")), codes.InvalidArgument, "more than the 3 bytes announced"},
		{"fewer than announced", h2, put(header("f", 3, nil), chunk("ab")), codes.InvalidArgument, "2 bytes received, 3 announced"},
	} {
		t.Run(tt.test, func(t *testing.T) {
			checkStatus(t, tt.call(tt.client), tt.code, tt.msg)
		})
	}
	tc.stopAll()
	tc.checkNothingStored(t)
}

func TestPutExpectedSHA256(t *testing.T) {
	tc := newTestCluster(t, sharksAndJets)
	sum := sha256.Sum256([]byte("abc"))
	got, err := putMsgs(context.Background(), tc.dial(t, "h2", "pastiche@h2", "h1"), header("f", 3, sum[:]), chunk("a"), chunk(""), chunk("bc"))
	if err != nil {
		t.Fatal(err)
	}
	want := &pastichepb.PutResponse{Name: "f", Size: 3, Sha256: sum[:]}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("Put response (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string][sha256.Size]byte{"f": sum}, storedFiles(t, tc.peers["h1"].dir)); diff != "" {
		t.Errorf("files on h1 (-want +got):\n%s", diff)
	}
}

func sendHeader(to, name string, size int64, sum []byte) *pastichepb.SendRequest {
	return &pastichepb.SendRequest{Msg: &pastichepb.SendRequest_Header{Header: &pastichepb.SendHeader{
		To: to, File: &pastichepb.FileHeader{Name: name, Size: size, Sha256: sum},
	}}}
}

func sendChunk(data string) *pastichepb.SendRequest {
	return &pastichepb.SendRequest{Msg: &pastichepb.SendRequest_Chunk{Chunk: []byte(data)}}
}

// sendMsgs runs a Send call that sends msgs.
func sendMsgs(ctx context.Context, c pastichepb.PasticheClient, msgs ...*pastichepb.SendRequest) (*pastichepb.SendResponse, error) {
	stream, err := c.Send(ctx)
	if err != nil {
		return nil, err
	}
	for _, m := range msgs {
		if err := stream.Send(m); err != nil {
			break
		}
	}
	return stream.CloseAndRecv()
}

func TestSendExpectedSHA256(t *testing.T) {
	tc := newTestCluster(t, sharksAndJets)
	admin := tc.dial(t, "c", "fabric-admin@c", "h1")
	sum := sha256.Sum256([]byte("abc"))
	got, err := sendMsgs(context.Background(), admin, sendHeader("h2", "f", 3, sum[:]), sendChunk("abc"))
	if err != nil {
		t.Fatal(err)
	}
	want := &pastichepb.SendResponse{Target: "pastiche@h2", Stored: &pastichepb.PutResponse{Name: "f", Size: 3, Sha256: sum[:]}}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("Send response (-want +got):\n%s", diff)
	}
	_, err = sendMsgs(context.Background(), admin, sendHeader("h2", "g", 3, sum[:]), sendChunk("abd"))
	checkStatus(t, err, codes.DataLoss, "pastiche@h2: file g: SHA-256")
	tc.stopAll()
	if diff := cmp.Diff(map[string][sha256.Size]byte{"f": sum}, storedFiles(t, tc.peers["h2"].dir)); diff != "" {
		t.Errorf("files on h2 (-want +got):\n%s", diff)
	}
}

func TestSendTargetRefuses(t *testing.T) {
	tc := newTestCluster(t, sharksAndJets)
	// h2 knows pastiche@h1's key, from the whitelist of another endpoint,
	// but its pastiche does not whitelist it (yet): h1's view says it may
	// call h2, h2's says otherwise.
	v, _ := tc.peers["h2"].reeve.View()
	var kept = v.Whitelist[:0]
	for _, w := range v.Whitelist {
		if w.Client == "pastiche@h1" {
			w.Endpoint = "other@h2"
		}
		kept = append(kept, w)
	}
	v.Whitelist = kept
	tc.applyView(t, "h2", v)
	_, err := tc.relay.Send(context.Background(), "h1", "h2", "f", 3, bytes.NewReader([]byte("abc")))
	checkStatus(t, err, codes.PermissionDenied, `pastiche@h1: pastiche@h2: signature rejected: keyId "pastiche@h1" is not on the whitelist`)
	tc.stopAll()
	tc.checkNothingStored(t)
}

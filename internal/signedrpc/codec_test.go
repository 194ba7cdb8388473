package signedrpc

import (
	"crypto/sha256"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/fabricmesh/fabric/internal/signedrpc/testdata/testpb"
)

// split returns b as a BufferSlice of several buffers, as gRPC may hand it.
func split(b []byte) mem.BufferSlice {
	var out mem.BufferSlice
	for len(b) > 3 {
		out = append(out, mem.SliceBuffer(b[:3]))
		b = b[3:]
	}
	return append(out, mem.SliceBuffer(b))
}

func TestServerCodecRecordsRawSum(t *testing.T) {
	c := newServerCodec()
	raw, _ := proto.Marshal(&testpb.EchoRequest{Text: "hello", Seq: 3})
	req := &testpb.EchoRequest{}
	if err := c.Unmarshal(split(raw), req); err != nil {
		t.Fatalf("Unmarshal: %v", err)
	}
	if diff := cmp.Diff(&testpb.EchoRequest{Text: "hello", Seq: 3}, req, protocmp.Transform()); diff != "" {
		t.Errorf("decoded (-want +got):\n%s", diff)
	}
	sum, ok := c.takeSum(req)
	if !ok || sum != sha256.Sum256(raw) {
		t.Errorf("takeSum = %x, %v; want the raw bytes' SHA-256", sum, ok)
	}
	if _, ok := c.takeSum(req); ok {
		t.Errorf("takeSum twice: the entry was not forgotten")
	}
	if _, ok := c.takeSum(&testpb.EchoRequest{}); ok {
		t.Errorf("takeSum of a message never decoded: ok")
	}
}

func TestServerCodecStreamMessage(t *testing.T) {
	c := newServerCodec()
	m := &testpb.Chunk{}
	c.expect(m)
	if err := c.Unmarshal(split([]byte("FSM1 not a proto")), m); err != nil {
		t.Fatalf("Unmarshal: %v", err)
	}
	if got := string(c.collect(m)); got != "FSM1 not a proto" {
		t.Errorf("collect = %q", got)
	}
	if len(m.GetData()) != 0 {
		t.Errorf("the codec decoded into an awaited stream message")
	}
	if _, ok := c.takeSum(m); ok {
		t.Errorf("a stream message was recorded as a unary request")
	}
	if got := c.collect(m); got != nil {
		t.Errorf("collect again = %q, want nil", got)
	}
}

func TestServerCodecSweepsStaleSums(t *testing.T) {
	c := newServerCodec()
	old := time.Now().Add(-2 * staleAfter)
	for range sweepMinLen {
		c.sums[&testpb.EchoRequest{}] = sumEntry{at: old} // left behind by a refused call
	}
	fresh := &testpb.EchoRequest{}
	if err := c.Unmarshal(split(nil), fresh); err != nil {
		t.Fatalf("Unmarshal: %v", err)
	}
	if len(c.sums) != 1 {
		t.Errorf("%d entries after the sweep, want 1 (the fresh one)", len(c.sums))
	}
	if _, ok := c.takeSum(fresh); !ok {
		t.Errorf("the fresh entry was swept")
	}
}

func TestClientCodecSendsPreEncodedBytes(t *testing.T) {
	out, err := clientCodec{}.Marshal(&preEncoded{[]byte("exact bytes")})
	if err != nil {
		t.Fatal(err)
	}
	if got := string(out.Materialize()); got != "exact bytes" {
		t.Errorf("Marshal(preEncoded) = %q", got)
	}
	m := &testpb.EchoRequest{Labels: map[string]string{"b": "2", "a": "1", "c": "3"}}
	want, _ := deterministic.Marshal(m)
	for range 5 {
		out, err := clientCodec{}.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if got := out.Materialize(); string(got) != string(want) {
			t.Fatalf("Marshal = %x, want deterministic %x", got, want)
		}
	}
	if _, err := (clientCodec{}).Marshal("not a message"); err == nil {
		t.Errorf("Marshal(string) succeeded")
	}
}

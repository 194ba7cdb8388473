package signedrpc

import (
	"crypto/sha256"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// codecName keeps the usual content-type, application/grpc+proto.
const codecName = "proto"

var deterministic = proto.MarshalOptions{Deterministic: true}

// preEncoded is a message already marshalled (and signed) by a client
// interceptor; the client codec sends its bytes as they are.
type preEncoded struct{ b []byte }

// clientCodec sends preEncoded bytes as they are and marshals anything else
// deterministically.
type clientCodec struct{}

var _ encoding.CodecV2 = clientCodec{}

func (clientCodec) Name() string { return codecName }

func (clientCodec) Marshal(v any) (mem.BufferSlice, error) {
	switch m := v.(type) {
	case *preEncoded:
		return mem.BufferSlice{mem.SliceBuffer(m.b)}, nil
	case proto.Message:
		b, err := deterministic.Marshal(m)
		if err != nil {
			return nil, fmt.Errorf("marshalling %T: %w", v, err)
		}
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	return nil, fmt.Errorf("marshalling %T: not a proto message", v)
}

func (clientCodec) Unmarshal(data mem.BufferSlice, v any) error { return unmarshal(data, v) }

func unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("unmarshalling into %T: not a proto message", v)
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	return proto.Unmarshal(buf.ReadOnlyData(), m)
}

// Bounds of serverCodec's table of request digests. An entry is normally
// taken by the unary interceptor right after decoding; entries left behind
// (an outer interceptor refused the call) are swept once they are stale.
const (
	sweepMinLen = 1024
	staleAfter  = time.Minute
)

// serverCodec decodes requests and remembers what the interceptors need of
// their raw bytes:
//
//   - For a unary request it records the SHA-256 of the raw bytes, keyed by
//     the decoded message (the pointer the interceptor then receives).
//   - For a message a stream interceptor is waiting for (registered with
//     expect), it keeps the raw bytes and leaves the message alone: the
//     interceptor checks the envelope and decodes the payload itself.
type serverCodec struct {
	mu      sync.Mutex
	sums    map[any]sumEntry
	sweepAt int
	waiting map[any]*[]byte
}

type sumEntry struct {
	sum [sha256.Size]byte
	at  time.Time
}

var _ encoding.CodecV2 = (*serverCodec)(nil)

func newServerCodec() *serverCodec {
	return &serverCodec{sums: make(map[any]sumEntry), sweepAt: sweepMinLen, waiting: make(map[any]*[]byte)}
}

func (c *serverCodec) Name() string { return codecName }

func (c *serverCodec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("marshalling %T: not a proto message", v)
	}
	b, err := proto.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("marshalling %T: %w", v, err)
	}
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}

func (c *serverCodec) Unmarshal(data mem.BufferSlice, v any) error {
	c.mu.Lock()
	raw, isStream := c.waiting[v]
	c.mu.Unlock()
	if isStream {
		*raw = data.Materialize()
		return nil
	}
	h := sha256.New()
	for _, b := range data {
		h.Write(b.ReadOnlyData())
	}
	if err := unmarshal(data, v); err != nil {
		return err
	}
	e := sumEntry{at: time.Now()}
	h.Sum(e.sum[:0])
	c.mu.Lock()
	c.sums[v] = e
	c.sweepLocked(e.at)
	c.mu.Unlock()
	return nil
}

// takeSum returns and forgets the SHA-256 of the raw bytes decoded into req.
func (c *serverCodec) takeSum(req any) (sum [sha256.Size]byte, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.sums[req]
	delete(c.sums, req)
	return e.sum, ok
}

// sweepLocked drops stale entries when the table has grown.
func (c *serverCodec) sweepLocked(now time.Time) {
	if len(c.sums) < c.sweepAt {
		return
	}
	for k, e := range c.sums {
		if now.Sub(e.at) > staleAfter {
			delete(c.sums, k)
		}
	}
	c.sweepAt = max(sweepMinLen, 2*len(c.sums))
}

// expect registers m as the target of a stream's next RecvMsg: Unmarshal
// keeps the raw bytes for collect.
func (c *serverCodec) expect(m any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.waiting[m] = new([]byte)
}

// collect unregisters m and returns the raw bytes received for it (nil if
// none were).
func (c *serverCodec) collect(m any) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	raw := c.waiting[m]
	delete(c.waiting, m)
	if raw == nil {
		return nil
	}
	return *raw
}

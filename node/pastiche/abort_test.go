package pastiche

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// waitForTemp waits until a temporary file in dir holds at least n bytes.
func waitForTemp(tb testing.TB, dir string, n int64) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		entries, err := os.ReadDir(dir)
		if err != nil {
			tb.Fatal(err)
		}
		for _, e := range entries {
			info, err := e.Info()
			if err == nil && strings.HasPrefix(e.Name(), tempPrefix) && info.Size() >= n {
				return
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	tb.Fatalf("no temporary file of %d bytes appeared in %s", n, dir)
}

func TestPutAborted(t *testing.T) {
	tc := newTestCluster(t, sharksAndJets)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := tc.dial(t, "h2", "pastiche@h2", "h1").Put(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(header("big", 10*ChunkSize, nil)); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := stream.Send(chunk(string(testData(ChunkSize, uint64(i))))); err != nil {
			t.Fatal(err)
		}
	}
	waitForTemp(t, tc.peers["h1"].dir, ChunkSize)
	cancel()
	tc.stopAll()
	tc.checkNothingStored(t)
}

// cuttingReader gives its data, then waits until the target holds part of
// it in a temporary file, cancels the transfer and fails.
type cuttingReader struct {
	tb     testing.TB
	data   io.Reader
	dir    string
	cancel context.CancelFunc
	ctx    context.Context
}

func (r *cuttingReader) Read(p []byte) (int, error) {
	n, err := r.data.Read(p)
	if err != io.EOF {
		return n, err
	}
	waitForTemp(r.tb, r.dir, ChunkSize)
	r.cancel()
	return 0, status.FromContextError(r.ctx.Err()).Err()
}

func TestSendCutMidway(t *testing.T) {
	tc := newTestCluster(t, sharksAndJets)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	body := &cuttingReader{tb: t, data: bytes.NewReader(testData(3*ChunkSize, 1)), dir: tc.peers["h2"].dir, cancel: cancel, ctx: ctx}
	_, err := tc.relay.Send(ctx, "h1", "h2", "big", 10*ChunkSize, body)
	checkStatus(t, err, codes.Canceled, "context canceled")
	tc.stopAll()
	tc.checkNothingStored(t)
}

// marker is a byte string that the tamperer looks for on the wire.
const marker = "TAMPER-ME-PLEASE"

// tamperConn flips a bit of the first marker it writes whole in one Write.
type tamperConn struct {
	net.Conn
	mu      sync.Mutex
	flipped bool
}

func (c *tamperConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	if i := bytes.Index(p, []byte(marker)); i >= 0 && !c.flipped {
		p = bytes.Clone(p)
		p[i+len(marker)/2] ^= 1
		c.flipped = true
	}
	c.mu.Unlock()
	return c.Conn.Write(p)
}

func TestPutTamperedOnTheWire(t *testing.T) {
	tc := newTestCluster(t, sharksAndJets)
	var conns []*tamperConn
	var mu sync.Mutex
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		conn, err := tc.vpn.Dial(ctx, addr)
		if err != nil {
			return nil, err
		}
		mu.Lock()
		defer mu.Unlock()
		conns = append(conns, &tamperConn{Conn: conn})
		return conns[len(conns)-1], nil
	}
	data := testData(3*ChunkSize, 3)
	copy(data[ChunkSize+ChunkSize/2:], bytes.Repeat([]byte(marker), 256))
	c := tc.dial(t, "h2", "pastiche@h2", "h1", grpc.WithContextDialer(dial))
	_, err := putStream(context.Background(), c, header("f", int64(len(data)), nil).GetHeader(), readerChunks(bytes.NewReader(data), int64(len(data))))
	checkStatus(t, err, codes.Unauthenticated, "message 3 of the stream from keyId \"pastiche@h2\" does not follow the previous message")
	mu.Lock()
	if len(conns) != 1 || !conns[0].flipped {
		t.Errorf("the stream was not tampered with")
	}
	mu.Unlock()
	tc.stopAll()
	tc.checkNothingStored(t)
}

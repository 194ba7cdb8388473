package signedrpc

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"io"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"

	"github.com/fabricmesh/fabric/internal/grpctest"
	"github.com/fabricmesh/fabric/internal/httpsig"
	"github.com/fabricmesh/fabric/internal/signedrpc/testdata/testpb"
)

// benchClient returns an echo client on loopback, signed or not.
func benchClient(b *testing.B, signed bool) testpb.EchoClient {
	b.Helper()
	if !signed {
		srv := grpc.NewServer()
		testpb.RegisterEchoServer(srv, &echoServer{discard: true})
		return testpb.NewEchoClient(dial(b, serve(b, srv)))
	}
	lis := listen(b, "127.0.0.1:0")
	// A replay cache as large as the run, so that it never evicts.
	cfg := ServerConfig{Replay: httpsig.NewReplayCache(1 << 22), Logger: discardLogger()}
	srv := grpc.NewServer(ServerOptions(serverConfig(b, lis, cfg))...)
	testpb.RegisterEchoServer(srv, &echoServer{discard: true})
	grpctest.Serve(b, srv, lis)
	return signedClient(b, lis.Addr().String(), clientID, clientID)
}

// Every request differs (Seq), as real calls do: identical requests from
// one key are limited to one per second by the date source.
var benchSeq atomic.Int64

func benchUnary(b *testing.B, signed bool) {
	c := benchClient(b, signed)
	ctx := context.Background()
	b.ResetTimer()
	for b.Loop() {
		if _, err := c.Echo(ctx, &testpb.EchoRequest{Text: "bench", Seq: benchSeq.Add(1)}); err != nil {
			b.Fatal(err)
		}
	}
}

func benchUnaryParallel(b *testing.B, signed bool) {
	c := benchClient(b, signed)
	ctx := context.Background()
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.Echo(ctx, &testpb.EchoRequest{Text: "bench", Seq: benchSeq.Add(1)}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkUnaryUnsigned(b *testing.B)         { benchUnary(b, false) }
func BenchmarkUnarySigned(b *testing.B)           { benchUnary(b, true) }
func BenchmarkUnaryUnsignedParallel(b *testing.B) { benchUnaryParallel(b, false) }
func BenchmarkUnarySignedParallel(b *testing.B)   { benchUnaryParallel(b, true) }

// benchStream sends b.N messages on one Upload stream.
func benchStream(b *testing.B, signed bool) {
	c := benchClient(b, signed)
	stream, err := c.Upload(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	chunk := &testpb.Chunk{Data: make([]byte, 64)}
	b.ResetTimer()
	for b.Loop() {
		if err := stream.Send(chunk); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := stream.CloseAndRecv(); err != nil && err != io.EOF {
		b.Fatal(err)
	}
}

func BenchmarkStreamMessageUnsigned(b *testing.B) { benchStream(b, false) }
func BenchmarkStreamMessageSigned(b *testing.B)   { benchStream(b, true) }

const benchHost = "203.0.113.3:7450"

// BenchmarkSignCall is the client's work for one unary call: digest,
// date, sign.
func BenchmarkSignCall(b *testing.B) {
	c := &client{keyID: clientID, signer: signerFor(clientID, clientID), dates: httpsig.NewDateSource(httpsig.DateSourceConfig{}), floors: newFloors(), now: nowFunc()}
	body := make([]byte, 64)
	ctx := context.Background()
	for b.Loop() {
		binary.BigEndian.PutUint64(body, uint64(benchSeq.Add(1))) // distinct requests
		sum := sha256.Sum256(body)
		date, err := c.unaryDate(ctx, benchHost, testpb.Echo_Echo_FullMethodName, sum)
		if err != nil {
			b.Fatal(err)
		}
		if _, _, err := c.signCall(ctx, testpb.Echo_Echo_FullMethodName, benchHost, date, sum); err != nil {
			b.Fatal(err)
		}
	}
}

// benchStreamOpen opens, uses (one message) and closes one Upload stream
// per iteration: streams from one key are not limited by the date source.
func benchStreamOpen(b *testing.B, signed bool) {
	c := benchClient(b, signed)
	ctx := context.Background()
	chunk := &testpb.Chunk{Data: make([]byte, 64)}
	b.ResetTimer()
	for b.Loop() {
		stream, err := c.Upload(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if err := stream.Send(chunk); err != nil {
			b.Fatal(err)
		}
		if _, err := stream.CloseAndRecv(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkStreamOpenUnsigned(b *testing.B) { benchStreamOpen(b, false) }
func BenchmarkStreamOpenSigned(b *testing.B)   { benchStreamOpen(b, true) }

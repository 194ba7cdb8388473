package pastiche

import (
	"bytes"
	"context"
	"testing"
)

// benchSize is the file moved by each iteration of the benchmarks.
const benchSize = 256 << 20

// BenchmarkPut moves a file from one pastiche to another: one signed Put
// over loopback, stored with fsync.
func BenchmarkPut(b *testing.B) {
	tc := newTestCluster(b, sharksAndJets)
	c := tc.dial(b, "h2", "pastiche@h2", "h1")
	data := testData(benchSize, 1)
	hdr := header("bench", benchSize, nil).GetHeader()
	b.SetBytes(benchSize)
	b.ResetTimer()
	for b.Loop() {
		if _, err := putStream(context.Background(), c, hdr, readerChunks(bytes.NewReader(data), benchSize)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRelaySend moves a file as `fabric pastiche send` does: from the
// coordinator's fabric-admin through the pastiche of h1 to that of h2.
func BenchmarkRelaySend(b *testing.B) {
	tc := newTestCluster(b, sharksAndJets)
	data := testData(benchSize, 1)
	b.SetBytes(benchSize)
	b.ResetTimer()
	for b.Loop() {
		if _, err := tc.relay.Send(context.Background(), "h1", "h2", "bench", benchSize, bytes.NewReader(data)); err != nil {
			b.Fatal(err)
		}
	}
}

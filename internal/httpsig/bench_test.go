package httpsig

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"testing"
	"time"
)

func BenchmarkSign(b *testing.B) {
	key := testKey(1)
	sum := sha256.Sum256([]byte("body"))
	sign := func(data []byte) ([]byte, error) { return ed25519.Sign(key, data), nil }
	for b.Loop() {
		if _, err := Sign("pastiche@h7", "POST", testPath, testHost, testNow, sum, sign); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerify verifies distinct signed requests (the replay cache
// refuses repeats), each with its digest, key lookup and replay check.
func BenchmarkVerify(b *testing.B) {
	key := testKey(1)
	reqs := make([]Request, b.N)
	for i := range reqs {
		var body [8]byte
		binary.BigEndian.PutUint64(body[:], uint64(i))
		reqs[i] = signedRequest(b, "pastiche@h7", key, testNow, body[:])
	}
	v := NewVerifier(VerifierConfig{
		Host:   testHost,
		Start:  testStart,
		Lookup: newFakeKeys().Lookup,
		Replay: NewReplayCache(b.N),
		Now:    func() time.Time { return testNow },
	})
	b.ResetTimer()
	for i := range b.N {
		if _, err := v.Verify(reqs[i]); err != nil {
			b.Fatal(err)
		}
	}
}

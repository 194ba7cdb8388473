package signedrpc

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"testing"
)

func TestKeySigner(t *testing.T) {
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s := KeySigner{KeyID: "registry@coord", PrivKey: key}
	sig, err := s.Sign(context.Background(), "registry@coord", []byte("data"))
	if err != nil || !ed25519.Verify(pub, []byte("data"), sig) {
		t.Errorf("Sign(registry@coord) = %x, %v; want a signature by the key", sig, err)
	}
	if sig, err := s.Sign(context.Background(), "reeve@coord", []byte("data")); err == nil {
		t.Errorf("Sign(reeve@coord) = %x, want an error: not this signer's key", sig)
	}
}
